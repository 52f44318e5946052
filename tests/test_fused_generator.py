"""FusedGenerator against the eager Generator: images, every parameter gradient, the BN statistics.

Tolerance 1e-5 relative. Values are compared elementwise with an absolute floor of 1e-5 times the
tensor's largest magnitude (as tests/test_fused_critic.py): each layer's rounding error is below
1e-6 of the magnitudes summed into it (tests/test_upsample_conv.py, tests/test_bn_act.py), and
batch norm brings every block back to unit scale, so the largest element is the magnitude scale of
each activation and gradient. Biases get the magnitude actually summed into their gradient,
``max over channels of sum |dL/d(layer output)|``: where batch norm follows the layer (the stem's
linear layer, every upsampling convolution) the exact gradient is zero and both sides hold rounding
residue of that relative size. Running statistics follow the same 1e-5 rule and
``num_batches_tracked`` is compared exactly. Kernel buffers are NaN-poisoned.

Training cases use batch >= 3: at batch 2 ``BatchNorm1d`` in the stem maps any two samples to
about +-1, so its input gradient is almost entirely cancellation and rounding. z is drawn away from
LeakyReLU's kink (``away_from_kinks``). On CUDA every case runs on the GPU.

Weights are drawn with variance 1/fan_in, so every layer's pre-activations are O(1) as in
training. The largest element is then a fair magnitude scale: with N(0, 0.2) weights the last
layer sums 800 terms into a saturated tanh, its magnitude sum is ~100x its output, and a
max-element floor no longer measures what the sum's rounding can do (seen: 1.07x the bound at
0.2, 0.23x with these weights).
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from kernels._dispatch import triton_can_run
from wgan.config import WGANConfig
from wgan.models.eager import Generator
from wgan.models.fused_generator import FusedGenerator

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RTOL = 1e-5
TRITON = triton_can_run(DEVICE)
needs_triton = pytest.mark.skipif(not TRITON, reason="Triton cannot run here (no CUDA and no TRITON_INTERPRET=1)")

SEED = WGANConfig()
_CRITIC = dict(critic_filters=(4,), critic_strides=(2,), critic_kernel_size=3)
# kernel 3, odd filter counts, upsampling by 3, a middle ConvTranspose2d block (no upsampling), and
# a last block that upsamples: 1 -> 3 -> 3 -> 9
ODD = WGANConfig(
    image_size=9,
    image_channels=2,
    z_dim=7,
    generator_initial_size=1,
    generator_initial_channels=5,
    generator_filters=(5, 3, 2),
    generator_upsample=(3, 1, 3),
    generator_kernel_size=3,
    generator_leaky_slope=0.3,
    generator_bn_momentum=0.3,
    **_CRITIC,
).validate()
# kernel 7 (5x5 polyphase taps), non-power-of-two channels: 2 -> 4 -> 8
K7 = WGANConfig(
    image_size=8,
    image_channels=3,
    z_dim=5,
    generator_initial_size=2,
    generator_initial_channels=6,
    generator_filters=(7, 3),
    generator_upsample=(2, 2),
    generator_kernel_size=7,
    **_CRITIC,
).validate()
CONFIGS = {"seed": SEED, "odd": ODD, "k7": K7}


pytestmark = pytest.mark.usefixtures("poison_outputs", "strict_fp32")


def assert_rel_close(actual, expected, scale=None, name=""):
    assert actual.shape == expected.shape, name
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    if scale is None:
        scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * max(scale, 1e-30), msg=lambda m: f"{name}: {m}")


def pair(config: WGANConfig, impl: str | None, channels_last: bool | None = None) -> tuple[Generator, FusedGenerator]:
    """Both generators with the same, deliberately non-trivial, parameters and statistics."""
    eager = Generator(config).to(DEVICE)
    with torch.no_grad():
        for name, p in eager.named_parameters():
            if "bias" in name:
                p.normal_(0.0, 0.1)
            elif p.dim() == 1:  # batch-norm gamma
                p.normal_(1.0, 0.2)
            else:  # unit-variance pre-activations in every layer, as training keeps them
                fan_in = p.shape[0] * p[0, 0].numel() if _transposed(eager, name) else p[0].numel()
                p.normal_(0.0, fan_in**-0.5)
        for name, b in eager.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0.0, 0.5)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    fused = FusedGenerator(config, impl=impl, channels_last=channels_last).to(DEVICE)
    fused.load_state_dict(eager.state_dict())
    return eager, fused


def _transposed(model: nn.Module, param_name: str) -> bool:
    return isinstance(model.get_submodule(param_name.rsplit(".", 1)[0]), nn.ConvTranspose2d)


def _retain_layer_outputs(model: nn.Module) -> dict[str, torch.Tensor]:
    """Register hooks keeping the output of every biased layer, to size its bias gradient."""
    outputs: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:

            def hook(_m, _inp, out, name=name):
                if out.requires_grad:
                    out.retain_grad()
                    outputs[name] = out

            m.register_forward_hook(hook)
    return outputs


def away_from_kinks(eager: Generator, batch: int, training: bool, margin: float = 2e-6) -> torch.Tensor:
    """A fresh z whose every LeakyReLU input is more than ``margin`` x its layer's largest from 0.

    LeakyReLU has a kink at 0: where a pre-activation is within rounding error of it, the two
    generators (and eager float32 against float64) take different branches there and the gradient
    differs by (1 - slope) * g at that element, a true non-differentiability, not an error. The
    pre-activations of both sides differ by ~1e-7 of their layer's scale; draws with one closer
    than ``margin`` are redrawn (about half of them at batch 3 for the seed's 98k last-block values).
    """
    probe = copy.deepcopy(eager).train(training)  # the probe's batch norms may move; eager's must not
    closest: list[float] = []
    for m in probe.modules():
        if isinstance(m, nn.LeakyReLU):
            m.register_forward_hook(
                lambda _m, inp, _out: closest.append((inp[0].abs().min() / inp[0].abs().max()).item())
            )
    for _ in range(40):
        z = torch.randn(batch, eager.z_dim, device=DEVICE)
        closest.clear()
        with torch.no_grad():
            probe(z)
        if min(closest) > margin:
            return z
    raise AssertionError("40 draws of z in a row put a pre-activation at LeakyReLU's kink")


def check(eager: Generator, fused: FusedGenerator, z: torch.Tensor | int, training: bool) -> torch.Tensor:
    """Compare one forward + backward; ``z`` may be a batch size (then drawn away from the kinks)."""
    if isinstance(z, int):
        z = away_from_kinks(eager, z, training)
    eager.train(training)
    fused.train(training)
    outputs = _retain_layer_outputs(eager)
    y_eager = eager(z)
    y_fused = fused(z)
    assert_rel_close(y_fused, y_eager, name="images")
    grad = torch.randn_like(y_eager)
    y_eager.backward(grad)
    y_fused.backward(grad)
    fused_params = dict(fused.named_parameters())
    for name, p in eager.named_parameters():
        scale = None
        if name.endswith("bias") and name.rsplit(".", 1)[0] in outputs:
            out_grad = outputs[name.rsplit(".", 1)[0]].grad
            dims = [d for d in range(out_grad.dim()) if d != 1]
            scale = out_grad.abs().sum(dims).max().item()
        assert_rel_close(fused_params[name].grad, p.grad, scale, name)
    for (name, a), b in zip(fused.state_dict().items(), eager.state_dict().values()):
        if name.endswith("num_batches_tracked"):
            assert torch.equal(a, b), name
        else:
            assert_rel_close(a, b, name=name)
    return y_fused


LAYOUT_IDS = {False: "nchw", True: "cl", None: "auto"}
CASES = [  # (config, batch, training, impl, channels_last: False NCHW, True channels_last, None auto)
    ("seed", 3, True, "triton", False),
    ("seed", 3, True, "triton", True),
    ("seed", 3, True, "triton", None),
    ("seed", 3, False, "triton", False),
    ("seed", 3, True, "ref", False),
    ("seed", 4, True, "ref", True),
    ("seed", 3, True, "ref", None),
    ("seed", 2, False, "ref", None),
    ("odd", 3, True, "triton", False),
    ("odd", 1, False, "triton", None),
    ("odd", 3, True, "ref", True),
    ("odd", 1, False, "ref", False),
    ("k7", 3, True, "triton", True),
    ("k7", 2, False, "ref", None),
]


@pytest.mark.parametrize(
    "config,batch,training,impl,channels_last",
    [pytest.param(*c, marks=needs_triton) if c[3] == "triton" else c for c in CASES],
    ids=[f"{c[0]}-b{c[1]}-{'train' if c[2] else 'eval'}-{c[3]}-{LAYOUT_IDS[c[4]]}" for c in CASES],
)
def test_matches_eager_generator(config, batch, training, impl, channels_last):
    cfg = CONFIGS[config]
    eager, fused = pair(cfg, impl, channels_last)
    y = check(eager, fused, batch, training)
    assert y.shape == (batch, cfg.image_channels, cfg.image_size, cfg.image_size)
    if channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last)
    else:  # NCHW, or auto: NHWC inside on a CPU, NCHW images out
        assert y.is_contiguous()


def test_auto_layout_is_channels_last_inside_on_cpu_only():
    fused = FusedGenerator(SEED, impl="ref")
    assert fused.channels_last is None
    assert fused.internal_channels_last(torch.device("cpu"))
    assert not fused.internal_channels_last(torch.device("cuda"))
    assert not FusedGenerator(SEED, channels_last=False).internal_channels_last(torch.device("cpu"))
    assert FusedGenerator(SEED, channels_last=True).internal_channels_last(torch.device("cuda"))
    with pytest.raises(TypeError, match="channels_last"):
        FusedGenerator(SEED, channels_last="yes")


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=needs_triton), "ref"])
def test_train_steps_then_eval_change_state_like_eager(impl):
    """Two training passes move the running statistics and count batches as BatchNorm does; then
    eval mode reads them and changes nothing, on both generators."""
    eager, fused = pair(ODD, impl)
    for _ in range(2):
        check(eager, fused, 4, training=True)
    assert int(fused.body[2].num_batches_tracked) == 2  # two training passes from a fresh counter
    before = copy.deepcopy(fused.state_dict())
    eager.eval()
    fused.eval()
    with torch.no_grad():
        z = torch.randn(3, ODD.z_dim, device=DEVICE)
        assert_rel_close(fused(z), eager(z), name="eval images")
    for (name, a), b in zip(fused.state_dict().items(), before.values()):
        assert torch.equal(a, b), f"eval mode changed {name}"
    assert not fused.training and all(not m.training for m in fused.modules())


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=needs_triton), "ref"])
def test_polyphase_reused_within_an_update_gives_the_same_step(impl):
    """Inside polyphase_reused the no-grad forwards share one kernel per block and the forward with
    autograd reuses it: bit for bit the images and gradients of computing it per forward (float64);
    a weight update (a new _version) recomputes it, and nothing is kept after the scope."""
    torch.manual_seed(0)
    fused = FusedGenerator(ODD, impl=impl).to(DEVICE, torch.float64)
    z = torch.randn(4, ODD.z_dim, device=DEVICE, dtype=torch.float64)

    def step(gen: FusedGenerator) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.no_grad():
            gen(z)
        y = gen(z)
        grads = torch.autograd.grad(y.square().sum(), list(gen.parameters()))
        return y.detach(), list(grads)

    state = copy.deepcopy(fused.state_dict())
    want_y, want_g = step(fused)
    fused.load_state_dict(state)
    with fused.polyphase_reused():
        got_y, got_g = step(fused)
        assert fused._phase_cache, "no kernel was cached"
        conv = fused.body[fused._blocks[0].conv]
        name = (fused._blocks[0].conv, conv.weight.data_ptr())
        before = fused._phase_cache[name][1]
        with torch.no_grad():
            conv.weight.mul_(2.0)
            fused(z)
        assert not torch.equal(fused._phase_cache[name][1], before), "stale kernel after an update"
    assert fused._phase_cache is None
    assert torch.equal(got_y, want_y)  # the same kernels on the same operands: bit for bit
    for a, b in zip(got_g, want_g):
        assert torch.equal(a, b)


def test_stacked_members_each_get_their_own_polyphase_kernels():
    """A stack (wgan.models.stacked, loop mode: one module's code on each member's weights in turn)
    inside polyphase_reused: every member's forward uses a kernel of its own weights, bit for bit the
    member run alone, and the cache holds one kernel per member and block (none handed to another)."""
    from wgan.models.stacked import StackedModule

    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(FusedGenerator(ODD, impl="ref").to(DEVICE, torch.float64))
    z = torch.randn(2, 4, ODD.z_dim, device=DEVICE, dtype=torch.float64)
    alone = [m(z[i]) for i, m in enumerate(copy.deepcopy(members))]
    stack = StackedModule(members, mode="loop")
    with stack.template.polyphase_reused():
        for _ in range(2):  # the second pass reads the cache
            y = stack(z)
        n_phase_blocks = sum(1 for b in stack.template._blocks if b.scale > 1 and b.bn is not None)
        assert len(stack.template._phase_cache) == 2 * n_phase_blocks
    for i in range(2):
        assert torch.equal(y[i], alone[i])


def test_same_seed_same_initial_state():
    """build_engine constructs the generator under a seeded fork_rng: both classes must draw alike."""
    torch.manual_seed(3)
    eager = Generator(SEED)
    torch.manual_seed(3)
    fused = FusedGenerator(SEED, impl="ref")
    assert list(fused.state_dict()) == list(eager.state_dict())
    for (name, a), b in zip(fused.state_dict().items(), eager.state_dict().values()):
        assert torch.equal(a, b), name
    assert [n for n, _ in fused.named_modules()] == [n for n, _ in eager.named_modules()]


def test_state_dict_interchange_both_ways():
    eager, fused = pair(SEED, "ref")
    buffer = io.BytesIO()
    torch.save(eager.state_dict(), buffer)
    buffer.seek(0)
    fresh = FusedGenerator(SEED, impl="ref").to(DEVICE)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for (k, a), b in zip(fresh.state_dict().items(), eager.state_dict().values()):
        assert torch.equal(a, b), k
    z = torch.randn(2, SEED.z_dim, device=DEVICE)
    eager.eval()
    fresh.eval()
    with torch.no_grad():
        assert_rel_close(fresh(z), eager(z), name="images after eager -> fused")
    with torch.no_grad():  # fused -> eager, after moving the fused weights and statistics
        for t in list(fresh.parameters()) + [b for n, b in fresh.named_buffers() if "running" in n]:
            t.add_(torch.randn_like(t) * 0.01)
    buffer = io.BytesIO()
    torch.save(fresh.state_dict(), buffer)
    buffer.seek(0)
    back = Generator(SEED).to(DEVICE).eval()
    back.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        assert_rel_close(fresh(z), back(z), name="images after fused -> eager")
        assert not torch.allclose(back(z), eager(z))


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=needs_triton), "ref"])
def test_batch_one_in_training_raises_like_eager(impl):
    """BatchNorm1d in the stem cannot train on one sample; the fused generator reuses it."""
    eager, fused = pair(SEED, impl)
    z = torch.randn(1, SEED.z_dim, device=DEVICE)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        eager(z)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        fused(z)


def test_autocast_bf16_matches_eager_under_autocast():
    """CPU autocast: the convolutions run in bf16 on both paths (impl=None: the plain-PyTorch
    epilogue, the interpreter has no bf16), rounding their inputs in different places (tap sums
    vs taps): a few 2**-8 of each layer's scale apart; held to 4 layers x 2 x 2**-8 = 3.1e-2 of the
    output's scale. Parameters and their gradients stay fp32."""
    if DEVICE != "cpu":
        pytest.skip("the CUDA bf16 path is covered by tests/test_bn_act.py::test_bf16_on_cuda")
    eager, fused = pair(SEED, None)
    z = torch.randn(4, SEED.z_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_eager, y_fused = eager(z), fused(z)
    assert y_fused.dtype == y_eager.dtype == torch.bfloat16
    tol = 4 * 2 * 2.0**-8 * y_eager.float().abs().max().item()
    assert (y_fused.float() - y_eager.float()).abs().max().item() <= tol
    y_fused.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in fused.parameters())


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_forward_and_backward_never_read_a_value_back(training):
    """No ``.item()``, ``bool(tensor)`` or data-dependent shape in the generator step: on a GPU those
    would sync with the host and break CUDA-graph capture. The plain-PyTorch path is checked here
    (the interpreter itself copies through numpy); the registered Triton ops do no such thing."""
    _, fused = pair(SEED, "ref")
    fused.train(training)
    with _Ops() as ops:
        fused(torch.randn(4, SEED.z_dim, device=DEVICE)).sum().backward()
    assert ops.names, "no op was recorded"
    syncing = [n for n in ops.names if "_local_scalar_dense" in n or "nonzero" in n or "aten.item" in n]
    assert not syncing, syncing


def test_bad_input():
    with pytest.raises(ValueError, match="impl must be one of"):
        FusedGenerator(SEED, impl="polyphase")
    fused = FusedGenerator(SEED, impl="ref")
    with pytest.raises(ValueError, match="z of shape"):
        fused(torch.randn(2, SEED.z_dim + 1))


# ------------------------------------------------------------------------------------------------
# CUDA only: torch.compile, CUDA-graph capture, the seed batch
# ------------------------------------------------------------------------------------------------
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only")


@cuda_only
def test_torch_compile_on_cuda():
    eager, fused = pair(SEED, "triton")
    compiled = torch.compile(fused)
    z = torch.randn(64, SEED.z_dim, device=DEVICE)
    y = compiled(z)
    assert_rel_close(y, eager(z), name="compiled images")
    y.sum().backward()
    assert all(p.grad is not None for p in fused.parameters())


@cuda_only
def test_cuda_graph_capture_on_cuda():
    """Forward + backward captured and replayed: no host sync inside (sync debug mode 'error')."""
    eager, fused = pair(SEED, "triton")
    z = torch.randn(64, SEED.z_dim, device=DEVICE)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            fused(z).sum().backward()
    torch.cuda.current_stream().wait_stream(side)
    for p in fused.parameters():
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.cuda.graph(graph):
            out = fused(z)
            out.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    graph.replay()
    torch.cuda.synchronize()
    assert torch.isfinite(out).all()
