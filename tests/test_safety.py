"""Nothing lost to a mistake or a neighbour: one process per run folder, no dead-end folders,
refusals that protect the user's files, hash before load, strict JSON. Real processes throughout."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import TINY, invoke, read_epoch_log, run_subprocess, snapshot, strict_json, subprocess_env

from wgan.run import atomic
from wgan.run.atomic import atomic_write_text
from wgan.run.folder import RunFolder

ARGS = ["--wandb", "disabled", "--no-report", "--log-every", "1"]


def trainer(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "wgan.train", *ARGS, *args],
        cwd=tmp_path,
        env=env or subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(*procs: subprocess.Popen) -> list[tuple[int, str]]:
    """(exit code, stderr) of each process, once all are done."""
    errs = [p.communicate(timeout=180)[1] for p in procs]
    return [(p.returncode, err) for p, err in zip(procs, errs)]


def train_here(*args: str, code: int = 0) -> str:
    """The trainer's CLI in this process (no interpreter start-up); its stderr."""
    result = invoke([*ARGS, *args])
    assert result.exit_code == code, result.output
    return result.stderr


def sample_here(*args: str, code: int = 2) -> str:
    from wgan.sample import cli

    result = invoke(list(args), command=cli)
    assert result.exit_code == code, result.output
    return result.stderr


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def epochs_of(run: Path) -> list[int]:
    return [row["epoch"] for row in read_epoch_log(run)]


def test_two_trainers_racing_on_one_folder_one_trains_one_is_refused(tmp_path: Path, data: Path, cfg: Path) -> None:
    """Two new runs started together on one new --out, then two resumes of it started together."""
    out = tmp_path / "run"
    common = ["--config", str(cfg), "--data", str(data), "--out", str(out), "--epochs", "3"]
    results = finish(trainer(tmp_path, *common, "--seed", "7"), trainer(tmp_path, *common))
    assert sorted(code for code, _ in results) == [0, 2], results
    refusal = one_error_line(next(err for code, err in results if code == 2))
    assert f"{out} is in use by pid " in refusal or f"--out {out} already holds a run" in refusal, refusal
    assert epochs_of(out) == [1, 2, 3]
    seed = json.loads((out / "config.json").read_text())["seed"]
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["config"]["seed"] == seed

    resume = ["--resume", str(out), "--epochs", "6"]
    results = finish(trainer(tmp_path, *resume), trainer(tmp_path, *resume))
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] in (0, 2), results
    if codes == [0, 2]:  # the second came while the first trained (else after it had finished)
        refusal = one_error_line(next(err for code, err in results if code == 2))
        assert f"{out} is in use by pid " in refusal or "has already trained 6 epochs" in refusal, refusal
    assert epochs_of(out) == [1, 2, 3, 4, 5, 6]


def test_a_run_killed_before_its_first_checkpoint_restarts_with_resume(tmp_path: Path, data: Path, cfg: Path) -> None:
    out = tmp_path / "run"
    proc = trainer(tmp_path, "--config", str(cfg), "--data", str(data), "--out", str(out), "--epochs", "100000")
    deadline = time.monotonic() + 120
    while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size > 0):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=60)
    assert not (out / "checkpoints" / "last.pt").exists()
    err = train_here("--resume", str(out), "--epochs", "3")
    assert f"{out} has no checkpoint yet; restarting the run from epoch 0 with its config.json" in err
    assert epochs_of(out) == [1, 2, 3]
    assert json.loads((out / "run.json").read_text())["status"] == "completed"


def test_resume_falls_back_to_the_newest_readable_epoch_checkpoint(tmp_path: Path, data: Path, cfg: Path) -> None:
    out = tmp_path / "run"
    train_here("--config", str(cfg), "--data", str(data), "--out", str(out), "--epochs", "4", "--checkpoint-every", "2")
    (out / "checkpoints" / "last.pt").write_bytes(b"torn")
    err = train_here("--resume", str(out), "--epochs", "5")
    assert "last.pt is unreadable" in err and "resuming from checkpoints/epoch_00004.pt" in err
    assert epochs_of(out) == [1, 2, 3, 4, 5]


def test_out_inside_the_data_folder_is_refused(tmp_path: Path, data: Path, cfg: Path) -> None:
    before = snapshot(data)
    (tmp_path / "link").symlink_to(data)
    for out in (data / "run", data, tmp_path / "link" / "run"):
        err = train_here("--config", str(cfg), "--data", str(data), "--out", str(out), code=2)
        assert "is inside the data folder" in one_error_line(err)
    assert snapshot(data) == before


def test_an_export_over_a_run_folders_checkpoint_is_refused(tmp_path: Path, data: Path, cfg: Path) -> None:
    out = tmp_path / "run"
    train_here("--config", str(cfg), "--data", str(data), "--out", str(out), "--epochs", "1")
    before = snapshot(out)
    last = out / "checkpoints" / "last.pt"
    result = run_subprocess([str(out), "--export", str(last)], tmp_path, module="wgan.sample")
    assert result.returncode == 2 and "is a file of a run folder" in one_error_line(result.stderr)
    (tmp_path / "link.pt").symlink_to(last)
    for args, message in (
        (["--export", str(tmp_path / "link.pt")], "is a file of a run folder"),
        (["--export", str(out / "run.json")], "is a file of a run folder"),
        (["--out", str(out / "checkpoints")], "is a file of a run folder"),
        (["--n", str(10**9), "--grid", str(tmp_path / "g.png")], "1000000000 images would need at least"),
        (["--seeds", "0-9223372036854775806", "--out", str(tmp_path / "o")], "more than the 1000000 of one call"),
    ):
        assert message in one_error_line(sample_here(str(out), *args)), args
    assert snapshot(out) == before


MARKER = "PLANTED-CODE-RAN"


def plant_torchscript(path: Path) -> None:
    """A TorchScript module whose __setstate__ prints MARKER when anything loads it."""

    class Planted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.x = torch.zeros(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        @torch.jit.export
        def __getstate__(self) -> tuple[torch.Tensor, bool]:
            return (self.x, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
            print("PLANTED-CODE-RAN")  # a literal: TorchScript has no globals
            self.x = state[0]
            self.training = state[1]

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(Planted()), str(path))


def test_a_planted_file_at_the_default_fid_path_is_never_loaded(tmp_path: Path, data: Path, cfg: Path) -> None:
    from wgan.fid import weights

    env = {**subprocess_env(), "WGAN_DATA_DIR": str(tmp_path / "wgan-data")}
    planted = Path(str(weights.default_path()).replace(str(weights.default_dir()), str(tmp_path / "wgan-data" / "fid")))
    plant_torchscript(planted)
    load = subprocess.run(  # the control: loading the file runs its code
        [sys.executable, "-c", f"import torch; torch.jit.load({str(planted)!r})"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert MARKER in load.stdout, load
    out = tmp_path / "run"
    proc = trainer(tmp_path, "--config", str(cfg), "--data", str(data), "--out", str(out), "--eval-every", "1", env=env)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 2, stderr
    assert "it was not loaded" in one_error_line(stderr) and MARKER not in stdout + stderr
    assert not out.exists()


def test_atomic_write_never_follows_a_symlink_planted_at_the_temporary_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    folder = tmp_path / "run"
    folder.mkdir()
    names = iter(["guessed", "fresh"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(names))  # the name made guessable, to plant
    (folder / ".config.json.guessed.tmp").symlink_to(outside)
    (folder / f".config.json.{os.getpid()}.tmp").symlink_to(outside)  # the old predictable name
    atomic_write_text(folder / "config.json", "new")
    assert outside.read_text() == "precious"
    assert (folder / "config.json").read_text() == "new" and not (folder / "config.json").is_symlink()
    assert (folder / ".config.json.guessed.tmp").is_symlink()  # left alone, not opened


def test_a_nan_row_is_strict_json_and_reads_back_as_nan(tmp_path: Path) -> None:
    from wgan.report.evidence import read_series

    folder = RunFolder(tmp_path)
    folder.append_epoch_log(
        [{"epoch": 1, "d_loss": 0.5, "g_loss": 1.0}, {"epoch": 2, "d_loss": math.nan, "g_loss": math.inf}]
    )
    lines = folder.epoch_log_path.read_text().splitlines()
    rows = [strict_json(line) for line in lines]  # jq and JavaScript parse it
    assert rows[1] == {"epoch": 2, "d_loss": None, "g_loss": None, "non_finite": ["d_loss", "g_loss"]}
    with pytest.raises(ValueError):
        strict_json('{"epoch": 2, "d_loss": NaN}')  # the parser refuses what was written before
    for read in (folder.read_epoch_log(), read_epoch_log(tmp_path)):
        assert math.isnan(read[1]["d_loss"]) and math.isnan(read[1]["g_loss"]) and "non_finite" not in read[1]
    series, _ = read_series(folder)
    assert math.isnan(series["d_loss"][1]) and series["d_loss"][0] == 0.5
    folder.truncate_epoch_log(1)
    assert [strict_json(line)["epoch"] for line in folder.epoch_log_path.read_text().splitlines()] == [1]


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a small tmpfs at ``path``; the reason when this machine does not allow it."""
    if shutil.which("mount") is None:
        return "no mount command"
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return None if result.returncode == 0 else f"cannot mount a tmpfs here: {result.stderr.decode().strip()}"


def test_a_full_disk_mid_run_is_one_line_and_run_json_failed(tmp_path: Path, data: Path, cfg: Path) -> None:
    disk = tmp_path / "small"
    why = _mount_tmpfs(disk, "160k")  # the set-up fits, a checkpoint (~90 KB) does not
    if why:
        pytest.skip(why)
    try:
        out = disk / "run"
        err = train_here("--config", str(cfg), "--data", str(data), "--out", str(out), "--epochs", "2", code=1)
        line = one_error_line("\n".join(x for x in err.splitlines() if not x.startswith("run folder ")))
        assert "No space left on device" in line, err
        info = json.loads((out / "run.json").read_text())
        assert info["status"] == "failed" and "No space left on device" in info["message"]
        assert "\n" not in info["message"] and not list(out.rglob("*.tmp"))
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_user_errors_are_one_line(tmp_path: Path, data: Path) -> None:
    cases = [
        ({"data": 123}, "config field data must be a string or null"),
        ({"fid_weights": 5}, "config field fid_weights must be a string or null"),
        ({"notes": {"k": [1, 2]}}, "config field notes must be a string"),
        ({"seed": -1}, "seed must be an integer in [0, 9223372036854775807]"),
        ({"seed": 2**70}, "seed must be an integer in [0, 9223372036854775807]"),
        ({"batch_size": 10**9}, "--batch-size 1000000000 would need at least"),
    ]
    for i, (values, message) in enumerate(cases):
        config = tmp_path / f"c{i}.json"
        config.write_text(json.dumps({**TINY, **values}))
        err = train_here("--config", str(config), "--data", str(data), "--out", str(tmp_path / f"r{i}"), code=2)
        assert message in one_error_line(err), (values, err)
        assert not (tmp_path / f"r{i}").exists()
    usage = run_subprocess(["--batch-size", "many"], tmp_path)
    assert usage.returncode == 2 and "--batch-size" in one_error_line(usage.stderr)
