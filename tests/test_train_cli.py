"""The trainer's command line: a real run and its folder, bad input, the NaN guard, progress."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DOCUMENTED_ROW, TINY, invoke, read_epoch_log, run_subprocess, snapshot, train_args, write_images
from PIL import Image

from wgan.config import WGANConfig
from wgan.run.columns import ROW as METRIC_KEYS
from wgan.run.folder import RunFolder
from wgan.training.engine import DEVICE_METRICS, build_engine
from wgan.training.loop import fit

EXPECTED_KEYS = DOCUMENTED_ROW


def test_three_epoch_run_through_a_real_process(tmp_path: Path, data: Path, cfg: Path) -> None:
    out = tmp_path / "run"
    proc = run_subprocess(
        train_args(cfg, data, out, epochs=3, sample_every=2, checkpoint_every=2, wandb="offline"), tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    summary = proc.stdout.strip().splitlines()[-1]
    assert "trained epochs 1-3 of 3" in summary and f"run folder: {out}" in summary

    # metrics.jsonl: one row per epoch, the contract's keys in order, consistent values
    rows = read_epoch_log(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert METRIC_KEYS == tuple(EXPECTED_KEYS)
    for r in rows:
        assert list(r) == EXPECTED_KEYS
        assert all(isinstance(r[k], float) and math.isfinite(r[k]) for k in EXPECTED_KEYS[1:])
        assert r["wasserstein_estimate"] == -r["d_loss"]
        # the fp32 sum the engine computed, exactly (the values are fp32 numbers written as floats)
        assert r["d_loss"] == float(torch.tensor(r["d_loss_real"]) + torch.tensor(r["d_loss_fake"]))
        assert 0 <= r["clip_ratio"] <= 1 and r["epoch_time"] > 0
        assert r["images_per_s"] == (2 * 5 + 1) * 8 / r["epoch_time"]

    # config.json is WGANConfig.to_dict(); run.json as in the contract
    config = WGANConfig.from_file(out / "config.json")
    assert json.loads((out / "config.json").read_text()) == config.to_dict()
    assert config.epochs == 3 and config.image_size == 16 and config.data == str(data.resolve())
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "completed" and info["epoch"] == 3 and info["device"] == "cpu"
    assert info["fused"] is False and info["impl"]["optimizer"] == "torch.optim.RMSprop"
    assert info["torch"] == torch.__version__ and info["wandb_url"] is None and info["wandb_mode"] == "offline"
    assert {"started", "updated", "triton"} <= set(info)

    # images: real grid, samples at 2 (cadence) and 3 (last epoch), valid PNGs of a 5x5 grid
    for name in ("real.png", "epoch_00002.png", "epoch_00003.png"):
        with Image.open(out / "samples" / name) as img:
            img.verify()
        with Image.open(out / "samples" / name) as img:
            assert img.format == "PNG" and img.size == (2 * (5 * 18 + 2),) * 2
    assert not (out / "samples" / "epoch_00001.png").exists()
    with np.load(out / "reference.npz") as ref:
        assert ref["images"].dtype == np.uint8 and ref["images"].shape == (40, 16, 16, 3)

    # checkpoints: last + every 2, weights_only-loadable, loadable into a fresh engine
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_00002.pt", "last.pt"]
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["config"] == config.to_dict()
    assert state["fixed_z"].shape == (25, 8) and isinstance(state["rng"]["sampler"], torch.Tensor)
    assert torch.load(out / "checkpoints" / "epoch_00002.pt", weights_only=True)["epoch"] == 2
    engine = build_engine(config, "cpu")
    engine.load_state_dict(state)
    assert engine.epoch == 3

    # W&B offline: its files live under the run folder and hold the metrics and the samples
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in EXPECTED_KEYS:
        assert key.encode() in records, key
    assert b"clip_threshold" in records  # the config
    media = sorted(p.name for p in (runs[0] / "files" / "media" / "images").iterdir())
    assert any(n.startswith("samples_") for n in media) and any(n.startswith("real_") for n in media)

    # the report is written at the end of training, and its summary is logged to the W&B run
    report = (out / "analysis_report.md").read_text()
    assert report.startswith("# Training Analysis Report") and "## Training Verdict" in report
    assert (out / "plots").is_dir() and any((out / "plots").glob("*.png"))
    assert b"report/stability" in next(runs[0].glob("run-*.wandb")).read_bytes()


def _bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (extra arguments, expected text in the one-line error)."""
    (tmp / "empty").mkdir()
    corrupt = tmp / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (tmp / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    write_images(tmp / "small", n=4, size=12)
    (tmp / "a_file").write_text("x")
    (tmp / "no_config" / "checkpoints").mkdir(parents=True)
    return {
        "missing data": (["--data", str(tmp / "nope")], "does not exist"),
        "empty data": (["--data", str(tmp / "empty")], "holds no images"),
        "corrupt image": (["--data", str(corrupt)], "cannot read image"),
        "corrupt npz": (["--data", str(tmp / "bad.npz")], "cannot read npz"),
        "wrong size": (["--data", str(tmp / "small")], "--resize"),
        "batch size 0": (["--batch-size", "0"], "batch_size"),
        "clip 0": (["--clip-threshold", "0"], "clip_threshold"),
        "clip negative": (["--clip-threshold", "-0.01"], "clip_threshold"),
        "n_critic 0": (["--n-critic", "0"], "n_critic"),
        "epochs 0": (["--epochs", "0"], "epochs"),
        "lr critic 0": (["--lr-critic", "0"], "lr_critic"),
        "lr generator negative": (["--lr-generator", "-1e-4"], "lr_generator"),
        "bad filters": (["--critic-filters", "8,x"], "critic_filters"),
        "bad device": (["--device", "tpu"], "device"),
        "no cuda": (["--device", "cuda:7"], "cuda"),
        "unwritable out": (["--out", str(tmp / "a_file" / "run")], "Not a directory"),
        "resume without config": (["--resume", str(tmp / "no_config")], "no config.json"),
        "resume nothing": (["--resume", str(tmp / "nowhere")], "no such run folder"),
        "bad config file": (["--config", str(tmp / "a_file")], "not valid"),
        "checkpoint minutes negative": (["--checkpoint-minutes", "-1"], "checkpoint_minutes"),
    }


BAD_NAMES = [
    "missing data",
    "empty data",
    "corrupt image",
    "corrupt npz",
    "wrong size",
    "batch size 0",
    "clip 0",
    "clip negative",
    "n_critic 0",
    "epochs 0",
    "lr critic 0",
    "lr generator negative",
    "bad filters",
    "bad device",
    "no cuda",
    "unwritable out",
    "resume without config",
    "resume nothing",
    "bad config file",
    "checkpoint minutes negative",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path: Path, data: Path, cfg: Path, name: str) -> None:
    args, expected = _bad_cases(tmp_path)[name]
    if torch.cuda.device_count() > 7 and name == "no cuda":
        pytest.skip("this machine has a cuda:7")
    out = tmp_path / "out" / "run"
    base = train_args(cfg, data, out, epochs=2)
    if name == "bad config file":
        base = base[2:]
    result = invoke(base + args)
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # no half-made run folder left behind


def test_every_bad_case_is_tested(tmp_path: Path) -> None:
    assert sorted(BAD_NAMES) == sorted(_bad_cases(tmp_path))


def test_an_out_that_holds_a_run_is_refused_and_left_untouched(tmp_path: Path, data: Path, cfg: Path) -> None:
    out = tmp_path / "run"
    first = invoke(
        ["--config", str(cfg), "--data", str(data), "--out", str(out), "--epochs", "2", "--wandb", "disabled"]
    )
    assert first.exit_code == 0, first.output
    before = snapshot(out)
    for args in (["--epochs", "3"], ["--epochs", "2", "--lr-critic", "1e-3"]):
        again = invoke(["--config", str(cfg), "--data", str(data), "--out", str(out), "--wandb", "disabled", *args])
        assert again.exit_code == 2
        assert again.stderr.strip() == (
            f"error: --out {out} already holds a run; pass --resume {out} to continue it, or choose another --out"
        )
    assert snapshot(out) == before


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path: Path, cfg: Path) -> None:
    proc = run_subprocess(
        train_args(cfg, tmp_path / "missing", tmp_path / "r"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: data path {tmp_path / 'missing'} does not exist"
    assert not (tmp_path / "r").exists()


def test_resize_accepts_other_sizes(tmp_path: Path, cfg: Path) -> None:
    small = write_images(tmp_path / "small", n=10, size=12)
    result = invoke(train_args(cfg, small, tmp_path / "r", "--resize", epochs="1"))
    assert result.exit_code == 0, result.output
    assert len(read_epoch_log(tmp_path / "r")) == 1


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path: Path, data: Path, cfg: Path) -> None:
    """A generator learning rate of 1e30 overflows the generator's batch norm at epoch 2."""
    out = tmp_path / "run"
    result = invoke(train_args(cfg, data, out, epochs="6", lr_generator="1e30", checkpoint_every="1", log_every="1"))
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: training diverged at epoch 2 (")
    assert "last good checkpoint" in errors[0] and "epoch 1)" in errors[0]
    rows = read_epoch_log(out)
    assert [r["epoch"] for r in rows] == [1, 2]  # the NaN row is written, nothing after it
    assert all(math.isfinite(rows[0][k]) for k in DEVICE_METRICS)
    assert not math.isfinite(rows[1]["d_loss"])
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "nan" and info["epoch"] == 2 and info["checkpoint_epoch"] == 1
    assert "epoch 2" in info["message"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch_00001.pt", "last.pt"]
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 1
    for part in ("generator", "critic"):
        assert all(torch.isfinite(t).all() for t in state[part].values() if t.is_floating_point())


def test_nan_inside_a_readback_window_writes_no_checkpoint(tmp_path: Path, data: Path, cfg: Path) -> None:
    out = tmp_path / "run"
    result = invoke(train_args(cfg, data, out, epochs="8", lr_generator="1e30", checkpoint_every="4", log_every="4"))
    assert result.exit_code == 3
    assert [r["epoch"] for r in read_epoch_log(out)] == [1, 2]
    assert not (out / "checkpoints" / "last.pt").exists()
    assert "no checkpoint had been written yet" in result.stderr


def test_progress_bar_shows_epoch_losses_rate_and_eta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = WGANConfig.from_dict({**TINY, "epochs": 4, "log_every": 2, "wandb": "disabled"})
    folder, _, lock = RunFolder.create(tmp_path / "run")
    folder.checkpoints_dir.mkdir()
    engine = build_engine(config, "cpu")
    with lock:
        outcome = fit(engine, torch.rand(20, 3, 16, 16) * 2 - 1, folder, progress=True)
    assert outcome.status == "completed" and outcome.exit_code == 0 and outcome.epoch == 4
    err = capsys.readouterr().err
    assert "4/4" in err and "d_loss=" in err and "g_loss=" in err and "epoch/s" in err
    assert "<00:00" in err  # tqdm's elapsed<remaining (ETA)


def test_wandb_auto_goes_online_only_with_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wgan.training.wandb_log import resolve_mode

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    assert resolve_mode("auto") == "offline"
    (tmp_path / ".netrc").write_text("machine example.com login u password p\n")
    assert resolve_mode("auto") == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password 0123456789abcdef\n")
    assert resolve_mode("auto") == "online"
    (tmp_path / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("disabled") == "disabled" and resolve_mode("offline") == "offline"
    with pytest.raises(ValueError, match="wandb mode"):
        resolve_mode("sometimes")


def test_a_failing_wandb_call_warns_once_and_logging_stops(tmp_path: Path) -> None:
    import warnings

    from wgan.training.wandb_log import WandbLogger

    logger = WandbLogger("offline", tmp_path, {"lr_critic": 5e-5})
    try:
        assert logger.active and logger.url is None and logger.run_id
        logger.log_metrics([{"epoch": 1, "d_loss": 0.5}])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logger.log_image("samples", tmp_path / "missing.png", 2)  # wandb.Image raises on a missing file
            logger.log_image("samples", tmp_path / "missing.png", 3)
            logger.log_metrics([{"epoch": 4, "d_loss": 0.1}])
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1 and "W&B image log failed" in messages[0] and "training continues" in messages[0]
        assert not logger.active
    finally:
        logger.finish()
    assert list(tmp_path.glob("wandb/offline-run-*"))  # offline files under the given run folder
