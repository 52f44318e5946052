"""``python -m wgan.report RUN_DIR``: the Training Analysis Report of a run, from its folder alone.

Keeps the seed pipeline's ``analysis_report.md`` layout (verdict, configuration, phase table,
stability indicators, interpretation, notes, full details) and fixes what it said: the W
estimate is E[C(real)] - E[C(fake)] (the seed called |G loss| a Wasserstein distance, and read a
positive D loss, i.e. fakes scored above reals, as health), and sample quality is judged from
the generator's samples (mode collapse, nearest training images), which no loss can show.

The report is made in three steps, each in its own module, so each can be read and tested alone:

- wgan.report.evidence reads the run folder (and samples its checkpoints) into a RunEvidence;
- wgan.report.findings judges it: the measurements, the Indicator list (each indicator built by
  wgan.report.diagnostics), the verdict and the recommendation;
- wgan.report.render writes analysis_report.md section by section, and wgan.report.figures the
  PNGs in RUN_DIR/plots.

This module runs the three and returns the summary the trainer sends to W&B. Reads only the run
folder (docs/design.md); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from wgan.devices import resolve_device
from wgan.report.evidence import (
    ReportError,
    RunEvidence,
    read_evidence,
)
from wgan.report.figures import draw_figures
from wgan.report.findings import Findings, judge
from wgan.report.render import ReportContent, jsonable, render
from wgan.run.atomic import atomic_write_text

MIN_SAMPLES = 16
SUMMARY_COLLAPSE_KEYS = (
    "collapsed",
    "duplicate_fraction",
    "duplicated_sample_fraction",
    "diversity_ratio",
    "n_clusters",
    "threshold",
    "n_samples",
)
WANDB_COLLAPSE_KEYS = ("diversity_ratio", "duplicate_fraction", "duplicated_sample_fraction", "n_clusters")


def _check_options(n_samples: int, fid_weights: str | Path | None) -> None:
    if not isinstance(n_samples, int) or n_samples < MIN_SAMPLES:
        raise ReportError(f"--samples must be an integer >= {MIN_SAMPLES}, got {n_samples!r}")
    if fid_weights is not None and not Path(fid_weights).is_file():
        raise ReportError(f"--fid-weights {fid_weights}: no such file")


def wandb_summary(findings: Findings) -> dict[str, Any]:
    """The headline figures as a flat dict of scalars, for ``wandb.run.summary.update``."""
    verdict = findings.verdict
    flat: dict[str, Any] = {f"report/{key}": verdict[key] for key in verdict}
    flat["report/final_w_estimate"] = findings.final.wasserstein_estimate
    for key, indicator in findings.indicators.items():
        flat[f"report/indicator/{key}"] = indicator.status
    collapse, fidelity = findings.samples.mode_collapse, findings.samples.fidelity
    if collapse is not None:
        flat.update({f"report/{key}": value for key, value in _pick(collapse.to_dict(), WANDB_COLLAPSE_KEYS).items()})
    if fidelity is not None:
        flat["report/fidelity_accuracy"] = fidelity["accuracy"]
    quality = quality_summary(findings)
    if quality is not None:
        flat.update({f"report/{key}": value for key, value in quality["headline"].items()})
    return flat


def quality_summary(findings: Findings) -> dict[str, Any] | None:
    """FID/KID of every measured generator, the floor, and the headline numbers (None: not measured)."""
    quality = findings.quality
    if not quality:
        return None
    head = quality.points[0]
    indicator = findings.indicators["fid_kid"]
    return {
        "floor": {"kid": quality.floor_kid, "kid_std": quality.floor_kid_std, "fid": quality.floor_fid},
        "floor_source": quality.floor_source,
        "n_real": quality.n_real,
        "n_fake": quality.n_fake,
        "network": quality.network,
        "generators": [{**dataclasses.asdict(point), "label": point.label} for point in quality.points],
        "headline": {
            "fid": head.fid,
            "kid": head.kid,
            "kid_std": head.kid_std,
            "fid_floor": quality.floor_fid,
            "kid_floor": quality.floor_kid,
            "fid_ratio": indicator.data.get("fid_ratio"),
            "quality_rating": indicator.data.get("rating"),
            "quality_generator": head.generator,
        },
    }


def summary(run: RunEvidence, findings: Findings, figures: dict[str, Path], report_path: Path) -> dict[str, Any]:
    """What write_report returns: the verdict, indicator statuses, key numbers and paths (JSON-able)."""
    samples = findings.samples
    collapse, nearest = samples.mode_collapse, samples.nearest
    return jsonable(
        {
            "run_dir": str(run.path),
            "report": str(report_path),
            "plots": {key: str(path) for key, path in figures.items()},
            "status": run.status,
            "interrupted": run.interrupted,
            "epochs_completed": run.last_epoch,
            "epochs_planned": run.planned,
            **findings.verdict,
            "recommendation": findings.recommendation,
            "indicators": {key: indicator.status for key, indicator in findings.indicators.items()},
            "final_d_loss": findings.final.d_loss,
            "final_g_loss": findings.final.g_loss,
            "final_wasserstein_estimate": findings.final.wasserstein_estimate,
            "mode_collapse": None
            if collapse is None
            else {key: getattr(collapse, key) for key in SUMMARY_COLLAPSE_KEYS},
            "memorisation": None
            if nearest is None
            else {key: nearest[key] for key in ("verdict", "ratio", "copy_share")},
            "fidelity": samples.fidelity,
            "best_checkpoint": samples.best_checkpoint,
            "fid": quality_summary(findings),
            "fid_status": findings.fid_status,
            "wandb": wandb_summary(findings),
        }
    )


def write_report(
    run_dir: str | Path,
    *,
    fid_weights: str | Path | None = None,
    n_samples: int = 256,
    device: str = "cpu",
    fid: bool | None = None,
) -> dict[str, Any]:
    """Write RUN_DIR/analysis_report.md and RUN_DIR/plots/*.png; return the summary.

    The summary (verdict, indicator statuses, key numbers, paths) is JSON-able; its ``wandb`` entry
    is a flat dict of scalars meant for ``wandb.run.summary.update``. ``fid``: measure FID/KID
    (wgan.report.quality); None: when the run evaluated during training or ``fid_weights`` is given.
    Raises ReportError for a run folder that cannot be read.
    """
    _check_options(n_samples, fid_weights)
    run = read_evidence(run_dir, n_samples=n_samples, device=resolve_device(device), fid_weights=fid_weights, fid=fid)
    findings = judge(run)
    figures = draw_figures(run, findings)
    report_path = run.path / "analysis_report.md"
    atomic_write_text(report_path, render(ReportContent(run, findings, figures)))
    return summary(run, findings, figures, report_path)


# ----------------------------------------------------------------------------------------------


def _pick(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: values[key] for key in keys}
