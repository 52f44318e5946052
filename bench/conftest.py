"""Benchmarks run on CPU through the Triton interpreter; the mode must be set before triton loads.

The benchmarks' parity checks use the error bounds of kernels/error_bounds.py and
wgan/models/numerics.py (one home for them).
"""

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

if "TRITON_INTERPRET" not in os.environ:
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


@pytest.fixture(autouse=True)
def result_line(request):
    """With GPU_CHECK_RESULTS set (bench/gpu_check.sh), each benchmark case appends one JSON line
    there as soon as it ends, so a file stopped at its time budget keeps the cases it finished
    (pytest-benchmark writes its own JSON only when the whole run ends)."""
    yield
    path, bench = os.environ.get("GPU_CHECK_RESULTS"), request.node.funcargs.get("benchmark")
    stats = getattr(getattr(bench, "stats", None), "stats", None)
    if not path or stats is None:
        return
    record = {
        "time": round(time.time(), 3),
        "section": "bench",
        "name": request.node.nodeid,
        "group": bench.group,
        "median_s": stats.median,
        "min_s": stats.min,
        "mean_s": stats.mean,
        "rounds": stats.rounds,
        "extra_info": bench.extra_info,
    }
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


@pytest.fixture
def strict_fp32_benchmark(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """CUDA: strict fp32 (TF32 would differ by ~1e-3 from the parity reference) and cuDNN's autotuner
    on, the same for every side of a comparison, as training runs it. (cuDNN's flags through their
    context manager: assigning them raises once torch's test utilities are imported.)"""
    if not torch.cuda.is_available():
        yield
        return
    from wgan.devices import cudnn_flags

    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    with cudnn_flags(allow_tf32=False, benchmark=True):
        yield
