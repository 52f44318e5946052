"""Nearest upsample followed by a convolution, as ONE convolution of the low-resolution input.

The generator's blocks upsample by an integer ``scale`` (nearest) and then convolve. Every pixel
of the upsampled image is a copy of a low-resolution pixel, so every output pixel is a
convolution of the LOW-resolution input with a kernel whose taps are sums of the original taps.
Which taps are summed depends only on the output pixel's phase ``r = Y mod scale`` along each axis,
so the whole layer is one convolution with ``scale**2 * C_out`` output channels (one group per
phase) followed by ``pixel_shuffle(scale)``. It never builds the upsampled image, and for the
seed's 5x5 kernels at scale 2 it does 9 multiply-adds per output and input channel instead of 25.

Derivation, per axis (the 2-D transform is the product of the two axes' maps). Kernel size ``k``,
padding ``p >= 0``, scale ``s >= 1``, low-resolution input ``x[0..H)``, upsampled ``u[Y] = x[Y // s]``
(zero outside ``[0, s*H)``, i.e. outside ``x``'s range after the division: the zero padding maps
exactly). The convolution is ``out[Y] = sum_j w[j] * u[Y + j - p]`` for ``Y in [0, s*H + 2p - k + 1)``.
Write ``Y = s*y + r`` with ``0 <= r < s``; then ``u[Y + j - p] = x[y + floor((r + j - p) / s)]``, so

    out[s*y + r] = sum_d W_r[d] * x[y + d],   W_r[d] = sum of w[j] over {j : floor((r + j - p) / s) = d}.

For a fixed phase the summed taps are the contiguous run ``j in [s*d + p - r, s*d + p - r + s)``
(clipped to ``[0, k)``). Over all phases ``d`` runs from ``d_min = floor(-p / s)`` to
``d_max = floor((s - 1 + k - 1 - p) / s)``: a low-resolution kernel of ``K = d_max - d_min + 1`` taps,
padding ``-d_min`` before and whatever makes ``ceil(H_out / s)`` outputs per phase after; when
``H_out`` is not a multiple of ``s`` the shuffled result is cropped to ``H_out``. Examples:

* k=5, s=2, p=2: K=3, padding 1; even phase (w0+w1, w2+w3, w4), odd phase (w0, w1+w2, w3+w4);
* k=3, s=2, p=1: K=3 (the phases are 2-tap kernels at offsets {-1, 0} and {0, +1}, so the dense
  3x3 kernel holds zeros and saves nothing: 9 MACs, as the naive 3x3); even (w0, w1+w2, 0),
  odd (0, w0+w1, w2);
* k=7, s=2, p=3: K=5 (25 MACs instead of 49);
* k=5, s=3, p=2: K=3 (9 instead of 25); s=1: K=k and W_0 = w, the plain convolution.

"Same" geometry (``2p = k - 1``, odd k) gives ``H_out = s*H`` and equal padding ``ceil(p / s)`` on
both sides, so no crop; it is the only geometry whose phase layout (:func:`upsample_conv2d_phases`)
is a regular ``[N, s*s*C_out, H, W]`` tensor, which the batch-norm epilogue in ``kernels/bn_act.py``
consumes. :func:`upsample_conv2d` itself accepts any kernel size and any padding ``>= 0`` and is
exact for all of them (tested against the naive path, even kernels included).

The tap transform ``polyphase_weight`` is one small matmul with a constant 0/1 matrix, with
autocast off (the tap sums keep the weight's precision; the convolution is autocast as usual): in
float64 on CUDA (correctly rounded sums, independent of TF32, which never applies to float64) and
in float32 on a CPU (no TF32 there; 4x cheaper; at most ``ceil(k/s)**2 - 1`` roundings per tap).
The weight gradient flows back through the same differentiable ops (the transposed map: each
original tap's gradient is the sum of its phase taps' gradients). It costs about 3 ms per step at
the seed's largest layer on one CPU core and microseconds on a GPU, against the ~100 ms the
convolutions save.

Why the implementations are called ``'polyphase'`` and ``'ref'`` here, not ``'triton'`` and ``'ref'``
as in the other op families: the fast path is an exact algebraic rewrite run by the platform's
convolution library (cuDNN, oneDNN), not a Triton kernel, and it runs on every device. Calling it
``'triton'`` would claim a kernel that does not exist, and tie it to ``resolve_impl``'s "Triton
where it can run" rule, which would send CPUs without the interpreter to the slow naive path.
``'ref'`` means what it means everywhere in ``kernels/``: the plain-PyTorch definition (here the
upsample followed by the convolution), the thing the fast path is tested against.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels._buffers import FLOAT_DTYPES

__all__ = [
    "UPSAMPLE_CONV_IMPLS",
    "PolyphaseAxis",
    "polyphase_axis",
    "polyphase_bias",
    "polyphase_weight",
    "reuse_polyphase_weight",
    "upsample_conv2d",
    "upsample_conv2d_phases",
    "upsample_conv2d_reference",
]

OP = "upsample_conv2d"
UPSAMPLE_CONV_IMPLS = ("polyphase", "ref")


@dataclass(frozen=True)
class PolyphaseAxis:
    """The low-resolution convolution along one axis: taps, paddings, and the output length."""

    kernel_size: int  # k, the original kernel's taps along this axis
    scale: int  # s
    padding: int  # p, the original convolution's padding on the upsampled image
    taps: int  # K = d_max - d_min + 1
    pad_before: int  # -d_min = ceil(p / s)
    d_max: int

    @property
    def d_min(self) -> int:
        return -self.pad_before

    def out_size(self, size: int) -> int:
        """Output length of the original layer for a low-resolution input of length ``size``."""
        return self.scale * size + 2 * self.padding - self.kernel_size + 1

    def phase_size(self, size: int) -> int:
        """Outputs per phase (ceil(H_out / s)); phases past H_out are cropped after the shuffle."""
        return -(-self.out_size(size) // self.scale)

    def pad_after(self, size: int) -> int:
        """Padding after the input so that the low-res convolution makes phase_size outputs (>= 0;
        a negative value would mean extra outputs, which the crop removes)."""
        return max(0, self.phase_size(size) + self.d_max - size)

    @property
    def same(self) -> bool:
        """'Same' geometry: H_out = s*H for every H, equal padding on both sides, no crop."""
        return 2 * self.padding == self.kernel_size - 1


@functools.cache
def polyphase_axis(kernel_size: int, scale: int, padding: int) -> PolyphaseAxis:
    """The per-axis geometry of the derivation in the module docstring."""
    d_min = (-padding) // scale  # floor(-p / s) == -ceil(p / s)
    d_max = (scale - 1 + kernel_size - 1 - padding) // scale
    return PolyphaseAxis(kernel_size, scale, padding, d_max - d_min + 1, -d_min, d_max)


@functools.cache
def _tap_matrix(kernel_size: int, scale: int, padding: int, device: torch.device) -> torch.Tensor:
    """T[r, d - d_min, j] = 1 where floor((r + j - p) / s) == d, float64 [s, K, k]."""
    axis = polyphase_axis(kernel_size, scale, padding)
    r = torch.arange(scale, device=device).view(-1, 1, 1)
    d = torch.arange(axis.taps, device=device).view(1, -1, 1) + axis.d_min
    j = torch.arange(kernel_size, device=device).view(1, 1, -1)
    return (torch.div(r + j - padding, scale, rounding_mode="floor") == d).to(torch.float64)


@functools.cache
def _tap_matrix_2d(
    kh: int, kw: int, scale: int, ph: int, pw: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """The 2-D tap map ``[(r_y, r_x, d_y, d_x), (j_y, j_x)]``: the product of the two axes' maps.

    Built from aranges on ``device`` (no host-to-device copy, so a first call inside a CUDA-graph
    warm-up is fine) and cached, so steady-state calls make no new tensor.
    """
    th, tw = _tap_matrix(kh, scale, ph, device), _tap_matrix(kw, scale, pw, device)
    return torch.einsum("adj,bel->abdejl", th, tw).reshape(-1, kh * kw).to(dtype)


def _transform_dtype(weight: torch.Tensor) -> torch.dtype:
    """float64 on CUDA (free there, and immune to TF32, which would round every tap to 10 bits
    before the sum), float64 for float64 weights, else float32: on a CPU (no TF32) float32 is 4x
    cheaper and each tap sum of at most ceil(k/s)**2 taps then carries <= ceil(k/s)**2 - 1 roundings."""
    if weight.is_cuda or weight.dtype == torch.float64:
        return torch.float64
    return torch.float32


def _pair(value: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{OP}: {name} must be an int or a pair of ints, got {value!r}")
        a, b = value
    else:
        a = b = value
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{OP}: {name} must be an int or a pair of ints, got {value!r}")
    return int(a), int(b)


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"{OP}: scale must be an integer >= 1 (nearest upsampling by a whole factor), got {scale!r}")
    return scale


def _paddings(weight: torch.Tensor, padding: int | tuple[int, int] | None) -> tuple[int, int]:
    kh, kw = weight.shape[-2:]
    if padding is None:
        return kh // 2, kw // 2
    ph, pw = _pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"{OP}: padding must be >= 0, got {padding!r}")
    return ph, pw


def _check_weight(weight: torch.Tensor) -> None:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"{OP}: weight must be [C_out, C_in, kH, kW], got {shape}")
    if weight.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{OP}: weight must be floating point, got {weight.dtype}")
    if min(weight.shape) < 1:
        raise ValueError(f"{OP}: weight must not be empty, got shape {tuple(weight.shape)}")


def _check(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: int, padding: int | tuple[int, int] | None
) -> tuple[int, int]:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{OP}: x must be a batch of images [N, C, H, W], got {shape}")
    _check_weight(weight)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{OP}: x must be floating point, got {x.dtype}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{OP}: x has {x.shape[1]} channels but weight expects {weight.shape[1]} "
            f"(weight shape {tuple(weight.shape)}; grouped convolutions are not supported)"
        )
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],)):
        raise ValueError(
            f"{OP}: bias must be None or of shape [{weight.shape[0]}], got "
            f"{tuple(bias.shape) if isinstance(bias, torch.Tensor) else bias!r}"
        )
    _check_scale(scale)
    ph, pw = _paddings(weight, padding)
    for axis, (size, k, p) in enumerate(zip(x.shape[2:], weight.shape[2:], (ph, pw))):
        out = scale * size + 2 * p - k + 1
        if out < 1:
            raise ValueError(
                f"{OP}: the upsampled input ({scale} x {size}) plus padding {p} is smaller than the "
                f"kernel ({k}) along axis {'HW'[axis]}: no output"
            )
    return ph, pw


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast disabled where the device type has autocast; nothing to disable elsewhere (the
    ``meta`` device of the compile checks, backends without it), where ``torch.autocast`` raises."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _layout_of(t: torch.Tensor) -> torch.memory_format:
    """channels_last for a tensor that is only channels_last-contiguous, else the default layout."""
    if t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _phase_geometry(weight: torch.Tensor, scale: int, ph: int, pw: int) -> tuple[torch.dtype, torch.Tensor, int, int]:
    """(transform dtype, the 2-D tap map in it, K_h, K_w) of ``weight``'s polyphase transform."""
    acc = _transform_dtype(weight)
    kh, kw = weight.shape[2:]
    taps = _tap_matrix_2d(kh, kw, scale, ph, pw, weight.device, acc)  # [s*s*Kh*Kw, kh*kw]
    return acc, taps, polyphase_axis(kh, scale, ph).taps, polyphase_axis(kw, scale, pw).taps


def polyphase_weight(
    weight: torch.Tensor,
    scale: int = 2,
    padding: int | tuple[int, int] | None = None,
    memory_format: torch.memory_format | None = None,
) -> torch.Tensor:
    """The low-resolution kernel ``[scale*scale*C_out, C_in, K_h, K_w]`` of :func:`upsample_conv2d`.

    Output channel ``o * scale**2 + r_y * scale + r_x`` holds phase ``(r_y, r_x)`` of original
    output channel ``o``: the order ``pixel_shuffle(scale)`` reads. Differentiable, returned in
    ``weight``'s dtype (computed as the module docstring says); ``padding`` defaults to ``k // 2``
    per axis ('same'). ``memory_format`` (default: the weight's) is the result's layout: the
    phases are written into it by the one copy that also reorders and casts them.
    """
    _check_weight(weight)
    scale = _check_scale(scale)
    ph, pw = _paddings(weight, padding)
    c_out, c_in, kh, kw = weight.shape
    acc, taps, k_h, k_w = _phase_geometry(weight, scale, ph, pw)
    # one matmul (never autocast: the tap sums keep the weight's precision); each phase tap is the
    # sum of the original taps the derivation assigns it: [O*C, kh*kw] -> [O*C, s*s*Kh*Kw]
    with _autocast_off(weight.device.type):
        phases = weight.to(acc).reshape(c_out * c_in, kh * kw) @ taps.T
    phases = phases.view(c_out, c_in, scale, scale, k_h, k_w).permute(0, 2, 3, 1, 4, 5)
    fmt = memory_format or _layout_of(weight)
    shape = (c_out * scale * scale, c_in, k_h, k_w)
    out = torch.empty(shape, dtype=weight.dtype, device=weight.device, memory_format=fmt)
    out.view(c_out, scale, scale, c_in, k_h, k_w).copy_(phases)  # both layouts split dim 0 the same way
    return out


class _ReusedPolyphaseWeight(torch.autograd.Function):
    """A polyphase kernel computed earlier from ``weight``'s current values, connected to ``weight``:
    the forward computes nothing; the backward is the transform's transposed map (each original
    tap's gradient is the sum of its phase taps' gradients), as autograd would run it."""

    @staticmethod
    def forward(ctx, weight, phases, scale, ph, pw):
        ctx.save_for_backward(weight)
        ctx.geometry = (scale, ph, pw)
        return phases.view_as(phases)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        scale, ph, pw = ctx.geometry
        c_out, c_in, kh, kw = weight.shape
        acc, taps, k_h, k_w = _phase_geometry(weight, scale, ph, pw)
        g = grad.to(acc).reshape(c_out, scale, scale, c_in, k_h, k_w).permute(0, 3, 1, 2, 4, 5)
        with _autocast_off(weight.device.type):
            g = g.reshape(c_out * c_in, scale * scale * k_h * k_w) @ taps
        return g.view(c_out, c_in, kh, kw).to(weight.dtype), None, None, None, None


def reuse_polyphase_weight(
    weight: torch.Tensor, phases: torch.Tensor, scale: int = 2, padding: int | tuple[int, int] | None = None
) -> torch.Tensor:
    """``phases`` (``polyphase_weight(weight, scale, padding)`` computed earlier, without autograd,
    from the values ``weight`` still holds) with gradients flowing back to ``weight``: a generator
    whose weights do not change between forwards computes the transform once and reuses it."""
    _check_weight(weight)
    ph, pw = _paddings(weight, padding)
    scale = _check_scale(scale)
    k_h = polyphase_axis(weight.shape[2], scale, ph).taps
    k_w = polyphase_axis(weight.shape[3], scale, pw).taps
    expected = (weight.shape[0] * scale * scale, weight.shape[1], k_h, k_w)
    if tuple(phases.shape) != expected or phases.dtype != weight.dtype:
        raise ValueError(f"{OP}: phases must be {weight.dtype} {expected}, got {phases.dtype} {tuple(phases.shape)}")
    return _ReusedPolyphaseWeight.apply(weight, phases.detach(), scale, ph, pw)


def polyphase_bias(bias: torch.Tensor | None, scale: int = 2) -> torch.Tensor | None:
    """The bias of every phase channel: each original channel's bias repeated ``scale**2`` times."""
    if bias is None:
        return None
    return bias.repeat_interleave(_check_scale(scale) ** 2)


def _phase_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    scale: int,
    ph: int,
    pw: int,
    phases: torch.Tensor | None = None,
) -> torch.Tensor:
    """The low-resolution convolution, cropped to ceil(H_out/s) x ceil(W_out/s) outputs per phase;
    ``phases`` is the polyphase kernel when the caller has it, else it is computed here."""
    ax_h = polyphase_axis(weight.shape[2], scale, ph)
    ax_w = polyphase_axis(weight.shape[3], scale, pw)
    # in x's layout (channels_last in, channels_last kernel: no reorder inside the convolution)
    pw_weight = polyphase_weight(weight, scale, (ph, pw), _layout_of(x)) if phases is None else phases
    h, w = x.shape[2:]
    before = (ax_h.pad_before, ax_w.pad_before)
    after = (ax_h.pad_after(h), ax_w.pad_after(w))
    if before == after:
        out = F.conv2d(x, pw_weight, polyphase_bias(bias, scale), padding=before)
    else:  # asymmetric: only for non-'same' paddings
        xp = F.pad(x, (before[1], after[1], before[0], after[0]))
        out = F.conv2d(xp, pw_weight, polyphase_bias(bias, scale))
    hp, wp = ax_h.phase_size(h), ax_w.phase_size(w)
    if out.shape[2] != hp or out.shape[3] != wp:
        out = out[:, :, :hp, :wp]
    return out


def upsample_conv2d_phases(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    scale: int = 2,
    phases: torch.Tensor | None = None,
) -> torch.Tensor:
    """The polyphase convolution's output before the shuffle: ``[N, scale**2 * C_out, H, W]``.

    Channel ``o * scale**2 + r_y * scale + r_x`` at ``(y, x)`` is output pixel
    ``(scale*y + r_y, scale*x + r_x)`` of channel ``o``, so ``pixel_shuffle(., scale)`` of this is
    :func:`upsample_conv2d` with 'same' padding. Only 'same' geometry (odd kernels, padding
    ``k // 2``) has this regular layout; the batch-norm epilogue reads it without a shuffle copy.
    Channels_last input gives a channels_last result. ``phases``: the polyphase kernel of ``weight``
    when the caller already has it (:func:`reuse_polyphase_weight`), else it is computed here.
    """
    _check(x, weight, bias, scale, None)
    kh, kw = weight.shape[2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(
            f"{OP}: the phase layout needs odd kernel sizes ('same' padding k // 2), got "
            f"{kh}x{kw}; use upsample_conv2d with an explicit padding for even kernels"
        )
    return _phase_conv(x, weight, bias, scale, kh // 2, kw // 2, phases)


def upsample_conv2d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: int | tuple[int, int] | None = None,
    scale: int = 2,
) -> torch.Tensor:
    """The definition: nearest upsampling by ``scale``, then the convolution (``padding`` default k // 2)."""
    ph, pw = _check(x, weight, bias, scale, padding)
    up = x if scale == 1 else F.interpolate(x, scale_factor=scale, mode="nearest")
    return F.conv2d(up, weight, bias, padding=(ph, pw))


def _resolve(impl: str | None) -> str:
    if impl is None:
        return "polyphase"
    if impl not in UPSAMPLE_CONV_IMPLS:
        raise ValueError(
            f"{OP}: impl must be one of {UPSAMPLE_CONV_IMPLS} or None, got {impl!r} (this op "
            "family is an exact rewrite run by cuDNN/oneDNN, so it has no 'triton' path)"
        )
    return impl


def upsample_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: int | tuple[int, int] | None = None,
    scale: int = 2,
    impl: str | None = None,
) -> torch.Tensor:
    """``conv2d(interpolate(x, scale_factor=scale, mode='nearest'), weight, bias, padding=padding)``.

    ``padding`` defaults to ``k // 2`` per axis; any padding >= 0 and any kernel size is exact.
    impl: 'polyphase' (default, None): one low-resolution convolution + ``pixel_shuffle``;
    'ref': the naive upsample then convolve. Differentiable in x, weight and bias either way.
    The output keeps x's memory format (channels_last in, channels_last out).
    """
    impl = _resolve(impl)
    ph, pw = _check(x, weight, bias, scale, padding)
    if impl == "ref":
        return upsample_conv2d_reference(x, weight, bias, (ph, pw), scale)
    if scale == 1:
        return F.conv2d(x, weight, bias, padding=(ph, pw))
    out = F.pixel_shuffle(_phase_conv(x, weight, bias, scale, ph, pw), scale)
    h_out = polyphase_axis(weight.shape[2], scale, ph).out_size(x.shape[2])
    w_out = polyphase_axis(weight.shape[3], scale, pw).out_size(x.shape[3])
    if out.shape[2] != h_out or out.shape[3] != w_out:  # non-'same' geometry: crop, and keep x's layout dense
        out = out[:, :, :h_out, :w_out].contiguous(memory_format=_layout_of(x))
    return out
