"""The report's figures (RUN_DIR/plots/*.png), drawn from the evidence and the findings.

One :class:`Figure` per file, in :data:`FIGURES`: the report draws them in that order and shows
the titled ones under "## Diagnostics" in that order too, so a new figure (quality over training,
say) is one more entry here. The drawing itself is in wgan.report.plots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from wgan.report import diagnostics as dg
from wgan.report import plots
from wgan.report.evidence import RunEvidence
from wgan.report.findings import Findings
from wgan.report.quality import BEST
from wgan.run.images import save_grid

SHOWN_SAMPLES = 64  # of the report's samples, in plots/generated.png
NEAREST_PAIRS = 32  # samples shown above their nearest training image
GRID_ROW = 8


def _losses(evidence: RunEvidence, findings: Findings, path: Path) -> Path | None:
    return plots.plot_losses(evidence.series, path)


def _wasserstein(evidence: RunEvidence, findings: Findings, path: Path) -> Path | None:
    return plots.plot_wasserstein(evidence.series, path, findings.indicators["w_trend"].data["drops"])


def _clip_ratio(evidence: RunEvidence, findings: Findings, path: Path) -> Path | None:
    return plots.plot_clip_ratio(evidence.series, path, dg.CLIP_SATURATION_LIMIT)


def _weights(evidence: RunEvidence, findings: Findings, path: Path) -> Path | None:
    return plots.plot_weights(evidence.series, path, evidence.config.clip_threshold)


def _epoch_time(evidence: RunEvidence, findings: Findings, path: Path) -> Path | None:
    return plots.plot_epoch_time(evidence.series, path)


def _diversity(evidence: RunEvidence, findings: Findings, path: Path) -> Path | None:
    if not findings.samples.diversity:
        return None
    return plots.plot_diversity(
        findings.samples.diversity, path, min_ratio=dg.MIN_DIVERSITY_RATIO, max_share=dg.MAX_DUPLICATED_SHARE
    )


def _quality(evidence: RunEvidence, findings: Findings, path: Path) -> Path | None:
    """The trainer's evaluations (metrics.jsonl) with the floor; nothing when the run never evaluated."""
    if not evidence.evaluations:
        return None
    quality = evidence.quality
    floors = {"kid": quality.floor_kid, "fid": quality.floor_fid} if quality else {}
    best = quality.point(BEST) if quality else None
    generator = "averaged (EMA) generator" if evidence.config.g_ema else "generator"
    return plots.plot_quality(evidence.evaluations, path, floors, None if best is None else best.epoch, generator)


def _samples_over_training(evidence: RunEvidence, findings: Findings, path: Path) -> Path | None:
    return plots.plot_sample_strip(evidence.sample_grids, path, evidence.real_grid)


def _generated(evidence: RunEvidence, findings: Findings, path: Path) -> Path | None:
    if evidence.final_samples is None:
        return None
    return save_grid(evidence.final_samples[:SHOWN_SAMPLES], path, nrow=GRID_ROW)


def _nearest(evidence: RunEvidence, findings: Findings, path: Path) -> Path | None:
    """Rows in pairs: GRID_ROW samples, then each one's nearest image in reference.npz below it."""
    fake, reference, nearest = evidence.final_samples, evidence.reference, findings.samples.nearest
    if fake is None or reference is None or nearest is None:
        return None
    count = min(NEAREST_PAIRS, fake.shape[0])
    neighbours = reference[torch.tensor(nearest["nearest_index"][:count])]
    rows = []
    for start in range(0, count, GRID_ROW):
        rows += [fake[start : start + GRID_ROW], neighbours[start : start + GRID_ROW]]
    return save_grid(torch.cat(rows), path, nrow=GRID_ROW)


@dataclass(frozen=True)
class Figure:
    """One PNG of the report. ``title``: its heading under "## Diagnostics" (None: the Samples section links it)."""

    key: str
    file: str
    title: str | None
    draw: Callable[[RunEvidence, Findings, Path], Path | None]  # None: nothing to draw for this run


FIGURES: tuple[Figure, ...] = (
    Figure("losses", "losses.png", "Losses (D total, real, fake; G)", _losses),
    Figure("wasserstein", "wasserstein.png", "Wasserstein estimate", _wasserstein),
    Figure("clip_ratio", "clip_ratio.png", "Clip saturation", _clip_ratio),
    Figure("weights", "weights.png", "Weight statistics", _weights),
    Figure("epoch_time", "epoch_time.png", "Epoch time", _epoch_time),
    Figure("diversity", "diversity.png", "Diversity over training", _diversity),
    Figure("quality", "quality.png", None, _quality),  # shown in the Sample quality section
    Figure("samples_over_training", "samples_over_training.png", "Samples over training", _samples_over_training),
    Figure("generated", "generated.png", None, _generated),
    Figure("nearest", "nearest_training_images.png", None, _nearest),
)


def draw_figures(evidence: RunEvidence, findings: Findings) -> dict[str, Path]:
    """Draw every figure there is something for into RUN_DIR/plots; return their paths by key."""
    plot_dir = evidence.path / "plots"
    plot_dir.mkdir(exist_ok=True)
    drawn = {figure.key: figure.draw(evidence, findings, plot_dir / figure.file) for figure in FIGURES}
    return {key: path for key, path in drawn.items() if path is not None}
