"""The one reading of a ``--device`` option, shared by the trainer and the report."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

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


def cudnn_flags(**changes: Any) -> contextlib.AbstractContextManager[None]:
    """``torch.backends.cudnn.flags`` with every flag at its current value but ``changes``: the
    context manager is the one way to change cuDNN flags that always works (after
    ``torch.backends.disable_global_flags()``, which torch's test utilities call, assigning them
    raises), and its own defaults would otherwise reset the flags not named."""
    cudnn = torch.backends.cudnn
    now = {}
    for name in inspect.signature(cudnn.flags).parameters:
        try:
            now[name] = getattr(cudnn, name)
        except (AttributeError, RuntimeError):  # a flag this build cannot read (no CUDA): its default
            continue
    return cudnn.flags(**{**now, **changes})


def set_cudnn_flags(**flags: bool) -> None:
    """Set cuDNN flags (``allow_tf32``, ``benchmark``, ``deterministic``) for the process, the others
    left as they are, also after ``torch.backends.disable_global_flags()`` (assigning raises then)."""
    cudnn = torch.backends.cudnn
    params = inspect.signature(cudnn.set_flags).parameters
    keep = {"_fp32_precision": cudnn.fp32_precision} if "_fp32_precision" in params else {}  # else reset to its default
    cudnn.set_flags(**{**keep, **{f"_{name}": value for name, value in flags.items()}})


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for CUDA convolutions and matmuls on or off inside; the previous switches come back on exit."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        with cudnn_flags(allow_tf32=enabled):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def strict_fp32() -> contextlib.AbstractContextManager[None]:
    """Convolutions and matmuls in full fp32 inside, whatever the process chose (training at
    ``--precision auto`` turns TF32 on for CUDA): measurements such as FID/KID features must not
    depend on the precision the model was trained at. The previous switches come back on exit."""
    return tf32(False)
