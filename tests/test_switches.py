"""Precision/layout switches and the CUDA-graph epoch: same algorithm, stated numerical cost."""

from __future__ import annotations

import contextlib

import pytest
import torch
from helpers import PROBABILISTIC_LAMBDA, TINY, assert_within, critic_score_rms, unit_roundoff

from wgan.config import AUTO_PRECISION, ConfigError, WGANConfig, resolve_precision
from wgan.devices import set_cudnn_flags, tf32
from wgan.training.cuda_graph import (
    CudaGraphUnavailable,
    captured_or_plain,
    epoch_runner,
    pinned_polyphase,
    state_preserved,
)
from wgan.training.engine import DEVICE_METRICS, build_engine
from wgan.training.parity import same_state_parity

LOSSES = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss")


def config(**overrides: object) -> WGANConfig:
    return WGANConfig.from_dict({**TINY, **overrides}).validate()


def images(device: str = "cpu", n: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (torch.rand(n, 3, 16, 16, generator=g) * 2 - 1).to(device)


def run(cfg: WGANConfig, device: str = "cpu", epochs: int = 4) -> dict[str, torch.Tensor]:
    engine = build_engine(cfg, device)
    data = engine.prepare_images(images(device))
    step = epoch_runner(engine, data).run
    rows = [step(data) for _ in range(epochs)]
    return {k: torch.stack([r[k] for r in rows]).float().cpu() for k in DEVICE_METRICS}


def trained_state(epochs: int = 20) -> dict:
    """A state along a real (eager, CPU) trajectory, the starting point of the comparisons."""
    engine = build_engine(config(), "cpu")
    for _ in range(epochs):
        engine.run_epoch(images())
    return engine.state_dict()


@pytest.mark.parametrize("fused", [False, True])
def test_channels_last_changes_layout_not_results(fused: bool) -> None:
    """channels_last is a memory layout: the same epoch as the default layout (wgan.training.parity:
    one epoch from the same state, float64, 1e-5), from the initial and a trained state."""
    for state in (build_engine(config(), "cpu").state_dict(), trained_state()):
        report = same_state_parity(
            state,
            images(),
            reference=config(fused=fused),
            candidate=config(fused=fused, channels_last=True),
            impl="ref",
        )
        assert report.ok, report.summary()


def _critic_losses_at(engine, precision: contextlib.AbstractContextManager, real, fake) -> torch.Tensor:
    with torch.no_grad(), precision:
        return torch.stack([t.float() for t in engine.critic_losses(real, fake)])


def assert_within_rounding_of_precision(engine, precision, u: float, device: str) -> None:
    """The critic's losses on fixed batches, in a lower precision vs fp32, within that
    precision's probabilistic rounding bound: ``lambda * 2 L u`` times the scores' root-sum-square
    magnitudes (wgan/models/numerics.py), averaged like the losses. A sign error or a wrong batch is
    of the size of the losses themselves, 20x this bound here."""
    g = torch.Generator().manual_seed(5)
    real = images(device)[:8]
    fake = (torch.rand(8, 3, 16, 16, generator=g) * 2 - 1).to(device)
    base = _critic_losses_at(engine, contextlib.nullcontext(), real, fake)
    low = _critic_losses_at(engine, precision, real, fake)
    layers = len(engine.critic.convs) + 1
    m_real, m_fake = critic_score_rms(engine.critic, real).mean(), critic_score_rms(engine.critic, fake).mean()
    bound = PROBABILISTIC_LAMBDA * 2 * layers * u * torch.stack([m_real + m_fake, m_real, m_fake])
    assert_within(low.cpu(), base.cpu(), bound.cpu(), "critic losses")
    assert not torch.equal(low, base)  # it really ran in the lower precision
    assert (base.abs()[1:] > 10 * bound[1:].cpu()).all()  # the bound is tight enough to mean something


@pytest.mark.parametrize("fused", [False, True])
def test_bf16_runs_in_fp32_losses_within_bf16_error(fused: bool) -> None:
    """bf16 autocast keeps weights, optimizer state and losses in fp32; the critic's losses stay
    within bf16's rounding bound of fp32 (checked on fixed batches: over epochs, WGAN amplifies
    any rounding difference, so epochs are only checked to run and stay finite)."""
    engine = build_engine(config(fused=fused, precision="bf16"), "cpu")
    assert engine.precision == "bf16" and engine.labels["precision"] == "bf16"
    engine.load_state_dict(trained_state())
    assert_within_rounding_of_precision(engine, engine.autocast(), unit_roundoff(torch.bfloat16), "cpu")
    amp = run(config(fused=fused, precision="bf16"))
    for k in DEVICE_METRICS:
        assert amp[k].dtype == torch.float32 and torch.isfinite(amp[k]).all(), k
    assert all(p.dtype == torch.float32 for p in engine.critic.parameters())


def test_bad_precision_is_refused() -> None:
    with pytest.raises(ConfigError, match="precision must be auto, fp32, tf32 or bf16"):
        config(precision="fp8")


def test_auto_precision_is_fp32_on_a_cpu_and_tf32_on_cuda() -> None:
    """``auto`` resolves per device type from the one table (AUTO_PRECISION); TF32 is CUDA-only."""
    assert resolve_precision("auto", "cpu") == AUTO_PRECISION["cpu"] == "fp32"
    assert resolve_precision("auto", "cuda") == AUTO_PRECISION["cuda"] == "tf32"
    assert resolve_precision("tf32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    engine = build_engine(config(), "cpu")
    assert engine.precision == "fp32" and engine.amp_dtype is None and engine.labels["precision"] == "fp32"


@pytest.mark.parametrize(
    ("old", "precision"),
    [
        ({"amp": "bf16", "tf32": False}, "bf16"),
        ({"amp": "bf16", "tf32": True}, "bf16"),
        ({"amp": "none", "tf32": True}, "tf32"),
        ({"amp": "none", "tf32": False}, "fp32"),
        ({"tf32": False}, "fp32"),
        ({"amp": "none"}, "fp32"),
    ],
)
def test_configs_saved_with_the_old_fields_read_as_the_precision_they_ran(old: dict, precision: str) -> None:
    assert WGANConfig.from_dict({**TINY, **old}).precision == precision


def test_cuda_graph_is_decided_only_for_fused_cuda() -> None:
    """On a CPU no configuration turns CUDA graphs on; the runner is the plain epoch."""
    for fused in (False, True):
        engine = build_engine(config(fused=fused, cuda_graph=True), "cpu")
        data = images()
        runner = epoch_runner(engine, data)
        assert runner.cuda_graph == "off" and runner.run == engine.run_epoch


@pytest.mark.parametrize("fused", [False, True])
def test_warm_up_before_capture_leaves_no_trace(fused: bool) -> None:
    """The CUDA-graph warm-up runs real epochs and must then restore every bit of state in place:
    the epochs after it are bit-identical to a fresh engine's."""
    fresh = run(config(fused=fused), epochs=3)
    engine = build_engine(config(fused=fused), "cpu")
    data = engine.prepare_images(images())
    params = [p.data_ptr() for p in engine.critic.parameters()]
    with state_preserved(engine):
        for _ in range(2):
            engine.run_epoch(data)
    assert engine.epoch == 0
    assert [p.data_ptr() for p in engine.critic.parameters()] == params  # restored in place
    rows = [engine.run_epoch(data) for _ in range(3)]
    for k in DEVICE_METRICS:
        assert torch.equal(torch.stack([r[k] for r in rows]), fresh[k]), k


@pytest.mark.parametrize("recipe", ["wgan", "book"])
def test_the_captured_steps_with_pinned_polyphase_kernels_are_the_fused_epoch(recipe: str) -> None:
    """What the CUDA graphs capture, run uncaptured: critic steps and a generator step that read the
    polyphase kernels at fixed addresses, refreshed in place after each generator update, train
    exactly (bitwise) as the fused epoch; no forward computes a kernel of its own."""
    cfg = config(fused=True, recipe=recipe, g_ema=0.9)
    plain, pinned = (build_engine(cfg, "cpu", impl="ref") for _ in range(2))
    data = pinned.prepare_images(images())
    with pinned_polyphase(pinned) as polyphase:
        addresses = [k.data_ptr() for k in polyphase.kernels]
        assert len(addresses) == sum(up > 1 for up in cfg.generator_upsample)
        for epoch in range(3):
            expected = plain.run_epoch(data)
            critic_losses = None
            for _ in range(cfg.n_critic):
                critic_losses = pinned.critic_step(pinned.draw_real(data))
            critic_stats = pinned.critic_weight_stats()
            g_loss = pinned.generator_step()
            polyphase.refresh()
            got = pinned.finish_epoch(critic_losses, critic_stats, g_loss, pinned.generator_weight_stats())
            for k in DEVICE_METRICS:
                assert torch.equal(got[k], expected[k]), (epoch, k)
            assert [k.data_ptr() for k in pinned.generator.cached_polyphase()] == addresses  # no new kernel
    for a, b in zip(plain.state_dict()["generator"].values(), pinned.state_dict()["generator"].values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: graph capture needs a GPU"),
        ),
    ],
)
def test_cuda_graph_epoch_matches_uncaptured_fused_path(device: str) -> None:
    """Replaying the captured steps is the uncaptured fused epoch (wgan.training.parity, float64). The
    state and data are made on the CPU; on a CPU the same call runs uncaptured, so CI runs all of
    this test but the capture itself."""
    state, data = trained_state(), images()
    report = same_state_parity(
        state,
        data,
        device=device,
        reference=config(fused=True),
        candidate=config(fused=True, cuda_graph=True),
        captured=True,
        impl="ref",
    )
    assert report.ok, report.summary()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: TF32 exists on GPUs")
def test_tf32_stays_within_its_stated_error() -> None:
    """TF32 rounds convolution and matmul inputs to 11 significant bits (u = 2**-11)."""
    engine = build_engine(config(fused=True, precision="tf32"), "cuda")
    engine.load_state_dict(trained_state())

    torch.backends.cuda.matmul.allow_tf32 = False
    set_cudnn_flags(allow_tf32=False)
    assert_within_rounding_of_precision(engine, tf32(True), unit_roundoff("tf32"), "cuda")


@pytest.mark.parametrize(
    "error",
    [RuntimeError("CUDA error: operation not permitted when stream is capturing"), CudaGraphUnavailable("no graphs")],
    ids=["any_error", "unavailable"],
)
def test_a_failed_capture_falls_back_to_the_plain_epoch_with_state_restored(error: Exception) -> None:
    """Whatever a capture raises, the run goes on uncaptured: one warning naming the error, and the
    steps the attempt ran (here a real epoch before the failure) leave no trace, average included."""
    cfg = config(fused=True, g_ema=0.9)
    fresh, engine = build_engine(cfg, "cpu", impl="ref"), build_engine(cfg, "cpu", impl="ref")
    data = engine.prepare_images(images())

    def capture():
        engine.run_epoch(data)
        raise error

    with pytest.warns(UserWarning, match="CUDA graphs off: .*" + str(error).split(":")[0]) as warned:
        replay, label = captured_or_plain(engine, capture)
    assert len(warned) == 1 and replay is None and label.startswith("off (") and str(error) in label
    assert ("RuntimeError" in label) == (type(error) is RuntimeError) and engine.epoch == 0
    rows = [engine.run_epoch(data) for _ in range(3)]
    expected = [fresh.run_epoch(data) for _ in range(3)]
    for k in DEVICE_METRICS:
        assert torch.equal(torch.stack([r[k] for r in rows]), torch.stack([r[k] for r in expected])), k
    assert all(torch.equal(a, b) for a, b in zip(engine.ema, fresh.ema))
