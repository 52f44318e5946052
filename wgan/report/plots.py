"""The report's figures: one PNG per question a person asks of a run, readable at a glance.

Every metric curve is drawn twice: the raw per-epoch values as a thin pale line (so spikes and
NaN gaps stay visible) and a trailing mean as a thick line (so a 12000-epoch trend is readable).
Epochs with NaN losses are marked with red ticks on the x axis rather than silently skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from wgan.report.diagnostics import (  # noqa: E402
    CheckpointDiversity,
    rolling_mean,
    series_column,
    smoothing_window,
    wasserstein_estimate,
)

FIGSIZE = (11, 4.8)
DPI = 110
COLORS = {
    "d_loss": "#1f4e9c",
    "d_loss_real": "#2a9d4b",
    "d_loss_fake": "#d1495b",
    "g_loss": "#7b3fa0",
    "w": "#1f4e9c",
    "clip": "#c96f00",
    "critic": "#1f4e9c",
    "generator": "#7b3fa0",
}


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png")
    plt.close(fig)
    return path


def _curve(ax: plt.Axes, epochs: np.ndarray, y: np.ndarray, label: str, color: str) -> None:
    if not np.isfinite(y).any():
        return
    win = smoothing_window(len(y))
    if len(y) > 3 * win:
        ax.plot(epochs, y, color=color, alpha=0.25, linewidth=0.7)
        ax.plot(epochs, rolling_mean(y, win), color=color, linewidth=2.0, label=f"{label} (mean of {win})")
    else:
        ax.plot(epochs, y, color=color, linewidth=1.8, marker="o" if len(y) < 40 else None, markersize=3, label=label)


def _mark_nan(ax: plt.Axes, epochs: np.ndarray, ys: Sequence[np.ndarray]) -> None:
    bad = np.zeros(len(epochs), dtype=bool)
    for y in ys:
        bad |= ~np.isfinite(y)
    if bad.any():
        ax.plot(
            epochs[bad],
            np.zeros(bad.sum()),
            "|",
            color="red",
            markersize=14,
            markeredgewidth=2,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label=f"NaN/Inf ({int(bad.sum())} epoch(s))",
        )


def _style(ax: plt.Axes, title: str, ylabel: str, xlabel: str = "epoch") -> None:
    ax.set_title(title, fontsize=12, loc="left")
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=9, loc="best", framealpha=0.85)


def plot_losses(series: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """D loss alone, its two terms, and G loss: three panels because their scales differ by 10-100x."""
    epochs = np.asarray(series["epoch"])
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.8))
    d = series_column(series, "d_loss")
    _curve(a, epochs, d, "D loss = E[C(fake)] - E[C(real)]", COLORS["d_loss"])
    a.axhline(0, color="black", linewidth=0.8)
    lo, hi = a.get_ylim()
    if hi > 0:
        a.axhspan(0, hi, color="#d1495b", alpha=0.08, label="above 0: critic scores fakes above reals")
    a.set_ylim(min(lo, 0), hi)
    _mark_nan(a, epochs, [d])
    _style(a, "D loss (< 0: reals scored above fakes)", "loss")
    terms = [("d_loss_real", "D loss real = -E[C(real)]"), ("d_loss_fake", "D loss fake = E[C(fake)]")]
    for key, label in terms:
        _curve(b, epochs, series_column(series, key), label, COLORS[key])
    b.axhline(0, color="black", linewidth=0.8)
    _mark_nan(b, epochs, [series_column(series, k) for k, _ in terms])
    _style(b, "D loss terms (their sum is the D loss)", "loss")
    g = series_column(series, "g_loss")
    _curve(c, epochs, g, "G loss = -E[C(G(z))]", COLORS["g_loss"])
    _mark_nan(c, epochs, [g])
    _style(c, "G loss (no real-data term: not a distance)", "loss")
    return _save(fig, Path(path))


def plot_wasserstein(series: Mapping[str, np.ndarray], path: str | Path, drops: Sequence[int] = ()) -> Path:
    epochs = np.asarray(series["epoch"])
    w = wasserstein_estimate(series)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    _curve(ax, epochs, w, "W estimate = E[C(real)] - E[C(fake)]", COLORS["w"])
    ax.axhline(0, color="black", linewidth=1.0)
    lo, hi = ax.get_ylim()
    if lo < 0:
        ax.axhspan(lo, 0, color="#d1495b", alpha=0.08, label="below 0: critic scores fakes above reals")
    ax.set_ylim(lo, max(hi, 0))
    for i, e in enumerate(drops):
        ax.axvline(e, color="#c96f00", linestyle="--", linewidth=1.2, label="sudden drop" if i == 0 else None)
    _mark_nan(ax, epochs, [w])
    _style(ax, "Wasserstein estimate (should stay > 0; its trend is the signal)", "W estimate")
    return _save(fig, Path(path))


def plot_clip_ratio(series: Mapping[str, np.ndarray], path: str | Path, limit: float = 0.5) -> Path:
    epochs = np.asarray(series["epoch"])
    fig, ax = plt.subplots(figsize=FIGSIZE)
    c = series_column(series, "clip_ratio")
    _curve(ax, epochs, 100 * c, "critic weights at +-clip", COLORS["clip"])
    ax.axhline(100 * limit, color="#d1495b", linestyle="--", label=f"saturation limit {limit:.0%}")
    ax.set_ylim(0, 100)
    _style(ax, "Clip saturation (share of critic weights at the clip)", "% of weights")
    return _save(fig, Path(path))


def plot_weights(series: Mapping[str, np.ndarray], path: str | Path, clip: float | None = None) -> Path:
    epochs = np.asarray(series["epoch"])
    fig, (a, b) = plt.subplots(1, 2, figsize=FIGSIZE)
    for who in ("critic", "generator"):
        _curve(a, epochs, series_column(series, f"{who}_weight_mean"), f"{who} mean", COLORS[who])
        _curve(b, epochs, series_column(series, f"{who}_weight_std"), f"{who} std", COLORS[who])
    if clip:
        b.axhline(clip, color="#c96f00", linestyle="--", label=f"clip {clip:g} (std of a +-clip weight)")
    _style(a, "Weight mean", "mean")
    _style(b, "Weight standard deviation", "std")
    return _save(fig, Path(path))


def plot_epoch_time(series: Mapping[str, np.ndarray], path: str | Path) -> Path:
    epochs = np.asarray(series["epoch"])
    fig, (a, b) = plt.subplots(1, 2, figsize=FIGSIZE)
    _curve(a, epochs, 1000 * series_column(series, "epoch_time"), "epoch time", "#1f4e9c")
    _curve(b, epochs, series_column(series, "images_per_s"), "images/s", "#2a9d4b")
    a.set_ylim(bottom=0)
    b.set_ylim(bottom=0)
    _style(a, "Time per epoch", "ms")
    _style(b, "Throughput", "images / s")
    return _save(fig, Path(path))


def plot_diversity(
    points: Sequence[CheckpointDiversity], path: str | Path, *, min_ratio: float = 0.5, max_share: float = 0.25
) -> Path:
    """Diversity of the same fixed-seed samples across checkpoints; collapsed ones marked red."""
    pts = sorted(points, key=lambda p: p.epoch)
    ep = np.array([p.epoch for p in pts])
    ratio = np.array([p.measured.diversity_ratio for p in pts])
    dup = np.array([p.measured.duplicated_sample_fraction for p in pts])
    clusters = np.array([p.measured.n_clusters / p.measured.n_samples for p in pts])
    collapsed = np.array([p.measured.collapsed for p in pts])
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.plot(ep, ratio, "-o", color="#1f4e9c", linewidth=2, label="diversity ratio (fakes / reals)")
    ax.plot(ep, dup, "-s", color="#d1495b", linewidth=2, label="share of samples with a near-duplicate")
    ax.plot(ep, clusters, "-^", color="#2a9d4b", linewidth=1.5, label="distinct clusters / samples")
    if collapsed.any():
        ax.plot(ep[collapsed], ratio[collapsed], "X", color="red", markersize=13, label="flagged collapsed")
    ax.axhline(min_ratio, color="#1f4e9c", linestyle=":", label=f"min diversity ratio {min_ratio}")
    ax.axhline(max_share, color="#d1495b", linestyle=":", label=f"max near-duplicate share {max_share:.0%}")
    ax.set_ylim(0, max(1.2, float(np.nanmax(np.concatenate([ratio, dup, clusters]))) + 0.05))
    if len(ep) == 1:
        ax.set_xlim(ep[0] - 1, ep[0] + 1)
    _style(
        ax,
        "Sample diversity over training (same fixed-seed z at every checkpoint)",
        "ratio / share",
        "checkpoint epoch",
    )
    return _save(fig, Path(path))


def plot_quality(
    evaluations: Any,
    path: str | Path,
    floors: Mapping[str, float | None],
    best_epoch: int | None = None,
    generator: str = "generator",
) -> Path:
    """KID (with its spread) and FID of the trainer's evaluations, each beside its real-vs-real floor;
    ``generator`` names what was evaluated (the averaged one when the run kept an average)."""
    epochs = np.asarray(evaluations.epochs)
    panels = [key for key in ("kid", "fid") if key in evaluations.values and np.isfinite(evaluations.values[key]).any()]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6.5 * max(1, len(panels)), 4.5), squeeze=False)
    for ax, key in zip(axes[0], panels):
        values = evaluations.values[key]
        ax.plot(epochs, values, "-o", color="#1f4e9c", linewidth=2, markersize=4, label=key.upper())
        spread = evaluations.values.get("kid_std") if key == "kid" else None
        if spread is not None and np.isfinite(spread).any():
            ax.fill_between(epochs, values - spread, values + spread, color="#1f4e9c", alpha=0.2, label="± KID std")
        if floors.get(key) is not None:
            ax.axhline(floors[key], color="#2a9d4b", linestyle="--", label=f"real-vs-real floor {floors[key]:.4g}")
        if best_epoch is not None and best_epoch in epochs:
            at = int(np.flatnonzero(epochs == best_epoch)[0])
            ax.plot(
                [best_epoch], [values[at]], "*", color="#c96f00", markersize=15, label=f"best.pt (epoch {best_epoch})"
            )
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        _style(ax, f"{key.upper()} of the {generator} over training (lower is better)", key.upper())
    return _save(fig, Path(path))


def plot_sample_strip(
    grids: Sequence[tuple[int, Path]], path: str | Path, real: Path | None = None, max_panels: int = 6
) -> Path | None:
    """Fixed-z sample grids at evenly spaced epochs (first and last always), reals at the end."""
    if not grids:
        return None
    idx = sorted(set(np.linspace(0, len(grids) - 1, min(max_panels, len(grids))).round().astype(int).tolist()))
    panels: list[tuple[str, Path]] = [(f"epoch {grids[i][0]}", grids[i][1]) for i in idx]
    if real is not None and real.is_file():
        panels.append(("real images", real))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 3.5), squeeze=False)
    for ax, (title, p) in zip(axes[0], panels):
        with Image.open(p) as im:
            ax.imshow(np.asarray(im.convert("RGB")), interpolation="nearest")
        ax.set_title(title, fontsize=12, color="#2a9d4b" if title == "real images" else "black")
        ax.axis("off")
    fig.suptitle("Samples from the fixed z over training", fontsize=13, x=0.01, ha="left")
    return _save(fig, Path(path))
