"""kernels.bn_leaky_relu_shuffle against eager BatchNorm2d + LeakyReLU on the pixel-shuffled input.

Tolerance: every compared value within 1e-5 of the magnitude summed into it (plus float32's
smallest normal), the magnitudes computed in float64 from the inputs. With ``u`` the batch values
of a channel (the shuffled input), ``mu``/``sigma`` their mean and standard deviation and
``a = gamma / sqrt(var + eps)``:

* output ``y = lrelu(a * (u - mu) + beta)``: ``M = |a| * (|u| + |mu| + mean|u|) + |beta|`` (the
  subtraction, and the mean's own rounding error, which is relative to ``mean|u|``; the variance's
  rounding error is relative to the variance itself, because a two-pass / Chan variance does not
  depend on the mean's error to first order, so it scales ``a*(u - mu)``, already in M);
* ``grad_beta = sum g'`` (g' the gradient after LeakyReLU's backward): ``M = sum|g'|``;
  ``grad_gamma = sum g' * x_hat``: ``M = sum |g'| * (|x_hat| + (|u| + |mu|) / sigma)``;
  ``grad_x = a * (g' - mean(g') - x_hat * mean(g' x_hat))``:
  ``M = |a| * (|g'| + mean|g'| + (|x_hat| + (|u| + |mu|) / sigma) * mean|g' x_hat|)``;
* ``running_mean``: ``M = (1 - m)|rm| + m * mean|u|``; ``running_var``: ``M = (1 - m)|rv| + m * var_unbiased``.

Each of these is a sum of a handful of terms plus reductions over at most a few thousand values
that the kernels do as trees within a tile and in a fixed sequential order across tiles; 1e-5
allows ~160 roundings of u = 2**-24 in the longest chain, above what any case here needs (tiny
tiles included: a lane of a merge adds at most ~25 chunks of partials in sequence, then a tree).
The branch of LeakyReLU at ``z == 0`` is not differentiable, so draws with a pre-activation
within 2e-6 of zero (relative to M, about 10x the two sides' rounding difference there) are redrawn.
Every buffer the launchers allocate starts as NaN (``kernels._buffers.POISON_OUTPUTS``).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import triton_kernel_marks

import kernels
from kernels import _launch, bn_act

pytestmark = triton_kernel_marks()

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RTOL = 1e-5
TINY = torch.finfo(torch.float32).tiny
MOMENTUM, EPS = 0.2, 1e-3  # the seed's batch-norm settings


def phases(n, c, scale, h, w, layout="nchw", dtype=torch.float32, offset=0.5, spread=2.0):
    x = torch.randn(n, scale * scale * c, h, w, device=DEVICE, dtype=dtype) * spread + offset
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x


def assert_within(actual, expected, magnitude, name):
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    assert torch.isfinite(actual).all(), f"{name}: non-finite values (an element was not written)"
    diff = (actual.double() - expected.double()).abs()
    worst = (diff / (RTOL * magnitude.double() + TINY)).max().item() if diff.numel() else 0.0
    assert worst <= 1.0, f"{name}: error {worst:.3g}x the bound 1e-5 * (magnitude summed)"


class Case:
    """One draw: the phase input, affine parameters, running statistics and an upstream gradient."""

    def __init__(self, n, c, scale, h, w, layout="nchw", training=True, slope=0.2, dtype=torch.float32):
        self.scale, self.training, self.slope, self.layout = scale, training, slope, layout
        for _ in range(20):
            self.x = phases(n, c, scale, h, w, layout, dtype)
            self.gamma = torch.randn(c, device=DEVICE, dtype=dtype)
            self.beta = torch.randn(c, device=DEVICE, dtype=dtype)
            self.rm = torch.randn(c, device=DEVICE, dtype=dtype)
            self.rv = torch.rand(c, device=DEVICE, dtype=dtype) + 0.5
            if self._away_from_kink():
                break
        else:
            raise AssertionError("20 draws in a row put a pre-activation at LeakyReLU's kink")
        self.grad = torch.randn(n, c, h * scale, w * scale, device=DEVICE, dtype=dtype)
        if layout == "channels_last":
            self.grad = self.grad.contiguous(memory_format=torch.channels_last)

    def stats64(self):
        u = F.pixel_shuffle(self.x.double(), self.scale) if self.scale > 1 else self.x.double()
        dims = (0, 2, 3)
        if self.training:
            mu, var = u.mean(dims), u.var(dims, unbiased=False)
        else:
            mu, var = self.rm.double(), self.rv.double()
        return u, mu, var

    def _away_from_kink(self) -> bool:
        u, mu, var = self.stats64()
        v = lambda t: t.view(1, -1, 1, 1)  # noqa: E731
        a = v(self.gamma.double() / torch.sqrt(var + EPS))
        z = a * (u - v(mu)) + v(self.beta.double())
        m = a.abs() * (u.abs() + v(mu).abs() + v(u.abs().mean((0, 2, 3)))) + v(self.beta.double()).abs()
        return bool((z.abs() > 2e-6 * m).all())

    def run(self, fn, **kwargs):
        """(y, grad_x, grad_gamma, grad_beta, running_mean, running_var) after fn forward + backward."""
        x = self.x.detach().clone().requires_grad_()
        gamma = self.gamma.clone().requires_grad_()
        beta = self.beta.clone().requires_grad_()
        rm, rv = self.rm.clone(), self.rv.clone()
        y = fn(x, gamma, beta, rm, rv, **kwargs)
        y.backward(self.grad if y.dim() else None)
        return y, x.grad, gamma.grad, beta.grad, rm, rv

    def eager(self):
        """BatchNorm2d + LeakyReLU modules on the pixel-shuffled input: the eager generator's ops."""
        bn = torch.nn.BatchNorm2d(self.gamma.shape[0], eps=EPS, momentum=MOMENTUM).to(DEVICE, self.x.dtype)
        act = torch.nn.LeakyReLU(self.slope)
        with torch.no_grad():
            bn.weight.copy_(self.gamma)
            bn.bias.copy_(self.beta)
            bn.running_mean.copy_(self.rm)
            bn.running_var.copy_(self.rv)
        bn.train(self.training)
        x = self.x.detach().clone().requires_grad_()
        y = act(bn(F.pixel_shuffle(x, self.scale) if self.scale > 1 else x))
        y.backward(self.grad)
        assert int(bn.num_batches_tracked) == int(self.training)
        return y, x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var

    def ours(self, impl="triton"):
        return self.run(
            lambda x, g, b, rm, rv: kernels.bn_leaky_relu_shuffle(
                x, g, b, rm, rv, self.training, MOMENTUM, EPS, self.slope, self.scale, impl=impl
            )
        )

    def magnitudes(self):
        u, mu, var = self.stats64()
        v = lambda t: t.view(1, -1, 1, 1)  # noqa: E731
        dims = (0, 2, 3)
        sigma = torch.sqrt(var + EPS)
        a = v(self.gamma.double() / sigma)
        z = a * (u - v(mu)) + v(self.beta.double())
        g = self.grad.double()
        gz = torch.where(z > 0, g, g * self.slope).abs()
        xhat = ((u - v(mu)) / v(sigma)).abs()
        xhat_err = xhat + (u.abs() + v(mu).abs()) / v(sigma)
        m_y = a.abs() * (u.abs() + v(mu).abs() + v(u.abs().mean(dims))) + v(self.beta.double()).abs()
        m_y = m_y * max(1.0, abs(self.slope))
        m_db = gz.sum(dims)
        m_dg = (gz * xhat_err).sum(dims)
        if self.training:
            m_dx = a.abs() * (gz + v(gz.mean(dims)) + xhat_err * v((gz * xhat).mean(dims)))
        else:
            m_dx = a.abs() * gz
        m_dx = F.pixel_unshuffle(m_dx, self.scale) if self.scale > 1 else m_dx
        n = u.numel() // u.shape[1]
        unbiased = u.var(dims, unbiased=True)
        m_rm = (1 - MOMENTUM) * self.rm.double().abs() + MOMENTUM * u.abs().mean(dims)
        m_rv = (1 - MOMENTUM) * self.rv.double().abs() + MOMENTUM * unbiased * (n > 1)
        return m_y, m_dx, m_dg, m_db, m_rm, m_rv

    def check(self, impl="triton"):
        ours, eager, mags = self.ours(impl), self.eager(), self.magnitudes()
        names = ("output", "grad x", "grad gamma", "grad beta", "running_mean", "running_var")
        for name, a, b, m in zip(names, ours, eager, mags):
            assert_within(a, b, m, name)
        if not self.training:  # eval mode changes no state
            assert torch.equal(ours[4], self.rm) and torch.equal(ours[5], self.rv)
        y = ours[0]
        if self.layout == "channels_last" and not self.x.is_contiguous():
            assert y.is_contiguous(memory_format=torch.channels_last)
        else:
            assert y.is_contiguous()
        return ours


# ------------------------------------------------------------------------------------------------
# parity
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["triton", "ref"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_left_out_input_bias_enters_only_the_running_mean(layout, impl):
    """Training with ``input_bias``: everything BatchNorm2d + LeakyReLU give for ``x + bias`` (the
    output, the gradients, the running statistics), and the bias's exact gradient, zero."""
    case = Case(3, 4, 2, 3, 5, layout)
    bias = (torch.randn(4, device=DEVICE) * 3).requires_grad_()
    biased = copy.copy(case)
    biased.x = case.x + bias.detach().repeat_interleave(4).view(1, -1, 1, 1)
    ours = case.run(
        lambda x, g, b, rm, rv: kernels.bn_leaky_relu_shuffle(
            x, g, b, rm, rv, True, MOMENTUM, EPS, case.slope, case.scale, impl=impl, input_bias=bias
        )
    )
    names = ("output", "grad x", "grad gamma", "grad beta", "running_mean", "running_var")
    for name, a, b, m in zip(names, ours, biased.eager(), biased.magnitudes()):
        assert_within(a, b, m, name)
    assert bias.grad is not None and torch.equal(bias.grad, torch.zeros_like(bias))
    with pytest.raises(ValueError, match="input_bias is for training"):
        kernels.bn_leaky_relu_shuffle(case.x, case.gamma, case.beta, case.rm, case.rv, False, input_bias=bias)


@pytest.mark.parametrize("tile", [None, 16], ids=["big_tiles", "tiny_tiles"])
@pytest.mark.parametrize("scale", [1, 2, 3])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_matches_eager_batch_norm_leaky_relu(layout, training, scale, tile, monkeypatch):
    """Odd sizes (batch 3, 5 channels, 3x4 phases); tiny tiles force many programs, partial tiles
    and a long fixed-order merge of partials."""
    if tile is not None:
        monkeypatch.setattr(_launch, "TILE_OVERRIDE", tile)
    Case(3, 5, scale, 3, 4, layout, training).check()


@pytest.mark.parametrize("slope", [0.0, -0.3, 1.0])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_other_slopes(slope, layout):
    Case(2, 3, 2, 3, 3, layout, True, slope).check()


@pytest.mark.parametrize(
    "shape",
    [(1, 3, 2, 1, 1), (1, 7, 2, 2, 3), (4, 1, 2, 5, 2), (2, 64, 2, 8, 8)],
    ids=["batch1-1x1", "batch1", "one-channel", "seed-like"],
)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_odd_and_seed_like_sizes(shape, training):
    """Batch 1 trains fine here (s*s*H*W values per channel); the seed-like case is the 16x16 block."""
    Case(*shape, "nchw", training).check()


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_long_merge_of_many_partials_with_odd_channels(layout, monkeypatch):
    """3 channels, 24 (NCHW) or 96 (NHWC) partials per channel (a tiny tile: a partial per row or
    column of 4 values), each channel's row of the channel-major buffer merged in 6 or 24 chunks:
    the statistics, gradients and running statistics still within the bounds."""
    monkeypatch.setattr(_launch, "TILE_OVERRIDE", 4)
    case = Case(2, 3, 2, 3, 4, layout)
    layout_ = bn_act._PhaseLayout.of(case.x, 2, layout == "channels_last")
    _, block_p = layout_.merge_tile
    assert layout_.partials_per_channel >= 6 * block_p, "the merge must loop over many chunks"
    case.check()


# the seed generator's phase tensors [N, 4C, H, W] per output-channel count C (tests/aot/cases.py)
SEED_PHASES = {128: (512, 4, 4), 64: (256, 8, 8), 32: (128, 16, 16)}


@pytest.mark.parametrize("batch", [512, 64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_merges_spread_over_a_program_per_channel_on_a_gpu(layout, batch, monkeypatch):
    """At the seed generator's shapes the two merge kernels (statistics forward, grad gamma/beta
    backward) launch a program per channel on a GPU, not one or two programs looping over all
    channels. The ``meta`` device stands for a GPU (``kernels._launch``); launches are recorded,
    not run, since meta tensors hold no data."""
    launches = []

    def record(op, kernel, grid, *args, device, wrap=False, **meta):
        launches.append((kernel.__name__, tuple(grid), meta))

    monkeypatch.setattr(bn_act, "launch", record)
    for c, (cp, h, w) in SEED_PHASES.items():
        x = torch.empty(batch, cp, h, w, device="meta")
        x = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
        vec = [torch.empty(c, device="meta") for _ in range(4)]
        launches.clear()
        mean, invstd = bn_act.bn_shuffle_stats(x, vec[2], vec[3], 2, MOMENTUM, EPS, vec[0])
        grad_y = torch.empty(bn_act._out_shape_strides(x, 2, layout == "channels_last")[0], device="meta")
        bn_act.bn_leaky_relu_shuffle_backward(grad_y, x, mean, invstd, vec[0], vec[1], 2, 0.2, EPS, True, False)
        merges = {name: (grid, meta) for name, grid, meta in launches if "merge" in name or "sum_partials" in name}
        assert set(merges) == {"_stats_merge_kernel", "_sum_partials_kernel"}
        for name, (grid, meta) in merges.items():
            assert grid == (c,) and meta["BLOCK_C"] == 1, (name, c, grid, meta)


@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_batch_one_single_value_per_channel_raises_like_torch(impl):
    """scale 1, batch 1, 1x1: one value per channel; torch's batch norm refuses to train on it."""
    x = torch.randn(1, 3, 1, 1, device=DEVICE)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        torch.nn.BatchNorm2d(3).to(DEVICE)(x)
    args = (
        torch.ones(3, device=DEVICE),
        torch.zeros(3, device=DEVICE),
        torch.zeros(3, device=DEVICE),
        torch.ones(3, device=DEVICE),
    )
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        kernels.bn_leaky_relu_shuffle(x, *args, True, scale=1, impl=impl)
    y = kernels.bn_leaky_relu_shuffle(x, *args, False, scale=1, impl=impl)  # eval mode is fine
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_reference_path_matches_eager(impl):
    Case(3, 4, 2, 3, 5, "channels_last", True).check(impl)


def test_empty_batch_like_torch():
    """torch: an empty output, running statistics untouched, zero parameter gradients."""
    case = Case(1, 3, 2, 2, 2)
    x = torch.randn(0, 12, 2, 2, device=DEVICE, requires_grad=True)
    gamma, beta = case.gamma.clone().requires_grad_(), case.beta.clone().requires_grad_()
    rm, rv = case.rm.clone(), case.rv.clone()
    y = kernels.bn_leaky_relu_shuffle(x, gamma, beta, rm, rv, True, MOMENTUM, EPS, 0.2, 2, impl="triton")
    assert y.shape == (0, 3, 4, 4)
    y.sum().backward()
    assert torch.equal(rm, case.rm) and torch.equal(rv, case.rv)
    assert torch.equal(gamma.grad, torch.zeros(3, device=DEVICE))
    assert torch.equal(beta.grad, torch.zeros(3, device=DEVICE))


def test_variance_is_numerically_sound():
    """Mean 1e4, standard deviation 1: E[x^2] - E[x]^2 in float32 loses every digit (each term is
    1e8, whose float32 spacing is 8). The per-tile two-pass M2 plus Chan's merge loses only what
    the partial means' rounding (absolute ~u*|mean|) does to the between-partial term: a relative
    error of order u*|mean|/sigma = 6e-4; held to 2 u |mean| / sigma."""
    x = phases(4, 3, 2, 6, 5, offset=1e4, spread=1.0)
    for tile in (None, 64):
        _launch.TILE_OVERRIDE = tile
        try:
            mean, invstd = bn_act.bn_shuffle_stats(x, None, None, 2, MOMENTUM, 1e-30)
        finally:
            _launch.TILE_OVERRIDE = None
        u64 = F.pixel_shuffle(x.double(), 2)
        var64 = u64.var((0, 2, 3), unbiased=False)
        rel = ((invstd.double() ** -2 - var64) / var64).abs().max().item()
        bound = 2 * 2.0**-24 * 1e4 / var64.sqrt().min().item()
        assert rel <= bound, (tile, rel, bound)
        u = F.pixel_shuffle(x, 2)
        naive = (u * u).mean((0, 2, 3)) - u.mean((0, 2, 3)) ** 2
        assert ((naive.double() - var64) / var64).abs().max().item() > 0.5  # what the kernels avoid


# ------------------------------------------------------------------------------------------------
# buffers, gradients in other layouts, determinism
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_launchers_write_every_element_of_given_buffers(layout):
    case = Case(3, 2, 2, 3, 3, layout)
    mean, invstd = bn_act.bn_shuffle_stats(case.x, None, None, 2, MOMENTUM, EPS)
    expected = case.eager()
    out = torch.full_like(expected[0], float("nan"))
    y = bn_act.bn_leaky_relu_shuffle_apply(case.x, mean, invstd, case.gamma, case.beta, 2, 0.2, EPS, False, out=out)
    assert y is out
    mags = case.magnitudes()
    assert_within(out, expected[0], mags[0], "output")
    gx = torch.full_like(case.x, float("nan"))
    bn_act.bn_leaky_relu_shuffle_backward(
        case.grad, case.x, mean, invstd, case.gamma, case.beta, 2, 0.2, EPS, True, False, grad_x_out=gx
    )
    assert_within(gx, expected[1], mags[1], "grad x")


def test_out_with_wrong_strides_is_refused():
    case = Case(2, 2, 2, 3, 3)
    out = torch.empty(2, 2, 6, 6, device=DEVICE).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="strides"):
        bn_act.bn_leaky_relu_shuffle_apply(case.x, case.rm, case.rv, case.gamma, case.beta, 2, 0.2, EPS, True, out=out)


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_gradient_arriving_in_the_other_layout(layout):
    case = Case(3, 3, 2, 3, 3, layout)
    other = torch.contiguous_format if layout == "channels_last" else torch.channels_last
    case.grad = case.grad.contiguous(memory_format=other)
    case.check()


def test_non_dense_input_is_made_contiguous():
    case = Case(3, 3, 2, 4, 4)
    case.x = case.x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, a non-dense view
    assert not case.x.is_contiguous() and not case.x.is_contiguous(memory_format=torch.channels_last)
    case.check()


def test_reductions_are_deterministic():
    case = Case(3, 3, 2, 4, 4)
    mean, invstd = bn_act.bn_shuffle_stats(case.x, None, None, 2, MOMENTUM, EPS)
    first = bn_act.bn_leaky_relu_shuffle_backward(
        case.grad, case.x, mean, invstd, case.gamma, case.beta, 2, 0.2, EPS, True, False
    )
    for _ in range(2):
        again_mean, again_invstd = bn_act.bn_shuffle_stats(case.x, None, None, 2, MOMENTUM, EPS)
        assert torch.equal(again_mean, mean) and torch.equal(again_invstd, invstd)
        again = bn_act.bn_leaky_relu_shuffle_backward(
            case.grad, case.x, mean, invstd, case.gamma, case.beta, 2, 0.2, EPS, True, False
        )
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_default_impl_runs_triton_here():
    case = Case(2, 2, 2, 2, 2)
    x = case.x.requires_grad_()
    y = kernels.bn_leaky_relu_shuffle(x, case.gamma, case.beta, None, None, True, MOMENTUM, EPS)
    y_ref = kernels.bn_leaky_relu_shuffle(x, case.gamma, case.beta, None, None, True, MOMENTUM, EPS, impl="ref")
    assert type(y.grad_fn).__name__ != type(y_ref.grad_fn).__name__
    if DEVICE == "cpu":
        assert "BNLeakyReLUShuffleFunction" in type(y.grad_fn).__name__


# ------------------------------------------------------------------------------------------------
# float64 gradcheck (small: the interpreter runs ~6 launches per evaluation)
# ------------------------------------------------------------------------------------------------
def _gradcheck(case: Case, fn) -> None:
    x = case.x.detach().clone().requires_grad_()
    gamma, beta = case.gamma.clone().requires_grad_(), case.beta.clone().requires_grad_()
    assert torch.autograd.gradcheck(fn, (x, gamma, beta), fast_mode=True)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_gradcheck_float64(impl, layout, training):
    case = Case(2, 2, 2, 2, 3, layout, training, dtype=torch.float64)
    _gradcheck(
        case,
        lambda x, g, b: kernels.bn_leaky_relu_shuffle(
            x,
            g,
            b,
            None if training else case.rm,
            None if training else case.rv,
            training,
            MOMENTUM,
            EPS,
            0.2,
            2,
            impl=impl,
        ),
    )


@pytest.mark.skipif(not bn_act._CUSTOM_OP, reason="this torch has no torch.library.triton_op")
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_registered_ops_eagerly(training):
    """The custom ops (what CUDA calls, for torch.compile) run eagerly: same kernels, op autograd."""
    case = Case(2, 2, 2, 2, 3, "nchw", training, dtype=torch.float64)

    def fn(x, g, b):
        if training:
            mean, stat = torch.ops.kernels.bn_shuffle_stats(x.detach(), None, None, 2, MOMENTUM, EPS)
        else:
            mean, stat = case.rm, case.rv
        return torch.ops.kernels.bn_leaky_relu_shuffle(x, mean, stat, g, b, 2, 0.2, EPS, training, not training)

    _gradcheck(case, fn)
    rm, rv = case.rm.clone(), case.rv.clone()
    torch.ops.kernels.bn_shuffle_stats(case.x, rm, rv, 2, MOMENTUM, EPS)
    expected = case.eager()
    if training:
        assert_within(rm, expected[4], case.magnitudes()[4], "running_mean (op)")
        assert_within(rv, expected[5], case.magnitudes()[5], "running_var (op)")


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def _args(c=3):
    return [torch.ones(c), torch.zeros(c), torch.zeros(c), torch.ones(c)]


@pytest.mark.parametrize(
    "x,args,kwargs,error,match",
    [
        (torch.randn(2, 12, 3), _args(), {}, ValueError, "phase tensor"),
        (torch.randn(2, 10, 3, 3), _args(), {}, ValueError, "multiple of scale"),
        (torch.randn(2, 12, 3, 3), _args(4), {}, ValueError, "shape \\[3\\]"),
        (torch.randn(2, 12, 3, 3), [torch.ones(3), None, None, None], {}, ValueError, "affine parameters"),
        (torch.randn(2, 12, 3, 3), [torch.ones(3), torch.zeros(3), torch.zeros(3), None], {}, ValueError, "or neither"),
        (
            torch.randn(2, 12, 3, 3),
            [torch.ones(3), torch.zeros(3), None, None],
            {"training": False},
            ValueError,
            "eval mode",
        ),
        (torch.randn(2, 12, 3, 3), _args(), {"momentum": 1.5}, ValueError, "momentum"),
        (torch.randn(2, 12, 3, 3), _args(), {"scale": 0}, ValueError, "scale must be"),
        (torch.ones(2, 12, 3, 3, dtype=torch.int64), _args(), {}, TypeError, "floating point"),
        (torch.randn(2, 12, 3, 3, dtype=torch.bfloat16), _args(), {"impl": "triton"}, TypeError, "CUDA only"),
        (torch.randn(2, 12, 3, 3), _args(), {"impl": "cuda"}, ValueError, "impl must be one of"),
    ],
)
def test_bad_input(x, args, kwargs, error, match):
    if DEVICE == "cuda" and match == "CUDA only":
        pytest.skip("half types are allowed on CUDA")
    kwargs = {"training": True, "scale": 2, **kwargs}
    with pytest.raises(error, match=match):
        kernels.bn_leaky_relu_shuffle(x, *args, **kwargs)


# The compiled path (every dtype, layout, scale and mode, the seed generator end to end, shapes past
# 2**31) is compiled for sm_90/sm_80/sm_89 by tests/test_aot_compile.py (cases in tests/aot/cases.py).


# ------------------------------------------------------------------------------------------------
# CUDA only: half precision, torch.compile, opcheck
# ------------------------------------------------------------------------------------------------
cuda_only = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA only: the interpreter has no half types and cannot compile Triton ops"
)


@cuda_only
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_bf16_on_cuda(layout):
    """bf16 input (autocast's conv output), fp32 parameters and statistics: within bf16 rounding
    (2**-8 relative to the magnitudes) of the float64 eager result."""
    case = Case(64, 32, 2, 16, 16, layout)
    x = case.x.to(torch.bfloat16)
    rm, rv = case.rm.clone(), case.rv.clone()
    y = kernels.bn_leaky_relu_shuffle(x, case.gamma, case.beta, rm, rv, True, MOMENTUM, EPS, 0.2, 2, impl="triton")
    assert y.dtype == torch.bfloat16
    case.x = x.double()
    ref = F.leaky_relu(
        F.batch_norm(
            F.pixel_shuffle(case.x, 2), None, None, case.gamma.double(), case.beta.double(), True, MOMENTUM, EPS
        ),
        0.2,
    )
    assert ((y.double() - ref).abs() <= 2.0**-7 * case.magnitudes()[0]).all()


@cuda_only
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_torch_compile_on_cuda(layout):
    case = Case(8, 16, 2, 8, 8, layout)

    def f(x, g, b, rm, rv):
        return kernels.bn_leaky_relu_shuffle(x, g, b, rm, rv, True, MOMENTUM, EPS, 0.2, 2).square().sum()

    def eager(x, g, b, rm, rv):
        return F.leaky_relu(F.batch_norm(F.pixel_shuffle(x, 2), rm, rv, g, b, True, MOMENTUM, EPS), 0.2).square().sum()

    compiled = torch.compile(f, fullgraph=True)
    ours, ref = case.run(compiled), case.run(eager)
    for name, a, b in zip(("loss", "grad x", "grad gamma", "grad beta", "running_mean", "running_var"), ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item(), msg=name)


@cuda_only
def test_opcheck_on_cuda():
    x = phases(4, 8, 2, 5, 5).requires_grad_()
    g = torch.randn(8, device="cuda", requires_grad=True)
    b = torch.randn(8, device="cuda", requires_grad=True)
    mean, invstd = torch.ops.kernels.bn_shuffle_stats(x.detach(), None, None, 2, MOMENTUM, EPS)
    torch.library.opcheck(
        torch.ops.kernels.bn_leaky_relu_shuffle.default, (x, mean, invstd, g, b, 2, 0.2, EPS, True, False)
    )
    torch.library.opcheck(
        torch.ops.kernels.bn_shuffle_stats.default,
        (x.detach(), torch.zeros(8, device="cuda"), torch.ones(8, device="cuda"), 2, MOMENTUM, EPS),
    )
