"""Precision/layout switches and the CUDA-graph epoch: same algorithm, stated numerical cost."""

from __future__ import annotations

import pytest
import torch
from tiny import TINY

from wgan.config import ConfigError, WGANConfig
from wgan.cuda_graph import state_preserved
from wgan.engine import DEVICE_METRICS, build_engine

LOSSES = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss")


def config(**overrides: object) -> WGANConfig:
    return WGANConfig.from_dict({**TINY, **overrides}).validate()


def images(device: str = "cpu", n: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (torch.rand(n, 3, 16, 16, generator=g) * 2 - 1).to(device)


def run(cfg: WGANConfig, device: str = "cpu", epochs: int = 4) -> dict[str, torch.Tensor]:
    engine = build_engine(cfg, device)
    data = engine.prepare_images(images(device))
    step = engine.epoch_runner(data)
    rows = [step(data) for _ in range(epochs)]
    return {k: torch.stack([r[k] for r in rows]).float().cpu() for k in DEVICE_METRICS}


def assert_losses_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rel: float) -> None:
    for k in LOSSES:
        scale = b[k].abs().clamp_min(b[k].abs().mean())
        err = ((a[k] - b[k]).abs() / scale).max().item()
        assert err <= rel, f"{k}: max relative difference {err:.3g} > {rel}"


@pytest.mark.parametrize("fused", [False, True])
def test_channels_last_changes_layout_not_results(fused: bool) -> None:
    """channels_last is a memory layout: fp32 results match the default layout to rounding.

    Not bit-identical: the convolutions and the head sum in another order (NHWC). The losses are
    means of scores that nearly cancel at init (weights clipped to 0.01), so 1e-4 of their scale."""
    base = run(config(fused=fused))
    nhwc = run(config(fused=fused, channels_last=True))
    assert_losses_close(nhwc, base, rel=1e-4)


@pytest.mark.parametrize("fused", [False, True])
def test_amp_bf16_runs_in_fp32_losses_within_bf16_error(fused: bool) -> None:
    """bf16 autocast keeps weights, optimizer state and losses in fp32; its losses stay within
    bf16 rounding of the fp32 run: 8 mantissa bits (~0.4% per op) compound over the layers, and
    the scores nearly cancel in the means, so 30% of each loss's scale (a sign error gives 200%)."""
    base = run(config(fused=fused))
    amp = run(config(fused=fused, amp="bf16"))
    for k in DEVICE_METRICS:
        assert amp[k].dtype == torch.float32 and torch.isfinite(amp[k]).all(), k
    assert_losses_close(amp, base, rel=0.3)
    # and it really ran in bf16: not bit-identical to the fp32 run
    assert any(not torch.equal(amp[k], base[k]) for k in LOSSES)


def test_bad_amp_is_refused() -> None:
    with pytest.raises(ConfigError, match="amp must be none or bf16"):
        config(amp="fp8")


def test_cuda_graph_is_decided_only_for_fused_cuda() -> None:
    """On a CPU no configuration turns CUDA graphs on; the runner is the plain epoch."""
    for fused in (False, True):
        engine = build_engine(config(fused=fused, cuda_graph=True), "cpu")
        assert engine.use_cuda_graph is False and engine.impl["cuda_graph"] == "off"
        data = images()
        assert engine.epoch_runner(data) == engine.run_epoch


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: graph capture needs a GPU")
def test_cuda_graph_epoch_matches_uncaptured_fused_path() -> None:
    """Replaying the captured steps gives the uncaptured fused path's results, epoch by epoch."""
    cfg = WGANConfig(batch_size=64, fused=True)
    captured = run(cfg.replace(cuda_graph=True), "cuda", epochs=6)
    plain = run(cfg.replace(cuda_graph=False), "cuda", epochs=6)
    for k in DEVICE_METRICS:
        torch.testing.assert_close(captured[k], plain[k], rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: TF32 exists on GPUs")
def test_tf32_stays_within_its_stated_error() -> None:
    """TF32 keeps 10 mantissa bits in convolutions/matmuls: losses within 1e-2 of fp32 here."""
    cfg = WGANConfig(batch_size=64, fused=True, cuda_graph=False)
    base = run(cfg, "cuda")
    tf32 = run(cfg.replace(tf32=True), "cuda")
    build_engine(cfg, "cuda")  # put the process-wide switches back to fp32
    assert_losses_close(tf32, base, rel=1e-2)
