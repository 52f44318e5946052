"""Setting a run up: every input checked before anything of an existing run is touched, then the
folder written (new run) or read back (resume), the engine built and the start recorded."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wgan.config import RESUMABLE_FIELDS, WGANConfig, file_values, resolve_config
from wgan.devices import resolve_device
from wgan.errors import UsageError
from wgan.models.memory import check_training_memory
from wgan.run.checkpoint import CheckpointError
from wgan.run.folder import LOCK_FILE, RunFolder, process_gone, this_process, unclean_stop_message, utc_now
from wgan.run.images import save_grid, to_uint8
from wgan.run.lock import RunLock
from wgan.training.cuda_graph import EpochRunner
from wgan.training.engine import Engine, build_engine
from wgan.training.evaluation import Evaluation, Evaluator, read_best
from wgan.training.wandb_log import WandbLogger

REFERENCE_MAX, HELD_OUT_MAX, REFERENCE_SEED = 2048, 1000, 20240  # reference.npz: min(N, 2048) images, fixed draw


# --- setting a run up ------------------------------------------------------------------------


def _reference_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(reference, held-out) indices, a fixed draw: up to 2048 and then up to 1000 other images."""
    perm = np.random.default_rng(REFERENCE_SEED).permutation(n)
    return perm[: min(n, REFERENCE_MAX)], perm[REFERENCE_MAX : REFERENCE_MAX + HELD_OUT_MAX]


def start_run(config: WGANConfig, images: torch.Tensor, folder: RunFolder) -> None:
    """Write what a fresh run folder holds before its first epoch (``images`` on the CPU): the
    reference set, and the held-out reals (none of them in the reference set) that give the FID/KID
    floor a generator is measured against (real vs real at the same sample counts)."""
    folder.write_config(config)
    reference, held_out = _reference_split(images.shape[0])
    ref = images[torch.from_numpy(reference)]
    folder.write_reference(to_uint8(ref))
    if len(held_out):
        folder.write_reference(to_uint8(images[torch.from_numpy(held_out)]), held_out=True)
    folder.samples_dir.mkdir(exist_ok=True)
    folder.checkpoints_dir.mkdir(exist_ok=True)
    save_grid(ref[:25], folder.real_sample_path, nrow=5)


def _versions() -> dict[str, Any]:
    try:
        import triton

        triton_version: str | None = triton.__version__
    except Exception:
        triton_version = None
    return {"torch": torch.__version__, "triton": triton_version}


def _load_data(config: WGANConfig) -> torch.Tensor:
    from wgan.data import load_images

    return load_images(
        config.data,
        data_class=config.data_class,
        split=config.data_split,
        image_size=config.image_size,
        channels=config.image_channels,
        resize=config.resize,
    )


@dataclasses.dataclass
class Setup:
    """Everything checked before a run starts; nothing of an existing run was touched yet."""

    config: WGANConfig
    folder: RunFolder
    device: torch.device
    images: torch.Tensor  # the data set, on the CPU
    checkpoint: dict[str, Any] | None = None  # the checkpoint resumed from
    dropped: int = 0  # metrics rows after the checkpoint's epoch (a crash) that resume removed
    feature_network: Any = None  # wgan.fid.scores.FeatureNetwork when --eval-every is on
    restarted: bool = False  # --resume of a run that wrote no checkpoint: from epoch 0, its config.json


def _resumed_config(
    folder: RunFolder, from_file: dict[str, Any], explicit: dict[str, Any]
) -> tuple[WGANConfig, dict[str, Any] | None]:
    """The run's config with the allowed changes, and the checkpoint to continue from (checked
    against it): last.pt, else the newest readable epoch_NNNNN.pt, else None (a run that wrote no
    checkpoint restarts from epoch 0 with its config.json); said on stderr when not last.pt."""
    _refuse_a_live_run(folder)
    base = folder.read_config()
    config = resolve_config(from_file, explicit, resumed=base)
    checkpoint, note = folder.resume_point()
    if note:
        print(f"note: {note}", file=sys.stderr)
    if checkpoint is None:
        return config, None
    ckpt_config = WGANConfig.from_dict(checkpoint["config"])
    for f in dataclasses.fields(WGANConfig):
        if f.name not in RESUMABLE_FIELDS + ("extra",) and getattr(ckpt_config, f.name) != getattr(base, f.name):
            raise CheckpointError(f"the checkpoint of {folder.path} and config.json disagree on {f.name}")
    done = int(checkpoint["epoch"])
    if done >= config.epochs:
        raise UsageError(
            f"the run in {folder.path} has already trained {done} epochs; pass --epochs N with N > {done} to train more"
        )
    return config, checkpoint


def _refuse_a_live_run(folder: RunFolder) -> None:
    """Two processes must never train into one folder; a run that died is said so and resumed."""
    info = folder.read_run_info()
    if info.get("status") != "running":
        return
    gone = process_gone(info)
    if gone is False:
        raise UsageError(f"the run in {folder.path} is still training (pid {info.get('pid')}); stop it first")
    if gone:
        message = unclean_stop_message(folder.last_metrics_epoch() or info.get("epoch"), folder.last_checkpoint_epoch())
        print(f"note: the run {message}; resuming it", file=sys.stderr)
    else:
        print(
            f"note: run.json says the run is training on host {info.get('host')!r}, which cannot be checked "
            "from here; resuming it",
            file=sys.stderr,
        )


@dataclasses.dataclass
class Claim:
    """What a set-up took on disk, for the caller to give back if the run cannot start: the folders
    it made (removed again when still empty) and the run folder's lock."""

    made: list[Path] = dataclasses.field(default_factory=list)
    lock: RunLock | None = None

    def give_back(self) -> None:
        """Unlock, and remove the folders this invocation made if nothing but the lock file is in them."""
        if self.lock is None:
            return
        folder = self.lock.path.parent
        empty = bool(self.made) and all(p.name == LOCK_FILE for p in folder.iterdir())
        self.lock.release(remove=empty)
        for path in reversed(self.made):
            try:
                path.rmdir()
            except OSError:
                break


def _open_to_resume(resume: str, out: str | None, claim: Claim) -> RunFolder:
    """The run folder of --resume, locked (before anything in it is read or written)."""
    folder = RunFolder.open_existing(resume)
    if out and Path(out).resolve() != folder.path.resolve():
        raise UsageError("--out and --resume name different folders; a resumed run continues in its own folder")
    claim.lock = folder.lock()
    return folder


def _refuse_a_folder_in_the_data(folder: Path, data: str | None) -> None:
    """Samples and checkpoints written among the training images would be trained on next time."""
    if data is None:
        return
    out, source = folder.resolve(), Path(data).resolve()
    if out == source or source in out.parents:
        raise UsageError(f"the run folder {folder} is inside the data folder {source}; choose an --out outside it")


def prepare(
    config_file: str | None, out: str | None, resume: str | None, explicit: dict[str, Any], claim: Claim
) -> Setup:
    """Read and check every input; lock the run folder (creating it for a new run) into ``claim``."""
    from_file = file_values(config_file) if config_file else {}
    checkpoint = None
    if resume:
        folder = _open_to_resume(resume, out, claim)
        config, checkpoint = _resumed_config(folder, from_file, explicit)
    else:
        config = resolve_config(from_file, explicit)
    if config.data is not None:
        config = dataclasses.replace(config, data=str(Path(config.data).expanduser().resolve()))
    device = resolve_device(config.device)
    if not resume:
        target = Path(out) if out else _default_out()
        _refuse_a_folder_in_the_data(target, config.data)
        folder, claim.made, claim.lock = RunFolder.create(target)
    else:
        _refuse_a_folder_in_the_data(folder.path, config.data)
    check_training_memory(config, device)
    setup = Setup(config, folder, device, _load_data(config), checkpoint, restarted=bool(resume) and not checkpoint)
    if config.eval_every:  # a missing or foreign FID network is refused before anything is written
        from wgan.fid.scores import load_feature_network

        setup.feature_network = load_feature_network(config.fid_weights, device=device)
    if resume:
        n_run = folder.read_run_info().get("n_images")
        if n_run is not None and n_run != setup.images.shape[0]:
            raise UsageError(f"the data has {setup.images.shape[0]} images but the run trained on {n_run}")
        # last of the checks: rows after the checkpoint (a crash) go, a corrupt file refuses
        setup.dropped = folder.truncate_epoch_log(int(checkpoint["epoch"]) if checkpoint else 0)
    return setup


def start_engine(setup: Setup) -> tuple[Engine, torch.Tensor]:
    """The engine, from the checkpoint when resuming; the data set on the device."""
    config, device, folder = setup.config, setup.device, setup.folder
    engine = build_engine(config, device)
    if setup.checkpoint is None:
        start_run(config, setup.images, folder)
        return engine, engine.prepare_images(setup.images)
    if not engine.load_state_dict(setup.checkpoint):
        print(
            f"warning: the run's batch sampler ran on {setup.checkpoint['rng'].get('sampler_device')}, now on "
            f"{device.type}: training continues reproducibly but not with the uninterrupted run's draws",
            file=sys.stderr,
        )
    if setup.dropped:
        print(
            f"note: dropped {setup.dropped} metrics row(s) after the checkpoint's epoch {engine.epoch}", file=sys.stderr
        )
    folder.write_config(config)
    return engine, engine.prepare_images(setup.images)


def start_evaluation(setup: Setup, engine: Engine) -> Evaluation | None:
    """The run's evaluator (reference features computed once, cached in the run folder) and its
    best-so-far record, read back from checkpoints/best.pt when resuming."""
    if setup.feature_network is None:
        return None
    print(
        f"evaluation every {setup.config.eval_every} epochs: the FID reference features are computed once "
        "(minutes on a CPU; progress below) and cached in the run folder and for later runs",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    evaluator = Evaluator(setup.config, setup.feature_network, setup.folder.path)
    if evaluator.reference.computed:
        print(
            f"note: FID reference features of {evaluator.reference.n} images computed in "
            f"{time.perf_counter() - started:.0f} s (cached in the run folder)",
            file=sys.stderr,
        )
    best = read_best(setup.folder.best_checkpoint, engine.epoch) if setup.checkpoint is not None else None
    return Evaluation(evaluator, best)


def record_start(setup: Setup, engine: Engine, runner: EpochRunner, logger: WandbLogger) -> None:
    """run.json, W&B and the start-up line: what runs (as resolved, and the epoch runner picked),
    where, by which process."""
    config, folder, resuming = setup.config, setup.folder, setup.checkpoint is not None
    labels = {**engine.labels, "cuda_graph": runner.cuda_graph}
    if not resuming and logger.active:
        logger.log_image("real", folder.real_sample_path, 0, caption="real images")
    logger.update_config({"impl": labels, "precision": engine.precision})
    folder.update_run_info(
        status="running",
        epoch=engine.epoch,
        checkpoint_epoch=engine.epoch if resuming else None,
        device=str(setup.device),
        fused=config.fused,
        precision=engine.precision,
        impl=labels,
        wandb_url=logger.url,
        wandb_id=logger.run_id,
        wandb_mode=logger.mode if logger.active else "disabled",
        n_images=int(setup.images.shape[0]),
        message=None,
        **_versions(),
        **this_process(),
        **({} if resuming else {"started": utc_now()}),
    )
    print(
        f"run folder {folder.path}: {_start_kind(setup, engine)}, "
        f"{setup.images.shape[0]} images on {setup.device}, {'fused' if config.fused else 'eager'}, "
        f"precision {engine.precision} "
        f"({labels})",
        file=sys.stderr,
    )


def _start_kind(setup: Setup, engine: Engine) -> str:
    if setup.checkpoint is not None:
        return f"resuming at epoch {engine.epoch}"
    return "restarted from epoch 0" if setup.restarted else "new run"


def _default_out() -> Path:
    from wgan.run.folder import default_run_dir

    return default_run_dir("runs")
