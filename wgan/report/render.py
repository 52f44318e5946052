"""analysis_report.md from the evidence, the findings and the figures: one function per section.

The layout is the seed pipeline's (verdict, configuration, phase table, stability indicators,
interpretation, notes, full details) with what it got wrong fixed (see wgan.report). Every
section is a function of one :class:`ReportContent` returning its lines, listed in
:data:`SECTIONS` in the order they appear; none computes a judgement of its own, so what the
report says is what wgan.report.findings found.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wgan.config import WGANConfig
from wgan.report import diagnostics as dg
from wgan.report.diagnostics import FAIL, NOT_RUN, PASS, WARN, Indicator
from wgan.report.evidence import METRIC_KEYS, SAMPLE_SEED, RunEvidence
from wgan.report.figures import FIGURES
from wgan.report.findings import SAMPLE_INDICATORS, SEED_EPOCHS, Findings
from wgan.report.quality import (
    FID_RATIO_EXCELLENT,
    FID_RATIO_FAIR,
    FID_RATIO_GOOD,
    QualityEvidence,
    QualityPoint,
    fid_ratio,
    rating,
)

ICON = {PASS: "✅", WARN: "⚠️", FAIL: "❌", NOT_RUN: "➖"}
CONFIG_SHOWN = (
    "recipe",
    "data",
    "data_class",
    "image_size",
    "z_dim",
    "critic_filters",
    "generator_filters",
    "optimizer",
    "lr_critic",
    "lr_generator",
    "rmsprop_alpha",
    "n_critic",
    "clip_threshold",
    "batch_size",
    "epochs",
    "seed",
    "fused",
    "device",
    "precision",
    "g_ema",
    "sample_every",
    "checkpoint_every",
    "eval_every",
    "eval_samples",
    "eval_metric",
)
NEAREST_SUMMARY = {"memorising": "copies", "far from data": "far from the data"}
FIDELITY_SUMMARY = {
    "match": "they match at that coarse level (fine detail is not measured).",
    "unlike data": "they differ visibly from real images.",
}
LEFT_OUT_OF_DETAILS = ("nearest_index", "nearest_distance", "held_out_index")  # one number per sample


@dataclass(frozen=True)
class ReportContent:
    """What the report is written from."""

    run: RunEvidence
    findings: Findings
    figures: dict[str, Path]  # drawn figures by key (wgan.report.figures.FIGURES)

    def link(self, key: str) -> str:
        return self.run.relative(self.figures[key])


# ----------------------------------------------------------------------------------------------
# formatting
# ----------------------------------------------------------------------------------------------
def number(x: Any, digits: int = 4) -> str:
    """A value as the report prints it: fixed ``digits`` decimals, scientific when tiny or huge, NaN/Inf by name."""
    if x is None:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.3e}"
    return f"{x:.{digits}f}"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def jsonable(x: Any) -> Any:
    """``x`` with numpy scalars as Python ones, non-finite floats as None and paths as strings (strict JSON)."""
    if isinstance(x, dict):
        return {key: jsonable(value) for key, value in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(value) for value in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


def _json_block(value: Any) -> list[str]:
    return ["```json", json.dumps(value, indent=2), "```", ""]


def critic_path_label(info: dict[str, Any], config: WGANConfig) -> str:
    """What ran, read from run.json's ``impl`` (written from what the engine resolved)."""
    if not info.get("fused", config.fused):
        return "eager (PyTorch)"
    kernels = (info.get("impl") or {}).get("kernels")
    return {
        "triton": "fused (Triton kernels)",
        "ref": "fused (the kernels' plain-PyTorch reference)",
        None: "fused (kernels not recorded)",
    }.get(kernels, f"fused ({kernels})")


def precision_label(info: dict[str, Any], config: WGANConfig) -> str:
    """The precision that ran (run.json, auto resolved), else the one configured."""
    ran = info.get("precision")
    return ran if ran else f"{config.precision} (not recorded as run)"


# ----------------------------------------------------------------------------------------------
# the sections, top to bottom
# ----------------------------------------------------------------------------------------------
def header_section(report: ReportContent) -> list[str]:
    """Title, headline numbers, and warnings about the run's end and its files."""
    run, final = report.run, report.findings.final
    total = f"{run.last_epoch}" + (f" of {run.planned} planned" if run.last_epoch != run.planned else "")
    stopped = f" ({run.stop_message})" if run.status == "stopped" else ""
    lines = [
        f"# Training Analysis Report: {run.name}",
        "",
        f"**Generated:** {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}  ",
        f"**Total Epochs:** {total}  ",
        f"**Run Status:** {run.status}{stopped}  ",
        f"**Final D Loss:** {number(final.d_loss)} (W estimate {number(final.wasserstein_estimate)})  ",
        f"**Final G Loss:** {number(final.g_loss)}  ",
    ]
    if run.info.get("wandb_url"):
        lines.append(f"**W&B Run:** [{run.info['wandb_url']}]({run.info['wandb_url']})  ")
    lines.append("")
    if run.interrupted:
        lines += [
            f"> ⚠️ **This run did not finish**: it stopped at epoch {run.last_epoch} of {run.planned} "
            f"(status `{run.status}`). Everything below describes the epochs it completed.",
            "",
        ]
    for note in run.notes:
        lines += [f"> Note: {note}.", ""]
    return lines


def verdict_section(report: ReportContent) -> list[str]:
    verdict = report.findings.verdict
    return [
        "## Training Verdict",
        "",
        f"- **Stability:** {verdict['stability']}",
        f"- **Quality:** {verdict['quality']}",
        f"- **Score:** {verdict['score']}",
        f"- **Recommendation:** {report.findings.recommendation}",
        "",
    ]


def configuration_section(report: ReportContent) -> list[str]:
    lines = ["## Configuration", "", "| Parameter | Value |", "|---|---|"]
    for key in CONFIG_SHOWN:
        value = getattr(report.run.config, key)
        lines.append(f"| {key} | `{', '.join(map(str, value)) if isinstance(value, tuple) else value}` |")
    return lines + [""]


def phase_table_section(report: ReportContent) -> list[str]:
    lines = [
        "## Training Progression (Phase-wise Metrics)",
        "",
        f"Phases are the seed's (12000 epochs) scaled by {report.run.planned}/{SEED_EPOCHS}; Start/End are the logged "
        f"values at each phase's first and last logged epoch, Δ/epoch = (End − Start) / epochs between them. "
        f"D loss = E[C(fake)] − E[C(real)] (negative is healthy); G loss = −E[C(G(z))].",
        "",
        "| Phase | Epoch Range | D Loss (Start → End) | G Loss (Start → End) | Δ D/epoch | Δ G/epoch |",
        "|---|---|---|---|---|---|",
    ]
    for row in report.findings.phases:
        lines.append(
            f"| {row['phase']} | {row['start']}-{row['end']} | {number(row['d_start'])} → {number(row['d_end'])} | "
            f"{number(row['g_start'])} → {number(row['g_end'])} | {number(row['d_per_epoch'], 6)} | "
            f"{number(row['g_per_epoch'], 6)} |"
        )
    return lines + [""]


def indicators_section(report: ReportContent) -> list[str]:
    lines = [
        "## Stability Indicators",
        "",
        "| Indicator | Status | Observation | Rule | Threshold |",
        "|---|---|---|---|---|",
    ]
    for indicator in report.findings.indicators.values():
        lines.append(
            f"| {indicator.name} | {ICON[indicator.status]} {indicator.status} | {indicator.observation} | "
            f"{indicator.rule} | {indicator.threshold} |"
        )
    return lines + [""]


SIGN_CONVENTION = (
    "**How to read the numbers (this project's sign convention).** The critic C gives higher scores to images "
    "it finds more real. D loss = E[C(fake)] − E[C(real)]: negative when the critic ranks reals above fakes, "
    "as it should. The W estimate = −D loss = E[C(real)] − E[C(fake)] is the critic's estimate of the "
    "Wasserstein distance (up to the Lipschitz constant the clip allows); it should be positive, and its "
    "trend, not its size, tracks progress. G loss = −E[C(G(z))] is only the critic's mean score of generated "
    "images, negated: it has no real-data term, so |G loss| is not a distance, and its drift mostly follows "
    "the critic's score offset, which weight clipping does not pin down."
)


def _this_run_paragraph(report: ReportContent) -> str:
    """The final losses read under the sign convention: which way round the critic ranks reals and fakes."""
    final = report.findings.final
    w, d_loss = final.wasserstein_estimate, number(final.d_loss)
    real_score, fake_score = -final.d_loss_real, final.d_loss_fake
    scores = ""
    if math.isfinite(real_score) and math.isfinite(fake_score):
        scores = (
            f" At the last epoch the critic's mean score of real images is {number(real_score)} and of generated "
            f"images {number(fake_score)}."
        )
    if not math.isfinite(w):
        return "**This run.** The final losses are not finite: numbers after the NaN carry no meaning." + scores
    if w > 0:
        return (
            f"**This run.** The final D loss {d_loss} gives a W estimate of {number(w)} > 0: the "
            f"critic still scores real images above generated ones.{scores}"
        )
    return (
        f"**This run.** The final D loss is {d_loss}, so the W estimate is {number(w)} < 0: the "
        f"critic scores fakes above reals. It no longer separates them the right way round, so it is far "
        f"from the optimal critic and its loss is no Wasserstein estimate at all; this is not a sign "
        f"that the generator matches the data.{scores} (The seed's report read a positive D loss like "
        f"this one as health.)"
    )


def _g_loss_paragraphs(report: ReportContent) -> list[str]:
    g_loss = report.run.series["g_loss"]
    finite = g_loss[np.isfinite(g_loss)]
    if len(finite) < 2:
        return []
    first, last = finite[0], finite[-1]
    return [
        f"G loss went from {number(first)} to {number(last)}: the critic's mean score of generated images moved "
        f"from {number(-first)} to {number(-last)}. On its own this says nothing about how close the samples are "
        f"to the data; compare it with the score of reals (the W estimate) and look at the samples."
    ]


def _critic_health_paragraph(indicators: dict[str, Indicator]) -> str:
    numerics = indicators["numerics"].observation
    return (
        f"**Critic health.** {indicators['w_trend'].observation}. {indicators['clip'].observation}. "
        f"{indicators['oscillation'].observation}. {numerics[0].upper()}{numerics[1:]}."
    )


def _collapse_text(collapse: dg.CollapseMeasurement) -> str:
    if not collapse.collapsed:
        return (
            f"**Samples.** No mode collapse: {collapse.duplicated_sample_fraction:.0%} of {collapse.n_samples} "
            f"samples have a near-duplicate (reals: {collapse.real_duplicated_sample_fraction:.0%}), "
            f"{collapse.n_clusters} clusters, diversity ratio {collapse.diversity_ratio:.2f} (raw-pixel ratio "
            f"{collapse.pixel_diversity_ratio:.2f}, lower means lower contrast)."
        )
    text = (
        f"**Samples.** The final generator is **mode-collapsed**: of {collapse.n_samples} samples from a fixed "
        f"seed, {collapse.duplicated_sample_fraction:.0%} have a near-duplicate (reals of the same count: "
        f"{collapse.real_duplicated_sample_fraction:.0%}), forming {collapse.n_clusters} distinct cluster(s) "
        f"(largest: {collapse.largest_cluster} samples); diversity ratio {collapse.diversity_ratio:.2f}. "
    )
    if collapse.diversity_ratio >= 0.85:
        text += (
            "Note that the mean pairwise distance alone looks normal here: the repeats are visible only "
            "by counting near-duplicates. "
        )
    return text + "No loss curve shows this."


def _nearest_text(nearest: dict[str, Any] | None) -> str:
    if nearest is None:
        return ""
    summary = NEAREST_SUMMARY.get(nearest["verdict"], "no sign of memorisation")
    return (
        f" Nearest training images: samples sit at a median distance {nearest['fake_nn_median']:.3f} from "
        f"their nearest reference image, held-out reals at {nearest['held_out_nn_median']:.3f} (ratio "
        f"{nearest['ratio']:.2f}; {summary})."
    )


def _fidelity_text(fidelity: dict[str, Any] | None) -> str:
    if fidelity is None:
        return ""
    summary = FIDELITY_SUMMARY.get(fidelity["verdict"], "they are partly distinguishable.")
    return (
        f" A linear classifier on coarse layout and colour tells samples from reals with {fidelity['accuracy']:.0%} "
        f"accuracy: {summary}"
    )


def _diversity_text(diversity: list[dg.CheckpointDiversity]) -> str:
    if len(diversity) <= 1:
        return ""
    collapsed_epochs = [point.epoch for point in diversity if point.measured.collapsed]
    first = f" (first at epoch {collapsed_epochs[0]})" if collapsed_epochs else ""
    verb = "is" if len(collapsed_epochs) == 1 else "are"
    return f" Across {len(diversity)} checkpoints, {len(collapsed_epochs)} {verb} flagged collapsed{first}."


def _samples_paragraph(report: ReportContent) -> str:
    samples = report.findings.samples
    if samples.mode_collapse is None:
        return (
            f"**Samples.** Not checked ({samples.missing}): without samples no verdict on quality is possible; the "
            f"losses cannot show mode collapse."
        )
    return (
        _collapse_text(samples.mode_collapse)
        + _nearest_text(samples.nearest)
        + _fidelity_text(samples.fidelity)
        + _diversity_text(samples.diversity)
    )


def interpretation_section(report: ReportContent) -> list[str]:
    paragraphs = [
        SIGN_CONVENTION,
        _this_run_paragraph(report),
        *_g_loss_paragraphs(report),
        _critic_health_paragraph(report.findings.indicators),
        _samples_paragraph(report),
    ]
    lines = ["### Interpretation", ""]
    for paragraph in paragraphs:
        lines += [paragraph, ""]
    return lines


def _image_item(text: str, alt: str, link: str) -> list[str]:
    return [text, "", f"  ![{alt}]({link})"]


def samples_section(report: ReportContent) -> list[str]:
    run, samples = report.run, report.findings.samples
    lines = ["## Samples", ""]
    if run.sample_grids:
        epoch, grid = run.sample_grids[-1]
        link = run.relative(grid)
        lines += _image_item(
            f"- Final fixed-z grid (epoch {epoch}, written by the trainer): [{link}]({link})", "final samples", link
        )
    else:
        lines.append("- No sample grids in samples/.")
    if run.real_grid is not None:
        link = run.relative(run.real_grid)
        lines += _image_item(f"- Real training images: [{link}]({link})", "real images", link)
    if "generated" in report.figures and run.final_checkpoint is not None:
        link, count = report.link("generated"), samples.mode_collapse.n_samples if samples.mode_collapse else ""
        weights = "averaged (EMA) weights" if run.final_generator == "EMA" else "weights"
        text = (
            f"- 64 of the {count} report samples from `{run.relative(run.final_checkpoint)}`, its {weights} "
            f"(fixed seed {SAMPLE_SEED}, batch norm in eval mode): [{link}]({link})"
        )
        lines += _image_item(text, "generated", link)
    if "nearest" in report.figures:
        link = report.link("nearest")
        text = (
            f"- Nearest training images: [{link}]({link}). Rows come in pairs: a row of samples, then below it "
            f"each sample's nearest image in reference.npz."
        )
        lines += _image_item(text, "nearest training images", link)
    fid = report.findings.fid_status or "in Sample quality below"
    return lines + [f"- FID/KID: {fid}.", ""]


def _optional(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _quality_row(point: QualityPoint, quality: QualityEvidence) -> str:
    ratio = fid_ratio(point, quality)
    kid = _optional(point.kid, 4) + (f" ± {point.kid_std:.4f}" if point.kid_std is not None else "")
    return (
        f"| {point.label} | {point.epoch} | `{point.checkpoint}` | {point.generator} | {point.n_fake} | {kid} | "
        f"{_optional(point.fid, 1)} | {_optional(ratio, 2)}× ({rating(ratio)}) | {point.measured_by} |"
    )


def quality_section(report: ReportContent) -> list[str]:
    """FID/KID of the final generator(s) and best.pt against the real-vs-real floor (wgan.report.quality)."""
    quality = report.run.quality
    if not quality:
        return []
    floor_kid = _optional(quality.floor_kid, 4) + (
        f" ± {quality.floor_kid_std:.4f}" if quality.floor_kid_std is not None else ""
    )
    lines = [
        "## Sample quality (FID/KID)",
        "",
        f"Features from {quality.network} (docs/metrics.md); every number against the {quality.n_real} "
        f"reference reals. The floor is the same metric between two sets of *real* images at the same counts "
        f"({quality.floor_source}): a generator cannot beat it, and FID's small-n bias is most of it.",
        "",
        "| Generator | Epoch | Checkpoint | Weights | Images | KID ± std | FID | FID ÷ floor (rating) | Measured by |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| real-vs-real floor | – | – | – | {quality.n_fake} | {floor_kid} | {_optional(quality.floor_fid, 1)} "
        f"| 1.00× | report |",
        *(_quality_row(point, quality) for point in quality.points),
        "",
        f"Ratings: FID ≤ {FID_RATIO_EXCELLENT:g}× the floor excellent, ≤ {FID_RATIO_GOOD:g}× good, "
        f"≤ {FID_RATIO_FAIR:g}× fair, beyond poor (calibrated on the CIFAR-10 horses, docs/metrics.md).",
        "",
    ]
    if "quality" in report.figures:
        lines += [f"![Quality over training]({report.link('quality')})", ""]
    return lines


def diagnostics_section(report: ReportContent) -> list[str]:
    """The titled figures, in :data:`~wgan.report.figures.FIGURES` order."""
    lines = ["## Diagnostics", ""]
    for figure in FIGURES:
        if figure.title is not None and figure.key in report.figures:
            lines += [f"### {figure.title}", "", f"![{figure.title}]({report.link(figure.key)})", ""]
    if "diversity" not in report.figures:
        lines += [f"_Diversity over training not plotted: {report.findings.samples.missing or 'no samples'}._", ""]
    return lines


def performance_section(report: ReportContent) -> list[str]:
    run = report.run
    info, config = run.info, run.config
    epoch_time, images_per_s = run.series["epoch_time"], run.series["images_per_s"]
    steady = epoch_time[1:] if len(epoch_time) > 1 else epoch_time  # the first epoch carries compilation and warm-up
    steady = steady[np.isfinite(steady)]
    throughput = images_per_s[np.isfinite(images_per_s)]
    total = number(np.nansum(epoch_time) / 60, 2) + " min" if np.isfinite(epoch_time).any() else "–"
    lines = [
        "## Performance",
        "",
        "| Quantity | Value |",
        "|---|---|",
        f"| Median epoch time (after epoch 1) | {_duration(np.median(steady)) if len(steady) else '–'} |",
        f"| First epoch time | {_duration(epoch_time[0]) if np.isfinite(epoch_time[0]) else '–'} |",
        f"| Total logged epoch time | {total} |",
        f"| Median images/s | {number(np.median(throughput), 1) if len(throughput) else '–'} |",
        f"| Critic path | {critic_path_label(info, config)} |",
        f"| Device | {info.get('device', config.device)} |",
        f"| Precision | {precision_label(info, config)} |",
    ]
    if info.get("impl"):
        lines.append(f"| Kernel implementations | `{json.dumps(info['impl'])}` |")
    return lines + [f"| torch / triton | {info.get('torch', '–')} / {info.get('triton') or '–'} |", ""]


def notes_section(report: ReportContent) -> list[str]:
    notes = report.run.config.notes
    return ["## Notes", "", notes.strip() if notes and notes.strip() else "_No notes were given (--notes)._", ""]


def _metric_summary(series: dict[str, np.ndarray]) -> list[str]:
    lines = [
        "### Metric summary",
        "",
        "| Metric | First | Last | Min | Max | Mean | Non-finite |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in METRIC_KEYS:
        values = series.get(key)
        if values is None or not np.isfinite(values).any():
            continue
        finite = values[np.isfinite(values)]
        lines.append(
            f"| {key} | {number(values[0])} | {number(values[-1])} | {number(finite.min())} | "
            f"{number(finite.max())} | {number(finite.mean())} | {int((~np.isfinite(values)).sum())} |"
        )
    return lines + [""]


def _diversity_table(diversity: list[dg.CheckpointDiversity]) -> list[str]:
    if not diversity:
        return []
    lines = [
        "### Diversity over training",
        "",
        "| Epoch | Checkpoint | Collapsed | Near-duplicate share | Duplicate pairs | Clusters | Diversity ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in diversity:
        m = point.measured
        lines.append(
            f"| {point.epoch} | `{point.checkpoint}` | {'yes' if m.collapsed else 'no'} | "
            f"{m.duplicated_sample_fraction:.1%} | {m.duplicate_fraction:.2%} | {m.n_clusters} / "
            f"{m.n_samples} | {m.diversity_ratio:.3f} |"
        )
    return lines + [""]


def _diagnostics_data(report: ReportContent) -> dict[str, Any]:
    """The numbers behind the indicators (the table has their words), and what was measured on the samples."""
    run, samples = report.run, report.findings.samples
    sample_keys = {entry.key for entry in SAMPLE_INDICATORS}
    critic_health = {
        key: {"status": indicator.status, "threshold": indicator.threshold, **indicator.data}
        for key, indicator in report.findings.indicators.items()
        if key not in sample_keys
    }
    nearest = samples.nearest
    return {
        "critic_health": critic_health,
        "mode_collapse": None if samples.mode_collapse is None else samples.mode_collapse.to_dict(),
        "fidelity_classifier_test": samples.fidelity,
        "nearest_neighbours": None
        if nearest is None
        else {key: value for key, value in nearest.items() if key not in LEFT_OUT_OF_DETAILS},
        "image_distance": f"RMS difference of per-image standardised {dg.FEATURE_SIDE}x{dg.FEATURE_SIDE} "
        f"average-pooled images (wgan/report/diagnostics.py)",
        "final_checkpoint": None if run.final_checkpoint is None else run.relative(run.final_checkpoint),
    }


def details_section(report: ReportContent) -> list[str]:
    run = report.run
    return [
        "## Full Details",
        "",
        *_metric_summary(run.series),
        *_diversity_table(report.findings.samples.diversity),
        "### Diagnostics data",
        "",
        *_json_block(jsonable(_diagnostics_data(report))),
        "### run.json",
        "",
        *(_json_block(run.info) if run.info else ["```json", "{}", "```", ""]),
        "### config.json",
        "",
        *_json_block(run.config.to_dict()),
    ]


SECTIONS: tuple[Callable[[ReportContent], list[str]], ...] = (
    header_section,
    verdict_section,
    configuration_section,
    phase_table_section,
    indicators_section,
    interpretation_section,
    samples_section,
    quality_section,
    diagnostics_section,
    performance_section,
    notes_section,
    details_section,
)


def render(report: ReportContent) -> str:
    """The whole analysis_report.md."""
    return "\n".join(line for section in SECTIONS for line in section(report))
