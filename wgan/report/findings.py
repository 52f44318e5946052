"""What the evidence of a run says: measurements, indicators, the verdict and the advice.

Judging reads a :class:`~wgan.report.evidence.RunEvidence` and writes nothing, so every number the
report prints comes from one place and can be checked without parsing Markdown. Each indicator is
built by its own function in wgan.report.diagnostics (the one home of every indicator, shared with anyone
who calls diagnostics directly); this module only decides which indicators a report has, in which
order, and how their statuses combine into the verdict.

A new indicator about the generator's output is one more entry in :data:`SAMPLE_INDICATORS`
(FID/KID, built in wgan.report.quality, is the latest): it then appears in the indicator table,
the score, the W&B summary and, through its ``quality_reason``, in the quality verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

import numpy as np
import torch

from wgan.report import diagnostics as dg
from wgan.report.diagnostics import FAIL, NOT_RUN, PASS, WARN, Indicator
from wgan.report.evidence import RunEvidence
from wgan.report.quality import (
    BEST,
    FID_RATIO_EXCELLENT,
    FINAL_EMA,
    FINAL_RAW,
    QualityEvidence,
    QualityPoint,
    fid_kid_indicator,
)

SEED_EPOCHS = 12000
SEED_PHASES = (
    ("Warmup", 0, 100),
    ("Early", 100, 1000),
    ("Mid", 1000, 4000),
    ("Late", 4000, 8000),
    ("Final", 8000, 12000),
)
CRITICAL = ("numerics", "w_sign", "mode_collapse")  # a failure of any makes the run UNSTABLE
CRITICAL_REASON = {
    "numerics": "NaN/Inf losses",
    "w_sign": "critic scores fakes above reals",
    "mode_collapse": "mode collapse",
}
UNFINISHED_HOW = {
    "interrupted": "interrupted",
    "nan": "stopped on NaN",
    "failed": "failed",
    "running": "still running",
    "stopped": "stopped without a clean exit",
    "completed": "stopped early",
}


# ----------------------------------------------------------------------------------------------
# measurements on the samples
# ----------------------------------------------------------------------------------------------
@dataclass
class SampleMeasurements:
    """What wgan.report.diagnostics measured on the generator's samples; all None when there were none.

    ``diversity`` is the mode-collapse measurement of each sampled checkpoint, oldest first, the
    final one included. ``best_checkpoint`` is the
    latest checkpoint not flagged collapsed, named only when the final generator is collapsed.
    """

    mode_collapse: dg.CollapseMeasurement | None = None
    nearest: dict[str, Any] | None = None
    fidelity: dict[str, Any] | None = None
    diversity: list[dg.CheckpointDiversity] = field(default_factory=list)
    best_checkpoint: str | None = None
    missing: str = ""  # why there are no measurements


def diversity_history(
    evidence: RunEvidence, reference: torch.Tensor, final_checkpoint: str, final_collapse: dg.CollapseMeasurement
) -> list[dg.CheckpointDiversity]:
    """Mode collapse at every sampled checkpoint, oldest first; the final one was measured as ``final_collapse``."""
    points = [
        dg.CheckpointDiversity(samples.epoch, samples.checkpoint, dg.mode_collapse(samples.images, reference))
        for samples in evidence.periodic_samples
        if samples.epoch != evidence.final_epoch  # the final checkpoint stands for its epoch
    ]
    points.append(dg.CheckpointDiversity(evidence.final_epoch, final_checkpoint, final_collapse))
    return sorted(points, key=lambda point: point.epoch)


def measure_samples(evidence: RunEvidence) -> SampleMeasurements:
    """Mode collapse, nearest training images and the classifier test of the final samples, and diversity history."""
    fake, reference, checkpoint = evidence.final_samples, evidence.reference, evidence.final_checkpoint
    if fake is None or reference is None or checkpoint is None:
        return SampleMeasurements(missing=evidence.missing_samples)
    collapse = dg.mode_collapse(fake, reference)
    enough_for_classifier = min(fake.shape[0], reference.shape[0]) >= dg.FIDELITY_MIN_SAMPLES
    diversity = diversity_history(evidence, reference, evidence.relative(checkpoint), collapse)
    healthy = [point for point in diversity if not point.measured.collapsed]
    return SampleMeasurements(
        mode_collapse=collapse,
        nearest=dg.nearest_neighbours(fake, reference),
        fidelity=dg.fidelity(fake, reference) if enough_for_classifier else None,
        diversity=diversity,
        best_checkpoint=healthy[-1].checkpoint if collapse.collapsed and healthy else None,
        missing=evidence.missing_samples,
    )


# ----------------------------------------------------------------------------------------------
# the indicators
# ----------------------------------------------------------------------------------------------
NEEDS_SAMPLES = "needs checkpoints/last.pt and reference.npz"


def _mode_collapse(evidence: RunEvidence, samples: SampleMeasurements) -> Indicator:
    return dg.mode_collapse_indicator(samples.mode_collapse, missing=samples.missing, needs=NEEDS_SAMPLES)


def _memorisation(evidence: RunEvidence, samples: SampleMeasurements) -> Indicator:
    return dg.memorisation_indicator(samples.nearest, missing=samples.missing, needs=NEEDS_SAMPLES)


def _fid_kid(evidence: RunEvidence, samples: SampleMeasurements) -> Indicator:
    return fid_kid_indicator(evidence.quality)


def _fidelity(evidence: RunEvidence, samples: SampleMeasurements) -> Indicator:
    too_few = f"fewer than {dg.FIDELITY_MIN_SAMPLES} samples or reference images (--samples {evidence.n_samples})"
    return dg.fidelity_indicator(samples.fidelity, missing=samples.missing or too_few)


@dataclass(frozen=True)
class SampleIndicator:
    """One entry of :data:`SAMPLE_INDICATORS`: the report key, how to build it, and what its failure means.

    ``quality_reason`` marks an indicator that rates the samples only (not the training dynamics):
    its failure lowers the quality verdict, in these words, and leaves the stability verdict alone.
    """

    key: str
    build: Callable[[RunEvidence, SampleMeasurements], Indicator]
    quality_reason: str | None = None


# The indicators about what the generator draws, in table order after wgan.report.diagnostics.critic_health's.
SAMPLE_INDICATORS: tuple[SampleIndicator, ...] = (
    SampleIndicator("mode_collapse", _mode_collapse),
    SampleIndicator("memorisation", _memorisation, "samples copy training images or sit far from all of them"),
    SampleIndicator("fidelity", _fidelity, "samples are easy to tell from real images"),
    SampleIndicator("fid_kid", _fid_kid, "FID/KID far above the real-vs-real floor"),
)


def quality_reasons() -> dict[str, str]:
    """The quality-only indicators (see SampleIndicator) and what their failure says, read off the registry."""
    return {entry.key: entry.quality_reason for entry in SAMPLE_INDICATORS if entry.quality_reason}


def judge_indicators(evidence: RunEvidence, samples: SampleMeasurements) -> dict[str, Indicator]:
    """Every indicator of the report, by key, in the order of its table."""
    indicators = dg.critic_health(evidence.series, evidence.config.clip_threshold)
    for entry in SAMPLE_INDICATORS:
        indicators[entry.key] = entry.build(evidence, samples)
    return indicators


# ----------------------------------------------------------------------------------------------
# the verdict
# ----------------------------------------------------------------------------------------------
class Verdict(TypedDict):
    """The report's headline: three sentences and the counts behind them (a dict, for the JSON summary)."""

    stability: str
    quality: str
    score: str
    passed: int
    evaluated: int
    collapsed: bool


def _as_indicators(indicators: Mapping[str, Indicator | Mapping[str, Any]]) -> dict[str, Indicator]:
    """Indicators as given, or built from dicts with their keys (callers that predate the Indicator type)."""
    return {
        key: value if isinstance(value, Indicator) else Indicator.from_mapping(value)
        for key, value in indicators.items()
    }


def _stability(indicators: dict[str, Indicator], interrupted_note: str) -> str:
    quality_only = tuple(quality_reasons())
    evaluated = [key for key, indicator in indicators.items() if indicator.status != NOT_RUN]
    failed_critical = [key for key in CRITICAL if key in indicators and indicators[key].status == FAIL]
    not_passed = [key for key in evaluated if key not in CRITICAL + quality_only and indicators[key].status != PASS]
    if failed_critical:
        stability = "❌ UNSTABLE (" + ", ".join(CRITICAL_REASON[key] for key in failed_critical) + ")"
    elif not_passed:
        stability = "⚠️ MARGINAL (" + ", ".join(indicators[key].name.lower() for key in not_passed) + ")"
    else:
        stability = "✅ STABLE"
    return stability + (f"; {interrupted_note}" if interrupted_note else "")


def _quality_warning(indicator: Indicator, key: str, reasons: dict[str, str]) -> str:
    if indicator.status == NOT_RUN:
        return indicator.name.lower() + " not checked"
    return reasons.get(key, key)


def _quality(indicators: dict[str, Indicator]) -> str:
    """Rated from the samples only: no loss can show how good they are."""
    reasons = quality_reasons()
    collapse = indicators["mode_collapse"].status if "mode_collapse" in indicators else NOT_RUN
    sample_keys = [key for key in ("mode_collapse", *reasons) if key in indicators]
    fails = [key for key in sample_keys if indicators[key].status == FAIL]
    warns = [key for key in sample_keys if indicators[key].status in (WARN, NOT_RUN)]
    if collapse == FAIL:
        return "❌ Poor (mode collapse: the samples repeat a few images)"
    if collapse == NOT_RUN:
        return "❔ Not assessed (no samples were checked; losses alone cannot rate quality)"
    if fails:
        return "❌ Poor (" + ", ".join(reasons.get(key, key) for key in fails) + ")"
    warns = [key for key in warns if key != "fid_kid" or indicators[key].status == WARN]
    if warns:
        return "⚠️ Fair (" + ", ".join(_quality_warning(indicators[key], key, reasons) for key in warns) + ")"
    fid = indicators.get("fid_kid")
    if fid is None or fid.status == NOT_RUN:  # "Excellent" needs a measure of fine detail, which the rest is not
        return (
            "✅ Good (diverse, not memorised, coarse layout and colour match reals; "
            "FID/KID not measured, so no finer rating)"
        )
    if fid.data["rating"] == "excellent":
        return f"🌟 Excellent (FID within {FID_RATIO_EXCELLENT:g}× of the real-vs-real floor: {fid.observation})"
    return f"✅ Good (diverse, not memorised; {fid.observation})"


def verdict(indicators: Mapping[str, Indicator | Mapping[str, Any]], *, interrupted_note: str = "") -> Verdict:
    """Stability / Quality / Score from indicator statuses.

    A collapsed generator (mode_collapse FAIL) is never STABLE nor Excellent, whatever the losses
    say; that is the mistake the seed report made.
    """
    judged = _as_indicators(indicators)
    evaluated = [indicator for indicator in judged.values() if indicator.status != NOT_RUN]
    passed = [indicator for indicator in evaluated if indicator.status == PASS]
    not_run = [indicator.name for indicator in judged.values() if indicator.status == NOT_RUN]
    score = f"{len(passed)}/{len(evaluated)} indicators passed"
    if not_run:
        score += f" ({len(not_run)} not evaluated: {', '.join(not_run)})"
    collapsed = "mode_collapse" in judged and judged["mode_collapse"].status == FAIL
    return Verdict(
        stability=_stability(judged, interrupted_note),
        quality=_quality(judged),
        score=score,
        passed=len(passed),
        evaluated=len(evaluated),
        collapsed=collapsed,
    )


def interrupted_note(evidence: RunEvidence) -> str:
    """For the stability line of a run that did not finish: how it ended and where."""
    if not evidence.interrupted:
        return ""
    how = UNFINISHED_HOW.get(evidence.status, "incomplete")
    return f"{how} at epoch {evidence.last_epoch} of {evidence.planned}"


# ----------------------------------------------------------------------------------------------
# the recommendation: one piece of advice per indicator that did not pass
# ----------------------------------------------------------------------------------------------
def _halving(value: float) -> str:
    return f"{value:g} -> {value / 2:g}"


def _doubling(value: float) -> str:
    return f"{value:g} -> {2 * value:g}"


def _more_critic_steps(evidence: RunEvidence) -> str:
    return f"n_critic ({evidence.config.n_critic} -> {2 * evidence.config.n_critic})"


def _advice_values(evidence: RunEvidence, indicator: Indicator) -> dict[str, Any]:
    """The run's numbers that advice quotes: the next values to try and the indicator's data."""
    config = evidence.config
    return {
        **indicator.data,
        "more_critic_steps": _more_critic_steps(evidence),
        "lr_critic": _halving(config.lr_critic),
        "lr_generator": _halving(config.lr_generator),
        "clip": _doubling(config.clip_threshold),
        "epochs": evidence.last_epoch,
    }


def _template(text: str) -> Callable[[RunEvidence, Indicator, str | None], str]:
    """Advice that only quotes the run's numbers: ``text`` formatted with :func:`_advice_values`."""
    return lambda evidence, indicator, best: text.format(**_advice_values(evidence, indicator))


NUMERICS_ADVICE = _template(
    "Losses became NaN/Inf at epoch {first_nan_epoch}: resume from the last good checkpoint with lower "
    "learning rates (lr_critic {lr_critic}, lr_generator {lr_generator})."
)
W_SIGN_ADVICE = _template(
    "The critic scores fakes above reals, so it is far from optimal and its loss no longer estimates a "
    "distance: raise {more_critic_steps}, lower lr_generator ({lr_generator}), and if clip saturation is "
    "high raise clip_threshold ({clip})."
)
W_TREND_ADVICE = _template(
    "Sudden drops of the W estimate (the critic losing its grip): raise {more_critic_steps} or lower "
    "lr_critic ({lr_critic})."
)
CLIP_ADVICE = _template(
    "Most critic weights sit at the clip: raise clip_threshold ({clip}) or lower lr_critic ({lr_critic})."
)
OSCILLATION_ADVICE = _template("The D loss swings more than its mean: lower both learning rates ({lr_critic}).")
FID_ADVICE = _template(
    "FID is {fid_ratio:.1f}× the real-vs-real floor: the samples are far from the data at this point "
    "({epochs} epochs); train longer, or compare --recipe and --g-ema."
)


def _collapse_advice(evidence: RunEvidence, indicator: Indicator, best: str | None) -> str:
    advice = "Do not use the final generator: it is mode-collapsed."
    if best:
        advice += f" Use `{best}` instead (the latest checkpoint not flagged as collapsed), and stop earlier"
    else:
        advice += " Train fewer epochs (and keep periodic checkpoints with --checkpoint-every to pick an earlier one)"
    return advice + (
        f"; to keep the critic ahead of the generator raise {_more_critic_steps(evidence)} "
        f"and lower lr_generator ({_halving(evidence.config.lr_generator)})."
    )


def _memorisation_advice(evidence: RunEvidence, indicator: Indicator, best: str | None) -> str:
    if indicator.data.get("verdict") == "memorising":
        return "Samples are copies of training images: use an earlier checkpoint or fewer epochs."
    return (
        "Samples are farther from every training image than held-out reals are: the generator "
        "has not learnt the data yet; train longer (or check the learning rates)."
    )


def _fidelity_advice(evidence: RunEvidence, indicator: Indicator, best: str | None) -> str:
    longer = " yet; train longer" if evidence.last_epoch < 2000 else "; train longer or lower the learning rates"
    return (
        f"A linear classifier tells the samples from real images by coarse layout and colour alone "
        f"({indicator.data['accuracy']:.0%} accuracy): the generator has not learnt the data"
        f"{longer} (this run: {evidence.last_epoch} epochs)."
    )


def _unchecked_samples_advice(evidence: RunEvidence, indicator: Indicator, best: str | None) -> str:
    return (
        f"Sample quality was not checked ({indicator.observation}); keep "
        "checkpoints/last.pt and reference.npz in the run folder so the report can sample the generator."
    )


def _point_text(point: QualityPoint) -> str:
    values = [f"KID {point.kid:.4f}" if point.kid is not None else "", f"FID {point.fid:.1f}" if point.fid else ""]
    return ", ".join(v for v in values if v)


def _best_epoch_advice(evidence: RunEvidence, indicator: Indicator, best: str | None) -> str:
    """Name the best evaluated epoch, and whether it beats the final generator."""
    quality = evidence.quality
    best_point, final = quality.point(BEST), quality.final()
    if best_point is None or final is None:
        return ""
    if best_point.epoch == final.epoch:
        return f"The best evaluation is the final one (epoch {best_point.epoch}: {_point_text(best_point)})."
    metric = evidence.config.eval_metric
    return (
        f"The best evaluation was at epoch {best_point.epoch} ({_point_text(best_point)}, by {metric.upper()}), "
        f"better than the final generator's ({_point_text(final)}): sample `checkpoints/best.pt` "
        f"(`python -m wgan.sample {evidence.path} --checkpoint best`)."
    )


def _ema_advice(evidence: RunEvidence, indicator: Indicator, best: str | None) -> str:
    """When the averaged generator is clearly worse than the raw one: why (its start), and what to do."""
    quality = evidence.quality
    ema, raw = quality.point(FINAL_EMA), quality.point(FINAL_RAW)
    if ema is None or raw is None or ema.kid is None or raw.kid is None:
        return ""
    if ema.kid <= raw.kid + (ema.kid_std or 0.0) + (raw.kid_std or 0.0):  # not worse beyond both spreads
        return ""
    beta, steps = evidence.config.g_ema, ema.epoch  # one generator step per epoch
    worse = (
        f"The averaged generator (--g-ema {beta:g}) scores worse than the raw one (KID {ema.kid:.4f} vs {raw.kid:.4f})"
    )
    raw_cmd = f"sample the raw weights (`python -m wgan.sample {evidence.path} --raw`)"
    if "warm-up" not in str((evidence.info.get("impl") or {}).get("generator_ema", "")):  # runs before the warm-up
        return (
            f"{worse}: after {steps} generator steps the average still holds {beta**steps:.0%} of the "
            f"initial weights ({beta:g}^{steps}); {raw_cmd}, train longer, or choose a decay with 1/(1 - decay) "
            f"well below the generator steps."
        )
    span = min(1 / (1 - beta), (steps + 10) / 9)  # the warm-up's decay 1 - 9/(10+t): about t/9 steps at step t
    return (
        f"{worse}: with its warm-up (decay min({beta:g}, (1+t)/(10+t))) the initial weights are forgotten, "
        f"but after {steps} generator steps it averages over roughly the last {span:.0f}, so it lags a "
        f"generator that was still improving over them; {raw_cmd}, train longer, or choose a smaller decay."
    )


@dataclass(frozen=True)
class AdviceRule:
    """Advice given when indicator ``key`` has one of ``statuses``; ``text`` gets the run, that indicator and
    the best checkpoint to fall back to (None: none)."""

    key: str
    statuses: tuple[str, ...]
    text: Callable[[RunEvidence, Indicator, str | None], str]


# In the order the advice is given: the worst problem first.
ADVICE: tuple[AdviceRule, ...] = (
    AdviceRule("mode_collapse", (FAIL,), _collapse_advice),
    AdviceRule("numerics", (FAIL,), NUMERICS_ADVICE),
    AdviceRule("w_sign", (FAIL,), W_SIGN_ADVICE),
    AdviceRule("w_trend", (WARN,), W_TREND_ADVICE),
    AdviceRule("clip", (WARN,), CLIP_ADVICE),
    AdviceRule("oscillation", (WARN,), OSCILLATION_ADVICE),
    AdviceRule("memorisation", (WARN,), _memorisation_advice),
    AdviceRule("fidelity", (FAIL, WARN), _fidelity_advice),
    AdviceRule("fid_kid", (FAIL, WARN), FID_ADVICE),
    AdviceRule("fid_kid", (PASS, WARN, FAIL), _ema_advice),
    AdviceRule("fid_kid", (PASS, WARN, FAIL), _best_epoch_advice),
    AdviceRule("mode_collapse", (NOT_RUN,), _unchecked_samples_advice),
)


def _resume_advice(evidence: RunEvidence) -> str:
    """How to continue an unfinished run: from its checkpoint, or (none written yet) from epoch 0."""
    stopped = f"The run stopped at epoch {evidence.last_epoch} of {evidence.planned} (status: {evidence.status}); "
    command = f"`python -m wgan.train --resume {evidence.path}`"
    if evidence.final_checkpoint is None:
        return stopped + f"it wrote no checkpoint, so {command} restarts it from epoch 0 with its config.json."
    return stopped + f"resume it with {command}."


def recommendation(evidence: RunEvidence, indicators: Mapping[str, Indicator], best_checkpoint: str | None) -> str:
    """What to do next: one piece of advice per indicator that did not pass, then how to resume an unfinished run."""
    advice = [
        rule.text(evidence, indicators[rule.key], best_checkpoint)
        for rule in ADVICE
        if rule.key in indicators and indicators[rule.key].status in rule.statuses
    ]
    advice = [text for text in advice if text]  # a rule may have nothing to say for this run
    if evidence.interrupted:
        advice.append(_resume_advice(evidence))
    return " ".join(advice or ["Keep this run: every indicator passed."])


# ----------------------------------------------------------------------------------------------
# the numbers the report quotes
# ----------------------------------------------------------------------------------------------
def phase_table(epochs: np.ndarray, d_loss: np.ndarray, g_loss: np.ndarray, planned: int) -> list[dict[str, Any]]:
    """The seed's phases scaled by planned/12000; a phase holds epochs in (start, end].

    Start/End are the logged values at the phase's first and last logged epoch; Δ/epoch is
    (End - Start) / (epochs between them). Phases without a logged epoch are dropped; the last
    phase also takes any epoch beyond the plan.
    """
    scale = planned / SEED_EPOCHS
    rows = []
    for position, (phase, seed_start, seed_end) in enumerate(SEED_PHASES):
        start, end = math.floor(seed_start * scale + 0.5), math.floor(seed_end * scale + 0.5)
        is_last = position == len(SEED_PHASES) - 1
        in_phase = (epochs > start) & ((epochs <= end) | is_last)
        if end <= start and not is_last or not in_phase.any():
            continue
        logged = np.flatnonzero(in_phase)
        first_epoch, last_epoch = int(epochs[logged[0]]), int(epochs[logged[-1]])
        span = last_epoch - first_epoch
        row = {"phase": phase, "start": start, "end": end, "first_epoch": first_epoch, "last_epoch": last_epoch}
        for prefix, values in (("d", d_loss), ("g", g_loss)):
            at_start, at_end = float(values[logged[0]]), float(values[logged[-1]])
            row[f"{prefix}_start"], row[f"{prefix}_end"] = at_start, at_end
            row[f"{prefix}_per_epoch"] = (at_end - at_start) / span if span > 0 else float("nan")
        rows.append(row)
    return rows


@dataclass(frozen=True)
class FinalValues:
    """The last finite value of each loss (a run that ended on NaN is quoted before it)."""

    d_loss: float
    g_loss: float
    wasserstein_estimate: float
    d_loss_real: float
    d_loss_fake: float


def _last_finite(values: np.ndarray) -> float:
    finite = np.flatnonzero(np.isfinite(values))
    return float(values[finite[-1]]) if len(finite) else float("nan")


def final_values(series: Mapping[str, np.ndarray]) -> FinalValues:
    return FinalValues(
        d_loss=_last_finite(series["d_loss"]),
        g_loss=_last_finite(series["g_loss"]),
        wasserstein_estimate=_last_finite(dg.wasserstein_estimate(series)),
        d_loss_real=_last_finite(series["d_loss_real"]),
        d_loss_fake=_last_finite(series["d_loss_fake"]),
    )


# ----------------------------------------------------------------------------------------------
# everything at once
# ----------------------------------------------------------------------------------------------
@dataclass
class Findings:
    """What the report says about a run, before it is written down."""

    samples: SampleMeasurements
    indicators: dict[str, Indicator]
    verdict: Verdict
    recommendation: str
    final: FinalValues
    phases: list[dict[str, Any]]
    fid_status: str  # why there is no FID/KID ("" when measured): it is never faked
    quality: QualityEvidence  # the FID/KID measurements themselves (wgan.report.quality)


def judge(evidence: RunEvidence) -> Findings:
    """Measure the samples, build every indicator and read the verdict and advice off them."""
    samples = measure_samples(evidence)
    indicators = judge_indicators(evidence, samples)
    series = evidence.series
    return Findings(
        samples=samples,
        indicators=indicators,
        verdict=verdict(indicators, interrupted_note=interrupted_note(evidence)),
        recommendation=recommendation(evidence, indicators, samples.best_checkpoint),
        final=final_values(series),
        phases=phase_table(evidence.epochs, series["d_loss"], series["g_loss"], evidence.planned),
        fid_status=evidence.quality.missing,
        quality=evidence.quality,
    )
