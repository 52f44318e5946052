"""Batch norm + LeakyReLU + pixel shuffle of a polyphase convolution's output, as Triton kernels.

The generator's blocks are ``upsample -> conv -> BatchNorm2d -> LeakyReLU``. With the polyphase
convolution (``kernels/upsample_conv.py``) the convolution produces the *phase layout*
``P = [N, s*s*C, H, W]``: channel ``c*s*s + r_y*s + r_x`` at ``(y, x)`` is output pixel
``(s*y + r_y, s*x + r_x)`` of channel ``c``. This op reads ``P`` as it lies and writes the
interleaved ``[N, C, s*H, s*W]`` output once:

    y = leaky_relu(gamma[c] * (P - mean[c]) * invstd[c] + beta[c])   stored at the shuffled position

Batch norm is per *output* channel, over the batch, the ``s*s`` phases and the pixels: the same
values ``BatchNorm2d`` sees on the shuffled tensor, in another order. ``s = 1`` is a plain
``BatchNorm2d + LeakyReLU`` (no shuffle), used after the stride-1 transposed convolution.

Layouts. ``P`` contiguous (NCHW) gives an NCHW output; ``P`` channels_last gives a channels_last
output (``[N, s*H, s*W, C]`` in memory); any other layout is made contiguous first. Every kernel
walks ``P`` in memory order as a matrix ``[R, L]``: NCHW: rows ``(n, phase channel)``, columns the
pixels ``(y, x)``; channels_last: rows ``(n, y, x)``, columns the phase channels. Reads of ``P`` are
contiguous; the output (and, backward, the incoming gradient) is addressed at the shuffled position
computed per element. The phase channels ``c*s*s .. c*s*s + s*s - 1`` of one output channel are
neighbours in ``P``, so a tile's stores land on the same output rows (NCHW) or pixels (NHWC).

Passes (training). Forward: (1) each program reduces its tile to per-row (NCHW) or per-column
(NHWC) ``(count, sum, M2)`` partials, the tile's own mean first and then the squared deviations
from it (two passes over registers, so no ``E[x^2] - E[x]^2`` cancellation), stored channel-major
(``[C, P]``: each channel's P partials contiguous); (2) a merge kernel, a program per channel on a
GPU reading that channel's row coalesced (the channels merge side by side on as many SMs, not in a
loop of one or two programs), merges each channel's partials in a fixed order with Chan's formula
(``M2 = sum M2_i + sum n_i (mean_i - mean)^2``, with the global mean computed first), writes
``mean`` and ``invstd`` and updates the running statistics as ``BatchNorm2d`` does
(``running = (1 - momentum) * running + momentum * stat``, the *unbiased* variance for
``running_var``); (3) the apply kernel. Backward: (4) per-tile partial sums of ``g' = dL/d(bn out)``
(LeakyReLU's backward applied on the fly) and ``g' * x_hat``, channel-major; (5) a fixed-order sum
per channel, laid out and launched as the forward merge, giving ``grad_beta`` and ``grad_gamma``;
(6) ``dx = gamma * invstd * (g' - mean(g') - x_hat * mean(g' x_hat))`` written in the phase layout
(the un-shuffle). No float atomics anywhere: the reductions are bit-for-bit reproducible (the
reason is the one ``kernels/bias_act.py`` gives).

Statistics accumulate in float32 (float64 for float64 input); half inputs (CUDA) are upcast in
registers and the output keeps the input's dtype, like ``BatchNorm2d`` under autocast. ``eps``,
``momentum`` and ``negative_slope`` are 32-bit float kernel arguments (Triton's scalar float type),
which only matters for float64 inputs.

Eval mode reads ``running_mean`` / ``running_var`` (``invstd = 1 / sqrt(running_var + eps)`` inside the
kernels) and changes no state; its backward treats them as constants, as torch does.
``num_batches_tracked`` is the module's business (``BatchNorm2d.forward`` increments it before
calling ``F.batch_norm``); :class:`wgan.fused_generator.FusedGenerator` does the same.

Registration. On CUDA the two steps are ``torch.library.triton_op``s, so ``torch.compile`` and CUDA
graphs see the kernels: ``kernels::bn_shuffle_stats`` (mutates the running statistics; no
autograd, it is called on a detached input) and ``kernels::bn_leaky_relu_shuffle`` (functional,
with its backward op ``kernels::bn_leaky_relu_shuffle_backward``). The apply op differentiates
*through* the batch statistics it is given (training mode): its ``mean``/``invstd`` inputs must be
the statistics of its ``x``, which the public entry point guarantees. Elsewhere (CPU under the
interpreter) the same launchers run under :class:`BNLeakyReLUShuffleFunction`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from kernels._buffers import FLOAT_DTYPES, alloc
from kernels._dispatch import resolve_impl, triton_importable, triton_ops_registrable
from kernels._launch import (
    GPU_TILE,
    MatrixTiles,
    cdiv,
    check_float,
    check_same_device,
    launch,
    row_reduction_tile,
    tile_2d,
)

__all__ = [
    "BNLeakyReLUShuffleFunction",
    "bn_leaky_relu_shuffle",
    "bn_leaky_relu_shuffle_apply",
    "bn_leaky_relu_shuffle_backward",
    "bn_leaky_relu_shuffle_reference",
    "bn_shuffle_stats",
]

OP = "bn_leaky_relu_shuffle"

# ------------------------------------------------------------------------------------------------
# Triton kernels
# ------------------------------------------------------------------------------------------------
if triton_importable():
    import triton
    import triton.language as tl

    @triton.jit
    def _tile_coords(pid, n_col_programs, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr, WIDE: tl.constexpr):
        """Row and column indices of this program's tile of [R, L] (a 1-D grid, kernels/_launch.py):
        int32, unless an extent reaches 2**31 (WIDE): 64-bit division, which the coordinates below
        need, is a slow, register-hungry subroutine on a GPU."""
        if WIDE:
            pid = pid.to(tl.int64)
        rows = (pid // n_col_programs) * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = (pid % n_col_programs) * BLOCK_L + tl.arange(0, BLOCK_L)
        return rows, cols

    @triton.jit
    def _phase_tile(
        pid,
        n_col_programs,
        R,
        L,
        C,
        H,
        W,
        S: tl.constexpr,
        CL: tl.constexpr,
        WIDE: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_L: tl.constexpr,
    ):
        """Coordinates of one tile of the phase tensor P seen as the matrix [R, L] (module doc).

        Returns (rows, cols, masks, P offsets, output offsets, channel of each row, channel of each
        column); only the channel vector along the layout's channel axis is meaningful. Pixel and
        channel coordinates stay in the index type; the offsets are int64 (P may pass 2**31 values
        with both extents below it).
        """
        rows, cols = _tile_coords(pid, n_col_programs, BLOCK_R, BLOCK_L, WIDE)
        row_mask = rows < R
        col_mask = cols < L
        mask = row_mask[:, None] & col_mask[None, :]
        p_offs = rows[:, None].to(tl.int64) * L + cols[None, :]
        if CL:  # rows (n, y, x), columns the phase channel
            n = rows // (H * W)
            y = (rows // W) % H
            x = rows % W
            ch = cols // (S * S)
            q = cols % (S * S)
            oy = S * y[:, None] + (q // S)[None, :]
            ox = S * x[:, None] + (q % S)[None, :]
            out_offs = ((n.to(tl.int64)[:, None] * (S * H) + oy) * (S * W) + ox) * C + ch[None, :]
            ch_rows = rows * 0
            ch_cols = ch.to(tl.int32)
        else:  # rows (n, phase channel), columns the pixel (y, x)
            n = rows // (C * S * S)
            ch = (rows // (S * S)) % C
            q = rows % (S * S)
            oy = S * (cols // W)[None, :] + (q // S)[:, None]
            ox = S * (cols % W)[None, :] + (q % S)[:, None]
            out_offs = ((n.to(tl.int64)[:, None] * C + ch[:, None]) * (S * H) + oy) * (S * W) + ox
            ch_rows = ch.to(tl.int32)
            ch_cols = cols * 0
        return rows, cols, row_mask, col_mask, mask, p_offs, out_offs, ch_rows, ch_cols

    @triton.jit
    def _inv_sqrt(v):
        """1 / sqrt(v), correctly rounded: fp32 ``/`` and ``sqrt`` may be approximate on a GPU, and
        the round-to-nearest variants are fp32-only (fp64 ``/`` and ``sqrt`` are IEEE already)."""
        # if/else, not an early return: Triton compiles the statement after a static if's return
        if v.dtype == tl.float64:
            out = 1.0 / tl.sqrt(v)
        else:
            out = tl.div_rn(1.0, tl.sqrt_rn(v))
        return out

    @triton.jit
    def _per_channel(ptr, ch_rows, ch_cols, row_mask, col_mask, CL: tl.constexpr):
        """One value per channel, broadcastable against the tile."""
        if CL:
            out = tl.load(ptr + ch_cols, mask=col_mask, other=0.0)[None, :]
        else:
            out = tl.load(ptr + ch_rows, mask=row_mask, other=0.0)[:, None]
        return out

    @triton.jit
    def _channel_affine(
        mean_ptr,
        stat_ptr,
        gamma_ptr,
        beta_ptr,
        eps,
        ch_rows,
        ch_cols,
        row_mask,
        col_mask,
        FROM_VAR: tl.constexpr,
        CL: tl.constexpr,
    ):
        """(mean, invstd, gamma, beta) per channel in the accumulation dtype; ``stat`` is invstd,
        or the running variance when FROM_VAR (eval mode)."""
        mean = _per_channel(mean_ptr, ch_rows, ch_cols, row_mask, col_mask, CL)
        stat = _per_channel(stat_ptr, ch_rows, ch_cols, row_mask, col_mask, CL).to(mean.dtype)
        if FROM_VAR:
            invstd = _inv_sqrt(stat + eps)
        else:
            invstd = stat
        gamma = _per_channel(gamma_ptr, ch_rows, ch_cols, row_mask, col_mask, CL).to(mean.dtype)
        beta = _per_channel(beta_ptr, ch_rows, ch_cols, row_mask, col_mask, CL).to(mean.dtype)
        return mean, invstd, gamma, beta

    @triton.jit
    def _partial_slots(pid, n_col_programs, rows, cols, R, C, P, S: tl.constexpr, CL: tl.constexpr):
        """Where this tile's per-row (NCHW) or per-column (NHWC) partials go in the channel-major
        buffer ``[C, P]``: partial ``g * s*s + q`` of channel ``c``, the tile's group ``g`` (NCHW:
        column program ``j`` and sample ``n``, ``g = j * N + n``; NHWC: the row program) and ``q``
        the phase. Each channel's partials are contiguous, so the merge reads them coalesced; the
        scattered side is these stores, one value per row or column of a tile."""
        if CL:  # columns: phase channel c*s*s + q
            g = (pid // n_col_programs).to(tl.int64)
            return (cols // (S * S)).to(tl.int64) * P + g * (S * S) + cols % (S * S)
        else:  # rows: (n, phase channel c*s*s + q); one division by a runtime value (C), the rest by constants
            nc = rows // (S * S)
            n = nc // C
            g = (pid % n_col_programs).to(tl.int64) * (R // (C * S * S)) + n
            return (nc - n * C).to(tl.int64) * P + g * (S * S) + rows % (S * S)

    @triton.jit
    def _stats_partials_kernel(
        x_ptr,
        cnt_ptr,
        sum_ptr,
        m2_ptr,
        R,
        L,
        C,
        n_col_programs,
        P,
        S: tl.constexpr,
        CL: tl.constexpr,
        WIDE: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_L: tl.constexpr,
    ):
        """(count, sum, M2) of each row (NCHW) or column (NHWC) segment of this tile; M2 from the
        deviations from the segment's own mean (two passes over registers). Stored channel-major
        (:func:`_partial_slots`)."""
        pid = tl.program_id(0)
        rows, cols = _tile_coords(pid, n_col_programs, BLOCK_R, BLOCK_L, WIDE)
        row_mask = rows < R
        col_mask = cols < L
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(x_ptr + rows[:, None].to(tl.int64) * L + cols[None, :], mask=mask, other=0.0)
        x = x.to(sum_ptr.dtype.element_ty)
        ones = tl.where(mask, 1.0, 0.0).to(x.dtype)
        if CL:  # a partial per phase-channel column
            cnt = tl.sum(ones, axis=0)
            total = tl.sum(x, axis=0)
            dev = tl.where(mask, x - (total / tl.maximum(cnt, 1.0))[None, :], 0.0)
            m2 = tl.sum(dev * dev, axis=0)
            # the slots once the tile's values are dead: computed earlier, they spilled (tests/aot)
            offs = _partial_slots(pid, n_col_programs, rows, cols, R, C, P, S, CL)
            tl.store(cnt_ptr + offs, cnt, mask=col_mask)
            tl.store(sum_ptr + offs, total, mask=col_mask)
            tl.store(m2_ptr + offs, m2, mask=col_mask)
        else:  # a partial per (n, phase channel) row
            cnt = tl.sum(ones, axis=1)
            total = tl.sum(x, axis=1)
            dev = tl.where(mask, x - (total / tl.maximum(cnt, 1.0))[:, None], 0.0)
            m2 = tl.sum(dev * dev, axis=1)
            offs = _partial_slots(pid, n_col_programs, rows, cols, R, C, P, S, CL)
            tl.store(cnt_ptr + offs, cnt, mask=row_mask)
            tl.store(sum_ptr + offs, total, mask=row_mask)
            tl.store(m2_ptr + offs, m2, mask=row_mask)

    @triton.jit
    def _partial_offsets(p0, chans, P, C, BLOCK_P: tl.constexpr):
        """Offsets of partials p0.. of channels ``chans`` in the channel-major buffer [C, P] (each
        channel's row read contiguously), and their mask."""
        p = p0 + tl.arange(0, BLOCK_P)
        offs = chans[:, None].to(tl.int64) * P + p[None, :]
        return offs, (chans < C)[:, None] & (p < P)[None, :]

    @triton.jit
    def _stats_merge_kernel(
        cnt_ptr,
        psum_ptr,
        pm2_ptr,
        mean_ptr,
        invstd_ptr,
        rmean_ptr,
        rvar_ptr,
        input_bias_ptr,
        P,
        C,
        eps,
        momentum,
        UPDATE_RUNNING: tl.constexpr,
        INPUT_BIAS: tl.constexpr,
        BLOCK_C: tl.constexpr,
        BLOCK_P: tl.constexpr,
    ):
        """Chan's merge of each channel's partials in a fixed order; mean, invstd, running stats
        (INPUT_BIAS: the running mean is that of x + input_bias, the convolution's left-out bias).

        A program per channel on a GPU (``row_reduction_tile``): its partials are one contiguous
        row of [C, P], so the channels merge side by side on as many SMs, each with coalesced
        reads, instead of one or two programs striding over all of them.

        The partials hold sums, not means: accumulating ``n_i * mean_i`` next to ``n_i`` in one loop
        crashes LLVM's optimiser in Triton 3.9's sm_90 pipeline (found compiling ahead of time)."""
        chans = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        chan_mask = chans < C
        acc_t = mean_ptr.dtype.element_ty
        n_acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=acc_t)
        s_acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=acc_t)
        for p0 in range(0, P, BLOCK_P):
            offs, mask = _partial_offsets(p0, chans, P, C, BLOCK_P)
            n_acc += tl.load(cnt_ptr + offs, mask=mask, other=0.0)
            s_acc += tl.load(psum_ptr + offs, mask=mask, other=0.0)
        n = tl.sum(n_acc, axis=1)
        mean = tl.sum(s_acc, axis=1) / tl.maximum(n, 1.0)
        m2_acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=acc_t)
        for p0 in range(0, P, BLOCK_P):
            offs, mask = _partial_offsets(p0, chans, P, C, BLOCK_P)
            n_i = tl.load(cnt_ptr + offs, mask=mask, other=0.0)
            d = tl.load(psum_ptr + offs, mask=mask, other=0.0) / tl.maximum(n_i, 1.0) - mean[:, None]
            m2_acc += tl.load(pm2_ptr + offs, mask=mask, other=0.0) + n_i * d * d
        m2 = tl.sum(m2_acc, axis=1)
        var = m2 / tl.maximum(n, 1.0)
        tl.store(mean_ptr + chans, mean, mask=chan_mask)
        tl.store(invstd_ptr + chans, _inv_sqrt(var + eps), mask=chan_mask)
        if UPDATE_RUNNING:
            unbiased = m2 / tl.maximum(n - 1.0, 1.0)
            rm = tl.load(rmean_ptr + chans, mask=chan_mask, other=0.0)
            rv = tl.load(rvar_ptr + chans, mask=chan_mask, other=0.0)
            shifted = mean
            if INPUT_BIAS:
                shifted = mean + tl.load(input_bias_ptr + chans, mask=chan_mask, other=0.0).to(acc_t)
            rm = momentum * shifted + (1.0 - momentum) * rm.to(acc_t)
            rv = momentum * unbiased + (1.0 - momentum) * rv.to(acc_t)
            tl.store(rmean_ptr + chans, rm.to(rmean_ptr.dtype.element_ty), mask=chan_mask)
            tl.store(rvar_ptr + chans, rv.to(rvar_ptr.dtype.element_ty), mask=chan_mask)

    @triton.jit
    def _bn_leaky_relu_shuffle_fwd_kernel(
        x_ptr,
        y_ptr,
        mean_ptr,
        stat_ptr,
        gamma_ptr,
        beta_ptr,
        R,
        L,
        C,
        H,
        W,
        n_col_programs,
        eps,
        negative_slope,
        S: tl.constexpr,
        CL: tl.constexpr,
        WIDE: tl.constexpr,
        FROM_VAR: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_L: tl.constexpr,
    ):
        """y[shuffled position] = leaky_relu((x - mean) * (invstd * gamma) + beta)."""
        _, _, row_mask, col_mask, mask, p_offs, out_offs, ch_rows, ch_cols = _phase_tile(
            tl.program_id(0), n_col_programs, R, L, C, H, W, S, CL, WIDE, BLOCK_R, BLOCK_L
        )
        mean, invstd, gamma, beta = _channel_affine(
            mean_ptr, stat_ptr, gamma_ptr, beta_ptr, eps, ch_rows, ch_cols, row_mask, col_mask, FROM_VAR, CL
        )
        x = tl.load(x_ptr + p_offs, mask=mask, other=0.0).to(mean.dtype)
        z = (x - mean) * (invstd * gamma) + beta
        y = tl.where(z > 0, z, z * negative_slope)
        tl.store(y_ptr + out_offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _pre_activation_grad(g_ptr, x_ptr, mean, invstd, gamma, beta, p_offs, out_offs, mask, negative_slope):
        """(dL/dz, x_hat): LeakyReLU's backward on the recomputed pre-activation z (the forward's
        exact expression, so the branch taken is the forward's), and the normalised input."""
        x = tl.load(x_ptr + p_offs, mask=mask, other=0.0).to(mean.dtype)
        g = tl.load(g_ptr + out_offs, mask=mask, other=0.0).to(mean.dtype)
        z = (x - mean) * (invstd * gamma) + beta
        gz = tl.where(z > 0, g, g * negative_slope)
        return gz, (x - mean) * invstd

    @triton.jit
    def _bwd_partials_kernel(
        g_ptr,
        x_ptr,
        mean_ptr,
        stat_ptr,
        gamma_ptr,
        beta_ptr,
        part_db_ptr,
        part_dg_ptr,
        R,
        L,
        C,
        H,
        W,
        n_col_programs,
        P,
        eps,
        negative_slope,
        S: tl.constexpr,
        CL: tl.constexpr,
        WIDE: tl.constexpr,
        FROM_VAR: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_L: tl.constexpr,
    ):
        """Per row (NCHW) or column (NHWC) of this tile: sum g' and sum g' * x_hat, stored
        channel-major (:func:`_partial_slots`)."""
        pid = tl.program_id(0)
        rows, cols, row_mask, col_mask, mask, p_offs, out_offs, ch_rows, ch_cols = _phase_tile(
            pid, n_col_programs, R, L, C, H, W, S, CL, WIDE, BLOCK_R, BLOCK_L
        )
        mean, invstd, gamma, beta = _channel_affine(
            mean_ptr, stat_ptr, gamma_ptr, beta_ptr, eps, ch_rows, ch_cols, row_mask, col_mask, FROM_VAR, CL
        )
        gz, xhat = _pre_activation_grad(g_ptr, x_ptr, mean, invstd, gamma, beta, p_offs, out_offs, mask, negative_slope)
        gz = tl.where(mask, gz, 0.0)
        gx = tl.where(mask, gz * xhat, 0.0)
        if CL:
            db, dg, seg_mask = tl.sum(gz, axis=0), tl.sum(gx, axis=0), col_mask
        else:
            db, dg, seg_mask = tl.sum(gz, axis=1), tl.sum(gx, axis=1), row_mask
        # the slots once the tile's values are dead: computed earlier, they spilled (tests/aot)
        offs = _partial_slots(pid, n_col_programs, rows, cols, R, C, P, S, CL)
        tl.store(part_db_ptr + offs, db, mask=seg_mask)
        tl.store(part_dg_ptr + offs, dg, mask=seg_mask)

    @triton.jit
    def _sum_partials_kernel(
        part_db_ptr, part_dg_ptr, db_ptr, dg_ptr, P, C, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr
    ):
        """grad_beta[c], grad_gamma[c]: each channel's partials (a contiguous row of [C, P]) summed
        in a fixed order, a program per channel on a GPU (as :func:`_stats_merge_kernel`)."""
        chans = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        acc_db = tl.zeros([BLOCK_C, BLOCK_P], dtype=part_db_ptr.dtype.element_ty)
        acc_dg = tl.zeros([BLOCK_C, BLOCK_P], dtype=part_db_ptr.dtype.element_ty)
        for p0 in range(0, P, BLOCK_P):
            offs, mask = _partial_offsets(p0, chans, P, C, BLOCK_P)
            acc_db += tl.load(part_db_ptr + offs, mask=mask, other=0.0)
            acc_dg += tl.load(part_dg_ptr + offs, mask=mask, other=0.0)
        chan_mask = chans < C
        tl.store(db_ptr + chans, tl.sum(acc_db, axis=1), mask=chan_mask)
        tl.store(dg_ptr + chans, tl.sum(acc_dg, axis=1), mask=chan_mask)

    @triton.jit
    def _bwd_input_kernel(
        g_ptr,
        x_ptr,
        mean_ptr,
        stat_ptr,
        gamma_ptr,
        beta_ptr,
        db_ptr,
        dg_ptr,
        dx_ptr,
        R,
        L,
        C,
        H,
        W,
        n_col_programs,
        eps,
        negative_slope,
        inv_count,
        S: tl.constexpr,
        CL: tl.constexpr,
        WIDE: tl.constexpr,
        FROM_VAR: tl.constexpr,
        TRAINING: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_L: tl.constexpr,
    ):
        """dx in the phase layout: gamma*invstd*(g' - mean(g') - x_hat*mean(g' x_hat)) in training,
        gamma*invstd*g' in eval (the running statistics are constants)."""
        _, _, row_mask, col_mask, mask, p_offs, out_offs, ch_rows, ch_cols = _phase_tile(
            tl.program_id(0), n_col_programs, R, L, C, H, W, S, CL, WIDE, BLOCK_R, BLOCK_L
        )
        mean, invstd, gamma, beta = _channel_affine(
            mean_ptr, stat_ptr, gamma_ptr, beta_ptr, eps, ch_rows, ch_cols, row_mask, col_mask, FROM_VAR, CL
        )
        gz, xhat = _pre_activation_grad(g_ptr, x_ptr, mean, invstd, gamma, beta, p_offs, out_offs, mask, negative_slope)
        if TRAINING:
            db = _per_channel(db_ptr, ch_rows, ch_cols, row_mask, col_mask, CL).to(mean.dtype)
            dg = _per_channel(dg_ptr, ch_rows, ch_cols, row_mask, col_mask, CL).to(mean.dtype)
            gz = gz - db * inv_count - xhat * (dg * inv_count)
        dx = gz * (gamma * invstd)
        tl.store(dx_ptr + p_offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ------------------------------------------------------------------------------------------------
# Host launchers
# ------------------------------------------------------------------------------------------------
def _dense(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(x in a layout the kernels walk, channels_last?)."""
    if x.is_contiguous():
        return x, False
    if x.is_contiguous(memory_format=torch.channels_last):
        return x, True
    return x.contiguous(), False


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _out_shape_strides(x: torch.Tensor, scale: int, channels_last: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    n, cp, h, w = x.shape
    c, oh, ow = cp // (scale * scale), h * scale, w * scale
    shape = (n, c, oh, ow)
    strides = (oh * ow * c, 1, ow * c, c) if channels_last else (c * oh * ow, oh * ow, ow, 1)
    return shape, strides


def _phase_tiles(rows: int, cols: int, device: torch.device) -> tuple[int, int]:
    """The elementwise kernels' tile: each element carries two 64-bit offsets (the phase tensor's
    and the shuffled output's) and, backward, four values, so a GPU program takes a quarter of
    the shared budget (8 elements a thread at 4 warps): with the full budget ptxas spills
    hundreds of bytes a thread at odd shapes and channels_last (tests/aot found it)."""
    return tile_2d(rows, cols, device, gpu=GPU_TILE // 4)


def _merge_tiles(count: int, channels: int, device: torch.device, acc: torch.dtype) -> tuple[int, int]:
    """The merge kernels' [channels, partials] tile: a channel per program on a GPU (its ``count``
    partials a contiguous row, :func:`kernels._launch.row_reduction_tile`); float64 accumulators
    take half the budget (two registers a value, two or three accumulators: spills otherwise)."""
    return row_reduction_tile(channels, count, device, gpu=GPU_TILE // 2 if acc == torch.float64 else GPU_TILE)


@dataclass(frozen=True)
class _PhaseLayout(MatrixTiles):
    """The phase tensor ``x [N, s*s*C, H, W]`` as every kernel of this op walks it (module doc).

    All passes share one tiling of the matrix ``[R, L]``, one grid, one index width and one layout
    of the per-channel partials ``[C, P]`` (channel-major: the merges read each channel's row).
    Built once per call, it owns the argument lists each kernel family shares (over the tiles,
    shuffled, merging partials), so that a launch names only its own tensors and flags and the
    families cannot drift apart.
    """

    scale: int
    channels_last: bool
    n: int
    c: int
    h: int
    w: int
    acc: torch.dtype

    @classmethod
    def of(cls, x: torch.Tensor, scale: int, channels_last: bool) -> _PhaseLayout:
        """R = (n, phase channel) rows of pixels (NCHW) or (n, y, x) rows of phase channels (NHWC)."""
        n, cp, h, w = x.shape
        rows, cols = (n * h * w, cp) if channels_last else (n * cp, h * w)
        block_r, block_l = _phase_tiles(rows, cols, x.device)
        c = cp // (scale * scale)
        return cls(x.device, rows, cols, block_r, block_l, scale, channels_last, n, c, h, w, _acc_dtype(x.dtype))

    @property
    def count(self) -> int:
        """Values per output channel: what the batch statistics average over."""
        return self.rows * self.cols // max(self.c, 1)

    @property
    def partials_per_channel(self) -> int:
        """P = G * s*s partials per channel, one per phase and group: NCHW G = n_col_programs * N
        (a partial per row of each tile), NHWC G = n_row_programs (one per column)."""
        groups = self.n_row_programs if self.channels_last else self.n_col_programs * self.n
        return groups * self.scale * self.scale

    def partials(self) -> torch.Tensor:
        """A buffer ``[C, P]`` for one per-tile partial of each (row or column segment, channel)."""
        return alloc((self.c, self.partials_per_channel), self.acc, self.device)

    @property
    def slots(self) -> tuple[int, int, int]:
        """What a kernel needs to place its partials (``_partial_slots``): C, the column program count, P."""
        return self.c, self.n_col_programs, self.partials_per_channel

    def launch_tiles(
        self, kernel: Any, tensors: tuple[torch.Tensor, ...], scalars: tuple[Any, ...], *, wrap: bool, **flags: Any
    ) -> None:
        """A kernel over the tiles of [R, L]; its arguments: ``tensors``, ``R, L``, ``scalars``."""
        meta = dict(CL=self.channels_last, **self.tile_meta, **flags)
        launch(OP, kernel, self.grid, *tensors, self.rows, self.cols, *scalars, device=self.device, wrap=wrap, **meta)

    def launch_shuffled(
        self, kernel: Any, tensors: tuple[torch.Tensor, ...], scalars: tuple[Any, ...], *, wrap: bool, **flags: Any
    ) -> None:
        """The apply kernel or a backward kernel, which address the shuffled output: after R, L
        come ``C, H, W``, the column program count, then ``scalars`` (the backward partials' P;
        eps, the slope; the kernel's own)."""
        geometry = (self.c, self.h, self.w, self.n_col_programs)
        self.launch_tiles(kernel, tensors, (*geometry, *scalars), wrap=wrap, S=self.scale, **flags)

    @property
    def merge_tile(self) -> tuple[int, int]:
        """(BLOCK_C, BLOCK_P) of the merge kernels (:func:`_merge_tiles`)."""
        return _merge_tiles(self.partials_per_channel, self.c, self.device, self.acc)

    @property
    def merge_grid(self) -> tuple[int]:
        """A program per block of BLOCK_C channels (one channel on a GPU)."""
        return (cdiv(self.c, self.merge_tile[0]),)

    def launch_merge(
        self, kernel: Any, tensors: tuple[torch.Tensor, ...], scalars: tuple[Any, ...] = (), *, wrap: bool, **flags: Any
    ) -> None:
        """A kernel that merges each channel's partials (a row of ``[C, P]``), a program per block of
        channels; its arguments: ``tensors``, ``P, C``, ``scalars``."""
        block_c, block_p = self.merge_tile
        sizes = (self.partials_per_channel, self.c)
        meta = dict(BLOCK_C=block_c, BLOCK_P=block_p, **flags)
        launch(OP, kernel, self.merge_grid, *tensors, *sizes, *scalars, device=self.device, wrap=wrap, **meta)


def bn_shuffle_stats(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    scale: int,
    momentum: float,
    eps: float,
    input_bias: torch.Tensor | None = None,
    *,
    _wrap: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch statistics (mean, invstd) per output channel of the phase tensor ``x``, in the
    accumulation dtype; updates ``running_mean``/``running_var`` in place when given, as the
    statistics of ``x + input_bias`` when that is given (the batch statistics are ``x``'s: a per-
    channel constant changes the mean only, and the normalised output not at all). No autograd."""
    check_float(OP, x=x)
    x, cl = _dense(x)
    layout = _PhaseLayout.of(x, scale, cl)
    mean = alloc((layout.c,), layout.acc, x.device)
    invstd = alloc((layout.c,), layout.acc, x.device)
    if x.numel() == 0:  # torch: an empty batch gives an empty output and leaves the running stats alone
        mean.zero_()
        invstd.zero_()
        return mean, invstd
    partials = tuple(layout.partials() for _ in range(3))  # count, sum, M2
    layout.launch_tiles(_stats_partials_kernel, (x, *partials), layout.slots, wrap=_wrap, S=layout.scale)
    update = running_mean is not None
    running = (running_mean, running_var) if update else (mean, mean)  # never touched unless UPDATE_RUNNING
    merge_scalars = (float(eps), float(momentum))
    has_bias = update and input_bias is not None
    tensors = (*partials, mean, invstd, *running, input_bias if has_bias else mean)  # read only if INPUT_BIAS
    flags = dict(UPDATE_RUNNING=update, INPUT_BIAS=has_bias)
    layout.launch_merge(_stats_merge_kernel, tensors, merge_scalars, wrap=_wrap, **flags)
    return mean, invstd


def bn_leaky_relu_shuffle_apply(
    x: torch.Tensor,
    mean: torch.Tensor,
    stat: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    scale: int,
    negative_slope: float,
    eps: float,
    from_var: bool,
    *,
    out: torch.Tensor | None = None,
    _wrap: bool = False,
) -> torch.Tensor:
    """The apply pass (no autograd): ``stat`` is invstd, or the running variance when ``from_var``.
    ``out``, if given, must have the output's shape, dtype and strides (tests poison it)."""
    check_float(OP, x=x)
    x, cl = _dense(x)
    shape, strides = _out_shape_strides(x, scale, cl)
    if out is None:
        out = alloc(shape, x.dtype, x.device, strides)
    elif tuple(out.shape) != shape or out.stride() != strides or out.dtype != x.dtype or out.device != x.device:
        raise ValueError(f"{OP}: out must have shape {shape}, strides {strides} and x's dtype and device")
    if x.numel() == 0:
        return out
    tensors = (x, out, mean, stat, weight, bias)
    scalars = (float(eps), float(negative_slope))
    layout = _PhaseLayout.of(x, scale, cl)
    layout.launch_shuffled(_bn_leaky_relu_shuffle_fwd_kernel, tensors, scalars, wrap=_wrap, FROM_VAR=bool(from_var))
    return out


def bn_leaky_relu_shuffle_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    mean: torch.Tensor,
    stat: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    scale: int,
    negative_slope: float,
    eps: float,
    training: bool,
    from_var: bool,
    *,
    grad_x_out: torch.Tensor | None = None,
    _wrap: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x in x's phase layout, grad_gamma, grad_beta) from the output's gradient."""
    check_float(OP, x=x)
    x, cl = _dense(x)
    device = x.device
    shape, strides = _out_shape_strides(x, scale, cl)
    if grad_y.stride() != strides or grad_y.dtype != x.dtype:  # e.g. the gradient arrives in the other layout
        grad_y = torch.empty_strided(shape, strides, dtype=x.dtype, device=device).copy_(grad_y)
    if grad_x_out is None:
        grad_x_out = alloc(x.shape, x.dtype, device, x.stride())
    elif grad_x_out.shape != x.shape or grad_x_out.stride() != x.stride():
        raise ValueError(f"{OP}: grad_x_out must have the shape and strides of x")
    grad_gamma = alloc(weight.shape, weight.dtype, device)
    grad_beta = alloc(bias.shape, bias.dtype, device)
    if x.numel() == 0:
        grad_gamma.zero_()
        grad_beta.zero_()
        return grad_x_out, grad_gamma, grad_beta
    layout = _PhaseLayout.of(x, scale, cl)
    acc = layout.acc
    part_db, part_dg = layout.partials(), layout.partials()
    # one list for both kernels over the tiles: the gradient, the input and the affine map they recompute
    recomputed = (grad_y, x, mean, stat, weight, bias)
    scalars = (float(eps), float(negative_slope))
    shuffled = dict(wrap=_wrap, FROM_VAR=bool(from_var))
    bwd_scalars = (layout.partials_per_channel, *scalars)  # P, then eps and the slope
    layout.launch_shuffled(_bwd_partials_kernel, (*recomputed, part_db, part_dg), bwd_scalars, **shuffled)
    # the sums go straight into the parameter gradients when those have the accumulation dtype
    db = grad_beta if grad_beta.dtype == acc else alloc((layout.c,), acc, device)
    dg = grad_gamma if grad_gamma.dtype == acc else alloc((layout.c,), acc, device)
    layout.launch_merge(_sum_partials_kernel, (part_db, part_dg, db, dg), wrap=_wrap)
    input_grad = (*recomputed, db, dg, grad_x_out)
    training_scalars = (*scalars, 1.0 / layout.count)
    layout.launch_shuffled(_bwd_input_kernel, input_grad, training_scalars, TRAINING=bool(training), **shuffled)
    if dg is not grad_gamma:
        grad_gamma.copy_(dg)
        grad_beta.copy_(db)
    return grad_x_out, grad_gamma, grad_beta


# ------------------------------------------------------------------------------------------------
# Autograd
# ------------------------------------------------------------------------------------------------
class BNLeakyReLUShuffleFunction(torch.autograd.Function):
    """The apply pass with its backward, for CPU (interpreter) and a torch without ``triton_op``.

    Differentiates through the batch statistics in training mode (``mean``/``stat`` must be the
    statistics of ``x``; they get no gradient of their own)."""

    @staticmethod
    def forward(ctx, x, mean, stat, weight, bias, scale, negative_slope, eps, training, from_var):
        y = bn_leaky_relu_shuffle_apply(x, mean, stat, weight, bias, scale, negative_slope, eps, from_var)
        ctx.save_for_backward(x, mean, stat, weight, bias)
        ctx.args = (scale, negative_slope, eps, training, from_var)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, mean, stat, weight, bias = ctx.saved_tensors
        gx, gg, gb = bn_leaky_relu_shuffle_backward(grad_y, x, mean, stat, weight, bias, *ctx.args)
        return gx, None, None, gg, gb, None, None, None, None, None


_CUSTOM_OP = False
if triton_ops_registrable():
    # What torch.compile and CUDA graphs see on a GPU (kernels/bias_act.py explains why).
    @torch.library.triton_op("kernels::bn_shuffle_stats", mutates_args=("running_mean", "running_var"))
    def _bn_shuffle_stats_op(
        x: torch.Tensor,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        scale: int,
        momentum: float,
        eps: float,
        input_bias: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return bn_shuffle_stats(x, running_mean, running_var, scale, momentum, eps, input_bias, _wrap=True)

    @torch.library.triton_op("kernels::bn_leaky_relu_shuffle", mutates_args=())
    def _bn_leaky_relu_shuffle_op(
        x: torch.Tensor,
        mean: torch.Tensor,
        stat: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        scale: int,
        negative_slope: float,
        eps: float,
        training: bool,
        from_var: bool,
    ) -> torch.Tensor:
        return bn_leaky_relu_shuffle_apply(
            x, mean, stat, weight, bias, scale, negative_slope, eps, from_var, _wrap=True
        )

    @torch.library.triton_op("kernels::bn_leaky_relu_shuffle_backward", mutates_args=())
    def _bn_leaky_relu_shuffle_backward_op(
        grad_y: torch.Tensor,
        x: torch.Tensor,
        mean: torch.Tensor,
        stat: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        scale: int,
        negative_slope: float,
        eps: float,
        training: bool,
        from_var: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return bn_leaky_relu_shuffle_backward(
            grad_y, x, mean, stat, weight, bias, scale, negative_slope, eps, training, from_var, _wrap=True
        )

    def _op_setup_context(ctx, inputs, output) -> None:
        x, mean, stat, weight, bias, scale, negative_slope, eps, training, from_var = inputs
        ctx.save_for_backward(x, mean, stat, weight, bias)
        ctx.args = (scale, negative_slope, eps, training, from_var)

    def _op_backward(ctx, grad_y):
        x, mean, stat, weight, bias = ctx.saved_tensors
        gx, gg, gb = torch.ops.kernels.bn_leaky_relu_shuffle_backward(grad_y, x, mean, stat, weight, bias, *ctx.args)
        return gx, None, None, gg, gb, None, None, None, None, None

    _bn_leaky_relu_shuffle_op.register_autograd(_op_backward, setup_context=_op_setup_context)
    _CUSTOM_OP = True


# ------------------------------------------------------------------------------------------------
# Reference and entry point
# ------------------------------------------------------------------------------------------------
def _check(  # noqa: C901  (a list of independent one-line input checks, each with its own message)
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    negative_slope: float,
    scale: int,
) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"{OP}: scale must be an integer >= 1, got {scale!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{OP}: x must be a phase tensor [N, scale*scale*C, H, W], got {shape}")
    if x.shape[1] % (scale * scale):
        raise ValueError(f"{OP}: x has {x.shape[1]} channels, not a multiple of scale**2 = {scale * scale}")
    c = x.shape[1] // (scale * scale)
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if t is None and name in ("weight", "bias"):
            raise ValueError(f"{OP}: {name} (the batch norm's affine parameters) is required")
        if t is not None and (not isinstance(t, torch.Tensor) or t.shape != (c,)):
            raise ValueError(
                f"{OP}: {name} must have shape [{c}] (one value per output channel), got "
                f"{tuple(t.shape) if isinstance(t, torch.Tensor) else t!r}"
            )
        if t is not None:
            if t.dtype not in FLOAT_DTYPES:
                raise TypeError(f"{OP}: {name} must be floating point, got {t.dtype}")
            check_same_device(OP, x, **{name: t})
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{OP}: x must be floating point, got {x.dtype}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{OP}: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError(f"{OP}: eval mode reads the running statistics; none were given")
    for name, v in (("momentum", momentum), ("eps", eps), ("negative_slope", negative_slope)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            raise TypeError(f"{OP}: {name} must be a finite number, got {v!r}")
    if not 0 <= momentum <= 1 or not eps > 0:
        raise ValueError(f"{OP}: momentum must be in [0, 1] and eps > 0, got {momentum!r} and {eps!r}")
    if training and x.numel() and x.numel() // c == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size "
            f"{torch.Size((x.shape[0], c, x.shape[2] * scale, x.shape[3] * scale))}"
        )


def bn_leaky_relu_shuffle_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    negative_slope: float,
    scale: int = 2,
) -> torch.Tensor:
    """The eager math: ``pixel_shuffle``, then ``F.batch_norm`` and ``F.leaky_relu`` (what
    ``BatchNorm2d`` + ``LeakyReLU`` compute on the shuffled tensor)."""
    _check(x, weight, bias, running_mean, running_var, training, momentum, eps, negative_slope, scale)
    y = F.pixel_shuffle(x, scale) if scale > 1 else x
    y = F.batch_norm(y, running_mean, running_var, weight, bias, training, momentum, eps)
    # in place on batch_norm's fresh output saves a pass; torch's in-place leaky_relu backward
    # refuses negative slopes (it reads the output), so those take the copy
    return F.leaky_relu(y, negative_slope, inplace=negative_slope >= 0)


def bn_leaky_relu_shuffle(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
    negative_slope: float = 0.2,
    scale: int = 2,
    impl: str | None = None,
    input_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``leaky_relu(batch_norm(pixel_shuffle(x, scale)))`` from the phase tensor ``x``.

    ``x``: ``[N, scale*scale*C, H, W]`` (NCHW or channels_last; the output has the same memory
    format). ``weight``/``bias``: the batch norm's gamma/beta ``[C]``. Training mode uses the batch
    statistics and updates ``running_mean``/``running_var`` (if given) in place; eval mode reads
    them. Differentiable in x, weight and bias. impl: 'triton', 'ref' or None (Triton where it can
    run, see ``kernels._dispatch.resolve_impl``).

    ``input_bias`` (training mode only): the per-channel bias ``[C]`` of the convolution before,
    left out of it because batch statistics cancel it exactly (the output is that of ``x +
    input_bias``, without the pass that adds it). It still enters the running mean (folded into
    the merge kernel's update), so eval mode, which reads the running statistics, needs it in the
    convolution as before. Its gradient is exactly zero, its true value (it is connected, so an
    optimizer steps it as it would the noise eager autograd gives it).
    """
    _check(x, weight, bias, running_mean, running_var, training, momentum, eps, negative_slope, scale)
    _check_input_bias(x, input_bias, training, scale)
    if resolve_impl(impl, x.device, x.dtype) == "ref":
        if input_bias is not None:  # the definition: the bias added back (its gradient stays the exact zero)
            x = x + input_bias.detach().repeat_interleave(scale * scale).view(1, -1, 1, 1).to(x.dtype)
        y = bn_leaky_relu_shuffle_reference(
            x, weight, bias, running_mean, running_var, training, momentum, eps, negative_slope, scale
        )
        return _with_zero_gradient(y, input_bias)
    check_float(OP, x=x)
    registered = x.is_cuda and _CUSTOM_OP
    if training:
        bias_in = None if input_bias is None else input_bias.detach()
        stats_args = (x.detach(), running_mean, running_var, scale, float(momentum), float(eps), bias_in)
        if registered:
            mean, stat = torch.ops.kernels.bn_shuffle_stats(*stats_args)
        else:
            mean, stat = bn_shuffle_stats(*stats_args)
        from_var = False
    else:
        mean, stat, from_var = running_mean, running_var, True
    args = (x, mean, stat, weight, bias, scale, float(negative_slope), float(eps), bool(training), from_var)
    if registered:
        return _with_zero_gradient(torch.ops.kernels.bn_leaky_relu_shuffle(*args), input_bias)
    return _with_zero_gradient(BNLeakyReLUShuffleFunction.apply(*args), input_bias)


def _check_input_bias(x: torch.Tensor, input_bias: torch.Tensor | None, training: bool, scale: int) -> None:
    if input_bias is None:
        return
    if not training:
        raise ValueError(f"{OP}: input_bias is for training mode (eval reads running statistics that include it)")
    c = x.shape[1] // (scale * scale)
    if not isinstance(input_bias, torch.Tensor) or input_bias.shape != (c,) or input_bias.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{OP}: input_bias must be a float tensor of shape [{c}] (one value per output channel)")
    check_same_device(OP, x, input_bias=input_bias)


class _ZeroGradient(torch.autograd.Function):
    """``y`` unchanged, and ``bias`` connected to it with its exact gradient: zero (batch norm
    cancels a per-channel constant added before it)."""

    @staticmethod
    def forward(y, bias):
        return y.view_as(y)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        bias = inputs[1]
        ctx.bias_meta = (bias.shape, bias.dtype, bias.device)

    @staticmethod
    def backward(ctx, grad):
        shape, dtype, device = ctx.bias_meta
        return grad, torch.zeros(shape, dtype=dtype, device=device)


def _with_zero_gradient(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if bias is None or not (torch.is_grad_enabled() and bias.requires_grad):
        return y
    return _ZeroGradient.apply(y, bias)
