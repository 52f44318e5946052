"""Triton helpers that the kernels of more than one op inline (Triton compiles a jit function
called from a kernel into that kernel, so sharing one costs nothing at run time)."""

from __future__ import annotations

from kernels._dispatch import triton_importable

if triton_importable():
    import triton
    import triton.language as tl

    @triton.jit
    def fixed_order_column_sums(part_ptr, cols, col_mask, P, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        """``sum_p part[p, c]`` of a row-major ``[P, C]`` partials buffer for the columns ``cols``, in
        the partials' dtype and in the same order on every run: the deterministic second stage of
        the reductions that avoid float atomics (kernels/bias_act.py explains why)."""
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=part_ptr.dtype.element_ty)
        for p0 in range(0, P, BLOCK_P):
            rows = p0 + tl.arange(0, BLOCK_P)
            mask = (rows < P)[:, None] & col_mask[None, :]
            acc += tl.load(part_ptr + rows[:, None].to(tl.int64) * C + cols[None, :], mask=mask, other=0.0)
        return tl.sum(acc, axis=0)
