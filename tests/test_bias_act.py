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

pytestmark = triton_kernel_marks()

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


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
