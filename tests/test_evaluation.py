"""--eval-every: KID/FID during training, best.pt, and no effect on what training computes.

Uses the real FID network (``make fid-weights``; CI fetches it) on a tiny model and data set:
each evaluation is a few images through Inception, a few seconds of CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import invoke, read_epoch_log, train_args

from wgan.fid import weights as fid_weights
from wgan.report.diagnostics import NOT_RUN
from wgan.run.columns import DEVICE

needs_network = pytest.mark.skipif(
    not fid_weights.is_fetched(), reason=f"FID network not fetched ({fid_weights.default_path()}): make fid-weights"
)


def train(cfg: Path, data: Path, out: Path, *args: str) -> None:
    result = invoke(train_args(cfg, data, out, "--no-report", *args))
    assert result.exit_code == 0, result.output


@needs_network
def test_evaluations_are_recorded_and_change_nothing_that_training_computes(
    tmp_path: Path, data: Path, cfg: Path
) -> None:
    train(cfg, data, tmp_path / "plain", "--epochs", "6")
    train(cfg, data, tmp_path / "eval", "--epochs", "6", "--eval-every", "2", "--eval-samples", "8")
    plain, evaluated = read_epoch_log(tmp_path / "plain"), read_epoch_log(tmp_path / "eval")
    assert [[r[k] for k in DEVICE] for r in evaluated] == [[r[k] for k in DEVICE] for r in plain]  # bit for bit
    scored = [r for r in evaluated if "kid" in r]
    assert [r["epoch"] for r in scored] == [2, 4, 6]
    # both metrics come from one feature pass; --eval-metric (KID by default) picks best.pt
    assert all(r["kid_std"] >= 0 and r["eval_seconds"] > 0 and r["fid"] >= 0 for r in scored)
    best = min(scored, key=lambda r: r["kid"])
    state = torch.load(tmp_path / "eval" / "checkpoints" / "best.pt", weights_only=True)
    assert state["epoch"] == best["epoch"] and state["evaluation"]["value"] == best["kid"]
    assert state["evaluation"]["metric"] == "kid" and state["evaluation"]["n_samples"] == 8
    info = json.loads((tmp_path / "eval" / "run.json").read_text())
    assert info["best"] == {"epoch": best["epoch"], "metric": "kid", "value": best["kid"]}
    assert (tmp_path / "eval" / "fid_reference.npz").is_file()  # reference features, once per run


@needs_network
def test_a_resumed_run_keeps_its_best_so_far(tmp_path: Path, data: Path, cfg: Path) -> None:
    args = ("--eval-every", "2", "--eval-samples", "8", "--eval-metric", "fid")
    train(cfg, data, tmp_path / "whole", "--epochs", "6", *args)
    train(cfg, data, tmp_path / "split", "--epochs", "4", *args)
    result = invoke(["--resume", str(tmp_path / "split"), "--epochs", "6"])
    assert result.exit_code == 0, result.output
    whole, split = read_epoch_log(tmp_path / "whole"), read_epoch_log(tmp_path / "split")
    assert [r.get("fid") for r in split] == [r.get("fid") for r in whole]  # the same evaluations, resumed exactly
    assert (
        json.loads((tmp_path / "split" / "run.json").read_text())["best"]
        == json.loads((tmp_path / "whole" / "run.json").read_text())["best"]
    )


def test_evaluation_without_the_network_is_refused_before_anything_is_written(
    tmp_path: Path, data: Path, cfg: Path
) -> None:
    out = tmp_path / "out" / "run"
    result = invoke(train_args(cfg, data, out, epochs="2", eval_every="1", fid_weights=str(tmp_path / "missing.pt")))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.pt" in lines[0]
    assert not (tmp_path / "out").exists()


@needs_network
def test_the_report_rates_the_final_and_best_generators_against_the_real_vs_real_floor(
    tmp_path: Path, data: Path, cfg: Path
) -> None:
    """The report of a run that evaluated: the floor, the final generator averaged (read back from
    the trainer's last evaluation) and raw (measured by the report), best.pt, the plot, the advice."""
    from wgan.report.writer import write_report

    run = tmp_path / "run"
    train(cfg, data, run, "--epochs", "6", "--eval-every", "2", "--eval-samples", "8", "--g-ema", "0.9")
    summary = write_report(run, n_samples=32)
    quality = summary["fid"]
    assert quality is not None, summary["fid_status"]
    assert quality["n_fake"] == 8 and quality["floor"]["fid"] > 0 and quality["floor"]["kid_std"] >= 0
    points = {p["label"]: p for p in quality["generators"]}
    assert set(points) == {"final, averaged (EMA)", "final, raw", "best.pt"}
    rows = {r["epoch"]: r for r in read_epoch_log(run)}
    ema, raw = points["final, averaged (EMA)"], points["final, raw"]
    assert ema["measured_by"] == "training" and ema["kid"] == rows[6]["kid"] and ema["fid"] == rows[6]["fid"]
    assert raw["measured_by"] == "report" and raw["generator"] == "raw" and raw["fid"] != ema["fid"]
    best = min((r for r in rows.values() if "kid" in r), key=lambda r: r["kid"])
    assert points["best.pt"]["epoch"] == best["epoch"] and points["best.pt"]["kid"] == best["kid"]
    assert summary["indicators"]["fid_kid"] in ("PASS", "WARN", "FAIL")
    headline = quality["headline"]
    assert headline["fid_ratio"] == ema["fid"] / quality["floor"]["fid"]
    assert ("Excellent" in summary["quality"]) == (headline["quality_rating"] == "excellent")
    assert f"epoch {best['epoch']}" in summary["recommendation"]
    report = (run / "analysis_report.md").read_text()
    assert "## Sample quality (FID/KID)" in report and "real-vs-real floor" in report
    assert (run / "plots" / "quality.png").is_file() and "averaged (EMA) weights" in report
    assert summary["wandb"]["report/fid"] == ema["fid"]


@needs_network
def test_a_report_without_evaluations_says_fid_was_not_computed_unless_asked(
    tmp_path: Path, data: Path, cfg: Path
) -> None:
    from wgan.report.writer import write_report

    run = tmp_path / "run"
    train(cfg, data, run, "--epochs", "2")
    summary = write_report(run, n_samples=32)
    assert summary["fid"] is None and summary["fid_status"].startswith("not computed: the run did not evaluate")
    assert summary["indicators"]["fid_kid"] == NOT_RUN and "Excellent" not in summary["quality"]
    asked = write_report(run, n_samples=32, fid=True)
    assert [p["label"] for p in asked["fid"]["generators"]] == ["final, raw"]
    assert asked["fid"]["generators"][0]["measured_by"] == "report"
