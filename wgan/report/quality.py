"""FID and KID for the report: the final generator (averaged and raw when both exist), best.pt,
and the real-vs-real floor at the same sample counts.

Why a floor: FID at n = 1000 is biased far above its large-n value, even between two sets of
real images, so a FID alone says little. The floor is the metric between the run's reference
reals and the held-out reals (``held_out.npz``, none of them in the reference set), at the sample
counts the generator is measured at; the rating is the generator's FID as a multiple of that
floor (both carry the same bias), and KID's excess over its floor (KID is unbiased, so its floor
is about 0 give or take its spread). The factors and how they were calibrated are in
docs/metrics.md (:data:`FID_RATIO_EXCELLENT`, :data:`FID_RATIO_GOOD`, :data:`FID_RATIO_FAIR`).

What costs: the feature network sees every image once (about 0.26 s an image on 2 CPU threads).
Reference and held-out features are cached (wgan.fid.scores.reference_features); the evaluations
the trainer recorded at the final epoch and in best.pt are read back, not recomputed; so the
report measures only the generators nobody measured yet (the raw one, when the run averaged).

Nothing is downloaded: without a local FID network the report says so and rates nothing above
"Good".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wgan.config import WGANConfig
from wgan.errors import one_line
from wgan.fid import weights as fid_weights
from wgan.report.diagnostics import FAIL, NOT_RUN, PASS, WARN, Indicator, not_run_indicator
from wgan.run import columns
from wgan.run.checkpoint import CheckpointError, load_checkpoint, read_best_state
from wgan.run.folder import RunFolder
from wgan.run.generator import EMA_KEY, evaluation_z, generate_all, load_generator

# FID / floor FID at equal sample counts (calibrated on the CIFAR-10 horses: docs/metrics.md)
FID_RATIO_EXCELLENT = 1.5  # within this factor of the floor: "Excellent" (if nothing else is wrong)
FID_RATIO_GOOD = 3.0  # up to this: the indicator passes
FID_RATIO_FAIR = 4.0  # up to this: a warning; beyond: a failure
MIN_FLOOR_IMAGES = 8


# Which generator a QualityPoint measured (its role in the report), and how the report names it.
FINAL_EMA, FINAL_RAW, BEST = "final_ema", "final_raw", "best"
LABELS = {FINAL_EMA: "final, averaged (EMA)", FINAL_RAW: "final, raw", BEST: "best.pt"}


@dataclass(frozen=True)
class QualityPoint:
    """FID/KID of one generator: which, from where, and whether the report or the trainer measured it."""

    role: str  # FINAL_EMA, FINAL_RAW or BEST
    epoch: int
    checkpoint: str  # relative to the run folder
    generator: str  # "EMA" or "raw"
    kid: float | None
    kid_std: float | None
    fid: float | None
    n_fake: int
    measured_by: str  # "report" or "training" (read back from metrics.jsonl / best.pt)

    @property
    def label(self) -> str:
        return LABELS[self.role]


@dataclass
class QualityEvidence:
    """The floor and every measured generator; ``missing`` says why there is nothing (never faked)."""

    floor_kid: float | None = None
    floor_kid_std: float | None = None
    floor_fid: float | None = None
    floor_source: str = ""
    n_real: int = 0  # reference images (the "real" side of every number here)
    n_fake: int = 0  # images of each generator, and held-out reals of the floor
    network: str = ""
    points: list[QualityPoint] = field(default_factory=list)
    missing: str = ""

    def __bool__(self) -> bool:
        return not self.missing and bool(self.points)

    def point(self, role: str) -> QualityPoint | None:
        """The point of ``role`` (FINAL_EMA, FINAL_RAW, BEST), if it was measured."""
        return next((p for p in self.points if p.role == role), None)

    def final(self) -> QualityPoint | None:
        """The final generator as the run uses it: the average where the run kept one, else the raw one."""
        return self.point(FINAL_EMA) or self.point(FINAL_RAW)


def weights_path(report_weights: Path | None, config: WGANConfig) -> tuple[Path | None, str]:
    """The FID network to use: the report's --fid-weights, the run's, or the fetched file; else why none."""
    for candidate in (report_weights, config.fid_weights):
        if candidate is not None:
            path = Path(candidate).expanduser()
            if path.is_file():
                return path, ""
    if fid_weights.is_fetched():
        return None, ""  # None: load_feature_network's default, checked against its recorded sha256
    return None, (
        "not computed: no FID network here (run `make fid-weights` once, or pass --fid-weights PATH); "
        "nothing is downloaded"
    )


def _floor(run_dir: Path, net: Any, reference: Any, n_fake: int) -> tuple[Any, str, int]:
    """(real-vs-real result, where the second set of reals came from, the count used)."""
    from wgan.fid.scores import real_vs_real, reference_features, split_features

    held_out_path = RunFolder(run_dir).held_out_path
    if held_out_path.is_file():
        held_out = reference_features(run_dir, net, held_out=True).features
        n = min(n_fake, held_out.shape[0])
        source = f"{n} held-out reals ({held_out_path.name}) vs the {reference.n} reference reals"
        return real_vs_real(reference, held_out, n_fake=n), source, n
    pool, held_out = split_features(reference, n_held_out=min(n_fake, reference.n // 2))
    n = held_out.shape[0]
    source = f"no {held_out_path.name}: {n} reference reals vs the other {pool.shape[0]} (a split)"
    return real_vs_real(pool, held_out), source, n


def _recorded_final(series: dict[str, np.ndarray], epoch: int) -> dict[str, float] | None:
    """The trainer's evaluation at ``epoch`` (metrics.jsonl), if it made one."""
    at = np.flatnonzero(series["epoch"] == epoch)
    if not len(at) or not all(key in series for key in ("kid", "fid")):
        return None
    row = {key: float(series[key][at[-1]]) for key in columns.EVALUATION if key in series}
    return row if np.isfinite(row["kid"]) and np.isfinite(row["fid"]) else None


def _measure(checkpoint: Path, ema: bool, z: torch.Tensor, reference: Any, net: Any, device: torch.device) -> Any:
    """(epoch, wgan.fid.scores.EvalResult) of the checkpoint's averaged or raw generator on ``z``."""
    from wgan.fid.scores import evaluate

    loaded = load_generator(checkpoint, ema, device)
    return loaded.epoch, evaluate(generate_all(loaded.generator, z, device), reference, net, "both")


def _final_points(run_dir: Path, checkpoint: Path, series: dict, ctx: dict[str, Any]) -> list[QualityPoint]:
    """The final checkpoint's generators: averaged and raw when it holds both, else raw; the one the
    trainer evaluated at that epoch (the averaged one when there is one) is read back."""
    state = load_checkpoint(checkpoint)
    has_ema, epoch = EMA_KEY in state, int(state.get("epoch", -1))
    recorded = _recorded_final(series, epoch) if ctx["n_fake"] == ctx["config"].eval_samples else None
    points = []
    for ema in [True, False] if has_ema else [False]:
        role = FINAL_EMA if ema else FINAL_RAW
        rel = checkpoint.relative_to(run_dir).as_posix()
        if recorded is not None and ema == has_ema:  # what the trainer measured at that epoch
            values, by = (recorded["kid"], recorded.get("kid_std"), recorded["fid"]), "training"
        else:
            _, result = _measure(checkpoint, ema, ctx["z"], ctx["reference"], ctx["net"], ctx["device"])
            values, by = (result.kid_mean, result.kid_std, result.fid), "report"
        points.append(QualityPoint(role, epoch, rel, "EMA" if ema else "raw", *values, ctx["n_fake"], by))
    return points


def _best_point(run_dir: Path) -> QualityPoint | None:
    """checkpoints/best.pt's own record of its evaluation (made by the trainer at that epoch)."""
    folder = RunFolder(run_dir)
    state = read_best_state(folder.best_checkpoint)
    if state is None:
        return None
    record = state.get("evaluation") or {}
    if "kid" not in record and "fid" not in record:
        return None
    return QualityPoint(
        role=BEST,
        epoch=int(state.get("epoch", -1)),
        checkpoint=folder.best_checkpoint.relative_to(folder.path).as_posix(),
        generator="EMA" if EMA_KEY in state else "raw",
        kid=record.get("kid"),
        kid_std=record.get("kid_std"),
        fid=record.get("fid"),
        n_fake=int(record.get("n_samples", 0)),
        measured_by="training",
    )


def measure_quality(
    run_dir: Path,
    config: WGANConfig,
    series: dict[str, np.ndarray],
    final_checkpoint: Path | None,
    report_weights: Path | None,
    device: torch.device,
) -> QualityEvidence:
    """FID/KID of the run's generators and the floor (module docstring); ``missing`` says why not."""
    from wgan.fid.scores import MetricsError, load_feature_network, reference_features

    path, why_not = weights_path(report_weights, config)
    if why_not:
        return QualityEvidence(missing=why_not)
    if final_checkpoint is None:
        return QualityEvidence(missing="not computed: no checkpoint to sample")
    try:
        net = load_feature_network(path, device=device)
        reference = reference_features(run_dir, net)
        if reference.n < MIN_FLOOR_IMAGES:
            return QualityEvidence(missing=f"not computed: reference.npz holds only {reference.n} images")
        n_fake = min(config.eval_samples, reference.n)
        floor, source, n_fake = _floor(run_dir, net, reference, n_fake)
        ctx = {"config": config, "net": net, "reference": reference, "device": device, "n_fake": n_fake}
        ctx["z"] = evaluation_z(config)[:n_fake]
        points = _final_points(run_dir, final_checkpoint, series, ctx)
    except (MetricsError, CheckpointError, OSError, RuntimeError, KeyError, ValueError) as exc:
        return QualityEvidence(missing=f"not computed: {one_line(exc)}")
    best = _best_point(run_dir)
    return QualityEvidence(
        floor_kid=floor.kid_mean,
        floor_kid_std=floor.kid_std,
        floor_fid=floor.fid,
        floor_source=source,
        n_real=reference.n,
        n_fake=n_fake,
        network=net.kind,
        points=points + ([best] if best is not None else []),
    )


def fid_ratio(point: QualityPoint, quality: QualityEvidence) -> float | None:
    """The point's FID as a multiple of the floor's at the same counts (None when not comparable)."""
    if point.fid is None or not quality.floor_fid or point.n_fake != quality.n_fake:
        return None
    return point.fid / quality.floor_fid


def rating(ratio: float | None) -> str:
    """excellent / good / fair / poor from the FID ratio (module constants), or unrated."""
    if ratio is None:
        return "unrated"
    for limit, name in ((FID_RATIO_EXCELLENT, "excellent"), (FID_RATIO_GOOD, "good"), (FID_RATIO_FAIR, "fair")):
        if ratio <= limit:
            return name
    return "poor"


# ----------------------------------------------------------------------------------------------
# the indicator
# ----------------------------------------------------------------------------------------------
FID_KID_NAME = "FID/KID vs real"
FID_KID_RULE = "FID / real-vs-real FID at equal counts"
FID_KID_THRESHOLD = f"≤ {FID_RATIO_GOOD:g}× pass (≤ {FID_RATIO_EXCELLENT:g}× excellent), ≤ {FID_RATIO_FAIR:g}× warn"
RATING_STATUS = {"excellent": PASS, "good": PASS, "fair": WARN, "poor": FAIL}


def _kid_text(kid: float | None, kid_std: float | None) -> str:
    if kid is None:
        return "KID –"
    return f"KID {kid:.4f}" + (f" ± {kid_std:.4f}" if kid_std is not None else "")


def fid_kid_indicator(quality: QualityEvidence) -> Indicator:
    """The headline generator (the final one, averaged when the run averaged) against the floor."""
    if not quality:
        return not_run_indicator(FID_KID_NAME, quality.missing or "nothing measured", "a local FID network")
    point = quality.points[0]
    ratio = fid_ratio(point, quality)
    grade = rating(ratio)
    observation = (
        f"{point.label} (epoch {point.epoch}): FID {point.fid:.1f} = {ratio:.2f}× the floor "
        f"{quality.floor_fid:.1f}; {_kid_text(point.kid, point.kid_std)} "
        f"(floor {_kid_text(quality.floor_kid, quality.floor_kid_std)[4:]}); n = {quality.n_fake} vs "
        f"{quality.n_real} reals"
        if ratio is not None
        else f"{point.label}: measured at n = {point.n_fake}, the floor at n = {quality.n_fake}: not comparable"
    )
    return Indicator(
        FID_KID_NAME,
        RATING_STATUS.get(grade, NOT_RUN),
        observation,
        FID_KID_RULE,
        FID_KID_THRESHOLD,
        data={"rating": grade, "fid_ratio": ratio, "point": point.label},
    )
