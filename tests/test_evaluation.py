"""--eval-every: KID/FID during training, best.pt, and no effect on what training computes.

Uses the real FID network (``make fid-weights``; CI fetches it) on a tiny model and data set:
each evaluation is a few images through Inception, a few seconds of CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import invoke, read_metrics

from wgan import fid_weights
from wgan.metric_names import DEVICE

needs_network = pytest.mark.skipif(
    not fid_weights.is_fetched(), reason=f"FID network not fetched ({fid_weights.default_path()}): make fid-weights"
)


def train(cfg: Path, data: Path, out: Path, *args: str) -> None:
    result = invoke(
        ["--config", str(cfg), "--data", str(data), "--out", str(out), "--wandb", "disabled", "--no-report", *args]
    )
    assert result.exit_code == 0, result.output


@needs_network
def test_evaluations_are_recorded_and_change_nothing_that_training_computes(
    tmp_path: Path, data: Path, cfg: Path
) -> None:
    train(cfg, data, tmp_path / "plain", "--epochs", "6")
    train(cfg, data, tmp_path / "eval", "--epochs", "6", "--eval-every", "2", "--eval-samples", "8")
    plain, evaluated = read_metrics(tmp_path / "plain"), read_metrics(tmp_path / "eval")
    assert [[r[k] for k in DEVICE] for r in evaluated] == [[r[k] for k in DEVICE] for r in plain]  # bit for bit
    scored = [r for r in evaluated if "kid" in r]
    assert [r["epoch"] for r in scored] == [2, 4, 6]
    assert all(r["kid_std"] >= 0 and r["eval_seconds"] > 0 and "fid" not in r for r in scored)
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
    whole, split = read_metrics(tmp_path / "whole"), read_metrics(tmp_path / "split")
    assert [r.get("fid") for r in split] == [r.get("fid") for r in whole]  # the same evaluations, resumed exactly
    assert (
        json.loads((tmp_path / "split" / "run.json").read_text())["best"]
        == json.loads((tmp_path / "whole" / "run.json").read_text())["best"]
    )


def test_evaluation_without_the_network_is_refused_before_anything_is_written(
    tmp_path: Path, data: Path, cfg: Path
) -> None:
    out = tmp_path / "out" / "run"
    result = invoke(
        [
            "--config",
            str(cfg),
            "--data",
            str(data),
            "--out",
            str(out),
            "--wandb",
            "disabled",
            "--epochs",
            "2",
            "--eval-every",
            "1",
            "--fid-weights",
            str(tmp_path / "missing.pt"),
        ]
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing.pt" in lines[0]
    assert not (tmp_path / "out").exists()
