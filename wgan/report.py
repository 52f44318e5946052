"""``python -m wgan.report RUN_DIR``: the Training Analysis Report of a run, from its folder alone.

Keeps the seed pipeline's ``analysis_report.md`` layout (verdict, configuration, phase table,
stability indicators, interpretation, notes, full details) and fixes what it said: the W
estimate is E[C(real)] - E[C(fake)] (the seed called |G loss| a Wasserstein distance, and read a
positive D loss, i.e. fakes scored above reals, as health), and sample quality is judged from
the generator's samples (mode collapse, nearest training images), which no loss can show.

Reads only the run folder (docs/design.md): config.json, metrics.jsonl, run.json,
reference.npz, samples/*.png, checkpoints/*.pt. Writes RUN_DIR/analysis_report.md and
RUN_DIR/plots/*.png. Nothing is downloaded.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from wgan import devices, metric_names, plots
from wgan import diagnostics as dg
from wgan.atomic import atomic_write_text
from wgan.config import ConfigError, WGANConfig
from wgan.images import save_grid
from wgan.models import Generator
from wgan.run_folder import RunFolder, RunFolderError, effective_status, parse_metrics, unclean_stop_message

SAMPLE_SEED = 20240  # fixed z for every checkpoint the report samples, so they are comparable
MAX_CHECKPOINTS = 24  # periodic checkpoints sampled for "diversity over training"
MIN_SAMPLES = 16
SEED_EPOCHS = 12000
SEED_PHASES = (("Warmup", 0, 100), ("Early", 100, 1000), ("Mid", 1000, 4000), ("Late", 4000, 8000),
               ("Final", 8000, 12000))
ICON = {dg.PASS: "✅", dg.WARN: "⚠️", dg.FAIL: "❌", dg.NOT_RUN: "➖"}
METRIC_KEYS = metric_names.DEVICE + metric_names.HOST


class ReportError(ValueError):
    """A run folder the report cannot read; the message is one line for the terminal."""


# ----------------------------------------------------------------------------------------------
# reading the run folder
# ----------------------------------------------------------------------------------------------
@dataclass
class Run:
    path: Path
    config: WGANConfig
    info: dict[str, Any]
    series: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)  # things the reader should know about the files

    @property
    def epochs(self) -> np.ndarray:
        return self.series["epoch"]

    @property
    def last_epoch(self) -> int:
        return int(self.epochs[-1])

    @property
    def planned(self) -> int:
        return int(self.config.epochs)

    @property
    def status(self) -> str:
        """run.json's status; a ``running`` run whose process is gone is ``stopped``."""
        return effective_status(self.info)

    @property
    def stop_message(self) -> str:
        """For a run whose process died: its last recorded epoch and the checkpoint on disk."""
        return unclean_stop_message(self.last_epoch, RunFolder(self.path).last_checkpoint_epoch())

    @property
    def interrupted(self) -> bool:
        return self.status in ("interrupted", "nan", "failed", "running", "stopped") or self.last_epoch < self.planned


def critic_path_label(info: dict[str, Any], cfg: WGANConfig) -> str:
    """What ran, read from run.json's ``impl`` (written from what the engine resolved)."""
    if not info.get("fused", cfg.fused):
        return "eager (PyTorch)"
    kernels = (info.get("impl") or {}).get("kernels")
    return {"triton": "fused (Triton kernels)", "ref": "fused (the kernels' plain-PyTorch reference)",
            None: "fused (kernels not recorded)"}.get(kernels, f"fused ({kernels})")


def load_run(run_dir: str | Path) -> Run:
    path = Path(run_dir)
    if not path.exists():
        raise ReportError(f"{path}: no such run folder")
    if not path.is_dir():
        raise ReportError(f"{path} is not a folder")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ReportError(f"{path} has no config.json (not a run folder?)")
    try:
        config = WGANConfig.from_file(cfg_path)
    except ConfigError as exc:
        raise ReportError(str(exc)) from None
    notes: list[str] = []
    info: dict[str, Any] = {}
    run_json = path / "run.json"
    if run_json.is_file():
        try:
            info = json.loads(run_json.read_text())
        except ValueError as exc:
            raise ReportError(f"{run_json} is not valid JSON: {exc}") from None
        if not isinstance(info, dict):
            raise ReportError(f"{run_json} must hold a JSON object")
    else:
        notes.append("run.json is missing: the run's status, device and W&B link are unknown")
    series, torn = read_metrics(path / "metrics.jsonl")
    if torn:
        notes.append("the last line of metrics.jsonl was cut off mid-write (a crash) and was ignored")
    return Run(path=path, config=config, info=info, series=series, notes=notes)


def read_metrics(path: Path) -> tuple[dict[str, np.ndarray], bool]:
    """metrics.jsonl -> {key: float array} sorted by epoch (last row wins on a repeated epoch).

    A last line without its newline that does not parse is a torn write and is dropped; any other
    unreadable line is an error, because silently skipping rows would misstate the run.
    """
    if not path.is_file():
        raise ReportError(f"{path.parent} has no metrics.jsonl (the run logged no epoch)")
    try:
        parsed, torn = parse_metrics(path.read_text(), path)
    except RunFolderError as exc:
        raise ReportError(str(exc)) from None
    rows = {row["epoch"]: row for row in parsed}
    if not rows:
        raise ReportError(f"{path} holds no metrics rows")
    epochs = sorted(rows)
    series: dict[str, np.ndarray] = {"epoch": np.array(epochs, dtype=np.int64)}
    keys = list(METRIC_KEYS) + sorted({k for r in rows.values() for k in r} - set(METRIC_KEYS) - {"epoch"})
    for key in keys:
        col = []
        for e in epochs:
            v = rows[e].get(key)
            col.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan)
        series[key] = np.array(col, dtype=np.float64)
    return series, torn


def load_reference(path: Path) -> torch.Tensor:
    """reference.npz ``images`` uint8 [M, H, W, C] -> float [M, C, H, W] in [-1, 1]."""
    with np.load(path) as data:
        if "images" not in data:
            raise ValueError("reference.npz has no 'images' array")
        images = data["images"]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"reference.npz images must be uint8 [M, H, W, C], got {images.dtype} {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------
# phase table
# ----------------------------------------------------------------------------------------------
def phase_table(epochs: np.ndarray, d_loss: np.ndarray, g_loss: np.ndarray, planned: int) -> list[dict[str, Any]]:
    """The seed's phases scaled by planned/12000; a phase holds epochs in (start, end].

    Start/End are the logged values at the phase's first and last logged epoch; Δ/epoch is
    (End - Start) / (epochs between them). Phases without a logged epoch are dropped; the last
    phase also takes any epoch beyond the plan.
    """
    scale = planned / SEED_EPOCHS
    out = []
    for i, (name, lo, hi) in enumerate(SEED_PHASES):
        a, b = math.floor(lo * scale + 0.5), math.floor(hi * scale + 0.5)
        last = i == len(SEED_PHASES) - 1
        mask = (epochs > a) & ((epochs <= b) | last)
        if b <= a and not last or not mask.any():
            continue
        idx = np.flatnonzero(mask)
        first_e, last_e = int(epochs[idx[0]]), int(epochs[idx[-1]])
        span = last_e - first_e
        row = {"phase": name, "start": a, "end": b, "first_epoch": first_e, "last_epoch": last_e}
        for key, y in (("d", d_loss), ("g", g_loss)):
            s, e = float(y[idx[0]]), float(y[idx[-1]])
            row[f"{key}_start"], row[f"{key}_end"] = s, e
            row[f"{key}_per_epoch"] = (e - s) / span if span > 0 else float("nan")
        out.append(row)
    return out


# ----------------------------------------------------------------------------------------------
# sampling checkpoints
# ----------------------------------------------------------------------------------------------
_CKPT = re.compile(r"epoch_(\d+)\.pt$")


def periodic_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for p in (run_dir / "checkpoints").glob("epoch_*.pt"):
        m = _CKPT.search(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def sample_checkpoint(path: Path, config: WGANConfig, n: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Rebuild the generator from a checkpoint and draw ``n`` images from the report's fixed z."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "generator" not in ckpt:
        raise ValueError("no 'generator' state_dict in it")
    gen = Generator(config)
    gen.load_state_dict(ckpt["generator"])
    gen.to(device).eval()  # batch norm from running statistics, as when the samples are used
    z = torch.randn(n, config.z_dim, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    with torch.no_grad():
        images = torch.cat([gen(chunk.to(device)).float().cpu() for chunk in z.split(512)])
    return images, int(ckpt.get("epoch", -1))


def resolve_device(device: str) -> torch.device:
    try:
        return devices.resolve_device(device)
    except ValueError as exc:
        raise ReportError(f"--device: {exc}") from None


# ----------------------------------------------------------------------------------------------
# verdict
# ----------------------------------------------------------------------------------------------
CRITICAL = ("numerics", "w_sign", "mode_collapse")
QUALITY_ONLY = ("memorisation", "fidelity")  # about the samples, not the training dynamics
QUALITY_REASON = {"memorisation": "samples copy training images or sit far from all of them",
                  "fidelity": "samples are easy to tell from real images"}


def verdict(indicators: dict[str, dict[str, Any]], *, interrupted_note: str = "") -> dict[str, Any]:
    """Stability / Quality / Score from indicator statuses.

    A collapsed generator (mode_collapse FAIL) is never STABLE nor Excellent, whatever the losses
    say; that is the mistake the seed report made.
    """
    status = {k: v["status"] for k, v in indicators.items()}
    evaluated = [k for k, s in status.items() if s != dg.NOT_RUN]
    passed = [k for k in evaluated if status[k] == dg.PASS]
    failed_critical = [k for k in CRITICAL if status.get(k) == dg.FAIL]
    others_bad = [k for k in evaluated if k not in CRITICAL + QUALITY_ONLY and status[k] != dg.PASS]
    if failed_critical:
        reasons = {"numerics": "NaN/Inf losses", "w_sign": "critic scores fakes above reals",
                   "mode_collapse": "mode collapse"}
        stability = "❌ UNSTABLE (" + ", ".join(reasons[k] for k in failed_critical) + ")"
    elif others_bad:
        stability = "⚠️ MARGINAL (" + ", ".join(indicators[k]["name"].lower() for k in others_bad) + ")"
    else:
        stability = "✅ STABLE"
    if interrupted_note:
        stability += f"; {interrupted_note}"

    mc = status.get("mode_collapse", dg.NOT_RUN)
    sample_keys = [k for k in ("mode_collapse",) + QUALITY_ONLY if k in status]
    fails = [k for k in sample_keys if status[k] == dg.FAIL]
    warns = [k for k in sample_keys if status[k] in (dg.WARN, dg.NOT_RUN)]
    if mc == dg.FAIL:
        quality = "❌ Poor (mode collapse: the samples repeat a few images)"
    elif mc == dg.NOT_RUN:
        quality = "❔ Not assessed (no samples were checked; losses alone cannot rate quality)"
    elif fails:
        quality = "❌ Poor (" + ", ".join(QUALITY_REASON.get(k, k) for k in fails) + ")"
    elif warns:
        quality = "⚠️ Fair (" + ", ".join(indicators[k]["name"].lower() + " not checked" if status[k] == dg.NOT_RUN
                                          else QUALITY_REASON.get(k, k) for k in warns) + ")"
    else:
        # "Excellent" needs a measure of fine detail (FID), which these checks are not.
        quality = ("✅ Good (diverse, not memorised, coarse layout and colour match reals; without FID no finer "
                   "rating is given)")
    not_run = [indicators[k]["name"] for k in status if status[k] == dg.NOT_RUN]
    score = f"{len(passed)}/{len(evaluated)} indicators passed"
    if not_run:
        score += f" ({len(not_run)} not evaluated: {', '.join(not_run)})"
    return {"stability": stability, "quality": quality, "score": score, "passed": len(passed),
            "evaluated": len(evaluated), "collapsed": mc == dg.FAIL}


def recommendation(run: Run, ind: dict[str, dict[str, Any]], best_ckpt: str | None) -> str:
    cfg = run.config
    s = {k: v["status"] for k, v in ind.items()}
    recs: list[str] = []
    if s.get("mode_collapse") == dg.FAIL:
        r = "Do not use the final generator: it is mode-collapsed."
        if best_ckpt:
            r += f" Use `{best_ckpt}` instead (the latest checkpoint not flagged as collapsed), and stop earlier"
        else:
            r += " Train fewer epochs (and keep periodic checkpoints with --checkpoint-every to pick an earlier one)"
        r += (f"; to keep the critic ahead of the generator raise n_critic ({cfg.n_critic} -> {2 * cfg.n_critic}) "
              f"and lower lr_generator ({cfg.lr_generator:g} -> {cfg.lr_generator / 2:g}).")
        recs.append(r)
    if s.get("numerics") == dg.FAIL:
        recs.append(f"Losses became NaN/Inf at epoch {ind['numerics']['first_nan_epoch']}: resume from the last good "
                    f"checkpoint with lower learning rates (lr_critic {cfg.lr_critic:g} -> {cfg.lr_critic / 2:g}, "
                    f"lr_generator {cfg.lr_generator:g} -> {cfg.lr_generator / 2:g}).")
    if s.get("w_sign") == dg.FAIL:
        recs.append(f"The critic scores fakes above reals, so it is far from optimal and its loss no longer "
                    f"estimates a distance: raise n_critic ({cfg.n_critic} -> {2 * cfg.n_critic}), lower lr_generator "
                    f"({cfg.lr_generator:g} -> {cfg.lr_generator / 2:g}), and if clip saturation is high raise "
                    f"clip_threshold ({cfg.clip_threshold:g} -> {2 * cfg.clip_threshold:g}).")
    if s.get("w_trend") == dg.WARN:
        recs.append(f"Sudden drops of the W estimate (the critic losing its grip): raise n_critic "
                    f"({cfg.n_critic} -> {2 * cfg.n_critic}) or lower lr_critic ({cfg.lr_critic:g} -> "
                    f"{cfg.lr_critic / 2:g}).")
    if s.get("clip") == dg.WARN:
        recs.append(f"Most critic weights sit at the clip: raise clip_threshold ({cfg.clip_threshold:g} -> "
                    f"{2 * cfg.clip_threshold:g}) or lower lr_critic ({cfg.lr_critic:g} -> {cfg.lr_critic / 2:g}).")
    if s.get("oscillation") == dg.WARN:
        recs.append(f"The D loss swings more than its mean: lower both learning rates "
                    f"({cfg.lr_critic:g} -> {cfg.lr_critic / 2:g}).")
    if s.get("memorisation") == dg.WARN:
        verdict_ = ind["memorisation"].get("verdict")
        if verdict_ == "memorising":
            recs.append("Samples are copies of training images: use an earlier checkpoint or fewer epochs.")
        else:
            recs.append("Samples are farther from every training image than held-out reals are: the generator "
                        "has not learnt the data yet; train longer (or check the learning rates).")
    if s.get("fidelity") in (dg.FAIL, dg.WARN):
        acc = ind["fidelity"]["accuracy"]
        recs.append(f"A linear classifier tells the samples from real images by coarse layout and colour alone "
                    f"({acc:.0%} accuracy): the generator has not learnt the data"
                    + (" yet; train longer" if run.last_epoch < 2000 else "; train longer or lower the learning "
                       "rates") + f" (this run: {run.last_epoch} epochs).")
    if s.get("mode_collapse") == dg.NOT_RUN:
        recs.append("Sample quality was not checked (" + ind["mode_collapse"]["observation"] + "); keep "
                    "checkpoints/last.pt and reference.npz in the run folder so the report can sample the generator.")
    if run.interrupted:
        recs.append(f"The run stopped at epoch {run.last_epoch} of {run.planned} (status: {run.status}); "
                    f"resume it with `python -m wgan.train --resume {run.path}`.")
    if not recs:
        recs.append("Keep this run: every indicator passed.")
    return " ".join(recs)


# ----------------------------------------------------------------------------------------------
# formatting helpers
# ----------------------------------------------------------------------------------------------
def _f(x: Any, digits: int = 4) -> str:
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


def _last_finite(y: np.ndarray) -> float:
    ok = np.flatnonzero(np.isfinite(y))
    return float(y[ok[-1]]) if len(ok) else float("nan")


def _rel(run_dir: Path, p: Path) -> str:
    return Path(os.path.relpath(p, run_dir)).as_posix()


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, Path):
        return str(x)
    return x


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------
def write_report(run_dir: str | Path, *, fid_weights: str | Path | None = None, n_samples: int = 256,
                 device: str = "cpu") -> dict[str, Any]:
    """Write RUN_DIR/analysis_report.md and RUN_DIR/plots/*.png; return the summary.

    The summary (verdict, indicator statuses, key numbers, paths) is JSON-able; its ``wandb`` entry
    is a flat dict of scalars meant for ``wandb.run.summary.update``. Raises ReportError for a run
    folder that cannot be read.
    """
    if not isinstance(n_samples, int) or n_samples < MIN_SAMPLES:
        raise ReportError(f"--samples must be an integer >= {MIN_SAMPLES}, got {n_samples!r}")
    if fid_weights is not None and not Path(fid_weights).is_file():
        raise ReportError(f"--fid-weights {fid_weights}: no such file")
    dev = resolve_device(device)
    run = load_run(run_dir)
    rd = run.path
    plot_dir = rd / "plots"
    plot_dir.mkdir(exist_ok=True)
    cfg = run.config
    s = run.series
    epochs = run.epochs

    health = dg.critic_health(s, cfg.clip_threshold)
    indicators: dict[str, dict[str, Any]] = dict(health)

    # --- samples from the final and periodic checkpoints -----------------------------------
    reference = None
    ref_path = rd / "reference.npz"
    ref_problem = ""
    if ref_path.is_file():
        try:
            reference = load_reference(ref_path)
            if reference.shape[1:] != (cfg.image_channels, cfg.image_size, cfg.image_size):
                ref_problem = f"reference.npz images are {tuple(reference.shape[1:])}, the generator makes " \
                              f"{(cfg.image_channels, cfg.image_size, cfg.image_size)}"
                reference = None
            elif reference.shape[0] < 8:
                ref_problem, reference = f"reference.npz holds only {reference.shape[0]} images", None
        except (OSError, ValueError) as exc:
            ref_problem = f"reference.npz unreadable: {exc}"
    else:
        ref_problem = "no reference.npz in the run folder"
    ckpts = periodic_checkpoints(rd)
    last = rd / "checkpoints" / "last.pt"
    final_ckpt = last if last.is_file() else (ckpts[-1][1] if ckpts else None)
    fake = None
    final_epoch = None
    ckpt_problem = ""
    if final_ckpt is None:
        ckpt_problem = "no checkpoint in checkpoints/"
    else:
        try:
            fake, final_epoch = sample_checkpoint(final_ckpt, cfg, n_samples, dev)
        except Exception as exc:  # a damaged checkpoint must not stop the rest of the report
            ckpt_problem = f"{_rel(rd, final_ckpt)} could not be sampled: {str(exc).splitlines()[0]}"
    if final_epoch is None or final_epoch < 0:
        final_epoch = run.last_epoch

    mc = None
    nn = None
    fid_c2st = None
    diversity_points: list[dict[str, Any]] = []
    best_ckpt = None
    if fake is not None and reference is not None:
        mc = dg.mode_collapse(fake, reference)
        nn = dg.nearest_neighbours(fake, reference)
        if min(fake.shape[0], reference.shape[0]) >= dg.FIDELITY_MIN_SAMPLES:
            fid_c2st = dg.fidelity(fake, reference)
        step = max(1, math.ceil(len(ckpts) / MAX_CHECKPOINTS))
        chosen = ckpts[::step]
        if ckpts and chosen[-1] != ckpts[-1]:
            chosen.append(ckpts[-1])
        for ep, p in chosen:
            if p == final_ckpt:
                continue
            try:
                imgs, _ = sample_checkpoint(p, cfg, n_samples, dev)
            except Exception as exc:
                run.notes.append(f"{_rel(rd, p)} could not be sampled: {str(exc).splitlines()[0]}")
                continue
            diversity_points.append({"epoch": ep, "checkpoint": _rel(rd, p), **dg.mode_collapse(imgs, reference)})
        diversity_points = [p for p in diversity_points if p["epoch"] != final_epoch]
        diversity_points.append({"epoch": final_epoch, "checkpoint": _rel(rd, final_ckpt), **mc})
        diversity_points.sort(key=lambda p: p["epoch"])
        healthy = [p for p in diversity_points if not p["collapsed"]]
        if mc["collapsed"] and healthy:
            best_ckpt = healthy[-1]["checkpoint"]

    problem = ckpt_problem or ref_problem
    if mc is not None:
        obs = (f"{mc['duplicated_sample_fraction']:.0%} of {mc['n_samples']} samples have a near-duplicate "
               f"(reals: {mc['real_duplicated_sample_fraction']:.0%}); {mc['n_clusters']} distinct cluster(s); "
               f"diversity ratio {mc['diversity_ratio']:.2f}")
        if mc["collapsed"]:
            obs = "COLLAPSED: " + obs
        indicators["mode_collapse"] = {
            "name": "Mode collapse (samples)", "status": dg.FAIL if mc["collapsed"] else dg.PASS,
            "observation": obs,
            "rule": f"share of samples with a near-duplicate (distance < {mc['threshold']:.3f}, the "
                    f"{mc['threshold_percentile']:g}th percentile of real-real nearest-neighbour distances of "
                    f"{mc['n_real']} reals) <= {mc['max_duplicated_share']:.0%}, and diversity ratio (mean pairwise "
                    f"distance fakes / reals) >= {mc['min_diversity_ratio']}",
            "threshold": f"<= {mc['max_duplicated_share']:.0%} and >= {mc['min_diversity_ratio']}",
        }
        mem_status = dg.PASS if nn["verdict"] == "ok" else dg.WARN
        indicators["memorisation"] = {
            "name": "Memorisation / fidelity", "status": mem_status,
            "observation": f"median nearest-training-image distance of samples {nn['fake_nn_median']:.3f} vs "
                           f"{nn['held_out_nn_median']:.3f} for held-out reals (ratio {nn['ratio']:.2f}); "
                           f"{nn['copy_share']:.0%} of samples closer than 95% of held-out reals"
                           + {"ok": "", "memorising": ": samples copy training images",
                              "far from data": ": samples are unlike any training image"}[nn["verdict"]],
            "rule": f"ratio of median nearest-neighbour distances (samples / {nn['n_held_out']} held-out reals, "
                    f"against {nn['n_pool']} reference images) in [{nn['memorisation_ratio']}, {nn['far_ratio']}] "
                    f"and near-copy share <= {nn['max_copy_share']:.0%}",
            "threshold": f"[{nn['memorisation_ratio']}, {nn['far_ratio']}], <= {nn['max_copy_share']:.0%}",
        }
    else:
        for key, name in (("mode_collapse", "Mode collapse (samples)"), ("memorisation", "Memorisation / fidelity")):
            indicators[key] = {"name": name, "status": dg.NOT_RUN, "observation": f"not checked: {problem}",
                               "rule": "needs checkpoints/last.pt and reference.npz", "threshold": "–"}
    if fid_c2st is not None:
        acc = fid_c2st["accuracy"]
        indicators["fidelity"] = {
            "name": "Fidelity (classifier test)",
            "status": dg.PASS if fid_c2st["verdict"] == "match" else dg.WARN if fid_c2st["verdict"] ==
            "distinguishable" else dg.FAIL,
            "observation": f"a linear classifier on coarse statistics tells {fid_c2st['n_fake']} samples from "
                           f"{fid_c2st['n_real']} reals with {acc:.1%} cross-validated accuracy (50% = "
                           f"indistinguishable)",
            "rule": f"{fid_c2st['folds']}-fold accuracy of logistic regression on 8x8 pooled pixels + channel "
                    f"mean/std (texture left out, so blur alone does not fail)",
            "threshold": f"<= {dg.FIDELITY_PASS:.0%} pass, > {dg.FIDELITY_FAIL:.0%} fail",
            "accuracy": acc,
        }
    else:
        why = problem or (f"fewer than {dg.FIDELITY_MIN_SAMPLES} samples or reference images "
                          f"(--samples {n_samples})")
        indicators["fidelity"] = {"name": "Fidelity (classifier test)", "status": dg.NOT_RUN,
                                  "observation": f"not checked: {why}",
                                  "rule": f"needs >= {dg.FIDELITY_MIN_SAMPLES} samples and reference images",
                                  "threshold": "–"}

    # --- FID -------------------------------------------------------------------------------
    if fid_weights is None:
        fid_status = ("not computed: FID/KID need a local Inception-v3 weights file (--fid-weights PATH); "
                      "nothing is downloaded")
    else:
        fid_status = (f"not computed: {fid_weights} was given, but this build has no Inception-v3 network to load "
                      f"it into (torchvision is not installed), so FID/KID cannot be computed honestly")

    # --- grids and plots -------------------------------------------------------------------
    plot_paths: dict[str, Path] = {}
    plot_paths["losses"] = plots.plot_losses(s, plot_dir / "losses.png")
    plot_paths["wasserstein"] = plots.plot_wasserstein(s, plot_dir / "wasserstein.png", health["w_trend"]["drops"])
    plot_paths["clip_ratio"] = plots.plot_clip_ratio(s, plot_dir / "clip_ratio.png", dg.CLIP_SATURATION_LIMIT)
    plot_paths["weights"] = plots.plot_weights(s, plot_dir / "weights.png", cfg.clip_threshold)
    plot_paths["epoch_time"] = plots.plot_epoch_time(s, plot_dir / "epoch_time.png")
    if diversity_points:
        plot_paths["diversity"] = plots.plot_diversity(diversity_points, plot_dir / "diversity.png",
                                                       min_ratio=dg.MIN_DIVERSITY_RATIO,
                                                       max_share=dg.MAX_DUPLICATED_SHARE)
    grids = plots.sample_epochs(rd / "samples")
    strip = plots.plot_sample_strip(grids, plot_dir / "samples_over_training.png", rd / "samples" / "real.png")
    if strip is not None:
        plot_paths["samples_over_training"] = strip
    if fake is not None:
        plot_paths["generated"] = save_grid(fake[:64], plot_dir / "generated.png", nrow=8)
    if fake is not None and nn is not None and reference is not None:
        k = min(32, fake.shape[0])
        near = reference[torch.tensor(nn["nearest_index"][:k])]
        rows = []
        for i in range(0, k, 8):
            rows += [fake[i:i + 8], near[i:i + 8]]
        plot_paths["nearest"] = save_grid(torch.cat(rows), plot_dir / "nearest_training_images.png", nrow=8)

    # --- verdict ---------------------------------------------------------------------------
    interrupted_note = ""
    if run.interrupted:
        how = {"interrupted": "interrupted", "nan": "stopped on NaN", "failed": "failed",
               "running": "still running", "stopped": "stopped without a clean exit",
               "completed": "stopped early"}.get(run.status, "incomplete")
        interrupted_note = f"{how} at epoch {run.last_epoch} of {run.planned}"
    v = verdict(indicators, interrupted_note=interrupted_note)
    rec = recommendation(run, indicators, best_ckpt)

    d_loss, g_loss = s["d_loss"], s["g_loss"]
    w = s["wasserstein_estimate"] if np.isfinite(s["wasserstein_estimate"]).any() else -d_loss
    final = {"d_loss": _last_finite(d_loss), "g_loss": _last_finite(g_loss), "wasserstein_estimate": _last_finite(w),
             "d_loss_real": _last_finite(s["d_loss_real"]), "d_loss_fake": _last_finite(s["d_loss_fake"])}
    phases = phase_table(epochs, d_loss, g_loss, run.planned)
    report_path = rd / "analysis_report.md"
    text = _render(run, v, rec, indicators, phases, final, mc, nn, fid_c2st, diversity_points, plot_paths,
                   fid_status, final_ckpt, problem)
    atomic_write_text(report_path, text)

    summary = {
        "run_dir": str(rd), "report": str(report_path), "plots": {k: str(p) for k, p in plot_paths.items()},
        "status": run.status, "interrupted": run.interrupted, "epochs_completed": run.last_epoch,
        "epochs_planned": run.planned, **v, "recommendation": rec,
        "indicators": {k: i["status"] for k, i in indicators.items()},
        "final_d_loss": final["d_loss"], "final_g_loss": final["g_loss"],
        "final_wasserstein_estimate": final["wasserstein_estimate"],
        "mode_collapse": None if mc is None else {k: mc[k] for k in (
            "collapsed", "duplicate_fraction", "duplicated_sample_fraction", "diversity_ratio", "n_clusters",
            "threshold", "n_samples")},
        "memorisation": None if nn is None else {k: nn[k] for k in ("verdict", "ratio", "copy_share")},
        "fidelity": fid_c2st,
        "best_checkpoint": best_ckpt, "fid": None, "fid_status": fid_status,
    }
    flat: dict[str, Any] = {
        "report/stability": v["stability"], "report/quality": v["quality"], "report/score": v["score"],
        "report/passed": v["passed"], "report/evaluated": v["evaluated"], "report/collapsed": v["collapsed"],
        "report/final_w_estimate": final["wasserstein_estimate"]}
    for k, st in summary["indicators"].items():
        flat[f"report/indicator/{k}"] = st
    if mc is not None:
        flat.update({"report/diversity_ratio": mc["diversity_ratio"],
                     "report/duplicate_fraction": mc["duplicate_fraction"],
                     "report/duplicated_sample_fraction": mc["duplicated_sample_fraction"],
                     "report/n_clusters": mc["n_clusters"]})
    if fid_c2st is not None:
        flat["report/fidelity_accuracy"] = fid_c2st["accuracy"]
    summary["wandb"] = flat
    return _jsonable(summary)


# ----------------------------------------------------------------------------------------------
def _render(run: Run, v: dict[str, Any], rec: str, ind: dict[str, dict[str, Any]], phases: list[dict[str, Any]],
            final: dict[str, float], mc: dict[str, Any] | None, nn: dict[str, Any] | None,
            fid_c2st: dict[str, Any] | None, diversity: list[dict[str, Any]], plot_paths: dict[str, Path],
            fid_status: str, final_ckpt: Path | None, problem: str) -> str:
    rd, cfg, s, info = run.path, run.config, run.series, run.info
    name = info.get("name") or rd.resolve().name
    L: list[str] = []
    add = L.append
    add(f"# Training Analysis Report: {name}")
    add("")
    add(f"**Generated:** {_dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M:%S %Z')}  ")
    total = f"{run.last_epoch}" + (f" of {run.planned} planned" if run.last_epoch != run.planned else "")
    add(f"**Total Epochs:** {total}  ")
    add(f"**Run Status:** {run.status}" + (f" ({run.stop_message})" if run.status == "stopped" else "")
        + "  ")
    add(f"**Final D Loss:** {_f(final['d_loss'])} (W estimate {_f(final['wasserstein_estimate'])})  ")
    add(f"**Final G Loss:** {_f(final['g_loss'])}  ")
    if info.get("wandb_url"):
        add(f"**W&B Run:** [{info['wandb_url']}]({info['wandb_url']})  ")
    add("")
    if run.interrupted:
        add(f"> ⚠️ **This run did not finish**: it stopped at epoch {run.last_epoch} of {run.planned} "
            f"(status `{run.status}`). Everything below describes the epochs it completed.")
        add("")
    for note in run.notes:
        add(f"> Note: {note}.")
        add("")

    add("## Training Verdict")
    add("")
    add(f"- **Stability:** {v['stability']}")
    add(f"- **Quality:** {v['quality']}")
    add(f"- **Score:** {v['score']}")
    add(f"- **Recommendation:** {rec}")
    add("")

    add("## Configuration")
    add("")
    add("| Parameter | Value |")
    add("|---|---|")
    for key in ("data", "data_class", "image_size", "z_dim", "critic_filters", "generator_filters", "optimizer",
                "lr_critic", "lr_generator", "rmsprop_alpha", "n_critic", "clip_threshold", "batch_size", "epochs",
                "seed", "fused", "device", "sample_every", "checkpoint_every"):
        val = getattr(cfg, key)
        add(f"| {key} | `{', '.join(map(str, val)) if isinstance(val, tuple) else val}` |")
    add("")

    add("## Training Progression (Phase-wise Metrics)")
    add("")
    add(f"Phases are the seed's (12000 epochs) scaled by {run.planned}/{SEED_EPOCHS}; Start/End are the logged "
        f"values at each phase's first and last logged epoch, Δ/epoch = (End − Start) / epochs between them. "
        f"D loss = E[C(fake)] − E[C(real)] (negative is healthy); G loss = −E[C(G(z))].")
    add("")
    add("| Phase | Epoch Range | D Loss (Start → End) | G Loss (Start → End) | Δ D/epoch | Δ G/epoch |")
    add("|---|---|---|---|---|---|")
    for p in phases:
        add(f"| {p['phase']} | {p['start']}-{p['end']} | {_f(p['d_start'])} → {_f(p['d_end'])} | "
            f"{_f(p['g_start'])} → {_f(p['g_end'])} | {_f(p['d_per_epoch'], 6)} | {_f(p['g_per_epoch'], 6)} |")
    add("")

    add("## Stability Indicators")
    add("")
    add("| Indicator | Status | Observation | Rule | Threshold |")
    add("|---|---|---|---|---|")
    for i in ind.values():
        add(f"| {i['name']} | {ICON[i['status']]} {i['status']} | {i['observation']} | {i['rule']} | "
            f"{i['threshold']} |")
    add("")

    add("### Interpretation")
    add("")
    for para in _interpretation(run, final, ind, mc, nn, fid_c2st, diversity, problem):
        add(para)
        add("")

    add("## Samples")
    add("")
    grids = plots.sample_epochs(rd / "samples")
    if grids:
        ep, p = grids[-1]
        add(f"- Final fixed-z grid (epoch {ep}, written by the trainer): [{_rel(rd, p)}]({_rel(rd, p)})")
        add("")
        add(f"  ![final samples]({_rel(rd, p)})")
    else:
        add("- No sample grids in samples/.")
    real = rd / "samples" / "real.png"
    if real.is_file():
        add("- Real training images: [samples/real.png](samples/real.png)")
        add("")
        add("  ![real images](samples/real.png)")
    if "generated" in plot_paths:
        rel = _rel(rd, plot_paths["generated"])
        add(f"- 64 of the {mc['n_samples'] if mc else ''} report samples from `{_rel(rd, final_ckpt)}` (fixed seed "
            f"{SAMPLE_SEED}, batch norm in eval mode): [{rel}]({rel})")
        add("")
        add(f"  ![generated]({rel})")
    if "nearest" in plot_paths:
        rel = _rel(rd, plot_paths["nearest"])
        add(f"- Nearest training images: [{rel}]({rel}). Rows come in pairs: a row of samples, then below it "
            f"each sample's nearest image in reference.npz.")
        add("")
        add(f"  ![nearest training images]({rel})")
    add(f"- FID/KID: {fid_status}.")
    add("")

    add("## Diagnostics")
    add("")
    titles = {"losses": "Losses (D total, real, fake; G)", "wasserstein": "Wasserstein estimate",
              "clip_ratio": "Clip saturation", "weights": "Weight statistics", "epoch_time": "Epoch time",
              "diversity": "Diversity over training", "samples_over_training": "Samples over training"}
    for key, title in titles.items():
        if key in plot_paths:
            rel = _rel(rd, plot_paths[key])
            add(f"### {title}")
            add("")
            add(f"![{title}]({rel})")
            add("")
    if "diversity" not in plot_paths:
        add(f"_Diversity over training not plotted: {problem or 'no samples'}._")
        add("")

    add("## Performance")
    add("")
    et, ips = s["epoch_time"], s["images_per_s"]
    et_steady = et[1:] if len(et) > 1 else et  # the first epoch carries compilation and warm-up
    finite = et_steady[np.isfinite(et_steady)]
    add("| Quantity | Value |")
    add("|---|---|")
    add(f"| Median epoch time (after epoch 1) | {_duration(np.median(finite)) if len(finite) else '–'} |")
    add(f"| First epoch time | {_duration(et[0]) if np.isfinite(et[0]) else '–'} |")
    add(f"| Total logged epoch time | {_f(np.nansum(et) / 60, 2) + ' min' if np.isfinite(et).any() else '–'} |")
    ips_f = ips[np.isfinite(ips)]
    add(f"| Median images/s | {_f(np.median(ips_f), 1) if len(ips_f) else '–'} |")
    add(f"| Critic path | {critic_path_label(info, cfg)} |")
    add(f"| Device | {info.get('device', cfg.device)} |")
    if info.get("impl"):
        add(f"| Kernel implementations | `{json.dumps(info['impl'])}` |")
    add(f"| torch / triton | {info.get('torch', '–')} / {info.get('triton') or '–'} |")
    add("")

    add("## Notes")
    add("")
    add(cfg.notes.strip() if cfg.notes and cfg.notes.strip() else "_No notes were given (--notes)._")
    add("")

    add("## Full Details")
    add("")
    add("### Metric summary")
    add("")
    add("| Metric | First | Last | Min | Max | Mean | Non-finite |")
    add("|---|---|---|---|---|---|---|")
    for key in METRIC_KEYS:
        y = s.get(key)
        if y is None or not np.isfinite(y).any():
            continue
        fy = y[np.isfinite(y)]
        add(f"| {key} | {_f(y[0])} | {_f(y[-1])} | {_f(fy.min())} | {_f(fy.max())} | {_f(fy.mean())} | "
            f"{int((~np.isfinite(y)).sum())} |")
    add("")
    if diversity:
        add("### Diversity over training")
        add("")
        add("| Epoch | Checkpoint | Collapsed | Near-duplicate share | Duplicate pairs | Clusters | Diversity ratio |")
        add("|---|---|---|---|---|---|---|")
        for p in diversity:
            add(f"| {p['epoch']} | `{p['checkpoint']}` | {'yes' if p['collapsed'] else 'no'} | "
                f"{p['duplicated_sample_fraction']:.1%} | {p['duplicate_fraction']:.2%} | {p['n_clusters']} / "
                f"{p['n_samples']} | {p['diversity_ratio']:.3f} |")
        add("")
    add("### Diagnostics data")
    add("")
    details = {"critic_health": {k: {kk: vv for kk, vv in i.items() if kk not in ("name", "observation", "rule")}
                                 for k, i in ind.items() if k in ("numerics", "w_sign", "w_trend", "clip",
                                                                  "oscillation")},
               "mode_collapse": mc,
               "fidelity_classifier_test": fid_c2st,
               "nearest_neighbours": None if nn is None else {
                   k: v for k, v in nn.items() if k not in ("nearest_index", "nearest_distance", "held_out_index")},
               "image_distance": f"RMS difference of per-image standardised {dg.FEATURE_SIDE}x{dg.FEATURE_SIDE} "
                                 f"average-pooled images (wgan/diagnostics.py)",
               "final_checkpoint": None if final_ckpt is None else _rel(rd, final_ckpt)}
    add("```json")
    add(json.dumps(_jsonable(details), indent=2))
    add("```")
    add("")
    add("### run.json")
    add("")
    add("```json")
    add(json.dumps(info, indent=2) if info else "{}")
    add("```")
    add("")
    add("### config.json")
    add("")
    add("```json")
    add(json.dumps(cfg.to_dict(), indent=2))
    add("```")
    add("")
    return "\n".join(L)


def _interpretation(run: Run, final: dict[str, float], ind: dict[str, dict[str, Any]], mc: dict[str, Any] | None,
                    nn: dict[str, Any] | None, fid_c2st: dict[str, Any] | None, diversity: list[dict[str, Any]],
                    problem: str) -> list[str]:
    s = run.series
    out = [
        "**How to read the numbers (this project's sign convention).** The critic C gives higher scores to images "
        "it finds more real. D loss = E[C(fake)] − E[C(real)]: negative when the critic ranks reals above fakes, "
        "as it should. The W estimate = −D loss = E[C(real)] − E[C(fake)] is the critic's estimate of the "
        "Wasserstein distance (up to the Lipschitz constant the clip allows); it should be positive, and its "
        "trend, not its size, tracks progress. G loss = −E[C(G(z))] is only the critic's mean score of generated "
        "images, negated: it has no real-data term, so |G loss| is not a distance, and its drift mostly follows "
        "the critic's score offset, which weight clipping does not pin down.",
    ]
    w = final["wasserstein_estimate"]
    real_score, fake_score = -final["d_loss_real"], final["d_loss_fake"]
    scores = ""
    if math.isfinite(real_score) and math.isfinite(fake_score):
        scores = (f" At the last epoch the critic's mean score of real images is {_f(real_score)} and of generated "
                  f"images {_f(fake_score)}.")
    if not math.isfinite(w):
        out.append("**This run.** The final losses are not finite: numbers after the NaN carry no meaning." + scores)
    elif w > 0:
        out.append(f"**This run.** The final D loss {_f(final['d_loss'])} gives a W estimate of {_f(w)} > 0: the "
                   f"critic still scores real images above generated ones.{scores}")
    else:
        out.append(f"**This run.** The final D loss is {_f(final['d_loss'])}, so the W estimate is {_f(w)} < 0: the "
                   f"critic scores fakes above reals. It no longer separates them the right way round, so it is far "
                   f"from the optimal critic and its loss is no Wasserstein estimate at all; this is not a sign "
                   f"that the generator matches the data.{scores} (The seed's report read a positive D loss like "
                   f"this one as health.)")
    g = s["g_loss"]
    gf = g[np.isfinite(g)]
    if len(gf) >= 2:
        out.append(f"G loss went from {_f(gf[0])} to {_f(gf[-1])}: the critic's mean score of generated images moved "
                   f"from {_f(-gf[0])} to {_f(-gf[-1])}. On its own this says nothing about how close the samples are "
                   f"to the data; compare it with the score of reals (the W estimate) and look at the samples.")
    out.append(f"**Critic health.** {ind['w_trend']['observation']}. {ind['clip']['observation']}. "
               f"{ind['oscillation']['observation']}. {ind['numerics']['observation'][0].upper()}"
               f"{ind['numerics']['observation'][1:]}.")
    if mc is not None:
        if mc["collapsed"]:
            txt = (f"**Samples.** The final generator is **mode-collapsed**: of {mc['n_samples']} samples from a fixed "
                   f"seed, {mc['duplicated_sample_fraction']:.0%} have a near-duplicate (reals of the same count: "
                   f"{mc['real_duplicated_sample_fraction']:.0%}), forming {mc['n_clusters']} distinct cluster(s) "
                   f"(largest: {mc['largest_cluster']} samples); diversity ratio {mc['diversity_ratio']:.2f}. ")
            if mc["diversity_ratio"] >= 0.85:
                txt += ("Note that the mean pairwise distance alone looks normal here: the repeats are visible only "
                        "by counting near-duplicates. ")
            txt += "No loss curve shows this."
        else:
            txt = (f"**Samples.** No mode collapse: {mc['duplicated_sample_fraction']:.0%} of {mc['n_samples']} "
                   f"samples have a near-duplicate (reals: {mc['real_duplicated_sample_fraction']:.0%}), "
                   f"{mc['n_clusters']} clusters, diversity ratio {mc['diversity_ratio']:.2f} (raw-pixel ratio "
                   f"{mc['pixel_diversity_ratio']:.2f}, lower means lower contrast).")
        if nn is not None:
            txt += (f" Nearest training images: samples sit at a median distance {nn['fake_nn_median']:.3f} from "
                    f"their nearest reference image, held-out reals at {nn['held_out_nn_median']:.3f} (ratio "
                    f"{nn['ratio']:.2f}; {'copies' if nn['verdict'] == 'memorising' else 'far from the data' if nn['verdict'] == 'far from data' else 'no sign of memorisation'}).")  # noqa: E501
        if fid_c2st is not None:
            acc = fid_c2st["accuracy"]
            txt += (f" A linear classifier on coarse layout and colour tells samples from reals with {acc:.0%} "
                    f"accuracy: " + ("they match at that coarse level (fine detail is not measured)."
                                     if fid_c2st["verdict"] == "match" else
                                     "they differ visibly from real images." if fid_c2st["verdict"] == "unlike data"
                                     else "they are partly distinguishable."))
        collapsed_eps = [p["epoch"] for p in diversity if p["collapsed"]]
        if len(diversity) > 1:
            txt += (f" Across {len(diversity)} checkpoints, {len(collapsed_eps)} "
                    f"{'is' if len(collapsed_eps) == 1 else 'are'} flagged collapsed"
                    + (f" (first at epoch {collapsed_eps[0]})" if collapsed_eps else "") + ".")
        out.append(txt)
    else:
        out.append(f"**Samples.** Not checked ({problem}): without samples no verdict on quality is possible; the "
                   f"losses cannot show mode collapse.")
    return out


# ----------------------------------------------------------------------------------------------
@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(file_okay=True, dir_okay=True, path_type=Path))
@click.option("--fid-weights", type=click.Path(path_type=Path), default=None,
              help="Local Inception-v3 weights file for FID/KID (nothing is downloaded).")
@click.option("--samples", "n_samples", type=int, default=256, show_default=True,
              help="Samples drawn from each checkpoint's generator (fixed seed).")
@click.option("--device", default="cpu", show_default=True, help="Where the generator runs: cpu, cuda, cuda:N or auto.")
def main(run_dir: Path, fid_weights: Path | None, n_samples: int, device: str) -> None:
    """Write RUN_DIR/analysis_report.md and RUN_DIR/plots/*.png from a run folder."""
    try:
        summary = write_report(run_dir, fid_weights=fid_weights, n_samples=n_samples, device=device)
    except ReportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{summary['report']}: {summary['stability']} | {summary['quality']} | {summary['score']}")


if __name__ == "__main__":
    main()
