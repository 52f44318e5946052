"""Kernel tests run on CPU through the Triton interpreter; the mode must be set before triton loads.

The tests run with one CPU thread, CUDA or not (a GPU box has many cores, and the CPU-side
references of the CUDA tests are compared bit for bit too): with two, oneDNN's convolutions round
differently from one run to the next now and then (about 1 process in 12 here), and several tests
compare training runs bit for bit. ``WGAN_TEST_THREADS=N`` runs them with N threads instead (the
kernel tests hold at any count; the bit-for-bit trainer tests need 1). ``--deterministic`` does
the same for users who need that.
"""

import os
import tempfile
from collections.abc import Iterator

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

torch.set_num_threads(int(os.environ.get("WGAN_TEST_THREADS", "1")))
# features cached across run folders (wgan.fid.scores.shared_feature_dir) go to a folder of this session:
# no test reads what an earlier session left, nor leaves anything in the user's cache
os.environ["WGAN_FEATURE_CACHE"] = tempfile.mkdtemp(prefix="wgan-test-features-")


# --- fixtures shared by the test files --------------------------------------------------------
import pytest  # noqa: E402  (after the interpreter switch above, which must come first)


@pytest.fixture()
def poison_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every buffer a kernel launcher allocates starts as NaN (kernels._buffers.POISON_OUTPUTS): an
    element a kernel fails to write fails the test instead of passing on leftover zeros."""
    from kernels import _buffers

    monkeypatch.setattr(_buffers, "POISON_OUTPUTS", True)


@pytest.fixture()
def data(tmp_path):
    """A folder of 40 random 16x16 PNGs: the trainer tests' data set."""
    from helpers import write_images

    return write_images(tmp_path / "imgs", n=40)


@pytest.fixture()
def cfg(tmp_path):
    """The tiny model's config file. Deterministic: bit-for-bit comparisons need it (with two
    threads, oneDNN's convolutions make even two uninterrupted runs differ now and then)."""
    from helpers import write_config

    return write_config(tmp_path / "tiny.json", deterministic=True)


@pytest.fixture()
def strict_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strict fp32 on CUDA for parity tests: TF32 convolutions and matmuls differ by ~1e-3."""
    if torch.cuda.is_available():
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


@pytest.fixture
def keep_threads() -> Iterator[None]:
    """The test's torch thread count restored after it (``--deterministic`` sets one thread in the
    process that runs it, and click's runner runs the CLI in this one)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
