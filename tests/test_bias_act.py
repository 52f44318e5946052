"""kernels.bias_leaky_relu against the eager ops, under the Triton interpreter on CPU.

Tolerance: fp32 forward and gradients within 1e-5 relative (elementwise, with an absolute floor
of 1e-5 times the tensor's largest magnitude for elements near zero). Every buffer the launchers
allocate starts as NaN (``kernels._buffers.POISON_OUTPUTS``), so an element a kernel fails to write fails the test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_within, bias_leaky_relu_bounds, triton_kernel_marks, unit_roundoff

import kernels
from kernels import _launch, bias_act
from wgan.config import WGANConfig, conv_out_side

pytestmark = triton_kernel_marks()

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SEED = WGANConfig()  # the seed critic's architecture (configs/seed.yaml keeps the defaults)


def make_input(shape: tuple[int, ...], layout: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    x = torch.randn(shape, dtype=dtype, device=DEVICE)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":  # a non-dense view: batch and a spatial axis swapped
        x = x.transpose(0, 2).contiguous().transpose(0, 2)
    return x


LAYOUTS = [
    ((3, 5, 7, 7), "nchw"),
    ((3, 5, 7, 7), "channels_last"),
    ((3, 5), "nchw"),
    ((3, 5, 11), "nchw"),
    ((3, 5, 7, 7), "transposed"),
]


def _eager(x, bias, slope):
    return F.leaky_relu(x + bias.view((1, -1) + (1,) * (x.dim() - 2)), slope)


@pytest.mark.parametrize("tile_budget", [None, 16, 4096], ids=["big_tiles", "tiny_tiles", "gpu_tiles"])
@pytest.mark.parametrize("slope", [0.2, 0.0, -0.3, 1.0])
@pytest.mark.parametrize("shape,layout", LAYOUTS, ids=[f"{s}-{lay}" for s, lay in LAYOUTS])
def test_matches_eager_forward_and_gradients(shape, layout, slope, tile_budget, monkeypatch):
    """Tiny tiles force many programs and partial rows: the masking and the two-stage bias
    reduction that a GPU's 4096-element tiles (also run here) rely on."""
    if tile_budget is not None:
        monkeypatch.setattr(_launch, "TILE_OVERRIDE", tile_budget)
    x = make_input(shape, layout)
    bias = torch.randn(shape[1], device=DEVICE)
    grad_y = torch.randn(shape, device=DEVICE)
    x1, b1 = x.detach().clone().requires_grad_(), bias.clone().requires_grad_()
    x2, b2 = x.detach().clone().requires_grad_(), bias.clone().requires_grad_()

    y1 = kernels.bias_leaky_relu(x1, b1, slope, impl="triton")
    y2 = _eager(x2, b2, slope)
    y1.backward(grad_y)
    y2.backward(grad_y)

    y_bound, gx_bound, gb_bound = bias_leaky_relu_bounds(x, bias, grad_y, x2.grad)
    assert_within(y1, y2, y_bound, "forward")
    assert_within(x1.grad, x2.grad, gx_bound, "grad x")
    assert_within(b1.grad, b2.grad, gb_bound, "grad bias")
    if layout == "channels_last":
        assert y1.is_contiguous(memory_format=torch.channels_last)
    else:
        assert y1.is_contiguous()


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_grad_arriving_in_another_layout(layout):
    """A downstream op may hand back its gradient in the other memory format."""
    x = make_input((3, 5, 7, 7), layout).requires_grad_()
    bias = torch.randn(5, device=DEVICE, requires_grad=True)
    other = torch.channels_last if layout == "nchw" else torch.contiguous_format
    grad_y = torch.randn(3, 5, 7, 7, device=DEVICE).contiguous(memory_format=other)
    kernels.bias_leaky_relu(x, bias, 0.2, impl="triton").backward(grad_y)
    xr, br = x.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    _eager(xr, br, 0.2).backward(grad_y)
    _, gx_bound, gb_bound = bias_leaky_relu_bounds(x, bias, grad_y, xr.grad)
    assert_within(x.grad, xr.grad, gx_bound, "grad x")
    assert_within(bias.grad, br.grad, gb_bound, "grad bias")


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_launchers_write_every_element_of_given_buffers(layout):
    x = make_input((3, 5, 7, 7), layout)
    bias = torch.randn(5, device=DEVICE)
    out = torch.full_like(x, float("nan"))  # keeps x's strides
    y = bias_act.bias_leaky_relu_forward(x, bias, 0.2, out=out)
    assert y is out
    grad_y = torch.randn_like(x)
    expected_gx = torch.where(x + bias.view(1, -1, 1, 1) > 0, grad_y, 0.2 * grad_y)
    y_bound, gx_bound, gb_bound = bias_leaky_relu_bounds(x, bias, grad_y, expected_gx)
    assert_within(out, _eager(x, bias, 0.2), y_bound, "forward")

    gx = torch.full_like(x, float("nan"))
    gb = torch.full((5,), float("nan"), device=DEVICE)
    bias_act.bias_leaky_relu_backward(grad_y, out, bias, 0.2, False, grad_x_out=gx, grad_bias_out=gb)
    assert_within(gx, expected_gx, gx_bound, "grad x")
    assert_within(gb, expected_gx.sum((0, 2, 3)), gb_bound, "grad bias")


def test_out_with_wrong_strides_is_refused():
    x = make_input((3, 5, 7, 7), "nchw")
    out = torch.empty_like(x).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="strides"):
        bias_act.bias_leaky_relu_forward(x, torch.randn(5), 0.2, out=out)


@pytest.mark.parametrize(
    "impl,layout,slope",
    [
        ("triton", "nchw", 0.2),
        ("triton", "nchw", 0.0),
        ("triton", "nchw", -0.3),
        ("triton", "channels_last", 0.2),
        ("triton", "channels_last", -0.3),
        ("ref", "nchw", 0.2),
        ("ref", "channels_last", -0.3),
    ],
)
def test_gradcheck_float64(impl, layout, slope):
    x = make_input((2, 3, 2, 3), layout, dtype=torch.float64)
    bias = torch.randn(3, dtype=torch.float64, device=DEVICE)
    # keep x + b away from the kink at 0, where finite differences straddle two slopes
    z = x + bias.view(1, -1, 1, 1)
    x = (x + torch.where(z >= 0, 0.05, -0.05)).detach().requires_grad_()
    bias.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: kernels.bias_leaky_relu(a, b, slope, impl=impl), (x, bias))


@pytest.mark.skipif(not bias_act._CUSTOM_OP, reason="this torch has no torch.library.triton_op")
def test_registered_op_gradcheck_float64_eager():
    """The custom op (what CUDA calls, for torch.compile) run eagerly: same kernels, op autograd."""
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64, device=DEVICE)
    bias = torch.randn(3, dtype=torch.float64, device=DEVICE)
    x = (x + torch.where(x + bias.view(1, -1, 1, 1) >= 0, 0.05, -0.05)).requires_grad_()
    bias.requires_grad_()
    for slope in (0.2, -0.3):
        assert torch.autograd.gradcheck(lambda a, b, s=slope: torch.ops.kernels.bias_leaky_relu(a, b, s), (x, bias))


def test_default_impl_runs_triton_here():
    x = torch.randn(3, 5, 7, 7, device=DEVICE, requires_grad=True)
    name = type(kernels.bias_leaky_relu(x, torch.zeros(5, device=DEVICE), 0.2).grad_fn).__name__
    ref_name = type(kernels.bias_leaky_relu(x, torch.zeros(5, device=DEVICE), 0.2, impl="ref").grad_fn).__name__
    assert name != ref_name
    if DEVICE == "cpu":
        assert "BiasLeakyReLUFunction" in name


def test_bias_grad_is_deterministic():
    x = torch.randn(3, 5, 7, 7, device=DEVICE)
    bias = torch.randn(5, device=DEVICE)
    grad_y = torch.randn_like(x)
    y = bias_act.bias_leaky_relu_forward(x, bias, 0.2)
    first = bias_act.bias_leaky_relu_backward(grad_y, y, bias, 0.2, False)[1]
    for _ in range(3):
        assert torch.equal(bias_act.bias_leaky_relu_backward(grad_y, y, bias, 0.2, False)[1], first)


def assert_grads_match_eager(x: torch.Tensor, bias: torch.Tensor, slope: float) -> None:
    """grad x and grad bias of the Triton path within the bounds of the eager ops' (upstream random)."""
    grad_y = torch.randn(x.shape, device=DEVICE)
    x1, b1 = x.detach().clone().requires_grad_(), bias.clone().requires_grad_()
    x2, b2 = x.detach().clone().requires_grad_(), bias.clone().requires_grad_()
    kernels.bias_leaky_relu(x1, b1, slope, impl="triton").backward(grad_y)
    _eager(x2, b2, slope).backward(grad_y)
    _, gx_bound, gb_bound = bias_leaky_relu_bounds(x, bias, grad_y, x2.grad)
    assert_within(x1.grad, x2.grad, gx_bound, "grad x")
    assert_within(b1.grad, b2.grad, gb_bound, "grad bias")


@pytest.mark.parametrize("slope", [0.2, -0.3])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_bias_grad_of_many_partials_per_channel_with_odd_channels(layout, slope, monkeypatch):
    """7 channels, 42 (NCHW) or 150 (NHWC) partials per channel (a tiny tile: a partial per row or
    column segment of at most 4 values), each channel's row of the channel-major buffer summed by
    its own program in 11 or 38 chunks: grad x and grad bias still within the bounds."""
    monkeypatch.setattr(_launch, "TILE_OVERRIDE", 4)
    x = make_input((6, 7, 5, 5), layout)
    tiles = bias_act._MatrixTiles.of(*bias_act._matrix_view(x))
    block_c, block_p = tiles.sum_tile
    assert block_c == 1 and tiles.partials_per_channel >= 10 * block_p, "a program per channel, many chunks"
    assert_grads_match_eager(x, torch.randn(7, device=DEVICE), slope)


@pytest.mark.parametrize("tile_budget", [4, 8, 64])
def test_bias_grad_of_row_tiles_across_samples(tile_budget, monkeypatch):
    """NCHW rows ``n*C + c`` (C = 7) in tiles of 2, 4 or 32 rows, most starting mid-sample: a
    tile's rows wrap into the next sample at most once (2, 4 <= C) or span several samples
    (32 > C), the two ways the partials kernel places a row's partial (sample, channel)."""
    monkeypatch.setattr(_launch, "TILE_OVERRIDE", tile_budget)
    x = make_input((9, 7, 2, 1), "nchw")
    tiles = bias_act._MatrixTiles.of(*bias_act._matrix_view(x))
    assert tiles.channel_on_rows and tiles.block_r == tile_budget // 2 and tiles.n_col_programs == 1
    assert_grads_match_eager(x, torch.randn(7, device=DEVICE), -0.3)


def seed_critic_activations(batch: int) -> list[tuple[int, int, int, int]]:
    """The shapes the seed critic's convolutions hand to bias_leaky_relu at ``batch``: its real and
    fake images go through in one pass (2 x batch)."""
    side, shapes = SEED.image_size, []
    for filters, stride in zip(SEED.critic_filters, SEED.critic_strides):
        side = conv_out_side(side, SEED.critic_kernel_size, stride)
        shapes.append((2 * batch, filters, side, side))
    return shapes


@pytest.mark.parametrize("batch", [512, 64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_bias_grad_sums_spread_over_a_program_per_channel_on_a_gpu(layout, batch, monkeypatch):
    """At the seed critic's shapes the bias gradient's sum launches a program per channel on a
    GPU, each reading its channel's partials in one pass, not one or two programs looping over
    all channels; channels share a program only when their partials are fewer than a program's
    threads. Two launches per backward, as before. The ``meta`` device stands for a GPU
    (``kernels._launch``); launches are recorded, not run, since meta tensors hold no data."""
    launches = []

    def record(op, kernel, grid, *args, device, wrap=False, **meta):
        launches.append((kernel.__name__, tuple(grid), args, meta))

    monkeypatch.setattr(bias_act, "launch", record)
    threads = _launch.GPU_WARPS * 32
    for shape in seed_critic_activations(batch):
        x = torch.empty(shape, device="meta")
        x = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
        launches.clear()
        bias_act.bias_leaky_relu_backward(torch.empty_like(x), x, torch.empty(shape[1], device="meta"), 0.2, False)
        assert len(launches) == 2, "the partials, then the sum"
        name, grid, args, meta = launches[1]
        p, c = args[2:4]
        assert name.endswith("_sum_kernel") and c == shape[1], (name, args)
        block_c = meta["BLOCK_C"]
        assert block_c == 1 or block_c * p <= threads, (shape, p, grid, meta)  # shared only by short rows
        assert grid == (_launch.cdiv(c, block_c),), (shape, p, grid, meta)
        assert meta["BLOCK_P"] >= p, (shape, p, meta)  # one pass over the channel's partials


def test_empty_batch():
    x = torch.randn(0, 5, 7, 7, device=DEVICE, requires_grad=True)
    bias = torch.randn(5, device=DEVICE, requires_grad=True)
    y = kernels.bias_leaky_relu(x, bias, 0.2, impl="triton")
    y.sum().backward()
    assert y.shape == x.shape
    assert torch.equal(bias.grad, torch.zeros(5, device=DEVICE))


@pytest.mark.parametrize(
    "args,error,match",
    [
        ((torch.randn(3, 5, 7, 7), torch.randn(4)), ValueError, "bias must have shape"),
        ((torch.randn(5), torch.randn(5)), ValueError, "channel dimension"),
        ((torch.ones(3, 5, dtype=torch.int64), torch.randn(5)), TypeError, "floating point"),
        ((torch.randn(3, 5, 7, 7, dtype=torch.bfloat16), torch.randn(5)), TypeError, "CUDA only"),
    ],
)
def test_bad_input(args, error, match):
    if DEVICE == "cuda" and match == "CUDA only":
        pytest.skip("half types are allowed on CUDA")
    with pytest.raises(error, match=match):
        kernels.bias_leaky_relu(*args, 0.2, impl="triton")


def test_bad_impl_and_slope():
    x, b = torch.randn(3, 5), torch.randn(5)
    with pytest.raises(ValueError, match="impl must be one of"):
        kernels.bias_leaky_relu(x, b, 0.2, impl="cuda")
    with pytest.raises(TypeError, match="negative_slope"):
        kernels.bias_leaky_relu(x, b, float("nan"))


# ------------------------------------------------------------------------------------------------
# CUDA only: half precision, torch.compile, opcheck
# ------------------------------------------------------------------------------------------------
cuda_only = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA only: the interpreter has no half types and cannot compile Triton ops"
)


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_half_precision_on_cuda(dtype, layout):
    """Half inputs are exact in the fp64 reference; the kernel computes in fp32 (fp32 bounds) and
    rounds each result to the half type once (its unit roundoff of the value)."""
    x = make_input((64, 32, 16, 16), layout).to(dtype).requires_grad_()
    bias = torch.randn(32, device="cuda", dtype=dtype, requires_grad=True)
    grad_y = torch.randn(x.shape, device="cuda", dtype=dtype)
    kernels.bias_leaky_relu(x, bias, 0.2, impl="triton").backward(grad_y)
    xr, br = x.detach().double().requires_grad_(), bias.detach().double().requires_grad_()
    _eager(xr, br, 0.2).backward(grad_y.double())
    u = unit_roundoff(dtype)
    _, gx_bound, gb_bound = bias_leaky_relu_bounds(x.float(), bias.float(), grad_y.float(), xr.grad)
    assert_within(x.grad.double(), xr.grad, gx_bound + u * xr.grad.abs(), "grad x")
    assert_within(bias.grad.double(), br.grad, gb_bound + u * br.grad.abs(), "grad bias")


@cuda_only
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_torch_compile_on_cuda(layout):
    def f(x, b):
        return torch.ops.kernels.bias_leaky_relu(x, b, 0.2).square().sum()

    compiled = torch.compile(f, fullgraph=True)
    x = make_input((8, 32, 16, 16), layout).requires_grad_()
    b = torch.randn(32, device="cuda", requires_grad=True)
    gx, gb = torch.autograd.grad(compiled(x, b), (x, b))
    xr, br = x.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    y = _eager(xr, br, 0.2)
    rx, rb = torch.autograd.grad(y.square().sum(), (xr, br))
    # grad_x = 2 y f'(z): y's bound doubled plus the products (3u); grad_b sums those
    y_bound, _, gb_bound = bias_leaky_relu_bounds(x, b, 2 * y, rx)
    gx_bound = 2 * y_bound + 3 * unit_roundoff(torch.float32) * rx.abs()
    assert_within(gx, rx, gx_bound, "grad x")
    assert_within(gb, rb, gb_bound + gx_bound.sum((0, 2, 3)), "grad bias")


@cuda_only
def test_opcheck_on_cuda():
    x = torch.randn(4, 8, 5, 5, device="cuda", requires_grad=True)
    b = torch.randn(8, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.kernels.bias_leaky_relu.default, (x, b, 0.2))
    torch.library.opcheck(torch.ops.kernels.bias_leaky_relu.default, (x, b, -0.1))
