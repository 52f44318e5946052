"""The training step: the algorithm of issue 3, device-side values, state, eager vs fused parity."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from helpers import TINY

from kernels import triton_can_run
from wgan.config import WGANConfig
from wgan.models.eager import Critic
from wgan.models.fused_critic import FusedCritic
from wgan.training.engine import DEVICE_METRICS, build_engine
from wgan.training.parity import same_state_parity


def tiny_config(**overrides: object) -> WGANConfig:
    return WGANConfig.from_dict({**TINY, **overrides}).validate()


def tiny_images(n: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g) * 2 - 1


def test_critic_step_is_one_rmsprop_step_on_the_wgan_loss_then_a_clip() -> None:
    engine = build_engine(tiny_config(), "cpu")
    images = tiny_images()
    real = engine.draw_real(images)
    critic_before = copy.deepcopy(engine.critic)
    gen_before = copy.deepcopy(engine.generator)
    sampler = torch.Generator().manual_seed(0)
    sampler.set_state(engine.sampler.get_state())
    z = torch.randn(8, engine.config.z_dim, generator=sampler)  # the draw the step will make

    d_loss, d_real, d_fake = engine.critic_step(real)

    # the same ops on the same values, one thread (tests/conftest.py): equal, not merely close
    with torch.no_grad():
        fake = gen_before(z)  # train mode: batch statistics, as in the step
        assert torch.equal(d_real, -critic_before(real).mean())
        assert torch.equal(d_fake, critic_before(fake).mean())
    assert torch.equal(d_loss, d_real + d_fake)
    # the same step done by hand: torch's RMSprop, then clamp every parameter
    manual = copy.deepcopy(critic_before)
    opt = torch.optim.RMSprop(
        manual.parameters(),
        lr=engine.config.lr_critic,
        alpha=engine.config.rmsprop_alpha,
        eps=engine.config.rmsprop_eps,
    )
    (-manual(real).mean() + manual(fake).mean()).backward()
    opt.step()
    clip = engine.config.clip_threshold
    for p_manual, p in zip(manual.parameters(), engine.critic.parameters()):
        assert torch.equal(p_manual.detach().clamp(-clip, clip), p.detach())
        assert p.abs().max() <= clip
    for p0, p1 in zip(gen_before.parameters(), engine.generator.parameters()):
        assert torch.equal(p0, p1)  # the critic step never moves the generator


def test_generator_step_trains_the_generator_against_a_frozen_critic() -> None:
    engine = build_engine(tiny_config(), "cpu")
    images = tiny_images()
    engine.critic_step(engine.draw_real(images))
    critic_params = [p.detach().clone() for p in engine.critic.parameters()]
    critic_grads = [p.grad.clone() for p in engine.critic.parameters()]
    gen_before = copy.deepcopy(engine.generator)
    sampler = torch.Generator().manual_seed(0)
    sampler.set_state(engine.sampler.get_state())
    z = torch.randn(8, engine.config.z_dim, generator=sampler)

    g_loss = engine.generator_step()

    with torch.no_grad():
        expected = -engine.critic(gen_before(z)).mean()
    assert torch.equal(g_loss, expected)
    for p, before, grad in zip(engine.critic.parameters(), critic_params, critic_grads):
        assert torch.equal(p.detach(), before)
        assert torch.equal(p.grad, grad)  # no critic gradient accumulated by the generator step
        assert p.requires_grad
    assert any(not torch.equal(a, b) for a, b in zip(gen_before.parameters(), engine.generator.parameters()))


def test_run_epoch_returns_device_scalars_that_match_the_weights() -> None:
    engine = build_engine(tiny_config(n_critic=3), "cpu")
    stats = engine.run_epoch(tiny_images())
    assert tuple(stats) == DEVICE_METRICS
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and v.device.type == "cpu" for v in stats.values())
    assert engine.epoch == 1
    assert stats["wasserstein_estimate"].item() == -stats["d_loss"].item()
    flat = torch.cat([p.detach().reshape(-1) for p in engine.critic.parameters()])
    clip = engine.config.clip_threshold
    assert torch.equal(stats["clip_ratio"], (flat.abs() >= clip - 1e-6).float().mean())
    assert 0 < stats["clip_ratio"].item() < 1
    assert torch.equal(stats["critic_weight_mean"], flat.mean())
    gflat = torch.cat([p.detach().reshape(-1) for p in engine.generator.parameters()])
    assert torch.equal(stats["generator_weight_std"], gflat.std(correction=0))


def test_random_draws_come_from_the_seeded_sampler() -> None:
    images = tiny_images()
    runs = []
    for seed in (0, 0, 1):
        engine = build_engine(tiny_config(seed=seed), "cpu")
        torch.manual_seed(1234 + len(runs))  # the global RNG must not matter
        runs.append(torch.stack([engine.run_epoch(images)["d_loss"] for _ in range(3)]))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_state_dict_round_trip_through_a_file_continues_bit_for_bit() -> None:
    images = tiny_images()
    a = build_engine(tiny_config(), "cpu")
    for _ in range(3):
        a.run_epoch(images)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = build_engine(tiny_config(), "cpu")
    assert b.load_state_dict(state) is True
    assert b.epoch == 3
    for _ in range(3):
        sa, sb = a.run_epoch(images), b.run_epoch(images)
        for k in DEVICE_METRICS:
            assert torch.equal(sa[k], sb[k]), k


def test_sampling_changes_no_training_state() -> None:
    images = tiny_images()
    a, b = build_engine(tiny_config(), "cpu"), build_engine(tiny_config(), "cpu")
    samples = a.sample()
    assert samples.shape == (25, 3, 16, 16)
    assert torch.equal(samples, a.sample())  # fixed z, inference-mode batch norm
    assert a.generator.training
    for _ in range(2):
        assert torch.equal(a.run_epoch(images)["g_loss"], b.run_epoch(images)["g_loss"])
        a.sample()


def test_fused_choice_is_wired_in_build_engine() -> None:
    eager, fused = build_engine(tiny_config(), "cpu"), build_engine(tiny_config(fused=True), "cpu")
    assert type(eager.critic) is Critic and isinstance(fused.critic, FusedCritic)
    assert isinstance(eager.opt_critic, torch.optim.RMSprop) and not eager.clip_in_optimizer
    assert type(fused.opt_critic).__name__ == "FusedRMSprop" and fused.clip_in_optimizer
    assert fused.opt_critic.param_groups[0]["clip_value"] == fused.config.clip_threshold
    assert fused.opt_generator.param_groups[0]["clip_value"] is None  # the generator is never clipped
    # same initial weights on both paths
    for pe, pf in zip(eager.critic.state_dict().values(), fused.critic.state_dict().values()):
        assert torch.equal(pe, pf)


@pytest.mark.skipif(not triton_can_run("cpu"), reason="needs TRITON_INTERPRET=1 (set by tests/conftest.py)")
def test_the_fused_engine_runs_the_triton_kernels_where_they_can_run() -> None:
    """What the labels say ran is what ran (eager-vs-fused parity itself: tests/test_parity.py)."""
    engine = build_engine(tiny_config(fused=True), "cpu")
    assert engine.labels["optimizer"] == "kernels.FusedRMSprop[triton]" and engine.labels["kernels"] == "triton"
    assert engine.opt_critic.impls == ["triton"]
    stats = engine.run_epoch(tiny_images())
    assert all(torch.isfinite(v) for v in stats.values())
    assert all(p.abs().max() <= engine.config.clip_threshold for p in engine.critic.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: eager vs fused on the GPU")
def test_eager_and_fused_agree_on_cuda() -> None:
    """Everything but the last call runs on the CPU: the state, the data and the configs."""
    config = WGANConfig(batch_size=64)
    engine = build_engine(config, "cpu")
    images = torch.rand(256, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    engine.run_epoch(images)
    state = engine.state_dict()
    for captured in (False, True):
        report = same_state_parity(state, images, device="cuda", captured=captured)
        assert report.ok, report.summary()
