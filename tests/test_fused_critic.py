"""FusedCritic against the eager Critic: scores, losses, every parameter gradient, state_dict.

Tolerance 1e-5 relative. Scores and gradients are compared elementwise with an absolute floor of
1e-5 times the tensor's largest magnitude (the unbiased convolution plus a separate bias add rounds
differently from a biased one, which matters only for elements near zero). Losses are differences
of means and are measured against ``|d_loss_real| + |d_loss_fake|``. The eager side is the seed's
math: two separate passes of the plain Critic (``critic_losses_reference``). Kernel buffers are
NaN-poisoned.
"""

from __future__ import annotations

import io

import pytest
import torch
from helpers import assert_within, critic_magnitudes, critic_rounding_factor

from kernels._dispatch import triton_can_run
from wgan.config import WGANConfig
from wgan.models.eager import Critic
from wgan.models.fused_critic import FusedCritic, critic_losses_reference, generator_loss_reference

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRITON = triton_can_run(DEVICE)
needs_triton = pytest.mark.skipif(not TRITON, reason="Triton cannot run here (no CUDA and no TRITON_INTERPRET=1)")

SEED = WGANConfig()
# odd everything: 2 image channels, 9x9 images, 3x3 kernels, filters (5, 7), strides (2, 1);
# the generator fields are set so that validate() accepts the config (1 x 3 x 3 = 9)
ODD = WGANConfig(
    image_size=9,
    image_channels=2,
    critic_filters=(5, 7),
    critic_strides=(2, 1),
    critic_kernel_size=3,
    critic_leaky_slope=0.3,
    generator_initial_size=1,
    generator_filters=(4, 2),
    generator_upsample=(3, 3),
).validate()


pytestmark = pytest.mark.usefixtures("poison_outputs", "strict_fp32")


def images(n: int, config: WGANConfig) -> torch.Tensor:
    return (
        torch.rand(n, config.image_channels, config.image_size, config.image_size, device=DEVICE, dtype=torch.float64)
        * 2
        - 1
    )


def assert_losses_and_grads_within(eager, fused, real, fake, fused_losses, eager_losses, upstream) -> None:
    """Both critics in float64: every difference within twice the worst-case rounding bound of
    the sums chained through the network (wgan/models/numerics.py), ``2 gamma_K`` times the magnitudes."""
    loss_mag, grad_mag = critic_magnitudes(eager, real, fake, upstream)
    factor = critic_rounding_factor(eager, torch.cat([real, fake]), torch.float64)
    assert_within(torch.stack(fused_losses), torch.stack(eager_losses), factor * loss_mag, "losses")
    for name, p in eager.named_parameters():
        assert_within(dict(fused.named_parameters())[name].grad, p.grad, factor * grad_mag[name], f"grad {name}")


def assert_scores_within(a: torch.Tensor, b: torch.Tensor, critic, x: torch.Tensor) -> None:
    """Scores: the per-row bound of the same magnitude network (upstream 1 on every row)."""
    mags = [critic_magnitudes(critic, x[i : i + 1], x[:0], torch.tensor([0.0, 1.0, 0.0]))[0][1] for i in range(len(x))]
    factor = critic_rounding_factor(critic, x, torch.float64)
    assert_within(a, b, factor * torch.stack(mags), "scores")


def pair(config: WGANConfig, impl: str | None, channels_last: bool = False) -> tuple[Critic, FusedCritic]:
    """The eager and the fused critic with the same weights, in float64: there the rounding of
    the whole network stays far below any real difference, so the bound can be the worst case."""
    eager = Critic(config).to(DEVICE, torch.float64)
    # the seed's N(0, 0.02) weights give scores around 1e-2; larger ones exercise the kernels harder
    with torch.no_grad():
        for p in eager.parameters():
            p.normal_(0.0, 0.2)
    fused = FusedCritic(config, impl=impl, channels_last=channels_last).to(DEVICE, torch.float64)
    fused.load_state_dict(eager.state_dict())
    return eager, fused


def check_losses_and_grads(
    eager: Critic, fused: FusedCritic, real: torch.Tensor, fake: torch.Tensor, upstream: torch.Tensor
) -> None:
    fused_losses = fused.critic_losses(real, fake)
    eager_losses = critic_losses_reference(eager, real, fake)
    assert all(a.dim() == 0 for a in fused_losses)
    sum(g * loss for g, loss in zip(upstream.tolist(), fused_losses)).backward()
    sum(g * loss for g, loss in zip(upstream.tolist(), eager_losses)).backward()
    assert dict(fused.named_parameters()).keys() == dict(eager.named_parameters()).keys()
    assert_losses_and_grads_within(eager, fused, real, fake, fused_losses, eager_losses, upstream)


@needs_triton
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("upstream", ["d_loss", "random_mix"])
def test_seed_config_matches_eager_critic(channels_last, upstream):
    eager, fused = pair(SEED, "triton", channels_last)
    real, fake = images(3, SEED), images(2, SEED)
    assert_scores_within(fused(real), eager(real), eager, real)
    g = torch.tensor([1.0, 0.0, 0.0]) if upstream == "d_loss" else torch.randn(3)
    check_losses_and_grads(eager, fused, real, fake, g)


@needs_triton
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_odd_config_matches_eager_critic(channels_last):
    eager, fused = pair(ODD, "triton", channels_last)
    real, fake = images(3, ODD), images(4, ODD)
    assert fused.feature_shape == (7, 5, 5)
    assert_scores_within(fused(fake), eager(fake), eager, fake)
    _, _, feature_mags = critic_magnitudes(eager, fake, fake[:0], torch.tensor([0.0, 1.0, 0.0]), features=True)
    factor = critic_rounding_factor(eager, fake, torch.float64)
    assert_within(fused.features(fake), eager.features(fake), factor * feature_mags, "features (NCHW order)")
    check_losses_and_grads(eager, fused, real, fake, torch.randn(3))


def test_batched_reference_path_matches_eager_critic():
    """impl='ref': the same single batched pass with the plain-PyTorch ops (what CPU training runs)."""
    eager, fused = pair(SEED, "ref")
    check_losses_and_grads(eager, fused, images(4, SEED), images(4, SEED), torch.randn(3))


@pytest.mark.parametrize("impl", [pytest.param("triton", marks=needs_triton), "ref"])
def test_generator_loss_matches_eager(impl):
    eager, fused = pair(ODD, impl)
    fake_e = images(3, ODD).requires_grad_()
    fake_f = fake_e.detach().clone().requires_grad_()
    g_fused = fused.generator_loss(fake_f)
    g_eager = generator_loss_reference(eager, fake_e)
    g_fused.backward()
    g_eager.backward()
    # g_loss is d_loss_real with every row real (upstream 1 on it)
    loss_mag, grad_mag = critic_magnitudes(eager, fake_e, fake_e[:0], torch.tensor([0.0, 1.0, 0.0]))
    factor = critic_rounding_factor(eager, fake_e, torch.float64)
    assert_within(g_fused, g_eager, factor * loss_mag[1], "g_loss")
    assert_within(fake_f.grad, fake_e.grad, factor * grad_mag["input"], "grad of the fake images")
    for (name, p), q in zip(fused.named_parameters(), eager.parameters()):
        assert_within(p.grad, q.grad, factor * grad_mag[name], f"grad {name}")


def test_state_dict_interchange_both_ways():
    eager = Critic(SEED).to(DEVICE, torch.float64)
    fused = FusedCritic(SEED, impl="ref").to(DEVICE, torch.float64)
    assert list(fused.state_dict()) == list(eager.state_dict())
    shapes = [(k, v.shape) for k, v in eager.state_dict().items()]
    assert [(k, v.shape) for k, v in fused.state_dict().items()] == shapes

    # eager -> fused, through a real torch.save / torch.load(weights_only=True) round trip
    buffer = io.BytesIO()
    torch.save(eager.state_dict(), buffer)
    buffer.seek(0)
    fused.load_state_dict(torch.load(buffer, weights_only=True))
    for (k, a), b in zip(fused.state_dict().items(), eager.state_dict().values()):
        assert torch.equal(a, b), k
    x = images(4, SEED)
    assert_scores_within(fused(x), eager(x), eager, x)

    # fused -> eager: train the fused critic's weights a little so they differ, then move them back
    with torch.no_grad():
        for p in fused.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    eager2 = Critic(SEED).to(DEVICE, torch.float64)
    eager2.load_state_dict(fused.state_dict())
    for (k, a), b in zip(eager2.state_dict().items(), fused.state_dict().values()):
        assert torch.equal(a, b), k
    assert_scores_within(fused(x), eager2(x), eager2, x)
    assert not torch.allclose(eager2(x), eager(x))


def test_channels_last_state_dict_loads_into_eager():
    fused = FusedCritic(ODD, impl="ref", channels_last=True).to(DEVICE)
    assert fused.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    eager = Critic(ODD).to(DEVICE)
    eager.load_state_dict(fused.state_dict())
    fused, eager = fused.double(), eager.double()
    x = images(3, ODD)
    assert_scores_within(fused(x), eager(x), eager, x)


def test_reference_functions_use_eager_math_on_a_fused_critic():
    eager, fused = pair(ODD, "ref")
    real, fake = images(2, ODD), images(3, ODD)
    for a, b in zip(critic_losses_reference(fused, real, fake), critic_losses_reference(eager, real, fake)):
        assert torch.equal(a, b)
    assert torch.equal(generator_loss_reference(fused, fake), -eager(fake).mean())


def test_bad_input():
    with pytest.raises(ValueError, match="impl must be one of"):
        FusedCritic(ODD, impl="cuda")
    fused = FusedCritic(ODD, impl="ref").to(DEVICE)
    with pytest.raises(ValueError, match="same image shape"):
        fused.critic_losses(images(2, ODD), images(2, SEED))
    with pytest.raises(ValueError, match="must not be empty"):
        fused.critic_losses(images(0, ODD), images(2, ODD))
    with pytest.raises(ValueError, match="images"):
        fused(torch.randn(2, 3, 9))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: batch 512 (1024 images per pass) is for a GPU")
def test_seed_batch_on_cuda():
    eager, fused = pair(SEED, "triton")
    check_losses_and_grads(eager, fused, images(512, SEED), images(512, SEED), torch.tensor([1.0, 0.0, 0.0]))
