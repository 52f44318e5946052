"""Per-channel bias + LeakyReLU in one pass, and its backward, as Triton kernels.

The critic runs each convolution without its bias (so cuDNN needs no epilogue) and then this op:
``y = leaky_relu(x + bias[channel], negative_slope)``. Eagerly that is two memory passes forward
and three backward (activation grad, then a separate channel reduction for the bias grad); here
it is one pass forward and one pass plus a tiny reduction backward.

Layout. Every dense input is seen as a row-major matrix ``[R, L]`` in memory order:

* contiguous ``[N, C, *spatial]`` (NCHW): ``R = N*C`` rows of ``L = H*W``; the channel is ``row % C``;
* channels_last ``[N, C, H, W]`` and 2-D ``[N, C]``: ``R = N*H*W`` rows of ``L = C``; the channel is
  the column.

Any other layout (a transposed or sliced view) is made contiguous first, and the output then
has the contiguous layout. The output always has exactly the (dense) strides of the input it
was computed from, so channels_last stays channels_last.

Saved for backward. For ``negative_slope >= 0`` the sign of the output equals the sign of the
pre-activation (``y > 0`` iff ``x + b > 0``; at ``slope == 0`` a non-positive pre-activation gives
``y == 0`` and the gradient ``0 == slope * g`` either way), so the output alone is saved and the
pre-activation is never stored. For ``negative_slope < 0`` the output's sign no longer tells the
branch, so the input is saved and ``x + b`` recomputed in the backward kernel. ``slope == 1`` is the
identity and works unchanged. The derivative at exactly ``x + b == 0`` is taken as ``slope``, as
torch's ``leaky_relu`` does. Inside the kernels the slope is a 32-bit float argument (Triton's
scalar float type), which matters only for float64 inputs.

Bias gradient, deterministically. Each program of the backward kernel writes the per-channel
sums of its tile to a small partial buffer, laid out channel-major (``[C, P]``: each channel's P
partials contiguous), and a second kernel sums each channel's row in a fixed order: a program per
channel on a GPU (``kernels._launch.row_reduction_tile``), each reading its row coalesced, so the
channels are summed side by side on as many SMs instead of by one or two programs looping over
all of them with strided reads. Float atomics would save that second launch but make
``grad_bias`` differ in its last bits from run to run (the order of additions depends on
scheduling), which would make the fused trainer irreproducible and its CUDA-graph replays
impossible to compare bit-for-bit with the uncaptured path. The partial buffer holds
``R*L / BLOCK_L`` (NCHW) or ``R*L / BLOCK_R`` (NHWC) values: a few hundred KB at most here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from kernels._buffers import FLOAT_DTYPES, alloc
from kernels._dispatch import resolve_impl, triton_importable, triton_ops_registrable
from kernels._launch import MatrixTiles, cdiv, check_float, check_same_device, launch, row_reduction_tile, tile_2d

__all__ = [
    "BiasLeakyReLUFunction",
    "bias_leaky_relu",
    "bias_leaky_relu_backward",
    "bias_leaky_relu_forward",
    "bias_leaky_relu_reference",
]


OP = "bias_leaky_relu"

# ------------------------------------------------------------------------------------------------
# Triton kernels
# ------------------------------------------------------------------------------------------------
if triton_importable():
    import triton
    import triton.language as tl

    @triton.jit
    def _row_major_tile(R, L, n_col_programs, WIDE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr):
        """This program's tile of the row-major [R, L] matrix, for both elementwise kernels: a 1-D
        grid (kernels/_launch.py) split into (row tile, column tile); then rows, cols, their masks,
        the tile's mask and its element offsets. WIDE: rows or columns reach 2**31, so the tile
        starts are computed in int64."""
        pid = tl.program_id(0)
        if WIDE:
            pid = pid.to(tl.int64)
        pid_r = pid // n_col_programs
        pid_l = pid % n_col_programs
        rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
        row_mask = rows < R
        col_mask = cols < L
        mask = row_mask[:, None] & col_mask[None, :]
        offs = rows[:, None].to(tl.int64) * L + cols[None, :]
        return pid_r, pid_l, rows, cols, row_mask, col_mask, mask, offs

    @triton.jit
    def _channel_bias(b_ptr, rows, cols, row_mask, col_mask, C, CHANNEL_ON_ROWS: tl.constexpr):
        """The bias of each element's channel, broadcastable against the tile."""
        if CHANNEL_ON_ROWS:
            b = tl.load(b_ptr + rows % C, mask=row_mask, other=0.0)[:, None]
        else:
            b = tl.load(b_ptr + cols, mask=col_mask, other=0.0)[None, :]
        return b

    @triton.jit
    def _bias_leaky_relu_fwd_kernel(
        x_ptr,
        b_ptr,
        y_ptr,
        R,
        L,
        C,
        n_col_programs,
        negative_slope,
        CHANNEL_ON_ROWS: tl.constexpr,
        UPCAST: tl.constexpr,
        WIDE: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_L: tl.constexpr,
    ):
        _, _, rows, cols, row_mask, col_mask, mask, offs = _row_major_tile(R, L, n_col_programs, WIDE, BLOCK_R, BLOCK_L)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        b = _channel_bias(b_ptr, rows, cols, row_mask, col_mask, C, CHANNEL_ON_ROWS)
        if UPCAST:
            x = x.to(tl.float32)
        z = x + b.to(x.dtype)
        y = tl.where(z > 0, z, z * negative_slope)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _channel_partial_slots(pid_r, pid_l, cols, R, C, P, CHANNEL_ON_ROWS: tl.constexpr, BLOCK_R: tl.constexpr):
        """Where this tile's sums go in the channel-major buffer ``[C, P]``. NCHW: row ``n*C + c``
        of column tile ``j`` is partial ``j*N + n`` of channel ``c``; NHWC and 2-D: column ``c`` of
        row tile ``i`` is partial ``i`` of channel ``c``. Each channel's partials are contiguous, so
        the sum reads them coalesced; the scattered side is these stores, one value per row or
        column of a tile.

        NCHW splits the tile's rows ``r0 + i`` into (n, c) with one division of the tile start and
        per row at most an int32 one: a 64-bit division per row (WIDE) made ptxas spill (tests/aot)."""
        if CHANNEL_ON_ROWS:
            r0 = pid_r * BLOCK_R
            n0 = r0 // C
            c0 = r0 - n0 * C
            i = tl.arange(0, BLOCK_R)
            if C < BLOCK_R:  # a tile spans several samples; c0 + i < 2 * BLOCK_R fits int32
                dn = ((c0.to(tl.int32) + i) // C).to(tl.int32)
            else:  # the channel wraps at most once in the tile
                dn = (i >= C - c0).to(tl.int32)
            c = c0 + i - dn * C
            return c.to(tl.int64) * P + pid_l.to(tl.int64) * (R // C) + (n0 + dn)
        else:
            return cols.to(tl.int64) * P + pid_r

    @triton.jit
    def _leaky_relu_grad_and_channel_partials_kernel(
        g_ptr,
        s_ptr,
        b_ptr,
        gx_ptr,
        part_ptr,
        R,
        L,
        C,
        n_col_programs,
        P,
        negative_slope,
        SAVED_IS_INPUT: tl.constexpr,
        CHANNEL_ON_ROWS: tl.constexpr,
        UPCAST: tl.constexpr,
        WIDE: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_L: tl.constexpr,
    ):
        """grad_x of the tile, and its per-channel sums of grad_x stored channel-major in the
        ``[C, P]`` partials buffer (:func:`_channel_partial_slots`)."""
        pid_r, pid_l, rows, cols, row_mask, col_mask, mask, offs = _row_major_tile(
            R, L, n_col_programs, WIDE, BLOCK_R, BLOCK_L
        )
        g = tl.load(g_ptr + offs, mask=mask, other=0.0)
        s = tl.load(s_ptr + offs, mask=mask, other=0.0)
        if UPCAST:
            g = g.to(tl.float32)
            s = s.to(tl.float32)
        if SAVED_IS_INPUT:  # negative slope: the branch is the sign of x + b, recomputed here
            s = s + _channel_bias(b_ptr, rows, cols, row_mask, col_mask, C, CHANNEL_ON_ROWS).to(s.dtype)
        gx = tl.where(s > 0, g, g * negative_slope)
        tl.store(gx_ptr + offs, gx.to(gx_ptr.dtype.element_ty), mask=mask)
        gx = gx.to(part_ptr.dtype.element_ty)
        if CHANNEL_ON_ROWS:  # one sum per (sample, channel) row of this tile
            sums, seg_mask = tl.sum(gx, axis=1), row_mask
        else:  # one sum per channel column
            sums, seg_mask = tl.sum(gx, axis=0), col_mask
        # the slots once the tile's values are dead, as kernels/bn_act.py's partials kernels do
        slots = _channel_partial_slots(pid_r, pid_l, cols, R, C, P, CHANNEL_ON_ROWS, BLOCK_R)
        tl.store(part_ptr + slots, sums, mask=seg_mask)

    @triton.jit
    def _channel_sum_kernel(part_ptr, out_ptr, P, C, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """out[c] = sum_p part[c, p], always in the same order (the deterministic second stage).

        A program per channel on a GPU (``row_reduction_tile``; channels grouped only when P is
        short): a channel's partials are one contiguous row of ``[C, P]``, read coalesced in
        BLOCK_P lanes, each lane summing its chunk's values in order, then a tree across lanes."""
        chans = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        chan_mask = chans < C
        acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=part_ptr.dtype.element_ty)
        for p0 in range(0, P, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            mask = chan_mask[:, None] & (p < P)[None, :]
            acc += tl.load(part_ptr + chans[:, None].to(tl.int64) * P + p[None, :], mask=mask, other=0.0)
        tl.store(out_ptr + chans, tl.sum(acc, axis=1).to(out_ptr.dtype.element_ty), mask=chan_mask)


# ------------------------------------------------------------------------------------------------
# Host launchers
# ------------------------------------------------------------------------------------------------
def _matrix_view(x: torch.Tensor) -> tuple[torch.Tensor, int, int, bool]:
    """Return (dense x, R, L, channel_on_rows) as described in the module docstring."""
    c = x.shape[1]
    if x.dim() == 2:
        x = x.contiguous()
        return x, x.shape[0], c, False
    if x.is_contiguous():
        rows = x.shape[0] * c
        return x, rows, (x.numel() // rows) if rows else 0, True
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x, (x.numel() // c) if c else 0, c, False
    x = x.contiguous()
    rows = x.shape[0] * c
    return x, rows, (x.numel() // rows) if rows else 0, True


@dataclass(frozen=True)
class _MatrixTiles(MatrixTiles):
    """The tiling of x seen as the matrix [R, L] (module doc) that both elementwise kernels walk:
    they share the grid, the index width, the geometry after their tensors and the layout flags,
    built here once, so that a launch names only its own tensors and flags."""

    channels: int
    channel_on_rows: bool
    upcast: bool

    @classmethod
    def of(cls, x: torch.Tensor, rows: int, cols: int, channel_on_rows: bool) -> _MatrixTiles:
        block_r, block_l = tile_2d(rows, cols, x.device)
        return cls(x.device, rows, cols, block_r, block_l, x.shape[1], channel_on_rows, _upcast(x.dtype))

    def launch_tiles(
        self, kernel: Any, tensors: tuple[torch.Tensor, ...], scalars: tuple[Any, ...], *, wrap: bool, **flags: bool
    ) -> None:
        """``kernel(*tensors, R, L, C, n_col_programs, *scalars)`` over the tiles; ``scalars``: the
        kernel's own (the backward's P), then the slope."""
        geometry = (self.rows, self.cols, self.channels, self.n_col_programs)
        meta = dict(CHANNEL_ON_ROWS=self.channel_on_rows, UPCAST=self.upcast, **self.tile_meta, **flags)
        launch(OP, kernel, self.grid, *tensors, *geometry, *scalars, device=self.device, wrap=wrap, **meta)

    @property
    def partials_per_channel(self) -> int:
        """P, the backward's partial sums per channel: NCHW a partial per (sample, column tile)
        (``n_col_programs * N``), NHWC and 2-D one per row tile."""
        return self.n_col_programs * (self.rows // self.channels) if self.channel_on_rows else self.n_row_programs

    @property
    def sum_tile(self) -> tuple[int, int]:
        """(BLOCK_C, BLOCK_P) of :func:`_channel_sum_kernel`: a channel per program on a GPU
        (:func:`kernels._launch.row_reduction_tile`)."""
        return row_reduction_tile(self.channels, self.partials_per_channel, self.device)

    @property
    def sum_grid(self) -> tuple[int]:
        """A program per block of BLOCK_C channels (one channel on a GPU)."""
        return (cdiv(self.channels, self.sum_tile[0]),)

    def launch_channel_sum(self, partials: torch.Tensor, out: torch.Tensor, *, wrap: bool) -> None:
        """``out[c] = sum_p partials[c, p]`` in a fixed order (:func:`_channel_sum_kernel`)."""
        block_c, block_p = self.sum_tile
        sizes = (self.partials_per_channel, self.channels)
        meta = dict(BLOCK_C=block_c, BLOCK_P=block_p)
        launch(OP, _channel_sum_kernel, self.sum_grid, partials, out, *sizes, device=self.device, wrap=wrap, **meta)


def _check(x: torch.Tensor, bias: torch.Tensor, negative_slope: float) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(bias, torch.Tensor):
        raise TypeError("bias_leaky_relu: x and bias must be tensors")
    if x.dim() < 2:
        raise ValueError(f"bias_leaky_relu: x must have a channel dimension (>= 2 dims), got shape {tuple(x.shape)}")
    if bias.dim() != 1 or bias.shape[0] != x.shape[1]:
        raise ValueError(
            f"bias_leaky_relu: bias must have shape [{x.shape[1]}] (one value per channel of x), "
            f"got {tuple(bias.shape)}"
        )
    if x.dtype not in FLOAT_DTYPES or bias.dtype not in FLOAT_DTYPES:
        raise TypeError(f"bias_leaky_relu: x and bias must be floating point, got {x.dtype} and {bias.dtype}")
    check_same_device(OP, x, bias=bias)
    if (
        isinstance(negative_slope, bool)
        or not isinstance(negative_slope, (int, float))
        or negative_slope != negative_slope
    ):
        raise TypeError(f"bias_leaky_relu: negative_slope must be a finite number, got {negative_slope!r}")


def _upcast(dtype: torch.dtype) -> bool:
    return dtype in (torch.float16, torch.bfloat16)


def bias_leaky_relu_forward(
    x: torch.Tensor,
    bias: torch.Tensor,
    negative_slope: float = 0.2,
    *,
    out: torch.Tensor | None = None,
    _wrap: bool = False,
) -> torch.Tensor:
    """Launch the forward kernel (no autograd). ``out``, if given, must match x's shape, dtype and
    dense strides; tests pass a NaN-filled one to prove every element is written."""
    _check(x, bias, negative_slope)
    check_float(OP, x=x)
    x, R, L, on_rows = _matrix_view(x)
    if out is None:
        out = alloc(x.shape, x.dtype, x.device, x.stride())
    elif out.shape != x.shape or out.dtype != x.dtype or out.stride() != x.stride() or out.device != x.device:
        raise ValueError("bias_leaky_relu_forward: out must have the shape, dtype, device and strides of x")
    if x.numel() == 0:
        return out
    tiles = _MatrixTiles.of(x, R, L, on_rows)
    tiles.launch_tiles(_bias_leaky_relu_fwd_kernel, (x, bias.contiguous(), out), (float(negative_slope),), wrap=_wrap)
    return out


def _match_strides(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if t.stride() == like.stride() and t.dtype == like.dtype:
        return t
    return torch.empty_strided(like.shape, like.stride(), dtype=like.dtype, device=like.device).copy_(t)


def bias_leaky_relu_backward(
    grad_y: torch.Tensor,
    saved: torch.Tensor,
    bias: torch.Tensor,
    negative_slope: float,
    saved_is_input: bool,
    *,
    grad_x_out: torch.Tensor | None = None,
    grad_bias_out: torch.Tensor | None = None,
    _wrap: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_bias) from the upstream gradient and the saved output (or, for a negative
    slope, the saved input). The ``*_out`` buffers let tests poison the results."""
    _check(saved, bias, negative_slope)
    check_float(OP, saved=saved)
    saved, R, L, on_rows = _matrix_view(saved)
    grad_y = _match_strides(grad_y, saved)
    if grad_x_out is None:
        grad_x_out = alloc(saved.shape, saved.dtype, saved.device, saved.stride())
    elif grad_x_out.shape != saved.shape or grad_x_out.stride() != saved.stride():
        raise ValueError("bias_leaky_relu_backward: grad_x_out must have the shape and strides of the saved tensor")
    if grad_bias_out is None:
        grad_bias_out = alloc(bias.shape, bias.dtype, bias.device)
    if saved.numel() == 0:
        grad_bias_out.zero_()
        return grad_x_out, grad_bias_out
    tiles = _MatrixTiles.of(saved, R, L, on_rows)
    acc_dtype = torch.float64 if saved.dtype == torch.float64 else torch.float32
    partials = alloc((tiles.channels, tiles.partials_per_channel), acc_dtype, saved.device)  # [C, P]
    tensors = (grad_y, saved, bias.contiguous(), grad_x_out, partials)
    scalars = (tiles.partials_per_channel, float(negative_slope))
    tiles.launch_tiles(
        _leaky_relu_grad_and_channel_partials_kernel, tensors, scalars, wrap=_wrap, SAVED_IS_INPUT=bool(saved_is_input)
    )
    tiles.launch_channel_sum(partials, grad_bias_out, wrap=_wrap)
    return grad_x_out, grad_bias_out


# ------------------------------------------------------------------------------------------------
# Autograd
# ------------------------------------------------------------------------------------------------
class BiasLeakyReLUFunction(torch.autograd.Function):
    """The Triton path for CPU (interpreter) and for a torch without ``torch.library.triton_op``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bias: torch.Tensor, negative_slope: float) -> torch.Tensor:
        y = bias_leaky_relu_forward(x, bias, negative_slope)
        saved_is_input = negative_slope < 0
        ctx.save_for_backward(x if saved_is_input else y, bias)
        ctx.negative_slope = negative_slope
        ctx.saved_is_input = saved_is_input
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        saved, bias = ctx.saved_tensors
        grad_x, grad_bias = bias_leaky_relu_backward(grad_y, saved, bias, ctx.negative_slope, ctx.saved_is_input)
        return grad_x, grad_bias, None


_CUSTOM_OP = False
if triton_ops_registrable():
    # Registered ops are what torch.compile and CUDA graphs see on a GPU: triton_op exposes the
    # kernels to Inductor instead of treating the call as an opaque graph break.
    @torch.library.triton_op("kernels::bias_leaky_relu", mutates_args=())
    def _bias_leaky_relu_op(x: torch.Tensor, bias: torch.Tensor, negative_slope: float) -> torch.Tensor:
        return bias_leaky_relu_forward(x, bias, negative_slope, _wrap=True)

    @torch.library.triton_op("kernels::bias_leaky_relu_backward", mutates_args=())
    def _bias_leaky_relu_backward_op(
        grad_y: torch.Tensor, saved: torch.Tensor, bias: torch.Tensor, negative_slope: float, saved_is_input: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return bias_leaky_relu_backward(grad_y, saved, bias, negative_slope, saved_is_input, _wrap=True)

    def _op_setup_context(ctx, inputs, output) -> None:
        x, bias, negative_slope = inputs
        ctx.saved_is_input = negative_slope < 0
        ctx.negative_slope = negative_slope
        ctx.save_for_backward(x if ctx.saved_is_input else output, bias)

    def _op_backward(ctx, grad_y: torch.Tensor):
        saved, bias = ctx.saved_tensors
        grad_x, grad_bias = torch.ops.kernels.bias_leaky_relu_backward(
            grad_y, saved, bias, ctx.negative_slope, ctx.saved_is_input
        )
        return grad_x, grad_bias, None

    _bias_leaky_relu_op.register_autograd(_op_backward, setup_context=_op_setup_context)
    _CUSTOM_OP = True


# ------------------------------------------------------------------------------------------------
# Reference and entry point
# ------------------------------------------------------------------------------------------------
def bias_leaky_relu_reference(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2) -> torch.Tensor:
    """The eager math the kernels must match: a broadcast add, then torch's leaky_relu."""
    _check(x, bias, negative_slope)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    # in place on the fresh sum saves an allocation and a pass; torch's in-place leaky_relu
    # backward (which reads the output) refuses negative slopes, so those take the copy
    return F.leaky_relu(x + bias.to(x.dtype).view(shape), negative_slope, inplace=negative_slope >= 0)


def bias_leaky_relu(
    x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2, impl: str | None = None
) -> torch.Tensor:
    """``leaky_relu(x + bias[channel])``, channel = dim 1; differentiable in x and bias.

    impl: 'triton', 'ref' or None (Triton where it can run). On CUDA the Triton path goes through
    the registered ``torch.ops.kernels.bias_leaky_relu`` (torch.compile / CUDA-graph friendly); on
    CPU under the interpreter, and on a torch without ``triton_op``, through
    :class:`BiasLeakyReLUFunction`.
    """
    _check(x, bias, negative_slope)
    if resolve_impl(impl, x.device, x.dtype) == "ref":
        return bias_leaky_relu_reference(x, bias, negative_slope)
    check_float(OP, x=x)
    if x.is_cuda and _CUSTOM_OP:
        return torch.ops.kernels.bias_leaky_relu(x, bias, float(negative_slope))
    return BiasLeakyReLUFunction.apply(x, bias, float(negative_slope))
