"""kernels.upsample_conv2d (polyphase) against the naive nearest-upsample + conv2d.

Tolerance. Each output is a sum of products, and the two paths sum different terms in different
orders: the naive path ``k_h*k_w*C_in`` products of the upsampled input (plus the bias), the
polyphase path ``K_h*K_w*C_in`` products of tap sums (each a float32 sum of at most
``t = ceil(k/s)**2`` taps on a CPU, correctly rounded float64 on CUDA). Whatever the order, a
float32 sum of m terms is off by at most ``m * u * sum|terms|`` (u = 2**-24), so the two outputs
differ by at most ``(m_naive + m_poly + t + 1) * u * M`` with
``M = sum over the taps of |w| * |x| (+ |b|)``, the magnitude summed into that output (computed
below in float64 by running the naive path on |x|, |w|, |b|). Every case here is held to
``|diff| <= 1e-5 * M + tiny`` (the project's 1e-5 relative rule, measured against M). Where
``m_naive + m_poly + t + 1 <= 167`` (most cases below) that is the rigorous bound above; for larger
sums (kernel 7 with 5 channels: 245 + 126 terms; the seed's layers: up to 3201 + 1153) the
rigorous bound is looser (up to 2.6e-4) and 1e-5 holds because cuDNN/oneDNN accumulate in blocks,
so the chain of roundings behind one output is far shorter than m (observed worst on this CPU,
seed layers: below 5e-7 * M; kernel 7: below 3e-7 * M). Gradients are held to the same rule against their
own magnitude sums (``sum |grad_out| * |w|`` for the input, ``sum |grad_out| * |x|`` for the
weight, ``sum |grad_out|`` for the bias). ``tiny`` (float32's smallest normal) only matters where
M is 0. Inputs are fresh random draws; float64 gradcheck covers the derivatives exactly.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import upsample_conv
from kernels.upsample_conv import polyphase_axis, polyphase_weight, upsample_conv2d, upsample_conv2d_reference

RTOL = 1e-5
TINY = torch.finfo(torch.float32).tiny
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def strict_fp32(monkeypatch):
    if torch.cuda.is_available():  # parity in strict fp32: TF32 convolutions differ by ~1e-3
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def _naive64(x, w, b, padding, scale):
    up = x if scale == 1 else F.interpolate(x, scale_factor=scale, mode="nearest")
    return F.conv2d(up, w, b, padding=padding)


def magnitudes(x, w, b, grad_out, padding, scale):
    """Float64 magnitude sums: of each output, and of each element of each gradient."""
    xa = x.detach().double().abs().requires_grad_()
    wa = w.detach().double().abs().requires_grad_()
    ba = None if b is None else b.detach().double().abs()
    out = _naive64(xa, wa, ba, padding, scale)
    gx, gw = torch.autograd.grad(out, (xa, wa), grad_out.double().abs())
    gb = None if b is None else grad_out.double().abs().sum((0, 2, 3))
    return out.detach(), gx, gw, gb


def assert_within(actual, expected, magnitude, name=""):
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    diff = (actual.double() - expected.double()).abs()
    bound = RTOL * magnitude + TINY
    worst = (diff / bound).max().item()
    assert worst <= 1.0, f"{name}: error {worst:.3g}x the bound 1e-5 * (magnitude summed)"


def layout(x, name):
    return x.contiguous(memory_format=torch.channels_last) if name == "channels_last" else x


def check_parity(n, c_in, c_out, h, w, k, scale, padding=None, memory="nchw", bias=True):
    kh, kw = (k, k) if isinstance(k, int) else k
    x = layout(torch.randn(n, c_in, h, w, device=DEVICE), memory)
    weight = layout(torch.randn(c_out, c_in, kh, kw, device=DEVICE), memory)
    b = torch.randn(c_out, device=DEVICE) if bias else None
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight)] + ([b.clone().requires_grad_()] if bias else [])
    refs = [t.detach().clone().requires_grad_() for t in (x, weight)] + ([b.clone().requires_grad_()] if bias else [])
    pad = padding if padding is not None else (kh // 2, kw // 2)
    y = upsample_conv2d(leaves[0], leaves[1], leaves[2] if bias else None, padding, scale)
    y_ref = upsample_conv2d_reference(refs[0], refs[1], refs[2] if bias else None, padding, scale)
    grad_out = layout(torch.randn(y_ref.shape, device=DEVICE), memory)
    y.backward(grad_out)
    y_ref.backward(grad_out)
    m_out, m_gx, m_gw, m_gb = magnitudes(x, weight, b, grad_out, pad, scale)
    assert_within(y, y_ref, m_out, "output")
    assert_within(leaves[0].grad, refs[0].grad, m_gx, "grad x")
    assert_within(leaves[1].grad, refs[1].grad, m_gw, "grad weight")
    if bias:
        assert_within(leaves[2].grad, refs[2].grad, m_gb, "grad bias")
    if memory == "channels_last" and not x.is_contiguous():  # one channel: both layouts are the same memory
        assert y.is_contiguous(memory_format=torch.channels_last)
    return y


# (n, c_in, c_out, h, w, kernel, scale, padding, layout): shapes no implementation was written for
UNSEEN = [
    (1, 3, 5, 4, 7, 3, 2, None, "nchw"),  # batch 1, odd channels, non-square image, kernel 3
    (2, 5, 3, 5, 3, 7, 2, None, "nchw"),  # kernel 7
    (3, 1, 7, 3, 5, 5, 2, None, "channels_last"),  # one input channel, channels_last
    (2, 3, 4, 3, 5, 5, 3, None, "channels_last"),  # scale 3
    (2, 3, 4, 4, 4, 5, 1, None, "nchw"),  # scale 1 = the plain convolution
    (2, 3, 2, 3, 5, (3, 5), 2, None, "nchw"),  # a non-square kernel
    (2, 3, 2, 3, 5, 4, 2, 1, "nchw"),  # an even kernel, padding 1 (exact too, via the crop)
    (2, 3, 2, 5, 3, 5, 2, 0, "nchw"),  # no padding
    (2, 3, 2, 3, 4, 3, 3, 3, "channels_last"),  # padding above k // 2: asymmetric low-res padding
    (1, 2, 3, 1, 1, 5, 2, None, "nchw"),  # 1x1 input
    (2, 4, 3, 3, 3, 5, 2, None, "nchw"),  # no bias (below)
]


@pytest.mark.parametrize(
    "case", UNSEEN, ids=[f"{c[0]}x{c[1]}->{c[2]}@{c[3]}x{c[4]}-k{c[5]}-s{c[6]}-p{c[7]}-{c[8]}" for c in UNSEEN]
)
def test_matches_naive_upsample_conv(case):
    n, c_in, c_out, h, w, k, scale, padding, memory = case
    check_parity(n, c_in, c_out, h, w, k, scale, padding, memory, bias=case is not UNSEEN[-1])


@pytest.mark.parametrize(
    "c_in,c_out,side", [(128, 128, 4), (128, 64, 8), (64, 32, 16)], ids=["seed-8x8", "seed-16x16", "seed-32x32"]
)
@pytest.mark.parametrize("memory", ["nchw", "channels_last"])
def test_seed_layers(c_in, c_out, side, memory):
    """The seed generator's three upsample + 5x5 conv layers (batch 2)."""
    y = check_parity(2, c_in, c_out, side, side, 5, 2, None, memory)
    assert y.shape == (2, c_out, 2 * side, 2 * side)


def test_phase_layout_is_the_shuffle_input():
    x, w, b = torch.randn(2, 3, 4, 5), torch.randn(6, 3, 5, 5), torch.randn(6)
    phases = kernels.upsample_conv2d_phases(x, w, b, 2)
    assert phases.shape == (2, 24, 4, 5)
    y = upsample_conv2d(x, w, b)
    assert torch.equal(F.pixel_shuffle(phases, 2), y)
    # channel o*4 + ry*2 + rx at (y, x) is output pixel (2y + ry, 2x + rx) of channel o
    assert torch.equal(phases[:, 1 * 4 + 1 * 2 + 0], y[:, 1, 1::2, 0::2])


def test_tap_sums_follow_the_derivation():
    """k=5, s=2: even phase (w0+w1, w2+w3, w4), odd (w0, w1+w2, w3+w4); k=3: even (w0, w1+w2, 0) at
    offsets -1, 0, +1, odd (0, w0+w1, w2). Checked on the W axis with a kernel constant along H."""
    w = torch.arange(1.0, 6.0).view(1, 1, 1, 5).expand(1, 1, 5, 5).contiguous()  # w_j = j + 1
    taps = polyphase_weight(w, 2)[:, 0, 0]  # ry = 0, dy = -1 row: the H taps (w0 + w1) = 2x
    w0, w1, w2, w3, w4 = 1.0, 2.0, 3.0, 4.0, 5.0
    assert taps[0].tolist() == [2 * (w0 + w1), 2 * (w2 + w3), 2 * w4]  # (ry, rx) = (0, 0)
    assert taps[1].tolist() == [2 * w0, 2 * (w1 + w2), 2 * (w3 + w4)]  # (0, 1)
    w3x3 = torch.arange(1.0, 4.0).view(1, 1, 1, 3).expand(1, 1, 3, 3).contiguous()
    taps = polyphase_weight(w3x3, 2)[:, 0, 1]  # dy = 0 row of ry = 0 sums H taps 1 and 2: 2x
    assert taps[0].tolist() == [2 * 1.0, 2 * (2.0 + 3.0), 0.0]
    assert taps[1].tolist() == [0.0, 2 * (1.0 + 2.0), 2 * 3.0]
    for k, s, p, kk, pad in [(5, 2, 2, 3, 1), (3, 2, 1, 3, 1), (7, 2, 3, 5, 2), (5, 3, 2, 3, 1), (5, 1, 2, 5, 2)]:
        axis = polyphase_axis(k, s, p)
        assert (axis.taps, axis.pad_before, axis.pad_after(6)) == (kk, pad, pad), (k, s, p)


@pytest.mark.parametrize("kernel,scale,padding", [(5, 2, None), (3, 2, None), (4, 3, 1), (3, 1, None)])
@pytest.mark.parametrize("impl", ["polyphase", "ref"])
def test_gradcheck_float64(kernel, scale, padding, impl):
    x = torch.randn(2, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c, d: upsample_conv2d(a, c, d, padding, scale, impl=impl), (x, w, b))


def test_gradcheck_float64_channels_last():
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(3, 2, 5, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, c: upsample_conv2d(a, c, None), (x, w))


@pytest.mark.parametrize("memory", ["nchw", "cl"])
def test_reused_polyphase_weight_has_the_transform_s_values_and_gradient(memory):
    """A kernel computed without autograd and reused gives the weight the gradient autograd gives
    through the transform itself (float64: the same sums, at most reordered)."""
    fmt = torch.channels_last if memory == "cl" else torch.contiguous_format
    w = torch.randn(3, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    direct = polyphase_weight(w, 2, memory_format=fmt)
    assert direct.is_contiguous(memory_format=fmt)
    with torch.no_grad():
        cached = polyphase_weight(w, 2, memory_format=fmt)
    reused = kernels.reuse_polyphase_weight(w, cached, 2)
    assert torch.equal(reused, direct) and reused.stride() == direct.stride()
    g = torch.randn_like(direct)
    (want,) = torch.autograd.grad(direct, w, g)
    (got,) = torch.autograd.grad(reused, w, g)
    assert torch.equal(got, want)  # the same mm on the same operands
    assert torch.autograd.gradcheck(lambda a: kernels.reuse_polyphase_weight(a, polyphase_weight(a.detach())), (w,))
    with pytest.raises(ValueError, match="phases must be"):
        kernels.reuse_polyphase_weight(w, cached[1:], 2)


def test_autocast_bf16_matches_naive_under_autocast():
    """Under autocast the convolution runs in bf16 on both paths; the tap sums are formed with
    autocast off from the fp32 weight and rounded to bf16 once (the naive path rounds each tap), so
    both are within ~2**-8 of the exact result relative to the magnitude summed: 1e-2 * M covers both."""
    x, w, b = torch.randn(2, 8, 4, 4), torch.randn(6, 8, 5, 5), torch.randn(6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = upsample_conv2d(x, w, b)
        y_ref = upsample_conv2d_reference(x, w, b)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    m = magnitudes(x, w, b, torch.zeros_like(y_ref, dtype=torch.float32), (2, 2), 2)[0]
    assert ((y.double() - y_ref.double()).abs() <= 1e-2 * m).all()
    assert polyphase_weight(w).dtype == torch.float32  # the transform itself is not autocast


def test_default_impl_is_polyphase():
    x, w = torch.randn(1, 2, 3, 3, requires_grad=True), torch.randn(2, 2, 5, 5)
    assert "PixelShuffle" in type(upsample_conv2d(x, w).grad_fn).__name__
    assert "Convolution" in type(upsample_conv2d(x, w, impl="ref").grad_fn).__name__


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        ((torch.randn(2, 3, 4), torch.randn(2, 3, 5, 5)), {}, ValueError, "batch of images"),
        ((torch.randn(2, 3, 4, 4), torch.randn(2, 3, 5)), {}, ValueError, "weight must be"),
        ((torch.randn(2, 3, 4, 4), torch.randn(2, 4, 5, 5)), {}, ValueError, "grouped"),
        ((torch.randn(2, 3, 4, 4), torch.randn(2, 3, 5, 5), torch.randn(3)), {}, ValueError, "bias must be"),
        ((torch.randn(2, 3, 4, 4), torch.randn(2, 3, 5, 5)), {"scale": 0}, ValueError, "scale must be"),
        ((torch.randn(2, 3, 4, 4), torch.randn(2, 3, 5, 5)), {"scale": 1.5}, ValueError, "scale must be"),
        ((torch.randn(2, 3, 4, 4), torch.randn(2, 3, 5, 5)), {"scale": True}, ValueError, "scale must be"),
        ((torch.randn(2, 3, 4, 4), torch.randn(2, 3, 5, 5)), {"padding": -1}, ValueError, "padding must be >= 0"),
        ((torch.randn(2, 3, 4, 4), torch.randn(2, 3, 5, 5)), {"padding": (1, 2, 3)}, ValueError, "pair"),
        ((torch.randn(2, 3, 1, 1), torch.randn(2, 3, 5, 5)), {"padding": 0}, ValueError, "no output"),
        ((torch.ones(2, 3, 4, 4, dtype=torch.int64), torch.randn(2, 3, 5, 5)), {}, TypeError, "floating point"),
        ((torch.randn(2, 3, 4, 4), torch.randn(2, 3, 5, 5)), {"impl": "triton"}, ValueError, "no 'triton' path"),
    ],
)
def test_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        upsample_conv2d(*args, **kwargs)


def test_phase_layout_refuses_even_kernels():
    with pytest.raises(ValueError, match="odd kernel sizes"):
        kernels.upsample_conv2d_phases(torch.randn(1, 2, 3, 3), torch.randn(2, 2, 4, 4))


def test_tap_matrix_is_cached_per_geometry():
    a = upsample_conv._tap_matrix(5, 2, 2, torch.device("cpu"))
    assert a is upsample_conv._tap_matrix(5, 2, 2, torch.device("cpu"))
    assert a.dtype == torch.float64 and a.shape == (2, 3, 5)
    b = upsample_conv._tap_matrix_2d(5, 3, 2, 2, 1, torch.device("cpu"), torch.float32)
    assert b is upsample_conv._tap_matrix_2d(5, 3, 2, 2, 1, torch.device("cpu"), torch.float32)
    assert b.shape == (2 * 2 * 3 * 3, 5 * 3) and int(b.sum()) == 2 * 2 * 5 * 3  # each tap once per phase
