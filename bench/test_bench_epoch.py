"""A whole training epoch (n_critic critic steps + 1 generator step): fused vs eager vs torch.compile.

Every case trains a fresh engine from the same seed and checks the path it times twice: its
losses at the initial weights against the eager math on the same batch (within fp32's
probabilistic rounding bound, wgan/models/numerics.py), and one epoch of its configuration from the
initial state against the eager epoch in float64 (wgan.training.parity, 1e-5; captured on CUDA). So a
fast but wrong path fails here; epochs after the first are only checked to stay finite (WGAN
amplifies rounding, see wgan.training.parity).

On CUDA: the seed configuration at batch 512 at each ``--precision`` (fp32, TF32, bf16), every case
with ``cudnn.benchmark`` on as training sets it (``build_engine``); the fused case replays CUDA
graphs. The projection of the 12000-epoch seed run and the achieved fraction of the TF32 floor
(~1.55 TFLOP per epoch) are printed and stored in ``extra_info``. On a CPU: the seed architecture at
batch 16; the meaningful ratio there is the fused path's plain-PyTorch implementation
(``impl='ref'``, one batched critic pass, flat-buffer optimizer) vs eager, in fp32 and bf16. The
Triton-interpreter case only checks parity (its time is no claim).
"""

from __future__ import annotations

import functools
import os
import time

import pytest
import torch
from helpers import PROBABILISTIC_LAMBDA, assert_within, critic_magnitudes, critic_rounding_factor, unit_roundoff

from wgan.config import WGANConfig
from wgan.models.fused_critic import critic_losses_reference, generator_loss_reference
from wgan.training.cuda_graph import epoch_runner
from wgan.training.engine import Engine, build_engine
from wgan.training.parity import same_state_parity

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
BATCH = 512 if CUDA else 16
SEED_EPOCHS = 12000
EPOCH_TFLOP = 1.55  # seed config, batch 512 (docs/performance.md derives it)
TF32_TFLOPS = 494.0  # H200 dense TF32 tensor-core peak, the "floor" of issue 4
ROUNDS = 20 if CUDA else 3
LOSSES = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss")


def _sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


@functools.cache
def _images() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return (torch.rand(1024, 3, 32, 32, generator=g) * 2 - 1).to(DEVICE)


def _config(**overrides: object) -> WGANConfig:
    return WGANConfig(batch_size=BATCH, **overrides).validate()


PRECISIONS = ["fp32", "tf32", "bf16"] if CUDA else ["fp32", "bf16"]  # TF32 exists on GPUs only


def _group(precision: str) -> str:
    """bench/ratios.py compares the cases of one group: one group per precision."""
    return f"epoch {precision} batch {BATCH}"


def _time_epochs(
    benchmark, config: WGANConfig, impl: str | None = None, compiled: bool = False
) -> tuple[torch.Tensor, float]:
    benchmark.group = _group(config.precision)
    engine = build_engine(config, DEVICE, impl=impl)
    data = engine.prepare_images(_images())
    _check_losses_at_init(engine, data, config.precision)
    step = epoch_runner(engine, data).run
    if compiled:
        engine.critic_step = torch.compile(engine.critic_step)
        engine.generator_step = torch.compile(engine.generator_step)
        step = engine.run_epoch
    history: list[dict[str, torch.Tensor]] = []
    seconds: list[float] = []

    def one_epoch() -> None:
        start = time.perf_counter()
        history.append(step(data))
        _sync()
        seconds.append(time.perf_counter() - start)

    benchmark.pedantic(one_epoch, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    losses = torch.stack([torch.stack([r[k] for r in history]) for k in LOSSES], 1).cpu()
    timed = sorted(seconds[1:] or seconds)
    return losses, timed[len(timed) // 2]


def _check_losses_at_init(engine: Engine, data: torch.Tensor, precision: str) -> None:
    """The timed path's losses equal the eager math on the same weights and batch, within the
    probabilistic rounding bound (TF32, bf16: their unit roundoff on every layer's inputs and weights;
    under bf16 autocast both sides round, so twice).

    Checked at the initial weights, on a batch drawn from a generator of its own and with the
    generator's batch norm in eval mode, so nothing of the state the timed epochs start from moves.
    """
    g = torch.Generator(device=DEVICE).manual_seed(1)
    real = data[torch.randint(data.shape[0], (BATCH,), generator=g, device=DEVICE)]
    z = torch.randn(BATCH, engine.config.z_dim, generator=g, device=DEVICE)
    engine.generator.eval()
    try:
        with torch.no_grad(), engine.autocast():
            fake = engine.generator(z)
            ours = torch.stack([*engine.critic_losses(real, fake), engine.generator_loss(fake)]).float()
            ref = torch.stack(
                [*critic_losses_reference(engine.critic, real, fake), generator_loss_reference(engine.critic, fake)]
            ).float()
    finally:
        engine.generator.train()
    mags, _ = critic_magnitudes(engine.critic, real, fake.float(), torch.tensor([1.0, 0.0, 0.0]), power=2)
    g_mag, _ = critic_magnitudes(engine.critic, fake.float(), fake[:0].float(), torch.tensor([0.0, 1.0, 0.0]), power=2)
    factor = critic_rounding_factor(engine.critic, torch.cat([real, fake.float()]), torch.float32, probabilistic=True)
    if precision in ("tf32", "bf16"):
        sides = 2 if precision == "bf16" else 1
        u = unit_roundoff("tf32" if precision == "tf32" else torch.bfloat16)
        factor += sides * 2 * PROBABILISTIC_LAMBDA * 2 * (len(engine.critic.convs) + 1) * u
    assert_within(ours.cpu(), ref.cpu(), factor * torch.cat([mags, g_mag[1:2]]).cpu(), "losses at init")


def _check_first_epoch(config: WGANConfig, impl: str | None) -> None:
    """One epoch of the timed configuration from the initial state equals the eager one
    (wgan.training.parity, float64, fp32 switches: the algorithm, captured on CUDA when the timed path is)."""
    state = build_engine(_config(), "cpu").state_dict()
    report = same_state_parity(
        state,
        _images().cpu(),
        device=DEVICE,
        candidate=config.replace(precision="fp32"),
        impl=impl,
        captured=config.fused and CUDA,
    )
    assert report.ok, report.summary()


def _record(benchmark, name: str, median_s: float) -> None:
    """Name the case for bench/ratios.py ('fused*' is ours) and print the projection."""
    case = name.rsplit(" ", 1)[0]
    projection = median_s * SEED_EPOCHS
    benchmark.extra_info.update({"case": case, "median_epoch_s": median_s, "projected_12000_epochs_s": projection})
    line = f"[epoch] {name}: median {median_s * 1e3:.2f} ms/epoch, 12000 epochs ~ {projection:.0f} s"
    if CUDA and BATCH == 512:
        floor = EPOCH_TFLOP / TF32_TFLOPS
        benchmark.extra_info["tf32_floor_fraction"] = floor / median_s
        line += f", {100 * floor / median_s:.1f}% of the TF32 floor ({floor * 1e3:.1f} ms)"
    print(line)


# Parity: the timed path's losses at the initial weights within fp32's (or TF32's) rounding bound;
# fused paths also one epoch from the initial state against eager in float64 (module doc).
@pytest.mark.parametrize("precision", PRECISIONS)
def test_epoch_eager(benchmark, precision: str) -> None:
    losses, median = _time_epochs(benchmark, _config(precision=precision))
    assert torch.isfinite(losses).all(), "non-finite loss in a timed epoch"
    _record(benchmark, f"eager {precision}", median)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_epoch_fused(benchmark, precision: str) -> None:
    """Fused kernels; on CUDA replayed from CUDA graphs. On a CPU: impl='ref' (see module doc)."""
    config, impl = _config(fused=True, precision=precision), None if CUDA else "ref"
    losses, median = _time_epochs(benchmark, config, impl=impl)
    assert torch.isfinite(losses).all(), "non-finite loss in a timed epoch"
    _check_first_epoch(config, impl)
    _record(benchmark, f"fused{' (CUDA graph)' if CUDA else ' (ref)'} {precision}", median)


@pytest.mark.skipif(
    CUDA or os.environ.get("TRITON_INTERPRET") != "1",
    reason="CPU interpreter parity case (on CUDA test_epoch_fused runs the Triton kernels)",
)
def test_epoch_fused_triton_interpreter(benchmark) -> None:
    """The Triton kernels themselves, interpreted on a CPU: parity only, the time is no claim."""
    benchmark.group = "epoch fp32 interpreter"
    benchmark.extra_info.update({"case": "fused_triton", "interpreted": True})
    engine = build_engine(_config(fused=True), DEVICE, impl="triton")
    data = engine.prepare_images(_images())
    _check_losses_at_init(engine, data, "fp32")
    rows = benchmark.pedantic(lambda: [engine.run_epoch(data) for _ in range(2)], rounds=1, iterations=1)
    assert engine.labels["kernels"] == "triton"
    losses = torch.stack([torch.stack([r[k] for r in rows]) for k in LOSSES], 1).cpu()
    assert torch.isfinite(losses).all(), "non-finite loss in a timed epoch"
    _check_first_epoch(_config(fused=True), "triton")


@pytest.mark.skipif(
    not CUDA,
    reason="torch.compile of the epoch is benchmarked on CUDA only: on a CPU its "
    "C++ build takes minutes and its speed is no claim of this project",
)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_epoch_compiled(benchmark, precision: str) -> None:
    """Eager path with torch.compile'd critic and generator steps (same precision as fused). Cold
    compiles: the GPU check runs these in its last stage, after the headline cases."""
    losses, median = _time_epochs(benchmark, _config(precision=precision), compiled=True)
    assert torch.isfinite(losses).all(), "non-finite loss in a timed epoch"
    _record(benchmark, f"torch.compile {precision}", median)
