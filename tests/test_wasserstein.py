"""The fused Wasserstein head (critic and generator variants) against the eager ops.

Tolerance: fp32 losses and gradients within 1e-5 relative. The losses are differences of means,
so their error is measured against the size of the terms (``|mean real| + |mean fake|``), not
against a difference that may cancel to near zero; gradients elementwise with an absolute floor of
1e-5 times the tensor's largest magnitude. All launcher buffers start as NaN (``kernels._buffers.POISON_OUTPUTS``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    assert_within,
    triton_kernel_marks,
    unit_roundoff,
    wasserstein_grad_bounds,
    wasserstein_loss_bounds,
)

import kernels
from kernels import wasserstein

pytestmark = triton_kernel_marks()

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def tiny_blocks(n: int, f: int, device: torch.device) -> dict[str, int]:
    """Blocks far smaller than the problem: many programs, loops over F and over the partials."""
    return dict(fwd_n=2, fwd_f=16, bwd_n=2, bwd_f=16, red_p=2, red_f=16)


def use_blocks(blocks: str, monkeypatch) -> None:
    if blocks == "tiny":
        monkeypatch.setattr(wasserstein, "_block_sizes", tiny_blocks)
    elif blocks == "gpu":  # the block sizes a GPU uses, run here through the interpreter
        monkeypatch.setattr(wasserstein, "interpreted", lambda device: False)


def eager_losses(features, weight, bias, n_real):
    scores = features @ weight.t() + bias
    d_real = -scores[:n_real].mean()
    d_fake = scores[n_real:].mean()
    return d_real + d_fake, d_real, d_fake


def head_inputs(n: int, f: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(n, f, device=DEVICE), torch.randn(1, f, device=DEVICE), torch.randn(1, device=DEVICE)


def leaves(*tensors):
    return [t.detach().clone().requires_grad_() for t in tensors]


# batch 3 real + 3 fake with 5 channels of 7x7 features; a lopsided split; one feature; more rows
# than a block
CASES = [(6, 3, 5 * 7 * 7), (7, 2, 5), (2, 1, 1), (9, 8, 33)]


@pytest.mark.parametrize("blocks", ["default", "tiny", "gpu"])
@pytest.mark.parametrize("upstream", ["d_loss", "random_mix"])
@pytest.mark.parametrize("n,n_real,f", CASES)
def test_critic_head_matches_eager(n, n_real, f, upstream, blocks, monkeypatch):
    use_blocks(blocks, monkeypatch)
    features = torch.randn(n, f, device=DEVICE)
    weight = torch.randn(1, f, device=DEVICE)
    bias = torch.randn(1, device=DEVICE)
    fused_in, eager_in = leaves(features, weight, bias), leaves(features, weight, bias)
    fused = kernels.wasserstein_critic_head(*fused_in, n_real, impl="triton")
    eager = eager_losses(*eager_in, n_real)

    assert all(t.dim() == 0 for t in fused)
    bound = wasserstein_loss_bounds(features, weight, bias, n_real)
    assert_within(torch.stack(fused), torch.stack(eager), bound, "losses")

    g = torch.tensor([1.0, 0.0, 0.0]) if upstream == "d_loss" else torch.randn(3)
    sum(gi.item() * o for gi, o in zip(g, fused)).backward()
    sum(gi.item() * o for gi, o in zip(g, eager)).backward()
    for name, a, b, bound in zip(
        ("features", "weight", "bias"), fused_in, eager_in, wasserstein_grad_bounds(features, weight, n_real, g)
    ):
        assert_within(a.grad, b.grad, bound, f"grad {name}")


@pytest.mark.parametrize("blocks", ["default", "tiny", "gpu"])
@pytest.mark.parametrize("n,f", [(3, 245), (1, 7), (9, 33)])
def test_generator_head_matches_eager(n, f, blocks, monkeypatch):
    use_blocks(blocks, monkeypatch)
    features, weight, bias = head_inputs(n, f)
    fused_in, eager_in = leaves(features, weight, bias), leaves(features, weight, bias)
    g_fused = kernels.wasserstein_generator_head(*fused_in, impl="triton")
    g_eager = -(eager_in[0] @ eager_in[1].t() + eager_in[2]).mean()
    assert g_fused.dim() == 0
    assert_within(g_fused, g_eager, wasserstein_loss_bounds(features, weight, bias, n)[1], "g_loss")
    g_fused.backward()
    g_eager.backward()
    upstream = torch.tensor([0.0, 1.0, 0.0])  # g_loss is the op's d_loss_real with every row real
    for name, a, b, bound in zip(
        ("features", "weight", "bias"), fused_in, eager_in, wasserstein_grad_bounds(features, weight, n, upstream)
    ):
        assert_within(a.grad, b.grad, bound, f"grad {name}")


def test_references_match_eager():
    features, weight, bias = torch.randn(6, 11), torch.randn(1, 11), torch.randn(1)
    assert_within(
        torch.stack(kernels.wasserstein_critic_head_reference(features, weight, bias, 4)),
        torch.stack(eager_losses(features, weight, bias, 4)),
        wasserstein_loss_bounds(features, weight, bias, 4),
    )
    assert_within(
        kernels.wasserstein_generator_head_reference(features, weight, bias),
        -F.linear(features, weight, bias).mean(),
        wasserstein_loss_bounds(features, weight, bias, 6)[1],
    )


def test_launchers_write_every_element_of_given_buffers():
    n, n_real, f = 7, 3, 45
    features, weight, bias = head_inputs(n, f)
    out = torch.full((3,), float("nan"), device=DEVICE)
    assert wasserstein.wasserstein_head_forward(features, weight, bias, n_real, out=out) is out
    expected = eager_losses(features, weight, bias, n_real)
    assert_within(out, torch.stack(expected), wasserstein_loss_bounds(features, weight, bias, n_real), "forward")

    g = torch.randn(3, device=DEVICE)
    gf = torch.full((n, f), float("nan"), device=DEVICE)
    gw = torch.full((1, f), float("nan"), device=DEVICE)
    gb = torch.full((1,), float("nan"), device=DEVICE)
    wasserstein.wasserstein_head_backward(
        g, features, weight, n_real, grad_features_out=gf, grad_weight_out=gw, grad_bias_out=gb
    )
    c = torch.where(torch.arange(n, device=DEVICE) < n_real, -(g[0] + g[1]) / n_real, (g[0] + g[2]) / (n - n_real))
    bounds = wasserstein_grad_bounds(features, weight, n_real, g)
    assert_within(gf, c[:, None] * weight, bounds[0], "grad features")
    assert_within(gw, (c[:, None] * features).sum(0, keepdim=True), bounds[1], "grad weight")
    assert_within(gb, (g[2] - g[1]).reshape(1), bounds[2], "grad bias")


def test_non_contiguous_features():
    base = torch.randn(13, 6, device=DEVICE)
    features = base.t()  # [6, 13] with column stride 6
    weight, bias = torch.randn(1, 13, device=DEVICE), torch.randn(1, device=DEVICE)
    fused_in, eager_in = leaves(features, weight, bias), leaves(features, weight, bias)
    fused_in[0] = base.detach().clone().t().requires_grad_()
    fused = kernels.wasserstein_critic_head(*fused_in, 2, impl="triton")
    eager = eager_losses(*eager_in, 2)
    fused[0].backward()
    eager[0].backward()
    bounds = wasserstein_grad_bounds(features, weight, 2, torch.tensor([1.0, 0.0, 0.0]))
    assert_within(fused_in[0].grad, eager_in[0].grad, bounds[0], "grad features")
    assert_within(fused_in[1].grad, eager_in[1].grad, bounds[1], "grad weight")


@pytest.mark.parametrize("impl", ["triton", "ref"])
def test_gradcheck_float64(impl):
    features = torch.randn(4, 5, dtype=torch.float64, device=DEVICE, requires_grad=True)
    weight = torch.randn(1, 5, dtype=torch.float64, device=DEVICE, requires_grad=True)
    bias = torch.randn(1, dtype=torch.float64, device=DEVICE, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: kernels.wasserstein_critic_head(a, b, c, 2, impl=impl), (features, weight, bias)
    )
    assert torch.autograd.gradcheck(
        lambda a, b, c: kernels.wasserstein_generator_head(a, b, c, impl=impl), (features, weight, bias)
    )


@pytest.mark.skipif(not wasserstein._CUSTOM_OP, reason="this torch has no torch.library.triton_op")
def test_registered_op_gradcheck_float64_eager():
    features = torch.randn(3, 5, dtype=torch.float64, device=DEVICE, requires_grad=True)
    weight = torch.randn(1, 5, dtype=torch.float64, device=DEVICE, requires_grad=True)
    bias = torch.randn(1, dtype=torch.float64, device=DEVICE, requires_grad=True)
    for n_real in (1, 3):  # 3 = every row real: the generator's case
        assert torch.autograd.gradcheck(
            lambda a, b, c, k=n_real: torch.ops.kernels.wasserstein_head(a, b, c, k), (features, weight, bias)
        )


def graph_node_names(t: torch.Tensor) -> set[str]:
    names, stack = set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None:
            names.add(type(node).__name__)
            stack.extend(n for n, _ in node.next_functions)
    return names


def test_default_impl_runs_triton_here():
    features = torch.randn(4, 6, device=DEVICE, requires_grad=True)
    weight, bias = torch.randn(1, 6, device=DEVICE), torch.randn(1, device=DEVICE)
    default = graph_node_names(kernels.wasserstein_critic_head(features, weight, bias, 2)[0])
    ref = graph_node_names(kernels.wasserstein_critic_head(features, weight, bias, 2, impl="ref")[0])
    assert "MeanBackward0" in ref and "MeanBackward0" not in default
    if DEVICE == "cpu":
        assert "WassersteinHeadFunctionBackward" in default


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda f, w, b: kernels.wasserstein_critic_head(f, w, b, 0), ValueError, "n_real=0"),
        (lambda f, w, b: kernels.wasserstein_critic_head(f, w, b, 4), ValueError, "fake part must be non-empty"),
        (lambda f, w, b: kernels.wasserstein_critic_head(f, w, b, True), TypeError, "n_real must be an int"),
        (lambda f, w, b: kernels.wasserstein_critic_head(f, w.t(), b, 2), ValueError, "weight must be"),
        (lambda f, w, b: kernels.wasserstein_critic_head(f, w, b.reshape(1, 1), 2), ValueError, "bias must be"),
        (lambda f, w, b: kernels.wasserstein_critic_head(f[0], w, b, 2), ValueError, r"features must be \[N, F\]"),
        (lambda f, w, b: kernels.wasserstein_generator_head(f[:0], w, b), ValueError, "must not be empty"),
        (lambda f, w, b: kernels.wasserstein_critic_head(f, w, b, 2, impl="fast"), ValueError, "impl must be"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call(torch.randn(4, 6), torch.randn(1, 6), torch.randn(1))


# ------------------------------------------------------------------------------------------------
# CUDA only
# ------------------------------------------------------------------------------------------------
cuda_only = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA only: the interpreter has no half types and cannot compile Triton ops"
)


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cuda(dtype):
    """Half inputs accumulate in fp32 (the fp32 bounds) and the results are rounded to the half
    type once (its unit roundoff times each value)."""
    features = torch.randn(1024, 2048, device="cuda", dtype=dtype)
    weight = (torch.randn(1, 2048, device="cuda") * 0.02).to(dtype)
    bias = torch.zeros(1, device="cuda", dtype=dtype)
    fused_in, eager_in = leaves(features, weight, bias), [t.double().requires_grad_() for t in (features, weight, bias)]
    fused = kernels.wasserstein_critic_head(*fused_in, 512, impl="triton")
    eager = eager_losses(*eager_in, 512)
    u = unit_roundoff(dtype)
    expected = torch.stack(eager).detach()
    bound = wasserstein_loss_bounds(features.float(), weight.float(), bias.float(), 512).cuda() + u * expected.abs()
    assert_within(torch.stack(fused).double(), expected, bound, "losses")
    fused[0].backward()
    eager[0].backward()
    bounds = wasserstein_grad_bounds(features.float(), weight.float(), 512, torch.tensor([1.0, 0.0, 0.0]))
    for name, a, b, bound in zip(("features", "weight"), fused_in, eager_in, bounds):
        assert_within(a.grad.double(), b.grad, bound + u * b.grad.abs(), f"grad {name}")


@cuda_only
def test_torch_compile_on_cuda():
    def losses(f, w, b):
        out = torch.ops.kernels.wasserstein_head(f, w, b, 512)
        return out[0] + 0.5 * out[1]

    compiled = torch.compile(losses, fullgraph=True)
    features, weight, bias = (
        torch.randn(1024, 2048, device="cuda"),
        torch.randn(1, 2048, device="cuda"),
        torch.randn(1, device="cuda"),
    )
    fused_in, eager_in = leaves(features, weight, bias), leaves(features, weight, bias)
    compiled(*fused_in).backward()
    e = eager_losses(*eager_in, 512)
    (e[0] + 0.5 * e[1]).backward()
    bounds = wasserstein_grad_bounds(features, weight, 512, torch.tensor([1.0, 0.5, 0.0]))
    for name, a, b, bound in zip(("features", "weight", "bias"), fused_in, eager_in, bounds):
        assert_within(a.grad, b.grad, bound, f"grad {name}")


@cuda_only
def test_opcheck_on_cuda():
    args = (*(t.requires_grad_() for t in head_inputs(16, 40)), 7)
    torch.library.opcheck(torch.ops.kernels.wasserstein_head.default, args)
