"""Two implementations of one training epoch, compared from the same state, in float64.

Why not compare training runs: WGAN with RMSprop amplifies last-bit differences. RMSprop divides
each gradient element by its running RMS, so an element whose true gradient is zero (a bias right
before a batch norm, always; a critic channel whose real and fake contributions cancel, sometimes)
moves by a step of up to ``lr / sqrt(1 - alpha)`` in a direction its rounding noise picks. Two
correct implementations agree for an epoch or two and then drift apart.

Why not one epoch in float32 either: the same amplification already acts within one epoch.
Measured here (2026-12-01): at the seed's initial weights the eager fp32 epoch itself lands 3e-3
(relative) away from the exact (float64) epoch in ``d_loss_real``; on a tiny model after 400
epochs, one critic bias with an exactly zero true gradient stays exactly zero in the eager path
and picks up rounding noise in the fused path's batched reduction, and ``d_loss_fake`` then
differs by 6e-3. No fp32 tolerance can separate that from a bug.

So :func:`same_state_parity` loads ONE training state into a reference engine (eager by default)
and a candidate engine (fused by default), both in float64 (``build_engine(dtype=float64)``: the
models, the data, z and the optimizer state), runs one epoch on each with the same random draws,
and compares every loss, parameter, optimizer state and batch-norm statistic. In float64 the
noise starts 2**29 times smaller, so even amplified it stays ~1e-10; the bound is 1e-5 relative,
and a real difference (a wrong step, a missed clip, a wrong sign or batch) is of order 1.

Relative to what: each tensor's largest magnitude, with two floors for values that are all noise
at the initial state (the batch-normed biases, and their ``square_avg``, start at zero and have a
zero true gradient): parameters are compared relative to at least ``lr`` (one RMSprop step), and
``square_avg`` through the denominator RMSprop divides by, ``sqrt(square_avg) + eps``.

The kernels' own fp32 numerics are checked op by op in tests/test_rmsprop.py,
tests/test_bias_act.py and tests/test_wasserstein.py, against bounds derived per operation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from wgan.config import WGANConfig
from wgan.training.cuda_graph import epoch_runner
from wgan.training.engine import Engine, build_engine

BOUND = 1e-5
LOSS_NAMES = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss")


@dataclass(frozen=True)
class Difference:
    """The largest relative difference over the elements of one value (see the module doc)."""

    name: str
    relative: float


@dataclass
class ParityReport:
    reference: str
    candidate: str
    bound: float
    dtype: torch.dtype
    differences: list[Difference] = field(default_factory=list)

    @property
    def worst(self) -> Difference:
        return max(self.differences, key=lambda d: (d.relative != d.relative, d.relative))  # NaN first

    def failures(self) -> list[Difference]:
        return [d for d in self.differences if not d.relative <= self.bound]  # NaN fails

    @property
    def ok(self) -> bool:
        return not self.failures()

    def summary(self) -> str:
        worst = self.worst
        verdict = "ok" if self.ok else f"FAILED ({len(self.failures())} values over the bound)"
        return (
            f"{self.candidate} vs {self.reference}, one epoch from the same state in "
            f"{str(self.dtype).removeprefix('torch.')}: {verdict}; worst {worst.name} {worst.relative:.2e} "
            f"(bound {self.bound:.0e}, {len(self.differences)} values)"
        )


def relative_difference(candidate: torch.Tensor, reference: torch.Tensor, floor: float = 0.0) -> float:
    """``max |candidate - reference| / max(max |reference|, floor)``; inf on a shape mismatch."""
    c, r = candidate.detach().double().cpu(), reference.detach().double().cpu()
    if c.shape != r.shape:
        return float("inf")
    if c.numel() == 0 or torch.equal(c, r):
        return 0.0
    scale = max(float(r.abs().max()), floor, 1e-300)
    return float((c - r).abs().max()) / scale


def _engine(
    config: WGANConfig, state: dict[str, Any], device: torch.device | str, impl: str | None, dtype: torch.dtype
) -> Engine:
    engine = build_engine(config, device, impl=impl, dtype=dtype)
    engine.load_state_dict(copy.deepcopy(state))
    return engine


def _label(config: WGANConfig, impl: str | None) -> str:
    return f"fused[{impl or 'auto'}]" if config.fused else "eager"


def same_state_parity(
    state: dict[str, Any],
    images: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    reference: WGANConfig | None = None,
    candidate: WGANConfig | None = None,
    impl: str | None = None,
    captured: bool = False,
    dtype: torch.dtype = torch.float64,
    bound: float = BOUND,
) -> ParityReport:
    """One epoch of ``reference`` (default: the state's config, eager) and of ``candidate``
    (default: the same config, fused with kernels ``impl``) from the training ``state`` (a
    checkpoint dict), every value compared (see the module doc). The defaults run at precision fp32
    whatever the state's run used (no TF32, no autocast): parity compares the algorithm.

    ``captured`` runs the candidate through :func:`wgan.training.cuda_graph.epoch_runner` (CUDA graphs where its
    config and device allow them). ``dtype`` float32 compares the fp32 paths; the report is then
    informative only (the module doc says why no fp32 bound holds).
    """
    base = WGANConfig.from_dict(state["config"]).replace(precision="fp32")  # parity pins its own precision
    reference = reference or base.replace(fused=False)
    candidate = candidate or base.replace(fused=True)
    ref = _engine(reference, state, device, None, dtype)
    cand = _engine(candidate, state, device, impl, dtype)
    ref_out = ref.run_epoch(ref.prepare_images(images))
    cand_images = cand.prepare_images(images)
    cand_out = (epoch_runner(cand, cand_images).run if captured else cand.run_epoch)(cand_images)
    report = ParityReport(_label(reference, None), _label(candidate, impl), bound, dtype)
    report.differences += engine_differences(ref, cand, ref_out, cand_out)
    return report


def engine_differences(
    ref: Engine, cand: Engine, ref_out: dict[str, torch.Tensor], cand_out: dict[str, torch.Tensor]
) -> list[Difference]:
    """Every loss of one epoch's outputs and every parameter, buffer, average and optimizer state of
    two engines after it (the module doc says relative to what)."""
    out = [Difference(f"loss {k}", relative_difference(cand_out[k], ref_out[k])) for k in LOSS_NAMES]
    for model in ("critic", "generator"):
        out += _module_differences(model, getattr(ref, model), getattr(cand, model), ref)
    out += _ema_differences(ref, cand)
    out += _optimizer_differences("opt_critic", ref.opt_critic, cand.opt_critic, ref.critic)
    out += _optimizer_differences("opt_generator", ref.opt_generator, cand.opt_generator, ref.generator)
    return out


def _module_differences(model: str, ref: torch.nn.Module, cand: torch.nn.Module, engine: Engine) -> list[Difference]:
    """Parameters (floor: one learning-rate step) and buffers (counters must be equal)."""
    lr = engine.config.lr_critic if model == "critic" else engine.config.lr_generator
    cand_params, cand_buffers = dict(cand.named_parameters()), dict(cand.named_buffers())
    out = [
        Difference(f"{model}.{n}", relative_difference(cand_params[n], p, floor=lr)) for n, p in ref.named_parameters()
    ]
    for n, b in ref.named_buffers():
        other = cand_buffers.get(n)
        if other is None:
            out.append(Difference(f"{model}.{n}", float("inf")))
        elif b.is_floating_point():
            out.append(Difference(f"{model}.{n}", relative_difference(other, b)))
        else:
            out.append(Difference(f"{model}.{n}", 0.0 if torch.equal(other.cpu(), b.cpu()) else float("inf")))
    return out


def _ema_differences(ref: Engine, cand: Engine) -> list[Difference]:
    """The generator's weight average (--g-ema), like the parameters (floor: one learning-rate step)."""
    if ref.ema is None and cand.ema is None:
        return []
    if ref.ema is None or cand.ema is None:
        return [Difference("generator_ema (kept by one engine only)", float("inf"))]
    names = [n for n, _ in ref.generator.named_parameters()]
    lr = ref.config.lr_generator
    return [
        Difference(f"generator_ema.{n}", relative_difference(c, r, floor=lr))
        for n, r, c in zip(names, ref.ema, cand.ema)
    ]


def _optimizer_differences(
    label: str, ref: torch.optim.Optimizer, cand: torch.optim.Optimizer, module: torch.nn.Module
) -> list[Difference]:
    """Every state entry; ``square_avg`` as ``sqrt(square_avg) + eps`` (what RMSprop divides by)."""
    names = [n for n, _ in module.named_parameters()]
    ref_state, cand_state = ref.state_dict()["state"], cand.state_dict()["state"]
    if set(ref_state) != set(cand_state):
        return [Difference(f"{label} parameters with state", float("inf"))]
    eps = ref.param_groups[0]["eps"]
    out = []
    for idx, values in ref_state.items():
        for key, value in values.items():
            other, where = cand_state[idx].get(key), f"{label} {names[idx]} {key}"
            if other is None:
                rel = float("inf")
            elif key == "step":
                rel = 0.0 if float(other) == float(value) else float("inf")
            elif key == "square_avg":
                rel = relative_difference(other.clamp_min(0).sqrt() + eps, value.clamp_min(0).sqrt() + eps)
            else:
                rel = relative_difference(other, value)
            out.append(Difference(where, rel))
    return out
