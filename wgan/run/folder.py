"""The run folder: the one place a run leaves everything a person (or the report) needs.

Layout and file contracts are in docs/design.md. Every whole-file write here goes through a
temporary file + ``os.replace`` so a crash never leaves a half-written ``config.json`` or
``run.json``; ``metrics.jsonl`` is append-only and is cut back to the checkpoint's epoch on
resume, so its rows always describe the training that the checkpoints continue.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import socket
from pathlib import Path
from typing import Any

import numpy as np

from wgan.config import WGANConfig
from wgan.errors import UserError
from wgan.run.atomic import atomic_write, atomic_write_text
from wgan.run.lock import RunLock, acquire

# The names of a run folder's files: spelled here only (docs/design.md draws the layout).
CONFIG_FILE, RUN_FILE, EPOCH_LOG_FILE = "config.json", "run.json", "metrics.jsonl"
REFERENCE_FILE, HELD_OUT_FILE = "reference.npz", "held_out.npz"
FEATURE_CACHES = {REFERENCE_FILE: "fid_reference.npz", HELD_OUT_FILE: "fid_held_out.npz"}  # Inception features
CHECKPOINTS_DIR, SAMPLES_DIR, PLOTS_DIR = "checkpoints", "samples", "plots"
LAST_CHECKPOINT, BEST_CHECKPOINT, REAL_GRID = "last.pt", "best.pt", "real.png"
REPORT_FILE = "analysis_report.md"
LOCK_FILE = ".lock"  # flock'ed by the one process that writes the folder (wgan.run.lock)
SWEEP_FILE, SWEEP_REPORT_FILE = "sweep.json", "sweep_report.md"  # a sweep folder's own files (wgan.run.sweep)
_EPOCH_FILE = re.compile(r"epoch_(\d+)\.(pt|png)")

# Names whose presence marks a folder as holding a run (refused as --out unless resumed).
RUN_MARKERS = (CONFIG_FILE, RUN_FILE, EPOCH_LOG_FILE, REFERENCE_FILE, CHECKPOINTS_DIR, SAMPLES_DIR)
NON_FINITE = "non_finite"  # metrics.jsonl: the keys of a row whose values were NaN or infinite (written null)
RUN_STATUSES = ("running", "completed", "interrupted", "nan", "failed")
# What no output of another command may overwrite: the run's record, its data and its checkpoints.
PROTECTED_FILES = frozenset(
    (CONFIG_FILE, RUN_FILE, EPOCH_LOG_FILE, REFERENCE_FILE, HELD_OUT_FILE, LOCK_FILE, *FEATURE_CACHES.values())
)


def _process_start(pid: int) -> str | None:
    """The kernel's start time of process ``pid`` (Linux), so a reused pid is not mistaken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def this_process() -> dict[str, Any]:
    """What run.json records of the training process: pid, host and the process's start time."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid())}


def process_gone(info: dict[str, Any]) -> bool | None:
    """True when run.json's process no longer exists; None when that cannot be told from here
    (another host, or a run.json without a pid)."""
    pid, host = info.get("pid"), info.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else: a reused pid, or the run itself
        pass
    recorded = info.get("process_start")
    return recorded is not None and _process_start(pid) != recorded


def effective_status(info: dict[str, Any]) -> str:
    """run.json's status, except ``running`` whose process is gone: ``stopped`` (no clean exit)."""
    status = str(info.get("status") or "unknown")
    return "stopped" if status == "running" and process_gone(info) else status


def unclean_stop_message(epoch: int | None, checkpoint_epoch: int | None) -> str:
    """What to say of a run whose process died: the last epoch it recorded, and the checkpoint on disk
    (a kill between writing last.pt and run.json leaves run.json one checkpoint behind)."""
    return f"stopped without a clean exit at epoch {epoch}; last checkpoint epoch {checkpoint_epoch}"


class RunFolderError(UserError):
    """A run folder that cannot be used as asked."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def default_run_dir(root: str | Path = "runs") -> Path:
    """``runs/<UTC timestamp>``; a numeric suffix keeps two runs started in one second apart."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(root) / stamp
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{stamp}-{n}"
    return path


def is_sweep_folder(path: str | Path) -> bool:
    """A sweep folder (``--seeds`` or a sweep): sweep.json and one run folder per member."""
    return (Path(path) / SWEEP_FILE).is_file()


def refuse_sweep_folder(path: str | Path) -> None:
    """A sweep folder where one run is expected: say which member folders to give instead."""
    path = Path(path)
    if not is_sweep_folder(path):
        return
    members = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())
    example = f", e.g. {path / members[0]}" if members else ""
    raise RunFolderError(
        f"{path} is a sweep folder ({SWEEP_FILE}), not one run; give one of its member folders{example}"
    )


def holds_run(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in RUN_MARKERS)


def is_protected(path: str | Path) -> bool:
    """Whether writing ``path`` (symlinks resolved) would overwrite, or write inside, a file of a run
    folder that holds its record or state: config.json, run.json, metrics.jsonl, the reference and
    held-out images, their feature caches, the lock, or anything in checkpoints/."""
    resolved = Path(path).expanduser().resolve()
    for entry in (resolved, *resolved.parents):
        if entry.name in PROTECTED_FILES and holds_run(entry.parent):
            return True
        if entry.name == CHECKPOINTS_DIR and holds_run(entry.parent):
            return True
    return False


def parse_epoch_log(text: str, where: str | Path) -> tuple[list[dict[str, Any]], bool]:
    """Rows of metrics.jsonl ``text`` and whether a torn last line was dropped.

    Only a last line without its newline that does not parse is a torn write (a crash mid-append)
    and is dropped. Any other unreadable line, or a row without an integer epoch >= 1, raises
    RunFolderError naming it: skipping it silently would misstate the run in the report and, on
    resume, drop every row after it.
    """
    lines = text.split("\n")
    rows: list[dict[str, Any]] = []
    torn = False
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            if i == len(lines) and not text.endswith("\n"):
                torn = True
                continue
            raise RunFolderError(f"{where} line {i} is not valid JSON: {exc}") from None
        if not isinstance(row, dict):
            raise RunFolderError(f"{where} line {i} is not a JSON object")
        epoch = row.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            raise RunFolderError(f"{where} line {i} has no integer epoch >= 1 (got {epoch!r})")
        rows.append(decode_row(row))
    return rows, torn


def _under(*parts: str) -> property:
    """A path of the run folder, as a read-only attribute."""
    return property(lambda self: self.path.joinpath(*parts))


def encode_row(row: dict[str, Any]) -> str:
    """A metrics.jsonl line in strict JSON: a NaN or infinite value is written as null, and the
    row's ``non_finite`` key names those values (jq and JavaScript reject bare NaN)."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        row = {**{k: None if k in bad else v for k, v in row.items()}, NON_FINITE: bad}
    return json.dumps(row, allow_nan=False)


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    """A parsed metrics row as it was logged: the values ``non_finite`` names are NaN again."""
    named = row.pop(NON_FINITE, None)
    for key in named if isinstance(named, list) else []:
        if isinstance(key, str) and row.get(key) is None:
            row[key] = math.nan
    return row


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # --- paths (every name is a constant above) ----------------------------------------------
    config_path = _under(CONFIG_FILE)
    run_json = _under(RUN_FILE)
    epoch_log_path = _under(EPOCH_LOG_FILE)
    reference_path = _under(REFERENCE_FILE)
    held_out_path = _under(HELD_OUT_FILE)
    samples_dir = _under(SAMPLES_DIR)
    checkpoints_dir = _under(CHECKPOINTS_DIR)
    last_checkpoint = _under(CHECKPOINTS_DIR, LAST_CHECKPOINT)
    best_checkpoint = _under(CHECKPOINTS_DIR, BEST_CHECKPOINT)
    real_sample_path = _under(SAMPLES_DIR, REAL_GRID)
    plots_dir = _under(PLOTS_DIR)
    report_path = _under(REPORT_FILE)

    def last_checkpoint_epoch(self) -> int | None:
        """The epoch of checkpoints/last.pt as it is on disk (None: no readable checkpoint)."""
        from wgan.run.checkpoint import CheckpointError, load_checkpoint

        try:
            return int(load_checkpoint(self.last_checkpoint)["epoch"])
        except CheckpointError:
            return None

    def last_metrics_epoch(self) -> int | None:
        """The last epoch metrics.jsonl records (None: none, or a file that cannot be read)."""
        try:
            rows = self.read_epoch_log()
        except RunFolderError:
            return None
        return rows[-1]["epoch"] if rows else None

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoints_dir / f"epoch_{epoch:05d}.pt"

    def periodic_checkpoints(self) -> list[tuple[int, Path]]:
        """checkpoints/epoch_NNNNN.pt as (epoch, path), oldest first."""
        return _epoch_files(self.checkpoints_dir, "pt")

    def checkpoint_epochs(self) -> list[int]:
        """The epochs that have a checkpoints/epoch_NNNNN.pt, in order (what a missing one is told)."""
        return [epoch for epoch, _ in self.periodic_checkpoints()]

    def final_checkpoint(self) -> Path | None:
        """The latest state on disk: last.pt, else the newest epoch_NNNNN.pt; None when there is none."""
        if self.last_checkpoint.is_file():
            return self.last_checkpoint
        periodic = self.periodic_checkpoints()
        return periodic[-1][1] if periodic else None

    def sample_grids(self) -> list[tuple[int, Path]]:
        """samples/epoch_NNNNN.png as (epoch, path), oldest first."""
        return _epoch_files(self.samples_dir, "png")

    def feature_cache(self, images: Path) -> Path:
        """Where the Inception features of ``images`` (reference.npz or held_out.npz) are cached."""
        return self.path / FEATURE_CACHES[images.name]

    def sample_path(self, epoch: int) -> Path:
        return self.samples_dir / f"epoch_{epoch:05d}.png"

    # --- opening ----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path) -> tuple[RunFolder, list[Path], RunLock]:
        """Make a fresh run folder, lock it, and only then refuse one that holds a run (two processes
        started together on one new folder: one trains, the other is refused); return it, the
        folders made and the held lock.

        The folders made are returned so a caller can remove them again if the run cannot start
        (bad data), leaving the disk as it found it. Raises RunFolderError, RunLockError or OSError.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"--out {path} exists and is not a folder")
        made: list[Path] = []
        missing = path
        while not missing.exists():
            made.append(missing)
            missing = missing.parent
        folder = cls(path)
        lock = folder._lock_new()
        try:
            if holds_run(path):
                raise RunFolderError(
                    f"--out {path} already holds a run; pass --resume {path} to continue it, or choose another --out"
                )
            probe = path / f".write-probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except BaseException:
            lock.release()
            raise
        return folder, made[::-1], lock

    def _lock_new(self) -> RunLock:
        """Create the folder and lock it; again if a failed set-up removed it between the two steps."""
        for _ in range(10):
            self.path.mkdir(parents=True, exist_ok=True)
            try:
                return self.lock()
            except FileNotFoundError:
                continue
        raise RunFolderError(f"--out {self.path} keeps disappearing")

    def lock(self) -> RunLock:
        """Hold the folder for this process (RunLockError names the process that holds it)."""
        return acquire(self.path / LOCK_FILE, self.path)

    @classmethod
    def open_existing(cls, path: str | Path) -> RunFolder:
        """A run folder to resume: it must hold config.json (which checkpoint: :meth:`resume_point`)."""
        folder = cls(path)
        refuse_sweep_folder(folder.path)
        if not folder.path.is_dir():
            raise RunFolderError(f"--resume {folder.path}: no such run folder")
        if not folder.config_path.is_file():
            raise RunFolderError(f"--resume {folder.path}: the folder has no config.json")
        return folder

    def resume_point(self) -> tuple[dict[str, Any] | None, str | None]:
        """The checkpoint to resume from, and a note when it is not last.pt: last.pt; else (missing
        or unreadable) the newest readable epoch_NNNNN.pt; else, when the run wrote no checkpoint at
        all (killed before its first), None: the run restarts from epoch 0. An unreadable last.pt
        with nothing to fall back on is refused (CheckpointError): something trained would be lost."""
        from wgan.run.checkpoint import CheckpointError, load_checkpoint

        last_error: CheckpointError | None = None
        if self.last_checkpoint.is_file():
            try:
                return load_checkpoint(self.last_checkpoint), None
            except CheckpointError as exc:
                last_error = exc
        for _, path in reversed(self.periodic_checkpoints()):
            try:
                state = load_checkpoint(path)
            except CheckpointError:
                continue
            why = f"unreadable ({last_error})" if last_error else "missing"
            return state, f"{LAST_CHECKPOINT} is {why}; resuming from {CHECKPOINTS_DIR}/{path.name}"
        if last_error is not None:
            raise last_error
        if self.periodic_checkpoints():
            raise CheckpointError(f"{self.checkpoints_dir}: no readable checkpoint (last.pt is missing)")
        return None, f"{self.path} has no checkpoint yet; restarting the run from epoch 0 with its {CONFIG_FILE}"

    @classmethod
    def open_to_read(cls, path: str | Path) -> RunFolder:
        """A run folder to read (the report, the sampler): it must exist and hold config.json."""
        folder = cls(path)
        if not folder.path.exists():
            raise RunFolderError(f"{folder.path}: no such run folder")
        if not folder.path.is_dir():
            raise RunFolderError(f"{folder.path} is not a folder")
        refuse_sweep_folder(folder.path)
        if not folder.config_path.is_file():
            raise RunFolderError(f"{folder.path} has no {CONFIG_FILE} (not a run folder?)")
        return folder

    # --- config -----------------------------------------------------------------------------
    def write_config(self, config: WGANConfig) -> None:
        atomic_write_text(self.config_path, json.dumps(config.to_dict(), indent=2, allow_nan=False) + "\n")

    def read_config(self) -> WGANConfig:
        """config.json (ConfigError names a bad field)."""
        return WGANConfig.from_file(self.config_path)

    # --- run.json ---------------------------------------------------------------------------
    def read_run_info(self) -> dict[str, Any]:
        """run.json as a dict; {} when there is none yet (a run that never started), RunFolderError
        when it cannot be read (only a hand edit breaks a file written atomically)."""
        if not self.run_json.is_file():
            return {}
        try:
            info = json.loads(self.run_json.read_text())
        except (OSError, ValueError) as exc:
            raise RunFolderError(f"{self.run_json} is not valid JSON: {exc}") from None
        if not isinstance(info, dict):
            raise RunFolderError(f"{self.run_json} must hold a JSON object")
        return info

    def update_run_info(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into run.json (atomically), stamping ``updated``."""
        if "status" in fields and fields["status"] not in RUN_STATUSES:
            raise ValueError(f"unknown run status {fields['status']!r}")
        info = self.read_run_info()
        info.update(fields)
        info.setdefault("started", utc_now())
        info["updated"] = utc_now()
        atomic_write_text(self.run_json, json.dumps(info, indent=2, allow_nan=False) + "\n")
        return info

    # --- metrics.jsonl ----------------------------------------------------------------------
    def append_epoch_log(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        with open(self.epoch_log_path, "a") as fh:
            for row in rows:
                fh.write(encode_row(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_epoch_log(self) -> list[dict[str, Any]]:
        """Rows of metrics.jsonl (see :func:`parse_epoch_log`); none when the file does not exist."""
        if not self.epoch_log_path.is_file():
            return []
        return parse_epoch_log(self.epoch_log_path.read_text(), self.epoch_log_path)[0]

    def truncate_epoch_log(self, last_epoch: int) -> int:
        """Keep only rows with ``epoch <= last_epoch``; return how many rows were dropped."""
        if not self.epoch_log_path.is_file():
            return 0
        raw = [line for line in self.epoch_log_path.read_text().splitlines() if line.strip()]
        rows = self.read_epoch_log()
        kept = [r for r in rows if r["epoch"] <= last_epoch]
        dropped = len(raw) - len(kept)
        if dropped:
            atomic_write_text(self.epoch_log_path, "".join(encode_row(r) + "\n" for r in kept))
        return dropped

    # --- reference set ----------------------------------------------------------------------
    def write_reference(self, images_uint8: np.ndarray, held_out: bool = False) -> None:
        """Store uint8 [M, H, W, C] real images for the report (see docs/design.md): the reference
        set, or (``held_out``) the reals outside it that the FID/KID floor is measured with."""
        if images_uint8.dtype != np.uint8 or images_uint8.ndim != 4:
            raise ValueError("reference images must be uint8 [M, H, W, C]")
        path = self.held_out_path if held_out else self.reference_path
        atomic_write(path, lambda fh: np.savez_compressed(fh, images=images_uint8))


def _epoch_files(folder: Path, suffix: str) -> list[tuple[int, Path]]:
    """``folder``'s epoch_NNNNN.<suffix> files as (epoch, path), oldest first."""
    found = []
    for path in folder.glob(f"epoch_*.{suffix}"):
        match = _EPOCH_FILE.fullmatch(path.name)
        if match and match[2] == suffix:
            found.append((int(match[1]), path))
    return sorted(found)
