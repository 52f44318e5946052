"""Exact resume, Ctrl-C, and what a resume may and may not change."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import invoke, read_epoch_log, snapshot, subprocess_env, train_args, write_config, write_images

from kernels import triton_can_run
from wgan.config import WGANConfig
from wgan.data import load_images
from wgan.training.engine import DEVICE_METRICS, build_engine
from wgan.training.parity import same_state_parity

LOSSES = ("d_loss", "d_loss_real", "d_loss_fake", "g_loss", "wasserstein_estimate")


pytestmark = pytest.mark.usefixtures("keep_threads")


def train(cfg: Path, data: Path, out: Path, *args: str) -> None:
    result = invoke(train_args(cfg, data, out, *args))
    assert result.exit_code == 0, result.output


def resume(out: Path, *args: str, code: int = 0) -> str:
    result = invoke(["--resume", str(out), *args])
    assert result.exit_code == code, result.output
    return result.stderr


def values(rows: list[dict]) -> list[tuple]:
    return [(r["epoch"], *(r[k] for k in DEVICE_METRICS)) for r in rows]


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path: Path, data: Path, cfg: Path) -> None:
    train(cfg, data, tmp_path / "a", "--epochs", "6", "--log-every", "4")
    reference = values(read_epoch_log(tmp_path / "a"))
    assert len(reference) == 6

    train(cfg, data, tmp_path / "b", "--epochs", "3")
    resume(tmp_path / "b", "--epochs", "6", "--log-every", "1")  # execution options may change
    assert values(read_epoch_log(tmp_path / "b")) == reference  # zero tolerance on a CPU
    assert WGANConfig.from_file(tmp_path / "b" / "config.json").epochs == 6
    assert json.loads((tmp_path / "b" / "run.json").read_text())["status"] == "completed"

    # a crash after epoch 5's row was written but before its checkpoint: the row is dropped
    train(cfg, data, tmp_path / "c", "--epochs", "5", "--checkpoint-every", "2")
    ckpts = tmp_path / "c" / "checkpoints"
    shutil.copyfile(ckpts / "epoch_00004.pt", ckpts / "last.pt")
    assert len(read_epoch_log(tmp_path / "c")) == 5
    err = resume(tmp_path / "c", "--epochs", "6")
    assert "dropped 1 metrics row(s) after the checkpoint's epoch 4" in err
    assert values(read_epoch_log(tmp_path / "c")) == reference


@pytest.mark.skipif(not triton_can_run("cpu"), reason="needs TRITON_INTERPRET=1 (set by tests/conftest.py)")
def test_an_eager_run_can_be_resumed_fused(tmp_path: Path, data: Path, cfg: Path) -> None:
    """Checkpoints move between the paths: the resumed fused epoch is exactly the fused engine's
    epoch from that checkpoint, and that epoch matches the eager one (wgan.training.parity, float64)."""
    cfg = write_config(
        tmp_path / "small.json", critic_filters=[8, 16], critic_strides=[2, 2], n_critic=2, deterministic=True
    )
    train(cfg, data, tmp_path / "b", "--epochs", "2")
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    resume(tmp_path / "b", "--epochs", "3", "--fused")
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["fused"] is True and info["impl"]["optimizer"] == "kernels.FusedRMSprop[triton]"
    assert info["impl"]["critic"] == "FusedCritic"
    config = WGANConfig.from_dict(state["config"])
    images = load_images(str(data), image_size=config.image_size)
    engine = build_engine(config.replace(fused=True), "cpu")
    engine.load_state_dict(state)
    expected = engine.run_epoch(engine.prepare_images(images))
    row = read_epoch_log(tmp_path / "b")[2]
    assert row["epoch"] == 3 and all(row[k] == float(expected[k]) for k in LOSSES)
    report = same_state_parity(state, images)
    assert report.ok, report.summary()
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert resumed["epoch"] == 3 and "clip_value" in resumed["opt_critic"]["param_groups"][0]


def test_resume_refuses_changed_hyper_parameters_and_touches_nothing(tmp_path: Path, data: Path, cfg: Path) -> None:
    out = tmp_path / "run"
    train(cfg, data, out, "--epochs", "2")
    before = snapshot(out)
    other = write_config(tmp_path / "other.json", batch_size=16)
    cases = [
        (["--epochs", "4", "--lr-critic", "1e-3"], "--lr-critic is a hyper-parameter of the run"),
        (["--epochs", "4", "--critic-filters", "8,8,8"], "--critic-filters is a hyper-parameter"),
        (["--epochs", "4", "--config", str(other)], "--batch-size is a hyper-parameter"),
        (["--epochs", "2"], "has already trained 2 epochs"),
        (["--epochs", "4", "--out", str(tmp_path / "elsewhere")], "--out and --resume name different folders"),
        (["--epochs", "4", "--data", str(write_images(tmp_path / "fewer", n=7))], "7 images but the run trained on 40"),
    ]
    for args, message in cases:
        err = resume(out, *args, code=2)
        assert err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert message in err
    assert snapshot(out) == before
    assert not (tmp_path / "elsewhere").exists()

    # a corrupt row in the middle of metrics.jsonl is refused, not silently cut off with all after it
    metrics = out / "metrics.jsonl"
    good = metrics.read_text()
    metrics.write_text("{not json\n" + good)
    err = resume(out, "--epochs", "4", code=2)
    assert "metrics.jsonl line 1 is not valid JSON" in err and len(err.strip().splitlines()) == 1, err
    assert metrics.read_text() == "{not json\n" + good
    metrics.write_text(good)

    (out / "checkpoints" / "last.pt").write_bytes(b"truncated")
    err = resume(out, "--epochs", "4", code=2)
    assert err.startswith("error: cannot read checkpoint") and len(err.strip().splitlines()) == 1


def start_training(tmp_path: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "wgan.train", *args],
        cwd=tmp_path,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_when(proc: subprocess.Popen, condition, what: str, *signals: int) -> tuple[str, str]:
    """Wait for ``condition``, send ``signals``, and return the process's (stdout, stderr); the
    process never outlives the test."""
    try:
        wait_for(proc, condition, what)
        for signum in signals:
            proc.send_signal(signum)
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()


def wait_for(proc: subprocess.Popen, condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"{what} did not happen within {timeout} s")


def long_run_args(cfg: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return train_args(cfg, data, out, *extra, epochs=100000, log_every=1, checkpoint_every=100000, sample_every=100000)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_writes_a_checkpoint_and_the_run_resumes_exactly(
    tmp_path: Path, data: Path, cfg: Path, signum: int, code: int
) -> None:
    """Ctrl-C, or the SIGTERM a batch scheduler sends before SIGKILL: finish the epoch, checkpoint,
    report, status interrupted, the shell's exit code; resuming gives the unbroken run."""
    out = tmp_path / "run"
    args = long_run_args(cfg, data, out)
    proc = start_training(tmp_path, args)
    logged_three = lambda: (out / "metrics.jsonl").exists() and len(read_epoch_log(out)) >= 3  # noqa: E731
    stdout, stderr = stop_when(proc, logged_three, "3 logged epochs", signum)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert f"resume with: python -m wgan.train --resume {out}" in stderr
    rows = read_epoch_log(out)
    k = rows[-1]["epoch"]
    assert [r["epoch"] for r in rows] == list(range(1, k + 1))
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == k  # the checkpoint is the last epoch in metrics.jsonl
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "interrupted" and info["epoch"] == k and info["checkpoint_epoch"] == k
    assert f"run folder: {out}" in stdout
    # the report is written after Ctrl-C too, and says the run was interrupted
    report = (out / "analysis_report.md").read_text()
    assert report.startswith("# Training Analysis Report") and "interrupted" in report.lower()

    resume(out, "--epochs", str(k + 2))
    rows = read_epoch_log(out)
    assert [r["epoch"] for r in rows] == list(range(1, k + 3))
    # the interrupted + resumed run is the uninterrupted one
    config = WGANConfig.from_file(out / "config.json")
    engine = build_engine(config, "cpu")
    images = load_images(str(data), image_size=16)
    for row in rows:
        stats = engine.run_epoch(images)
        assert [row[key] for key in DEVICE_METRICS] == [float(stats[key]) for key in DEVICE_METRICS], row["epoch"]


def test_a_second_signal_abandons_the_epoch_and_keeps_the_last_good_checkpoint(tmp_path: Path, data: Path) -> None:
    cfg = write_config(tmp_path / "slow.json", deterministic=True, batch_size=512)  # ~0.5 s epochs
    out = tmp_path / "run"
    proc = start_training(tmp_path, long_run_args(cfg, data, out, "--checkpoint-minutes", "0.001"))
    checkpointed = lambda: (out / "checkpoints" / "last.pt").exists() and len(read_epoch_log(out)) >= 2  # noqa: E731
    _, stderr = stop_when(proc, checkpointed, "a checkpoint", signal.SIGTERM, signal.SIGTERM)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    info = json.loads((out / "run.json").read_text())
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)  # a whole, loadable checkpoint
    assert info["status"] == "interrupted" and state["epoch"] == info["checkpoint_epoch"]
    assert not list((out / "checkpoints").glob(".*.tmp")), "a half-written checkpoint was left behind"
    if "abandoned" in stderr:  # the second signal arrived within the epoch (the usual case)
        assert f"resume from epoch {state['epoch']}" in stderr


def test_a_killed_run_is_reported_as_stopped_and_resumes(tmp_path: Path, data: Path, cfg: Path) -> None:
    """SIGKILL leaves run.json at "running": the report and --resume see that its process is gone.
    --checkpoint-minutes refreshed last.pt although no --checkpoint-every epoch was reached."""
    out = tmp_path / "run"
    proc = start_training(tmp_path, long_run_args(cfg, data, out, "--checkpoint-minutes", "0.001"))
    try:
        wait_for(
            proc, lambda: (out / "checkpoints" / "last.pt").exists() and len(read_epoch_log(out)) >= 3, "a checkpoint"
        )
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "running" and info["pid"] == proc.pid
    k = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    # run.json is written after last.pt: a kill in between leaves it one checkpoint behind
    assert k >= 1 and (info["checkpoint_epoch"] or 0) <= k
    n = read_epoch_log(out)[-1]["epoch"]
    report = subprocess.run(
        [sys.executable, "-m", "wgan.report", str(out)],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    text = (out / "analysis_report.md").read_text()
    message = f"stopped without a clean exit at epoch {n}; last checkpoint epoch {k}"
    assert message in text and "still running" not in text
    err = resume(out, "--epochs", str(n + 2))
    assert message in err
    assert json.loads((out / "run.json").read_text())["status"] == "completed"


def test_resume_refuses_a_run_that_is_still_training(tmp_path: Path, data: Path, cfg: Path) -> None:
    out = tmp_path / "run"
    proc = start_training(tmp_path, long_run_args(cfg, data, out, "--checkpoint-minutes", "0.001"))
    try:
        wait_for(proc, lambda: (out / "checkpoints" / "last.pt").exists(), "a checkpoint")
        err = resume(out, "--epochs", "100001", code=2)
        assert f"{out} is in use by pid {proc.pid} on host " in err and len(err.strip().splitlines()) == 1, err
    finally:
        proc.kill()
        proc.communicate(timeout=60)
