"""The critic's last linear layer fused with the Wasserstein losses, forward and backward.

The critic sees real and fake images as one batch ``features [N, F]`` (real rows first, ``n_real``
of them). Eagerly, the losses take a matmul, a bias add, two slices, two means, a negation and
an add, and as many kernels again backwards. Here the forward is one kernel that computes each
row's score ``s_i = features_i . w + b`` and per-program partial sums of the real and the fake
scores, plus a one-program kernel that combines the partials into

    d_loss_real = -mean(s[:n_real]),  d_loss_fake = mean(s[n_real:]),  d_loss = d_loss_real + d_loss_fake

(the sign convention of docs/design.md). The op's output is one tensor ``[d_loss, d_loss_real,
d_loss_fake]``; the public functions return its three elements as 0-d tensors, so upstream
gradients on any combination of them arrive as one ``[3]`` gradient. With those upstream grads
``g = (g_d, g_r, g_f)`` every score has the gradient

    c_real = -(g_d + g_r) / n_real  (real rows),   c_fake = (g_d + g_f) / n_fake  (fake rows),

so ``grad_features[i] = c_i * w``, ``grad_w = sum_i c_i * features_i`` and ``grad_b = g_f - g_r``
(``c_real * n_real + c_fake * n_fake``). The backward kernel writes ``grad_features`` and
per-program column partials of ``grad_w``; a second kernel sums the partials in a fixed order
(deterministic, no float atomics: see kernels/bias_act.py for why) and writes ``grad_b``.

The generator's loss ``g_loss = -mean(features @ w.T + b)`` is the same computation with every
row counted as "real": ``n_real = N`` and ``g_loss = d_loss_real``.

Inputs of any float dtype; half types accumulate in float32, float64 in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels._buffers import FLOAT_DTYPES, alloc
from kernels._dispatch import resolve_impl, triton_importable, triton_ops_registrable
from kernels._launch import (
    cdiv,
    check_float,
    check_same_device,
    grid_1d,
    int64_indices,
    interpreted,
    launch,
    next_pow2,
)

__all__ = [
    "WassersteinHeadFunction",
    "wasserstein_critic_head",
    "wasserstein_critic_head_reference",
    "wasserstein_generator_head",
    "wasserstein_generator_head_reference",
    "wasserstein_head_backward",
    "wasserstein_head_forward",
]


OP = "wasserstein head"

# ------------------------------------------------------------------------------------------------
# Triton kernels
# ------------------------------------------------------------------------------------------------
if triton_importable():
    import triton
    import triton.language as tl

    @triton.jit
    def fixed_order_column_sums(part_ptr, cols, col_mask, P, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        """``sum_p part[p, c]`` of a row-major ``[P, C]`` partials buffer for the columns ``cols``, in
        the partials' dtype and in the same order on every run: the deterministic second stage of
        the reductions that avoid float atomics (kernels/bias_act.py explains why). A program's
        rows are contiguous along the features, so its reads are coalesced."""
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=part_ptr.dtype.element_ty)
        for p0 in range(0, P, BLOCK_P):
            rows = p0 + tl.arange(0, BLOCK_P)
            mask = (rows < P)[:, None] & col_mask[None, :]
            acc += tl.load(part_ptr + rows[:, None].to(tl.int64) * C + cols[None, :], mask=mask, other=0.0)
        return tl.sum(acc, axis=0)

    @triton.jit
    def _score_partial_sums_kernel(
        f_ptr,
        w_ptr,
        b_ptr,
        part_ptr,
        N,
        F,
        n_real,
        stride_f,
        WIDE: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_F: tl.constexpr,
    ):
        """part[pid] = (sum of real scores, sum of fake scores) over this program's rows."""
        pid = tl.program_id(0)
        if WIDE:  # rows reach 2**31: the tile start is computed in int64
            pid = pid.to(tl.int64)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        row_mask = rows < N
        acc = tl.zeros([BLOCK_N, BLOCK_F], dtype=part_ptr.dtype.element_ty)
        for f0 in range(0, F, BLOCK_F):
            cols = f0 + tl.arange(0, BLOCK_F)
            col_mask = cols < F
            x = tl.load(
                f_ptr + rows[:, None].to(tl.int64) * stride_f + cols[None, :],
                mask=row_mask[:, None] & col_mask[None, :],
                other=0.0,
            )
            w = tl.load(w_ptr + cols, mask=col_mask, other=0.0)
            acc += x.to(acc.dtype) * w.to(acc.dtype)[None, :]
        b = tl.load(b_ptr).to(acc.dtype)
        scores = tl.sum(acc, axis=1) + b
        is_real = row_mask & (rows < n_real)
        is_fake = row_mask & (rows >= n_real)
        tl.store(part_ptr + 2 * pid, tl.sum(tl.where(is_real, scores, 0.0), axis=0))
        tl.store(part_ptr + 2 * pid + 1, tl.sum(tl.where(is_fake, scores, 0.0), axis=0))

    @triton.jit
    def _wasserstein_losses_kernel(part_ptr, out_ptr, P, n_real, n_fake, HAS_FAKE: tl.constexpr, BLOCK_P: tl.constexpr):
        """One program: out = [d_loss, d_loss_real, d_loss_fake] from the partial sums."""
        acc_real = tl.zeros([BLOCK_P], dtype=part_ptr.dtype.element_ty)
        acc_fake = tl.zeros([BLOCK_P], dtype=part_ptr.dtype.element_ty)
        for p0 in range(0, P, BLOCK_P):
            p = p0 + tl.arange(0, BLOCK_P)
            mask = p < P
            acc_real += tl.load(part_ptr + 2 * p, mask=mask, other=0.0)
            acc_fake += tl.load(part_ptr + 2 * p + 1, mask=mask, other=0.0)
        d_real = -tl.sum(acc_real, axis=0) / n_real
        if HAS_FAKE:
            d_fake = tl.sum(acc_fake, axis=0) / n_fake
        else:
            d_fake = tl.sum(acc_fake, axis=0) * 0.0
        out_ty = out_ptr.dtype.element_ty
        tl.store(out_ptr, (d_real + d_fake).to(out_ty))
        tl.store(out_ptr + 1, d_real.to(out_ty))
        tl.store(out_ptr + 2, d_fake.to(out_ty))

    @triton.jit
    def _score_coefficients(gout_ptr, n_real, n_fake, HAS_FAKE: tl.constexpr, dtype: tl.constexpr):
        g_d = tl.load(gout_ptr).to(dtype)
        g_r = tl.load(gout_ptr + 1).to(dtype)
        g_f = tl.load(gout_ptr + 2).to(dtype)
        c_real = -(g_d + g_r) / n_real
        if HAS_FAKE:
            c_fake = (g_d + g_f) / n_fake
            grad_b = g_f - g_r
        else:
            c_fake = c_real * 0.0
            grad_b = -(g_d + g_r)
        return c_real, c_fake, grad_b

    @triton.jit
    def _head_grad_features_and_weight_partials_kernel(
        f_ptr,
        w_ptr,
        gout_ptr,
        gf_ptr,
        part_ptr,
        N,
        F,
        n_real,
        n_fake,
        stride_f,
        stride_gf,
        n_col_programs,
        HAS_FAKE: tl.constexpr,
        WIDE: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_F: tl.constexpr,
    ):
        pid = tl.program_id(0)  # a 1-D grid (kernels/_launch.py): split into row and column tiles
        if WIDE:  # rows or features reach 2**31: the tile starts are computed in int64
            pid = pid.to(tl.int64)
        pid_n = pid // n_col_programs
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = (pid % n_col_programs) * BLOCK_F + tl.arange(0, BLOCK_F)
        row_mask = rows < N
        col_mask = cols < F
        mask = row_mask[:, None] & col_mask[None, :]
        acc_ty = part_ptr.dtype.element_ty
        c_real, c_fake, _ = _score_coefficients(gout_ptr, n_real, n_fake, HAS_FAKE, acc_ty)
        coef = tl.where(rows < n_real, c_real, c_fake)
        coef = tl.where(row_mask, coef, 0.0)
        w = tl.load(w_ptr + cols, mask=col_mask, other=0.0).to(acc_ty)
        x = tl.load(f_ptr + rows[:, None].to(tl.int64) * stride_f + cols[None, :], mask=mask, other=0.0)
        gf = coef[:, None] * w[None, :]
        tl.store(
            gf_ptr + rows[:, None].to(tl.int64) * stride_gf + cols[None, :], gf.to(gf_ptr.dtype.element_ty), mask=mask
        )
        gw_partial = tl.sum(coef[:, None] * x.to(acc_ty), axis=0)
        tl.store(part_ptr + pid_n.to(tl.int64) * F + cols, gw_partial, mask=col_mask)

    @triton.jit
    def _head_grad_weight_bias_kernel(
        part_ptr,
        gout_ptr,
        gw_ptr,
        gb_ptr,
        P,
        F,
        n_real,
        n_fake,
        HAS_FAKE: tl.constexpr,
        WIDE: tl.constexpr,
        BLOCK_P: tl.constexpr,
        BLOCK_F: tl.constexpr,
    ):
        """grad_w[f] = sum_p part[p, f] in a fixed order; program 0 also writes grad_b."""
        pid = tl.program_id(0)
        if WIDE:  # features reach 2**31: the tile start is computed in int64
            pid = pid.to(tl.int64)
        cols = pid * BLOCK_F + tl.arange(0, BLOCK_F)
        col_mask = cols < F
        sums = fixed_order_column_sums(part_ptr, cols, col_mask, P, F, BLOCK_P, BLOCK_F)
        tl.store(gw_ptr + cols, sums.to(gw_ptr.dtype.element_ty), mask=col_mask)
        _, _, grad_b = _score_coefficients(gout_ptr, n_real, n_fake, HAS_FAKE, part_ptr.dtype.element_ty)
        tl.store(gb_ptr, grad_b.to(gb_ptr.dtype.element_ty), mask=pid == 0)


# ------------------------------------------------------------------------------------------------
# Host launchers
# ------------------------------------------------------------------------------------------------
def _block_sizes(n: int, f: int, device: torch.device) -> dict[str, int]:
    """Tile sizes (powers of two). The interpreter pays per program: few, large tiles there. On a
    GPU at N = 1024, F = 2048 the forward runs 128 programs and the backward 512."""
    if interpreted(device):
        fwd_n = min(next_pow2(n), 64)
        bwd_n = min(next_pow2(n), 64)
        return dict(
            fwd_n=fwd_n,
            fwd_f=min(next_pow2(f), (1 << 16) // fwd_n),
            bwd_n=bwd_n,
            bwd_f=min(next_pow2(f), (1 << 16) // bwd_n),
            red_p=1024,
            red_f=min(next_pow2(f), 4096),
        )
    return dict(
        fwd_n=min(next_pow2(n), 8),
        fwd_f=min(next_pow2(f), 256),
        bwd_n=min(next_pow2(n), 32),
        bwd_f=min(next_pow2(f), 128),
        red_p=64,
        red_f=min(next_pow2(f), 128),
    )


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_real: int, need_fake: bool) -> None:
    if not all(isinstance(t, torch.Tensor) for t in (features, weight, bias)):
        raise TypeError("wasserstein head: features, weight and bias must be tensors")
    if features.dim() != 2:
        raise ValueError(f"wasserstein head: features must be [N, F], got shape {tuple(features.shape)}")
    n, f = features.shape
    if tuple(weight.shape) != (1, f):
        raise ValueError(
            f"wasserstein head: weight must be [1, {f}] (the last linear layer), got {tuple(weight.shape)}"
        )
    if tuple(bias.shape) != (1,):
        raise ValueError(f"wasserstein head: bias must be [1], got {tuple(bias.shape)}")
    for name, t in (("features", features), ("weight", weight), ("bias", bias)):
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"wasserstein head: {name} must be floating point, got {t.dtype}")
    check_same_device(OP, features, weight=weight, bias=bias)
    if isinstance(n_real, bool) or not isinstance(n_real, int):
        raise TypeError(f"wasserstein head: n_real must be an int, got {n_real!r}")
    low, high = (1, n - 1) if need_fake else (1, n)
    if not low <= n_real <= high:
        what = "both the real and the fake part must be non-empty" if need_fake else "the batch must not be empty"
        raise ValueError(f"wasserstein head: n_real={n_real} with {n} rows ({what})")


def _rows_dense(features: torch.Tensor) -> torch.Tensor:
    return features if features.stride(1) == 1 or features.shape[1] <= 1 else features.contiguous()


def wasserstein_head_forward(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    n_real: int,
    *,
    out: torch.Tensor | None = None,
    _wrap: bool = False,
) -> torch.Tensor:
    """Launch the forward kernels (no autograd): ``[d_loss, d_loss_real, d_loss_fake]`` as one
    ``[3]`` tensor. ``n_real == N`` (no fake rows) gives ``[-mean(s), -mean(s), 0]``, the
    generator's case. ``out`` lets tests pass a NaN-filled buffer."""
    _check(features, weight, bias, n_real, need_fake=False)
    check_float(OP, features=features)
    features = _rows_dense(features)
    n, f = features.shape
    if out is None:
        out = alloc((3,), features.dtype, features.device)
    elif tuple(out.shape) != (3,) or out.dtype != features.dtype or out.device != features.device:
        raise ValueError("wasserstein_head_forward: out must be a [3] tensor of the features' dtype and device")
    blocks = _block_sizes(n, f, features.device)
    block_n, block_f = blocks["fwd_n"], blocks["fwd_f"]
    device = features.device
    grid_n = cdiv(n, block_n)
    partial = alloc((grid_n, 2), _acc_dtype(features.dtype), device)
    launch(
        OP,
        _score_partial_sums_kernel,
        (grid_n,),
        features,
        weight.reshape(-1).contiguous(),
        bias.contiguous(),
        partial,
        n,
        f,
        n_real,
        features.stride(0),
        device=device,
        wrap=_wrap,
        WIDE=int64_indices(n + block_n),
        BLOCK_N=block_n,
        BLOCK_F=block_f,
    )
    block_p = min(next_pow2(grid_n), blocks["red_p"])
    launch(
        OP,
        _wasserstein_losses_kernel,
        (1,),
        partial,
        out,
        grid_n,
        n_real,
        n - n_real,
        device=device,
        wrap=_wrap,
        HAS_FAKE=n > n_real,
        BLOCK_P=block_p,
    )
    return out


def wasserstein_head_backward(
    grad_out: torch.Tensor,
    features: torch.Tensor,
    weight: torch.Tensor,
    n_real: int,
    *,
    bias_dtype: torch.dtype | None = None,
    grad_features_out: torch.Tensor | None = None,
    grad_weight_out: torch.Tensor | None = None,
    grad_bias_out: torch.Tensor | None = None,
    _wrap: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_features, grad_weight, grad_bias) from the ``[3]`` upstream gradient of
    ``[d_loss, d_loss_real, d_loss_fake]``; the ``*_out`` buffers let tests poison the results."""
    features = _rows_dense(features)
    n, f = features.shape
    device = features.device
    grad_out = grad_out.reshape(3).contiguous()
    if grad_features_out is None:
        grad_features_out = alloc((n, f), features.dtype, device)
    elif tuple(grad_features_out.shape) != (n, f) or grad_features_out.stride(1) != 1:
        raise ValueError("wasserstein_head_backward: grad_features_out must be [N, F] with unit column stride")
    if grad_weight_out is None:
        grad_weight_out = alloc((1, f), weight.dtype, device)
    if grad_bias_out is None:
        grad_bias_out = alloc((1,), bias_dtype or weight.dtype, device)
    blocks = _block_sizes(n, f, device)
    block_n, block_f = blocks["bwd_n"], blocks["bwd_f"]
    n_row_programs, n_col_programs = cdiv(n, block_n), cdiv(f, block_f)
    partial = alloc((n_row_programs, f), _acc_dtype(features.dtype), device)
    has_fake = n > n_real
    launch(
        OP,
        _head_grad_features_and_weight_partials_kernel,
        grid_1d(n_row_programs, n_col_programs),
        features,
        weight.reshape(-1).contiguous(),
        grad_out,
        grad_features_out,
        partial,
        n,
        f,
        n_real,
        n - n_real,
        features.stride(0),
        grad_features_out.stride(0),
        n_col_programs,
        device=device,
        wrap=_wrap,
        HAS_FAKE=has_fake,
        WIDE=int64_indices(n + block_n, f + block_f),
        BLOCK_N=block_n,
        BLOCK_F=block_f,
    )
    block_p = min(next_pow2(n_row_programs), blocks["red_p"])
    block_f2 = blocks["red_f"]
    launch(
        OP,
        _head_grad_weight_bias_kernel,
        (cdiv(f, block_f2),),
        partial,
        grad_out,
        grad_weight_out,
        grad_bias_out,
        n_row_programs,
        f,
        n_real,
        n - n_real,
        device=device,
        wrap=_wrap,
        HAS_FAKE=has_fake,
        WIDE=int64_indices(f + block_f2),
        BLOCK_P=block_p,
        BLOCK_F=block_f2,
    )
    return grad_features_out, grad_weight_out, grad_bias_out


# ------------------------------------------------------------------------------------------------
# Autograd
# ------------------------------------------------------------------------------------------------
class WassersteinHeadFunction(torch.autograd.Function):
    """The Triton path for CPU (interpreter) and for a torch without ``torch.library.triton_op``."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_real: int) -> torch.Tensor:
        out = wasserstein_head_forward(features, weight, bias, n_real)
        ctx.save_for_backward(features, weight)
        ctx.n_real = n_real
        ctx.bias_dtype = bias.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        features, weight = ctx.saved_tensors
        gf, gw, gb = wasserstein_head_backward(grad_out, features, weight, ctx.n_real, bias_dtype=ctx.bias_dtype)
        return gf, gw, gb, None


_CUSTOM_OP = False
if triton_ops_registrable():

    @torch.library.triton_op("kernels::wasserstein_head", mutates_args=())
    def _wasserstein_head_op(
        features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_real: int
    ) -> torch.Tensor:
        return wasserstein_head_forward(features, weight, bias, n_real, _wrap=True)

    @torch.library.triton_op("kernels::wasserstein_head_backward", mutates_args=())
    def _wasserstein_head_backward_op(
        grad_out: torch.Tensor, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_real: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # bias is passed only for its dtype: an op's outputs may not alias its inputs, and a dtype
        # is not a valid op argument type on every supported torch.
        return wasserstein_head_backward(grad_out, features, weight, n_real, bias_dtype=bias.dtype, _wrap=True)

    def _op_setup_context(ctx, inputs, output) -> None:
        features, weight, bias, n_real = inputs
        ctx.save_for_backward(features, weight, bias)
        ctx.n_real = n_real

    def _op_backward(ctx, grad_out: torch.Tensor):
        features, weight, bias = ctx.saved_tensors
        gf, gw, gb = torch.ops.kernels.wasserstein_head_backward(grad_out, features, weight, bias, ctx.n_real)
        return gf, gw, gb, None

    _wasserstein_head_op.register_autograd(_op_backward, setup_context=_op_setup_context)
    _CUSTOM_OP = True


# ------------------------------------------------------------------------------------------------
# References and entry points
# ------------------------------------------------------------------------------------------------
def wasserstein_critic_head_reference(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_real: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The eager math: linear layer, split, two means (docs/design.md's sign convention)."""
    _check(features, weight, bias, n_real, need_fake=True)
    scores = F.linear(features, weight, bias).squeeze(1)
    d_loss_real = -scores[:n_real].mean()
    d_loss_fake = scores[n_real:].mean()
    return d_loss_real + d_loss_fake, d_loss_real, d_loss_fake


def wasserstein_generator_head_reference(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    _check(features, weight, bias, features.shape[0] if features.dim() == 2 else 0, need_fake=False)
    return -F.linear(features, weight, bias).mean()


def _head(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_real: int) -> torch.Tensor:
    check_float(OP, features=features)
    if features.is_cuda and _CUSTOM_OP:
        return torch.ops.kernels.wasserstein_head(features, weight, bias, n_real)
    return WassersteinHeadFunction.apply(features, weight, bias, n_real)


def wasserstein_critic_head(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_real: int, impl: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(d_loss, d_loss_real, d_loss_fake)`` (0-d tensors) of the critic on one batched
    ``features [n_real + n_fake, F]`` (real rows first), differentiable in features, weight and bias.

    impl: 'triton', 'ref' or None (Triton where it can run). On CUDA the Triton path goes through the
    registered ``torch.ops.kernels.wasserstein_head``; elsewhere through :class:`WassersteinHeadFunction`.
    """
    _check(features, weight, bias, n_real, need_fake=True)
    if resolve_impl(impl, features.device, features.dtype) == "ref":
        return wasserstein_critic_head_reference(features, weight, bias, n_real)
    out = _head(features, weight, bias, n_real)
    return out[0], out[1], out[2]


def wasserstein_generator_head(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, impl: str | None = None
) -> torch.Tensor:
    """``g_loss = -mean(features @ weight.T + bias)`` (0-d) over a batch of fakes."""
    n = features.shape[0] if isinstance(features, torch.Tensor) and features.dim() == 2 else 0
    _check(features, weight, bias, n, need_fake=False)
    if resolve_impl(impl, features.device, features.dtype) == "ref":
        return wasserstein_generator_head_reference(features, weight, bias)
    return _head(features, weight, bias, n)[1]
