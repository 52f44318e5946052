"""``--precision {auto,fp32,tf32,bf16}``: what runs is named where a run is recorded, and runs saved
with the old ``tf32``/``amp`` fields keep resuming at the precision they ran."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from helpers import invoke, read_epoch_log, run_subprocess, train_args

from wgan.training.engine import DEVICE_METRICS

pytestmark = pytest.mark.usefixtures("keep_threads")


def train(cfg: Path, data: Path, out: Path, *args: str) -> str:
    result = invoke(train_args(cfg, data, out, *args))
    assert result.exit_code == 0, result.output
    return result.stderr


def values(rows: list[dict]) -> list[tuple]:
    return [(r["epoch"], *(r[k] for k in DEVICE_METRICS)) for r in rows]


def test_bf16_runs_through_a_real_process_and_is_named(tmp_path: Path, data: Path, cfg: Path) -> None:
    out = tmp_path / "run"
    args = ["--config", str(cfg), "--data", str(data), "--out", str(out), "--epochs", "2", "--wandb", "disabled"]
    proc = run_subprocess([*args, "--precision", "bf16"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "precision bf16" in proc.stderr  # the start-up line
    info = json.loads((out / "run.json").read_text())
    assert info["precision"] == "bf16" and info["impl"]["precision"] == "bf16"
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"
    assert "| Precision | bf16 |" in (out / "analysis_report.md").read_text()
    assert len(read_epoch_log(out)) == 2


def test_auto_is_recorded_as_what_ran(tmp_path: Path, data: Path, cfg: Path) -> None:
    err = train(cfg, data, tmp_path / "run", "--epochs", "1", "--no-report", "--wandb", "offline")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["precision"] == "fp32" and "precision fp32" in err  # auto on a CPU
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "auto"
    # the W&B run's config names what ran beside what was asked: its records hold each config item
    # as a key and its JSON value, protobuf-encoded (a tag and a length between them)
    (records,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    items = re.findall(rb'\tprecision[\x00-\xff]{1,3}"(\w+)"', records.read_bytes())
    assert set(items) == {b"auto", b"fp32"}  # config.precision as asked, then the precision that ran


def test_the_old_flags_are_gone(tmp_path: Path, data: Path, cfg: Path) -> None:
    for flag in (["--tf32"], ["--amp", "bf16"]):
        result = invoke(["--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "x"), *flag])
        assert result.exit_code == 2 and "No such option" in result.output


def _as_saved_before_precision(run: Path, old: dict) -> None:
    """Rewrite a run's config.json and its last checkpoint's config as runs wrote them before
    ``precision`` existed (``tf32`` and ``amp`` fields)."""
    config = json.loads((run / "config.json").read_text())
    del config["precision"]
    (run / "config.json").write_text(json.dumps({**config, **old}))
    path = run / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    del state["config"]["precision"]
    state["config"].update(old)
    torch.save(state, path)


def test_a_run_saved_with_amp_bf16_resumes_exactly_in_bf16(tmp_path: Path, data: Path, cfg: Path) -> None:
    """The old fields map to the precision they ran (amp bf16 -> bf16), so the resumed epochs are
    the uninterrupted bf16 run's, bit for bit (--deterministic)."""
    train(cfg, data, tmp_path / "a", "--epochs", "4", "--precision", "bf16", "--no-report")
    reference = values(read_epoch_log(tmp_path / "a"))
    train(cfg, data, tmp_path / "b", "--epochs", "2", "--precision", "bf16", "--no-report")
    _as_saved_before_precision(tmp_path / "b", {"tf32": False, "amp": "bf16"})
    result = invoke(["--resume", str(tmp_path / "b"), "--epochs", "4", "--no-report"])
    assert result.exit_code == 0, result.output
    assert values(read_epoch_log(tmp_path / "b")) == reference
    assert json.loads((tmp_path / "b" / "run.json").read_text())["precision"] == "bf16"
    assert json.loads((tmp_path / "b" / "config.json").read_text())["precision"] == "bf16"


def test_a_run_saved_with_tf32_off_resumes_in_fp32(tmp_path: Path, data: Path, cfg: Path) -> None:
    train(cfg, data, tmp_path / "b", "--epochs", "1", "--no-report")
    _as_saved_before_precision(tmp_path / "b", {"tf32": False, "amp": "none"})
    result = invoke(["--resume", str(tmp_path / "b"), "--epochs", "2", "--no-report"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b" / "config.json").read_text())["precision"] == "fp32"
