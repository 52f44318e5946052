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

from kernels import _buffers
from kernels._dispatch import triton_can_run
from wgan.config import WGANConfig
from wgan.fused_critic import FusedCritic, critic_losses_reference, generator_loss_reference
from wgan.models import Critic

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
RTOL = 1e-5
TRITON = triton_can_run(DEVICE)
needs_triton = pytest.mark.skipif(not TRITON, reason="Triton cannot run here (no CUDA and no TRITON_INTERPRET=1)")

SEED = WGANConfig()
# odd everything: 2 image channels, 9x9 images, 3x3 kernels, filters (5, 7), strides (2, 1);
# the generator fields are set so that validate() accepts the config (1 x 3 x 3 = 9)
ODD = WGANConfig(image_size=9, image_channels=2, critic_filters=(5, 7), critic_strides=(2, 1), critic_kernel_size=3,
                 critic_leaky_slope=0.3, generator_initial_size=1, generator_filters=(4, 2),
                 generator_upsample=(3, 3)).validate()


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(_buffers, "POISON_OUTPUTS", True)
    if torch.cuda.is_available():  # parity runs in strict fp32: TF32 convolutions differ by ~1e-3
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, scale: float | None = None, name: str = "") -> None:
    assert actual.shape == expected.shape, name
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    if scale is None:
        scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * max(scale, 1e-30), msg=lambda m: f"{name}: {m}")


def images(n: int, config: WGANConfig) -> torch.Tensor:
    return torch.rand(n, config.image_channels, config.image_size, config.image_size, device=DEVICE) * 2 - 1


def pair(config: WGANConfig, impl: str | None, channels_last: bool = False) -> tuple[Critic, FusedCritic]:
    eager = Critic(config).to(DEVICE)
    # the seed's N(0, 0.02) weights give scores around 1e-2; larger ones exercise the kernels harder
    with torch.no_grad():
        for p in eager.parameters():
            p.normal_(0.0, 0.2)
    fused = FusedCritic(config, impl=impl, channels_last=channels_last).to(DEVICE)
    fused.load_state_dict(eager.state_dict())
    return eager, fused


def check_losses_and_grads(eager: Critic, fused: FusedCritic, real: torch.Tensor, fake: torch.Tensor,
                           upstream: torch.Tensor) -> None:
    fused_losses = fused.critic_losses(real, fake)
    eager_losses = critic_losses_reference(eager, real, fake)
    scale = eager_losses[1].abs().item() + eager_losses[2].abs().item()
    for name, a, b in zip(("d_loss", "d_loss_real", "d_loss_fake"), fused_losses, eager_losses):
        assert a.dim() == 0
        assert_rel_close(a, b, scale, name)
    sum(g * loss for g, loss in zip(upstream.tolist(), fused_losses)).backward()
    sum(g * loss for g, loss in zip(upstream.tolist(), eager_losses)).backward()
    fused_params, eager_params = dict(fused.named_parameters()), dict(eager.named_parameters())
    assert fused_params.keys() == eager_params.keys()
    for name, p in eager_params.items():
        if name == "fc.bias" and upstream[1] == upstream[2]:
            # d(d_loss)/d(fc.bias) is exactly 0 (the bias cancels); eager leaves rounding residue
            torch.testing.assert_close(fused_params[name].grad, p.grad, rtol=0, atol=1e-6)
        else:
            assert_rel_close(fused_params[name].grad, p.grad, name=name)


@needs_triton
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("upstream", ["d_loss", "random_mix"])
def test_seed_config_matches_eager_critic(channels_last, upstream):
    eager, fused = pair(SEED, "triton", channels_last)
    real, fake = images(3, SEED), images(2, SEED)
    scores = fused(real)
    assert_rel_close(scores, eager(real), name="scores")
    g = torch.tensor([1.0, 0.0, 0.0]) if upstream == "d_loss" else torch.randn(3)
    check_losses_and_grads(eager, fused, real, fake, g)


@needs_triton
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_odd_config_matches_eager_critic(channels_last):
    eager, fused = pair(ODD, "triton", channels_last)
    real, fake = images(3, ODD), images(4, ODD)
    assert fused.feature_shape == (7, 5, 5)
    assert_rel_close(fused(fake), eager(fake), name="scores")
    assert_rel_close(fused.features(fake), eager.features(fake), name="features")
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
    assert_rel_close(g_fused, g_eager)
    g_fused.backward()
    g_eager.backward()
    assert_rel_close(fake_f.grad, fake_e.grad, name="grad of the fake images")
    for (name, p), q in zip(fused.named_parameters(), eager.parameters()):
        assert_rel_close(p.grad, q.grad, name=name)


def test_state_dict_interchange_both_ways():
    eager = Critic(SEED).to(DEVICE)
    fused = FusedCritic(SEED, impl="ref").to(DEVICE)
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
    assert_rel_close(fused(x), eager(x), name="scores after eager -> fused")

    # fused -> eager: train the fused critic's weights a little so they differ, then move them back
    with torch.no_grad():
        for p in fused.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    eager2 = Critic(SEED).to(DEVICE)
    eager2.load_state_dict(fused.state_dict())
    for (k, a), b in zip(eager2.state_dict().items(), fused.state_dict().values()):
        assert torch.equal(a, b), k
    assert_rel_close(fused(x), eager2(x), name="scores after fused -> eager")
    assert not torch.allclose(eager2(x), eager(x))


def test_channels_last_state_dict_loads_into_eager():
    fused = FusedCritic(ODD, impl="ref", channels_last=True).to(DEVICE)
    assert fused.convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    eager = Critic(ODD).to(DEVICE)
    eager.load_state_dict(fused.state_dict())
    x = images(3, ODD)
    assert_rel_close(fused(x), eager(x))


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
