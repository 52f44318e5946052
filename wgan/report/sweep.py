"""``python -m wgan.report SWEEP_DIR``: how often? The report of a sweep (or of any folder of runs).

One run cannot say whether a recipe collapses or was unlucky; a sweep can say how often. This
module writes every member's ordinary report (wgan.report.writer.write_report: the same verdicts,
collapse check and FID/KID as ``python -m wgan.report MEMBER``) and builds ``sweep_report.md`` and
its plots from those summaries: a table of the members; per setting, the collapse rate with a 95%
Wilson interval and FID/KID mean ± std; the spread of the W estimates; the best member; and, with
two folders given, Fisher's exact test of whether their collapse rates differ.

A folder is a sweep folder (sweep.json, written by ``wgan.train --seeds``) or any folder whose
subfolders are run folders, so runs made one by one can be compared too. The statistics come from
scipy (``binomtest(...).proportion_ci(method="wilson")``, ``fisher_exact``), imported when needed.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wgan.report.evidence import ReportError
from wgan.report.writer import write_report
from wgan.run.atomic import atomic_write_text
from wgan.run.folder import CONFIG_FILE, PLOTS_DIR, SWEEP_REPORT_FILE, RunFolder, RunFolderError, is_sweep_folder
from wgan.run.sweep import SweepFolder

PER_RUN_FIELDS = ("lr_critic", "lr_generator", "clip_threshold", "g_ema", "rmsprop_alpha", "rmsprop_eps")
CONFIDENCE = 0.95


@dataclass
class MemberResult:
    """One run of a sweep as its ordinary report judged it."""

    name: str
    path: Path
    settings: dict[str, Any]  # its per-run hyper-parameters (no seed)
    seed: int
    summary: dict[str, Any] | None  # write_report's summary (None: the report failed)
    error: str = ""

    @property
    def setting(self) -> str:
        """The member's setting as one label: what it shares with the other seeds of that setting."""
        return ", ".join(f"{k}={v:g}" for k, v in self.settings.items()) or "all"

    @property
    def collapsed(self) -> bool | None:
        """Mode collapse of the final generator; None when its samples were not checked."""
        if not self.summary or self.summary.get("mode_collapse") is None:
            return None
        return bool(self.summary["collapsed"])

    def quality(self, key: str) -> float | None:
        head = ((self.summary or {}).get("fid") or {}).get("headline") or {}
        value = head.get(key)
        return float(value) if value is not None else None

    @property
    def final_w(self) -> float | None:
        return (self.summary or {}).get("final_wasserstein_estimate")


@dataclass
class SettingStats:
    setting: str
    n: int  # members whose collapse was checked
    collapsed: int
    low: float
    high: float
    fid: list[float] = field(default_factory=list)
    kid: list[float] = field(default_factory=list)
    w: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.collapsed / self.n if self.n else float("nan")


def _scipy_stats() -> Any:
    try:
        from scipy import stats
    except ImportError:
        raise ReportError("the sweep report needs scipy for its statistics (pip install scipy)") from None
    return stats


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials (scipy's)."""
    if n == 0:
        return float("nan"), float("nan")
    ci = _scipy_stats().binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


# --- reading the members ---------------------------------------------------------------------


def _member_folders(folder: Path) -> list[tuple[Path, dict[str, Any] | None]]:
    """(member path, its settings from sweep.json or None) of a sweep folder or a folder of runs."""
    if is_sweep_folder(folder):
        info = SweepFolder(folder).read()
        return [(folder / m["name"], dict(m["settings"])) for m in info["members"]]
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such folder")
    runs = sorted(p for p in folder.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())
    if not runs:
        raise ReportError(f"{folder} holds neither sweep.json nor run folders (subfolders with {CONFIG_FILE})")
    return [(p, None) for p in runs]


def _settings_of(paths: list[tuple[Path, dict[str, Any] | None]]) -> list[dict[str, Any]]:
    """Each run's per-run hyper-parameters and seed: a sweep's from sweep.json (a member whose folder
    was never made is still listed), plain runs' from config.json (those of PER_RUN_FIELDS that differ)."""
    plain = {p: RunFolder(p).read_config().to_dict() for p, settings in paths if settings is None}
    varying = [k for k in PER_RUN_FIELDS if len({c[k] for c in plain.values()}) > 1]
    out = []
    for path, settings in paths:
        if settings is None:
            settings = {**{k: plain[path][k] for k in varying}, "seed": plain[path]["seed"]}
        out.append(dict(settings))
    return out


def read_members(folder: Path, **report_options: Any) -> list[MemberResult]:
    """Every member's ordinary report, written (analysis_report.md in its folder) and summarised."""
    paths = _member_folders(folder)
    results = []
    for (path, _), settings in zip(paths, _settings_of(paths)):
        seed = int(settings.pop("seed"))
        try:
            summary, error = write_report(path, **report_options), ""
        except (ReportError, RunFolderError) as exc:  # a member that never logged an epoch, say
            summary, error = None, str(exc)
        results.append(MemberResult(path.name, path, settings, seed, summary, error))
    return results


def setting_stats(members: Sequence[MemberResult]) -> list[SettingStats]:
    """Per setting: the collapse rate with its Wilson interval, FID/KID and W across seeds."""
    out = []
    for setting in dict.fromkeys(m.setting for m in members):
        group = [m for m in members if m.setting == setting]
        checked = [m for m in group if m.collapsed is not None]
        k = sum(1 for m in checked if m.collapsed)
        low, high = wilson_interval(k, len(checked))
        stats = SettingStats(setting, len(checked), k, low, high)
        stats.fid = [v for m in group if (v := m.quality("fid")) is not None]
        stats.kid = [v for m in group if (v := m.quality("kid")) is not None]
        stats.w = [float(m.final_w) for m in group if m.final_w is not None]
        out.append(stats)
    return out


def best_member(members: Sequence[MemberResult]) -> MemberResult | None:
    """The lowest FID among members not collapsed (or, with no FID, the highest indicator count)."""
    healthy = [m for m in members if m.summary and m.collapsed is False] or [m for m in members if m.summary]
    if not healthy:
        return None
    measured = [m for m in healthy if m.quality("fid") is not None]
    if measured:
        return min(measured, key=lambda m: m.quality("fid"))
    return max(healthy, key=lambda m: (m.summary["passed"], m.summary["evaluated"]))


def compare_collapse(a: Sequence[SettingStats], b: Sequence[SettingStats]) -> dict[str, Any]:
    """Fisher's exact test (two-sided) of two folders' collapse counts, all settings pooled."""
    ka, na = sum(s.collapsed for s in a), sum(s.n for s in a)
    kb, nb = sum(s.collapsed for s in b), sum(s.n for s in b)
    odds, p = _scipy_stats().fisher_exact([[ka, na - ka], [kb, nb - kb]])
    return {"a": (ka, na), "b": (kb, nb), "odds_ratio": float(odds), "p_value": float(p)}


# --- writing ---------------------------------------------------------------------------------


def _num(value: float | None, fmt: str = ".4g") -> str:
    return "–" if value is None or value != value else format(value, fmt)


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "–"
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4g} ± {std:.2g} (n={len(values)})"


def _member_table(members: Sequence[MemberResult]) -> list[str]:
    lines = [
        "| member | setting | seed | status | stability | quality | collapse | FID | KID | FID / floor | final W |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in members:
        s = m.summary or {}
        collapse = {True: "yes", False: "no", None: "not checked"}[m.collapsed]
        lines.append(
            f"| {m.name} | {m.setting} | {m.seed} | {s.get('status', 'no report: ' + m.error)} | "
            f"{s.get('stability', '–')} | {s.get('quality', '–')} | {collapse} | {_num(m.quality('fid'))} | "
            f"{_num(m.quality('kid'))} | {_num(m.quality('fid_ratio'), '.3g')} | {_num(m.final_w)} |"
        )
    return lines


def _setting_table(stats: Sequence[SettingStats]) -> list[str]:
    lines = [
        f"| setting | collapsed / checked | collapse rate | {CONFIDENCE:.0%} Wilson interval | FID | KID | final W |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in stats:
        lines.append(
            f"| {s.setting} | {s.collapsed} / {s.n} | {_num(s.rate, '.0%')} | "
            f"[{_num(s.low, '.0%')}, {_num(s.high, '.0%')}] | {_mean_std(s.fid)} | {_mean_std(s.kid)} | "
            f"{_mean_std(s.w)} |"
        )
    return lines


def render_sweep(
    folder: Path, members: Sequence[MemberResult], stats: Sequence[SettingStats], extra: dict[str, Any]
) -> str:
    best = extra.get("best")
    lines = [f"# Sweep report: {folder.name}", "", f"{len(members)} runs in `{folder}`.", "", "## Members", ""]
    lines += _member_table(members)
    lines += ["", "## Per setting (across seeds)", ""] + _setting_table(stats)
    lines += [
        "",
        "The collapse rate counts the members whose final generator the report found mode-collapsed, "
        "among those whose samples were checked; the interval is the Wilson score interval "
        "(scipy.stats.binomtest(k, n).proportion_ci(method='wilson')). A wide interval means: more seeds.",
        "",
        "## Best member",
        "",
        f"`{best.name}` ({best.setting}, seed {best.seed}): {best.summary['quality']}" if best else "none (no report)",
    ]
    comparison = extra.get("comparison")
    if comparison:
        (ka, na), (kb, nb) = comparison["a"], comparison["b"]
        lines += [
            "",
            "## Against the other folder",
            "",
            f"Collapsed here {ka} of {na}, in `{comparison['other']}` {kb} of {nb}: Fisher's exact test (two-sided) "
            f"p = {comparison['p_value']:.3g}, odds ratio {_num(comparison['odds_ratio'], '.3g')}. "
            + (
                "The rates differ at the 5% level." if comparison["p_value"] < 0.05 else "No evidence that they differ."
            ),
        ]
    if extra.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{k}]({Path(v).relative_to(folder)})" for k, v in extra["plots"].items()]
    return "\n".join(lines) + "\n"


def draw_sweep_plots(folder: Path, stats: Sequence[SettingStats]) -> dict[str, Path]:
    """The collapse rate per setting with its interval, and the final W estimates across seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = folder / PLOTS_DIR
    out_dir.mkdir(exist_ok=True)
    labels = [s.setting for s in stats]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.6 * len(stats) + 2.5))
    rates = [s.rate if s.n else 0.0 for s in stats]
    errors = [
        [max(r - s.low, 0) if s.n else 0 for r, s in zip(rates, stats)],
        [max(s.high - r, 0) if s.n else 0 for r, s in zip(rates, stats)],
    ]
    left.barh(labels, rates, xerr=errors, capsize=4, color="tab:red", alpha=0.7)
    left.set_xlim(0, 1)
    left.set_xlabel(f"collapse rate ({CONFIDENCE:.0%} Wilson interval)")
    for y, s in enumerate(stats):
        right.scatter(s.w, [y] * len(s.w), color="tab:blue")
    right.set_yticks(range(len(stats)), labels)
    right.set_xlabel("final W estimate, one dot per seed")
    fig.tight_layout()
    path = out_dir / "sweep.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"sweep": path}


def write_sweep_report(folders: Sequence[str | Path], **report_options: Any) -> dict[str, Any]:
    """Write FOLDER/sweep_report.md (+ plots/sweep.png) for each folder; with two, each names the
    exact test of their collapse rates. Returns the first folder's result."""
    if not 1 <= len(folders) <= 2:
        raise ReportError(f"give one sweep folder, or two to compare (got {len(folders)})")
    _scipy_stats()  # refused before any member's report is written
    paths = [Path(f) for f in folders]
    read = [(p, read_members(p, **report_options)) for p in paths]
    stats = [setting_stats(members) for _, members in read]
    results = []
    for i, (path, members) in enumerate(read):
        extra: dict[str, Any] = {"best": best_member(members), "plots": draw_sweep_plots(path, stats[i])}
        if len(read) == 2:
            extra["comparison"] = {**compare_collapse(stats[i], stats[1 - i]), "other": str(paths[1 - i])}
        report = path / SWEEP_REPORT_FILE
        atomic_write_text(report, render_sweep(path, members, stats[i], extra))
        results.append(
            {
                "report": str(report),
                "members": len(members),
                "settings": [
                    {"setting": s.setting, "collapsed": s.collapsed, "n": s.n, "low": s.low, "high": s.high}
                    for s in stats[i]
                ],
                "comparison": extra.get("comparison"),
            }
        )
    return results[0]


def is_sweep_like(path: str | Path) -> bool:
    """A folder the sweep report reads: a sweep folder, or a folder of run folders (not a run itself)."""
    path = Path(path)
    if is_sweep_folder(path):
        return True
    return (
        path.is_dir()
        and not (path / CONFIG_FILE).is_file()
        and any(p.is_dir() and (p / CONFIG_FILE).is_file() for p in path.iterdir())
    )
