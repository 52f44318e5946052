"""What a run folder holds, read once into one record (:class:`RunEvidence`) for the report.

Reading is kept apart from judging (wgan.report.findings) and from writing the report
(wgan.report.render, wgan.report.figures) so that every later step works on the same numbers and
images, and can be tested on a record built in memory. Only the run folder is read
(docs/design.md): config.json, run.json, metrics.jsonl, reference.npz, samples/*.png and
checkpoints/*.pt. Nothing is downloaded.

Sampling the generator is part of reading: a checkpoint is evidence only through the images it
draws, and drawing them from one fixed z (:data:`SAMPLE_SEED`) makes checkpoints comparable.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wgan.config import WGANConfig
from wgan.errors import UserError, one_line
from wgan.report.quality import QualityEvidence, measure_quality
from wgan.run import columns
from wgan.run.folder import RunFolder, effective_status, parse_epoch_log, unclean_stop_message
from wgan.run.generator import LoadedGenerator, generate_all, load_generator

SAMPLE_SEED = 20240  # fixed z for every checkpoint the report samples, so they are comparable
MAX_CHECKPOINTS = 24  # periodic checkpoints sampled for "diversity over training"
MIN_REFERENCE_IMAGES = 8  # fewer cannot calibrate a near-duplicate threshold
METRIC_KEYS = columns.DEVICE + columns.HOST
UNFINISHED_STATUSES = ("interrupted", "nan", "failed", "running", "stopped")


class ReportError(UserError):
    """A run folder the report cannot read."""


@dataclass(frozen=True)
class CheckpointSamples:
    """Images one periodic checkpoint's generator drew from the report's fixed z."""

    epoch: int
    checkpoint: str  # relative to the run folder, as the report prints it
    images: torch.Tensor


@dataclass(frozen=True)
class Evaluations:
    """The metrics.jsonl rows that carry quality evaluations (``columns.EVALUATION``: FID, KID).

    Evaluations are expensive, so only some epochs have them; ``epochs`` lists those, and each
    array in ``values`` holds one metric at those epochs (NaN where a row lacks it). Empty when no
    row was evaluated. This is where quality indicators and a quality-over-training plot read from.
    """

    epochs: np.ndarray
    values: dict[str, np.ndarray]

    def __bool__(self) -> bool:
        return len(self.epochs) > 0


@dataclass
class RunEvidence:
    """Everything the report knows about one run, as read from its folder.

    ``notes`` collects what the reader should know about the files themselves (a missing
    run.json, a torn metrics line, a checkpoint that could not be sampled). The samples are None
    when they could not be drawn or compared; ``missing_samples`` then says why, in words fit for
    the report.
    """

    path: Path
    config: WGANConfig
    info: dict[str, Any]  # run.json
    series: dict[str, np.ndarray]  # metrics.jsonl: name -> value per logged epoch (NaN where missing)
    notes: list[str] = field(default_factory=list)
    n_samples: int = 256
    fid_weights: Path | None = None
    reference: torch.Tensor | None = None  # reference.npz as floats [M, C, H, W] in [-1, 1]
    final_checkpoint: Path | None = None
    final_samples: torch.Tensor | None = None
    final_epoch: int = 0  # the epoch final_samples come from
    periodic_samples: list[CheckpointSamples] = field(default_factory=list)
    missing_samples: str = ""
    sample_grids: list[tuple[int, Path]] = field(default_factory=list)  # the trainer's samples/epoch_*.png
    real_grid: Path | None = None  # samples/real.png
    final_generator: str = "raw"  # "EMA" when the final samples come from the averaged weights
    quality: QualityEvidence = field(default_factory=QualityEvidence)  # FID/KID (wgan.report.quality)

    @property
    def name(self) -> str:
        return self.info.get("name") or self.path.resolve().name

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
        return self.status in UNFINISHED_STATUSES or self.last_epoch < self.planned

    @property
    def evaluations(self) -> Evaluations:
        return evaluations(self.series)

    def relative(self, path: Path) -> str:
        """``path`` as the report names it: relative to the run folder, with forward slashes."""
        return Path(os.path.relpath(path, self.path)).as_posix()


# ----------------------------------------------------------------------------------------------
# the files
# ----------------------------------------------------------------------------------------------
def read_run_info(folder: RunFolder, notes: list[str]) -> dict[str, Any]:
    """run.json as a dict; a missing one is a note (the run is still worth a report)."""
    if not folder.run_json.is_file():
        notes.append("run.json is missing: the run's status, device and W&B link are unknown")
    return folder.read_run_info()


def read_series(folder: RunFolder) -> tuple[dict[str, np.ndarray], bool]:
    """The epoch log as {key: float array} sorted by epoch (last row wins on a repeated epoch), and
    whether a torn last line (a crash mid-append) was dropped."""
    if not folder.epoch_log_path.is_file():
        raise ReportError(f"{folder.path} has no {folder.epoch_log_path.name} (the run logged no epoch)")
    parsed, torn = parse_epoch_log(folder.epoch_log_path.read_text(), folder.epoch_log_path)
    rows = {row["epoch"]: row for row in parsed}
    if not rows:
        raise ReportError(f"{folder.epoch_log_path} holds no rows")
    epochs = sorted(rows)
    series: dict[str, np.ndarray] = {"epoch": np.array(epochs, dtype=np.int64)}
    extra_keys = sorted({key for row in rows.values() for key in row} - set(METRIC_KEYS) - {"epoch"})
    for key in list(METRIC_KEYS) + extra_keys:
        series[key] = np.array([_number_or_nan(rows[epoch].get(key)) for epoch in epochs], dtype=np.float64)
    return series, torn


def _number_or_nan(value: Any) -> float:
    """A logged number as float; anything else (missing, null, a string, a bool) as NaN."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan


def evaluations(series: dict[str, np.ndarray]) -> Evaluations:
    """The evaluated rows of ``series`` (see :class:`Evaluations`)."""
    present = [key for key in columns.EVALUATION if key in series]
    evaluated = np.zeros(len(series["epoch"]), dtype=bool)
    for key in present:
        evaluated |= np.isfinite(series[key])
    return Evaluations(epochs=series["epoch"][evaluated], values={key: series[key][evaluated] for key in present})


def load_reference(path: Path) -> torch.Tensor:
    """reference.npz ``images`` uint8 [M, H, W, C] -> float [M, C, H, W] in [-1, 1]."""
    with np.load(path) as data:
        if "images" not in data:
            raise ValueError("reference.npz has no 'images' array")
        images = data["images"]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"reference.npz images must be uint8 [M, H, W, C], got {images.dtype} {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def read_reference(path: Path, config: WGANConfig) -> tuple[torch.Tensor | None, str]:
    """The run's reference images if they can be compared with the generator's; else None and why."""
    reference_path = RunFolder(path).reference_path
    if not reference_path.is_file():
        return None, "no reference.npz in the run folder"
    try:
        reference = load_reference(reference_path)
    except (OSError, ValueError) as exc:
        return None, f"reference.npz unreadable: {exc}"
    generated_shape = (config.image_channels, config.image_size, config.image_size)
    if reference.shape[1:] != generated_shape:
        return None, f"reference.npz images are {tuple(reference.shape[1:])}, the generator makes {generated_shape}"
    if reference.shape[0] < MIN_REFERENCE_IMAGES:
        return None, f"reference.npz holds only {reference.shape[0]} images"
    return reference, ""


# ----------------------------------------------------------------------------------------------
# sampling checkpoints
# ----------------------------------------------------------------------------------------------
def spread_checkpoints(checkpoints: list[tuple[int, Path]]) -> list[tuple[int, Path]]:
    """At most about MAX_CHECKPOINTS of them, evenly spaced, the latest always included."""
    step = max(1, math.ceil(len(checkpoints) / MAX_CHECKPOINTS))
    chosen = checkpoints[::step]
    if checkpoints and chosen[-1] != checkpoints[-1]:
        chosen.append(checkpoints[-1])
    return chosen


def sample_checkpoint(path: Path, n: int, device: torch.device) -> tuple[torch.Tensor, LoadedGenerator]:
    """``n`` images of a checkpoint's generator (averaged if kept, as the trainer samples) from the
    report's fixed z, and the generator they came from."""
    loaded = load_generator(path, ema=None, device=device)
    z = torch.randn(n, loaded.config.z_dim, generator=torch.Generator().manual_seed(SAMPLE_SEED))
    return generate_all(loaded.generator, z, device), loaded


def _sample_final(evidence: RunEvidence, device: torch.device) -> str:
    """Fill in the final checkpoint's samples (last.pt, else the latest periodic one); return why not, if not."""
    evidence.final_checkpoint = RunFolder(evidence.path).final_checkpoint()
    evidence.final_epoch = evidence.last_epoch
    if evidence.final_checkpoint is None:
        return "no checkpoint in checkpoints/"
    try:
        samples, loaded = sample_checkpoint(evidence.final_checkpoint, evidence.n_samples, device)
    except Exception as exc:  # a damaged checkpoint must not stop the rest of the report
        return f"{evidence.relative(evidence.final_checkpoint)} could not be sampled: {one_line(exc)}"
    evidence.final_samples = samples
    evidence.final_generator = loaded.kind
    evidence.final_epoch = loaded.epoch
    return ""


def _sample_periodic(evidence: RunEvidence, device: torch.device) -> None:
    """Samples of the periodic checkpoints (spread out, the final one left out) for diversity over training."""
    for epoch, path in spread_checkpoints(RunFolder(evidence.path).periodic_checkpoints()):
        if path == evidence.final_checkpoint:
            continue
        try:
            images, _ = sample_checkpoint(path, evidence.n_samples, device)
        except Exception as exc:
            evidence.notes.append(f"{evidence.relative(path)} could not be sampled: {one_line(exc)}")
            continue
        evidence.periodic_samples.append(CheckpointSamples(epoch, evidence.relative(path), images))


def _measure_quality(evidence: RunEvidence, fid: bool | None, device: torch.device) -> QualityEvidence:
    """FID/KID when asked (``fid``), or by default when the run evaluated or --fid-weights was given."""
    wanted = fid if fid is not None else bool(evidence.config.eval_every or evidence.fid_weights)
    if not wanted:
        why = "--no-fid" if fid is False else "the run did not evaluate (--eval-every) and the report was not asked"
        return QualityEvidence(missing=f"not computed: {why} (`python -m wgan.report RUN_DIR --fid` measures it)")
    return measure_quality(
        evidence.path, evidence.config, evidence.series, evidence.final_checkpoint, evidence.fid_weights, device
    )


def read_evidence(
    run_dir: str | Path,
    *,
    n_samples: int,
    device: torch.device,
    fid_weights: str | Path | None = None,
    fid: bool | None = None,
) -> RunEvidence:
    """Read the run folder ``run_dir`` and sample its checkpoints (``n_samples`` images each, on ``device``).

    Raises ReportError when the folder cannot be read at all (no config.json, no metrics rows);
    problems with the samples or the reference only leave those fields empty, so the report still
    describes the training. The periodic checkpoints are sampled only when the final samples and the
    reference exist: without them nothing would be measured on those images.
    """
    folder = RunFolder.open_to_read(run_dir)
    path = folder.path
    config = folder.read_config()
    notes: list[str] = []
    info = read_run_info(folder, notes)
    series, torn = read_series(folder)
    if torn:
        notes.append(f"the last line of {folder.epoch_log_path.name} was cut off mid-write (a crash) and was ignored")
    evidence = RunEvidence(
        path=path,
        config=config,
        info=info,
        series=series,
        notes=notes,
        n_samples=n_samples,
        fid_weights=None if fid_weights is None else Path(fid_weights),
    )
    evidence.reference, reference_problem = read_reference(path, config)
    checkpoint_problem = _sample_final(evidence, device)
    evidence.missing_samples = checkpoint_problem or reference_problem
    if evidence.final_samples is not None and evidence.reference is not None:
        _sample_periodic(evidence, device)
    evidence.quality = _measure_quality(evidence, fid, device)
    evidence.sample_grids = folder.sample_grids()
    evidence.real_grid = folder.real_sample_path if folder.real_sample_path.is_file() else None
    return evidence
