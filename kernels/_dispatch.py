"""Which implementation a kernel entry point runs: ``'triton'``, ``'ref'`` or ``None`` (= best).

Triton can run on CUDA tensors, or on CPU tensors when the interpreter is on
(``TRITON_INTERPRET=1`` set before triton was imported). Everything else falls back to the
plain-PyTorch reference that lives beside each kernel.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

log = logging.getLogger("kernels")

IMPLS = ("triton", "ref")


@functools.cache
def triton_importable() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # a broken triton install must not break the reference path
        return False
    return True


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_can_run(device: torch.device | str) -> bool:
    device = torch.device(device)
    if not triton_importable():
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and interpreter_on()


def resolve_impl(impl: str | None, device: torch.device | str, dtype: torch.dtype | None = None) -> str:
    """Turn a user's ``impl`` choice into the implementation that will run, or raise.

    ``None`` picks Triton where it can run: CUDA tensors, or CPU tensors under the interpreter
    unless ``dtype`` is a half type (the interpreter has no fp16/bf16 arithmetic).
    """
    if impl is None:
        if not triton_can_run(device):
            return "ref"
        if torch.device(device).type == "cpu" and dtype in (torch.float16, torch.bfloat16):
            return "ref"
        return "triton"
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS} or None, got {impl!r}")
    if impl == "triton" and not triton_can_run(device):
        raise RuntimeError(
            f"impl='triton' cannot run on device {torch.device(device)}: Triton needs a CUDA device, "
            "or TRITON_INTERPRET=1 set before triton is imported for CPU tensors"
        )
    return impl


@functools.cache
def log_once(message: str) -> None:
    log.info(message)


@functools.cache
def triton_ops_registrable() -> bool:
    """Whether this torch can register the kernels as ``torch.library.triton_op``s (torch >= 2.6):
    registered ops are what torch.compile and CUDA graphs see on a GPU, since ``triton_op`` exposes
    the kernels to Inductor instead of an opaque graph break. Older torches run the same launchers
    under a plain ``torch.autograd.Function``."""
    return triton_importable() and hasattr(torch.library, "triton_op") and hasattr(torch.library, "wrap_triton")
