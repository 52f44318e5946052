"""The one reading of a ``--device`` option, shared by the trainer and the report."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from wgan.errors import UserError


class DeviceError(UserError):
    """A ``--device`` this machine does not have."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cpu', 'cuda', 'cuda:N' as given (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {name}: no such device ({torch.cuda.device_count()} CUDA device(s))")
    return device


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Convolutions and matmuls in full fp32 inside, whatever the process chose (training at
    ``--precision auto`` turns TF32 on for CUDA): measurements such as FID/KID features must not
    depend on the precision the model was trained at. The previous switches come back on exit."""
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv
