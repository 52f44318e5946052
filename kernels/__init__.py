"""Triton kernels for WGAN training, each with a plain-PyTorch reference of the same math.

This package is a library of its own: it never imports ``wgan``.
"""

from kernels._dispatch import resolve_impl, triton_can_run

__all__ = ["resolve_impl", "triton_can_run"]
