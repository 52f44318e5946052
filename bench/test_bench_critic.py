"""Critic forward + backward (the loss of real + fake): fused vs eager vs torch.compile.

One timed call is one critic step's autograd work: gradients cleared, losses computed, ``d_loss``
backpropagated (no optimizer). Every benchmark then checks that what it timed matches the eager
seed math (two separate Critic passes) on the same weights and inputs, within the probabilistic
fp32 rounding bound of every loss and gradient element (``assert_parity``).

On CUDA: batch 512 (1024 images per pass), fused (Triton ops, one batched pass) vs eager (two
passes) vs ``torch.compile`` of the eager step, strict fp32 on every side (TF32 off: the parity
bound is fp32's) with ``cudnn.benchmark`` on, synchronised around each timed call.

On CPU the Triton kernels run in the interpreter, whose timings say nothing about performance.
The meaningful CPU comparison is the fused module's single batched pass with the plain-PyTorch
ops (``impl='ref'``) against the eager two passes, at batch 64; the interpreter case runs at batch
2 only to keep the fused Triton path in the suite with its parity check.
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_within, critic_magnitudes, critic_rounding_factor

from kernels._dispatch import triton_can_run
from wgan.config import WGANConfig
from wgan.models.eager import Critic
from wgan.models.fused_critic import FusedCritic, critic_losses_reference

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
CONFIG = WGANConfig()
cuda_only = pytest.mark.skipif(not CUDA, reason="CUDA only: the batch-512 comparison needs a GPU")
cpu_only = pytest.mark.skipif(CUDA, reason="the CPU comparison; on a GPU the batch-512 cases run instead")


pytestmark = pytest.mark.usefixtures("strict_fp32_benchmark")


def build(impl: str | None) -> tuple[Critic, FusedCritic]:
    torch.manual_seed(0)
    eager = Critic(CONFIG).to(DEVICE)
    fused = FusedCritic(CONFIG, impl=impl).to(DEVICE)
    fused.load_state_dict(eager.state_dict())
    return eager, fused


def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (n, CONFIG.image_channels, CONFIG.image_size, CONFIG.image_size)
    return torch.rand(shape, device=DEVICE) * 2 - 1, torch.rand(shape, device=DEVICE) * 2 - 1


def step(loss_fn, critic, real, fake):
    for p in critic.parameters():
        p.grad = None
    losses = loss_fn(critic, real, fake)
    losses[0].backward()
    if CUDA:
        torch.cuda.synchronize()
    return losses


def fused_losses(critic: FusedCritic, real, fake):
    return critic.critic_losses(real, fake)


def assert_parity(timed_critic, timed_losses, eager: Critic, real, fake) -> None:
    """What was timed matches the eager seed math on the same weights and batch, within the
    probabilistic rounding bound of fp32 (wgan/models/numerics.py): ``2 lambda u sum sqrt(n_l)`` times
    the root-sum-square magnitudes of every loss and gradient element."""
    ref = step(critic_losses_reference, eager, real, fake)
    upstream = torch.tensor([1.0, 0.0, 0.0])
    loss_mag, grad_mag = critic_magnitudes(eager, real, fake, upstream, power=2)
    factor = critic_rounding_factor(eager, torch.cat([real, fake]), torch.float32, probabilistic=True)
    assert_within(
        torch.stack([t.detach() for t in timed_losses]),
        torch.stack([t.detach() for t in ref]),
        factor * loss_mag,
        "losses",
    )
    for (name, p), q in zip(timed_critic.named_parameters(), eager.parameters()):
        assert_within(p.grad, q.grad, factor * grad_mag[name], f"grad {name}")


# ------------------------------------------------------------------------------------------------
# CPU
# ------------------------------------------------------------------------------------------------
@cpu_only
@pytest.mark.parametrize("side", ["eager_two_passes", "fused_ref_batched"])
def test_critic_step_cpu(benchmark, side: str):
    """The eager critic (real and fake in two passes) or the fused one (one batched pass, the
    kernels' PyTorch reference), each checked against a fresh eager critic of the same weights."""
    benchmark.group = "critic fwd+bwd, CPU batch 64"
    eager, fused = build("ref")
    model, losses_fn = (eager, critic_losses_reference) if side == "eager_two_passes" else (fused, fused_losses)
    real, fake = batch(64)
    losses = benchmark(step, losses_fn, model, real, fake)
    reference, _ = build("ref")
    assert_parity(model, losses, reference, real, fake)


@cpu_only
@pytest.mark.skipif(not triton_can_run("cpu"), reason="needs TRITON_INTERPRET=1 (bench/conftest.py sets it)")
def test_critic_step_cpu_fused_triton_interpreter(benchmark):
    """Not a performance figure: the interpreter runs each Triton program in numpy."""
    benchmark.group = "critic fwd+bwd, CPU interpreter batch 2"
    eager, fused = build("triton")
    real, fake = batch(2)
    losses = benchmark.pedantic(step, args=(fused_losses, fused, real, fake), rounds=3, iterations=1)
    assert_parity(fused, losses, eager, real, fake)


# ------------------------------------------------------------------------------------------------
# CUDA, batch 512 (1024 images per pass)
# ------------------------------------------------------------------------------------------------
def _warm(fn, *args, times: int = 3):
    for _ in range(times):
        fn(*args)


@cuda_only
def test_critic_step_cuda_eager_two_passes(benchmark):
    benchmark.group = "critic fwd+bwd, CUDA batch 512"
    eager, _ = build("triton")
    real, fake = batch(512)
    _warm(step, critic_losses_reference, eager, real, fake)
    losses = benchmark(step, critic_losses_reference, eager, real, fake)
    reference, _ = build("triton")
    assert_parity(eager, losses, reference, real, fake)


@cuda_only
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_critic_step_cuda_fused(benchmark, channels_last):
    benchmark.group = "critic fwd+bwd, CUDA batch 512"
    eager, _ = build("triton")
    fused = FusedCritic(CONFIG, impl="triton", channels_last=channels_last).to(DEVICE)
    fused.load_state_dict(eager.state_dict())
    real, fake = batch(512)
    if channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
        fake = fake.contiguous(memory_format=torch.channels_last)
    _warm(step, fused_losses, fused, real, fake)
    losses = benchmark(step, fused_losses, fused, real, fake)
    assert_parity(fused, losses, eager, real.contiguous(), fake.contiguous())


@cuda_only
def test_critic_step_cuda_torch_compile_eager(benchmark):
    benchmark.group = "critic fwd+bwd, CUDA batch 512"
    eager, _ = build("triton")
    compiled = torch.compile(critic_losses_reference)
    real, fake = batch(512)
    _warm(step, compiled, eager, real, fake)
    losses = benchmark(step, compiled, eager, real, fake)
    reference, _ = build("triton")
    assert_parity(eager, losses, reference, real, fake)
