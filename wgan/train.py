"""``python -m wgan.train``: train the WGAN and leave a run folder a person can trust.

Every hyper-parameter of :class:`~wgan.config.WGANConfig` is a command-line option (generated
from the dataclass, so the two never drift apart). Precedence: the seed defaults < ``--config
FILE`` < options given on the command line. ``--resume RUN_DIR`` continues a run exactly from
its last checkpoint; only execution options may change then.

Exit codes: 0 done; 2 bad input (one line on stderr, nothing of an existing run touched);
3 a loss or weight became NaN/inf (the last good checkpoint is kept); 130 interrupted (Ctrl-C:
a checkpoint of the last finished epoch is written first); 1 an unexpected failure.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from click.core import ParameterSource
from tqdm import tqdm

from wgan.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from wgan.config import ConfigError, WGANConfig, coerce_field, execution_fields
from wgan.cuda_graph import EpochRunner, epoch_runner
from wgan.devices import resolve_device
from wgan.engine import DEVICE_METRICS, Engine, build_engine
from wgan.evaluation import Evaluation, Evaluator, read_best
from wgan.images import save_grid, to_uint8
from wgan.run_folder import RunFolder, RunFolderError, process_gone, this_process, unclean_stop_message, utc_now
from wgan.wandb_log import WandbLogger

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NAN, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 3, 130, 143

# Fields that may change when a run is resumed (config metadata: they change how the run is
# executed and recorded, not what it computes). ``data`` may point at a moved copy of the data set;
# the image count must then match the run's.
RESUMABLE_FIELDS = execution_fields()
BOOK_RMSPROP = {"rmsprop_alpha": 0.9, "rmsprop_eps": 1e-7}  # Keras's rho and epsilon (inside the root)
REFERENCE_MAX, HELD_OUT_MAX, REFERENCE_SEED = 2048, 1000, 20240  # reference.npz: min(N, 2048) images, fixed draw


class UsageError(ValueError):
    """A bad command line that no other module's error type covers; one-line message."""


# --- CLI options generated from the config ------------------------------------------------------


def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _config_options(func: Any) -> Any:
    """One click option per config field, with the field's own help, choices and default."""
    defaults = WGANConfig()
    for f in reversed([f for f in dataclasses.fields(WGANConfig) if f.name != "extra"]):
        default, meta, name = getattr(defaults, f.name), f.metadata, _option_name(f.name)
        if isinstance(default, bool):
            option = click.option(
                f"{name}/--no-{name[2:]}", f.name, default=default, show_default=True, help=meta["help"]
            )
        elif isinstance(default, tuple):
            option = click.option(
                name, f.name, type=str, default=",".join(map(str, default)), show_default=True, help=meta["help"]
            )
        elif meta.get("choices"):
            option = click.option(
                name, f.name, type=click.Choice(meta["choices"]), default=default, show_default=True, help=meta["help"]
            )
        elif default is None:
            option = click.option(name, f.name, type=str, default=None, metavar="PATH", help=meta["help"])
        else:
            kind = {int: click.INT, float: click.FLOAT, str: click.STRING}[type(default)]
            option = click.option(name, f.name, type=kind, default=default, show_default=True, help=meta["help"])
        func = option(func)
    return func


def _explicit(ctx: click.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The config options the user actually typed (not click's defaults)."""
    out = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):
            out[name] = value
    return out


def _file_values(path: str) -> dict[str, Any]:
    """The fields a config file sets, with the config's types."""
    config = WGANConfig.from_file(path)
    return {key: getattr(config, key) for key in WGANConfig.read_file(path)}


def resolve_config(
    base: WGANConfig, file_values: dict[str, Any], cli_values: dict[str, Any], *, resuming: bool
) -> WGANConfig:
    """Layer the config file and the command line over ``base`` (defaults, or the run's config).

    When resuming, a hyper-parameter that differs from the run's value is refused: the
    checkpoint's weights and optimizer state belong to the run's hyper-parameters.
    """
    defaults = WGANConfig()
    changes: dict[str, Any] = {}
    for source in (file_values, cli_values):
        for key, value in source.items():
            changes[key] = coerce_field(key, value, getattr(defaults, key))
    if resuming:
        for key, value in changes.items():
            if key not in RESUMABLE_FIELDS and value != getattr(base, key):
                raise ConfigError(
                    f"{_option_name(key)} is a hyper-parameter of the run ({_show(getattr(base, key))}) and cannot "
                    f"change on --resume (asked {_show(value)}); start a new run instead"
                )
    elif changes.get("recipe") == "book":  # the book's optimizer settings, unless asked otherwise
        for key, value in BOOK_RMSPROP.items():
            changes.setdefault(key, value)
    return dataclasses.replace(base, **changes).validate()


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else repr(value)


# --- timing ----------------------------------------------------------------------------------


class EpochClock:
    """Per-epoch time without a host sync: CUDA events read at readback, else perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self) -> Any:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start: Any, end: Any) -> float:
        if self.cuda:
            return start.elapsed_time(end) / 1000.0  # both events are complete after the readback
        return end - start


# --- signals ---------------------------------------------------------------------------------


class StopRequest:
    """SIGINT (Ctrl-C) or SIGTERM (what batch schedulers and ``timeout`` send before SIGKILL).

    The first signal asks the loop to finish its epoch, write a checkpoint and stop; a second
    abandons the epoch at once (KeyboardInterrupt), the last good checkpoint staying as it was. The
    exit code is the shell's for the first signal: 130 for SIGINT, 143 for SIGTERM.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def __enter__(self) -> StopRequest:
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave the signals alone
                break
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.signum = signum
        tqdm.write(
            f"{signal.Signals(signum).name}: finishing this epoch, then writing a checkpoint "
            "(signal again to abandon the epoch)",
            file=sys.stderr,
        )


# --- the training loop -----------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    status: str  # completed | interrupted | nan
    exit_code: int
    epoch: int  # last epoch whose metrics were written
    checkpoint_epoch: int | None
    message: str


@dataclasses.dataclass
class PendingEpoch:
    """An epoch whose values are still on the device (read back together every few epochs)."""

    epoch: int
    values: torch.Tensor  # [len(METRICS.device)] on the device
    start: Any
    end: Any


@dataclasses.dataclass(frozen=True)
class Due:
    """What the loop does after an epoch; any of it needs the values read back first."""

    sample: bool
    checkpoint: bool  # last.pt
    numbered: bool  # also checkpoints/epoch_NNNNN.pt
    stop: bool
    evaluate: bool = False  # KID/FID (wgan.evaluation); always with a checkpoint

    @property
    def readback(self) -> bool:
        return self.sample or self.checkpoint or self.stop or self.evaluate


def due_after(epoch: int, config: WGANConfig, stop: StopRequest, minutes_since_checkpoint: float) -> tuple[Due, bool]:
    """(what is due after ``epoch``, whether the metrics are due to be read back anyway)."""
    last = epoch == config.epochs
    numbered = epoch % config.checkpoint_every == 0
    overdue = 0 < config.checkpoint_minutes <= minutes_since_checkpoint
    evaluate = config.eval_every > 0 and (epoch % config.eval_every == 0 or last)
    due = Due(
        sample=epoch % config.sample_every == 0 or last,
        checkpoint=numbered or last or overdue or stop.requested or evaluate,
        numbered=numbered,
        stop=stop.requested,
        evaluate=evaluate,
    )
    return due, epoch % config.log_every == 0


def _write_checkpoint(engine: Engine, folder: RunFolder, epoch: int, numbered: bool) -> None:
    state = engine.state_dict()
    if numbered:
        save_checkpoint(state, folder.epoch_checkpoint(epoch))
    save_checkpoint(state, folder.last_checkpoint)


def _rows(pending: list[PendingEpoch], clock: EpochClock, images_per_epoch: int) -> list[dict[str, Any]]:
    """The one host sync of a readback window: every pending epoch's values as metrics rows."""
    values = torch.stack([p.values for p in pending]).cpu().tolist()
    rows = []
    for p, vals in zip(pending, values):
        seconds = clock.seconds(p.start, p.end)
        row: dict[str, Any] = {"epoch": p.epoch, **dict(zip(DEVICE_METRICS, (float(v) for v in vals)))}
        row["epoch_time"] = seconds
        row["images_per_s"] = images_per_epoch / seconds if seconds > 0 else float("inf")
        rows.append(row)
    return rows


def _first_non_finite(rows: list[dict[str, Any]]) -> int | None:
    return next((i for i, r in enumerate(rows) if not all(math.isfinite(r[k]) for k in DEVICE_METRICS)), None)


def images_per_epoch(config: WGANConfig) -> int:
    """Images through a model per epoch: n_critic x (real + fake batch) + one generator batch."""
    return (2 * config.n_critic + 1) * config.batch_size


class Progress:
    """The tqdm bar on a terminal; a plain line every 30 s elsewhere (logs of batch jobs)."""

    def __init__(self, engine: Engine, enabled: bool | None) -> None:
        self.tty = sys.stderr.isatty() if enabled is None else enabled
        # a pty may report a 0x0 size, and tqdm hides a bar at row >= nrows: shutil falls back to 100x20
        size = shutil.get_terminal_size((100, 20))
        self.bar = tqdm(
            total=engine.config.epochs,
            initial=engine.epoch,
            unit="epoch",
            file=sys.stderr,
            ncols=min(size.columns, 140),
            nrows=max(size.lines, 2),
            disable=not self.tty,
            smoothing=0.05,
            desc="train",
        )
        self.last_plain = time.monotonic()
        self.evaluation: dict[str, float] = {}

    def advance(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()

    def show(self, row: dict[str, Any], total: int) -> None:
        self.evaluation.update({k: row[k] for k in ("kid", "fid") if k in row})  # shown until the next one
        self.bar.set_postfix(
            d_loss=f"{row['d_loss']:.4g}",
            g_loss=f"{row['g_loss']:.4g}",
            W=f"{row['wasserstein_estimate']:.4g}",
            **{k.upper(): f"{v:.4g}" for k, v in self.evaluation.items()},
            refresh=False,
        )
        if not self.tty and time.monotonic() - self.last_plain > 30:
            self.last_plain = time.monotonic()
            print(_summary_values(row, total), file=sys.stderr, flush=True)


class TrainingLoop:
    """The loop of :func:`fit`, its steps named: epoch, readback, record, evaluate, sample,
    checkpoint, stop. Values stay on the device until a readback (every ``log_every`` epochs, and
    at every sample, checkpoint, evaluation, stop or last epoch); a checkpoint is only written
    after its epoch's values were read back and found finite, so last.pt never holds a diverged
    state."""

    def __init__(
        self,
        engine: Engine,
        folder: RunFolder,
        logger: WandbLogger | None,
        progress: bool | None,
        checkpoint_epoch: int | None,
        evaluation: Evaluation | None,
    ) -> None:
        self.engine, self.config, self.folder, self.logger = engine, engine.config, folder, logger
        self.evaluation = evaluation
        self.clock, self.bar = EpochClock(engine.device), Progress(engine, progress)
        self.pending: list[PendingEpoch] = []
        self.checkpoint_epoch = checkpoint_epoch
        self.started = self.last_checkpoint_at = time.monotonic()
        self.first_epoch = engine.epoch
        self.last_row: dict[str, Any] | None = None

    def run(self, run_epoch: Callable[[torch.Tensor], dict[str, torch.Tensor]], images: torch.Tensor) -> Outcome:
        outcome: Outcome | None = None
        with StopRequest() as stop:
            try:
                while self.engine.epoch < self.config.epochs and outcome is None:
                    self.epoch(run_epoch, images)
                    due, log_due = due_after(
                        self.engine.epoch, self.config, stop, (time.monotonic() - self.last_checkpoint_at) / 60
                    )
                    if due.readback or log_due:
                        outcome = self.window(due, stop)
            except KeyboardInterrupt:  # a second signal: the epoch in flight is abandoned
                done = self.last_row["epoch"] if self.last_row else self.first_epoch
                outcome = _abandoned(self.engine, self.folder, done, self.checkpoint_epoch, stop.exit_code)
            finally:
                self.bar.close()
        outcome = outcome or _completed(
            self.engine, self.first_epoch, self.started, self.last_row, self.checkpoint_epoch
        )
        self.folder.update_run_info(
            status=outcome.status,
            epoch=outcome.epoch,
            checkpoint_epoch=outcome.checkpoint_epoch,
            message=outcome.message,
        )
        return outcome

    def epoch(self, run_epoch: Callable[[torch.Tensor], dict[str, torch.Tensor]], images: torch.Tensor) -> None:
        start = self.clock.mark()
        stats = run_epoch(images)
        self.pending.append(
            PendingEpoch(self.engine.epoch, torch.stack([stats[k] for k in DEVICE_METRICS]), start, self.clock.mark())
        )
        self.bar.advance()

    def window(self, due: Due, stop: StopRequest) -> Outcome | None:
        """Read back the pending epochs and do what is due; an Outcome when the loop must stop."""
        rows = _rows(self.pending, self.clock, images_per_epoch(self.config))
        self.pending.clear()
        bad = _first_non_finite(rows)
        if bad is not None:
            self.record(rows[: bad + 1])
            return _diverged(rows[bad], self.folder, self.checkpoint_epoch)
        epoch = rows[-1]["epoch"]
        if due.evaluate and self.evaluation is not None:  # before the row is written: it holds the result
            rows[-1].update(self.evaluation.evaluator(self.engine))
        self.record(rows)
        if due.sample:
            _write_sample(self.engine, self.folder, self.logger, epoch)
        if due.checkpoint:
            _write_checkpoint(self.engine, self.folder, epoch, numbered=due.numbered)
            self.checkpoint_epoch, self.last_checkpoint_at = epoch, time.monotonic()
        if due.evaluate and self.evaluation is not None:
            best = self.evaluation.keep_if_best(self.engine, self.folder, rows[-1])
            tqdm.write(_evaluation_line(rows[-1], best), file=sys.stderr)
        self.folder.update_run_info(status="running", epoch=epoch, checkpoint_epoch=self.checkpoint_epoch)
        if due.stop:
            return Outcome(
                "interrupted",
                stop.exit_code,
                epoch,
                self.checkpoint_epoch,
                f"interrupted after epoch {epoch}; checkpoint written; resume with: "
                f"python -m wgan.train --resume {self.folder.path}",
            )
        return None

    def record(self, rows: list[dict[str, Any]]) -> None:
        """metrics.jsonl, W&B and the progress bar."""
        self.folder.append_metrics(rows)
        if self.logger is not None:
            self.logger.log_metrics(rows)
        self.last_row = rows[-1]
        self.bar.show(rows[-1], self.config.epochs)


def fit(
    engine: Engine,
    images: torch.Tensor,
    folder: RunFolder,
    logger: WandbLogger | None = None,
    *,
    progress: bool | None = None,
    checkpoint_epoch: int | None = None,
    epoch_fn: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None,
    evaluation: Evaluation | None = None,
) -> Outcome:
    """Train from ``engine.epoch`` to ``config.epochs``, recording into ``folder`` (TrainingLoop).

    ``epoch_fn`` replaces ``engine.run_epoch`` (e.g. a CUDA-graph replay of the same epoch); it
    must return the same 0-d device tensors and advance ``engine.epoch``. ``evaluation`` adds
    KID/FID to the rows of its epochs and keeps checkpoints/best.pt (wgan.evaluation).
    """
    loop = TrainingLoop(engine, folder, logger, progress, checkpoint_epoch, evaluation)
    return loop.run(epoch_fn or engine.run_epoch, images)


def _write_sample(engine: Engine, folder: RunFolder, logger: WandbLogger | None, epoch: int) -> None:
    path = save_grid(engine.sample(), folder.sample_path(epoch), nrow=5)
    if logger is not None:
        logger.log_image("samples", path, epoch, caption=f"epoch {epoch}")


def _abandoned(engine: Engine, folder: RunFolder, done: int, checkpoint_epoch: int | None, code: int) -> Outcome:
    resume = (
        f"resume from epoch {checkpoint_epoch} with: python -m wgan.train --resume {folder.path}"
        if checkpoint_epoch
        else "no checkpoint was written"
    )
    return Outcome(
        "interrupted",
        code,
        done,
        checkpoint_epoch,
        f"interrupted during epoch {engine.epoch + 1}; the epoch was abandoned; {resume}",
    )


def _completed(
    engine: Engine, first_epoch: int, started: float, last_row: dict[str, Any] | None, checkpoint_epoch: int | None
) -> Outcome:
    elapsed = time.monotonic() - started
    trained = engine.epoch - first_epoch
    total = engine.config.epochs
    return Outcome(
        "completed",
        EXIT_OK,
        engine.epoch,
        checkpoint_epoch,
        f"trained epochs {first_epoch + 1}-{engine.epoch} of {total} in {elapsed:.1f} s"
        f" ({trained / max(elapsed, 1e-9):.2f} epochs/s); " + (_summary_values(last_row, total) if last_row else ""),
    )


def _evaluation_line(row: dict[str, Any], best: bool) -> str:
    """One line per evaluation: its value and what it cost (its cadence's price)."""
    parts = [f"KID {row['kid']:.4g} +- {row['kid_std']:.2g}" if "kid" in row else ""]
    parts.append(f"FID {row['fid']:.4g}" if "fid" in row else "")
    value = ", ".join(part for part in parts if part)
    return f"evaluation at epoch {row['epoch']}: {value} ({row['eval_seconds']:.1f} s)" + (
        "; the best so far: checkpoints/best.pt" if best else ""
    )


def _summary_values(row: dict[str, Any], total: int) -> str:
    return (
        f"epoch {row['epoch']}/{total}: d_loss {row['d_loss']:.4g}, g_loss {row['g_loss']:.4g}, "
        f"wasserstein {row['wasserstein_estimate']:.4g}, clip_ratio {row['clip_ratio']:.3f}"
    )


def _diverged(row: dict[str, Any], folder: RunFolder, checkpoint_epoch: int | None) -> Outcome:
    bad = ", ".join(f"{k}={row[k]}" for k in DEVICE_METRICS if not math.isfinite(row[k]))
    keep = (
        f"the last good checkpoint ({folder.last_checkpoint}, epoch {checkpoint_epoch}) is kept"
        if checkpoint_epoch
        else "no checkpoint had been written yet"
    )
    return Outcome(
        "nan",
        EXIT_NAN,
        row["epoch"],
        checkpoint_epoch,
        f"training diverged at epoch {row['epoch']} ({bad}); stopped; {keep}",
    )


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
    feature_network: Any = None  # wgan.metrics.FeatureNetwork when --eval-every is on


def _resumed_config(
    folder: RunFolder, file_values: dict[str, Any], explicit: dict[str, Any]
) -> tuple[WGANConfig, dict[str, Any]]:
    """The run's config with the allowed changes, and its last checkpoint (checked against it)."""
    _refuse_a_live_run(folder)
    base = folder.read_config()
    config = resolve_config(base, file_values, explicit, resuming=True)
    checkpoint = load_checkpoint(folder.last_checkpoint)
    ckpt_config = WGANConfig.from_dict(checkpoint["config"])
    for f in dataclasses.fields(WGANConfig):
        if f.name not in RESUMABLE_FIELDS + ("extra",) and getattr(ckpt_config, f.name) != getattr(base, f.name):
            raise CheckpointError(f"{folder.last_checkpoint} and config.json disagree on {f.name}")
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
        print(f"note: the run {message}; resuming from its last checkpoint", file=sys.stderr)
    else:
        print(
            f"note: run.json says the run is training on host {info.get('host')!r}, which cannot be checked "
            "from here; resuming from its last checkpoint",
            file=sys.stderr,
        )


def _prepare(
    config_file: str | None, out: str | None, resume: str | None, explicit: dict[str, Any], made: list[Path]
) -> Setup:
    """Read and check every input; create the run folder (recorded in ``made``) for a new run."""
    file_values = _file_values(config_file) if config_file else {}
    checkpoint = None
    if resume:
        folder = RunFolder.open_existing(resume)
        if out and Path(out).resolve() != folder.path.resolve():
            raise UsageError("--out and --resume name different folders; a resumed run continues in its own folder")
        config, checkpoint = _resumed_config(folder, file_values, explicit)
    else:
        config = resolve_config(WGANConfig(), file_values, explicit, resuming=False)
    if config.data is not None:
        config = dataclasses.replace(config, data=str(Path(config.data).expanduser().resolve()))
    try:
        device = resolve_device(config.device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not resume:
        folder, new = RunFolder.create(Path(out) if out else _default_out())
        made += new
    setup = Setup(config, folder, device, _load_data(config), checkpoint)
    if config.eval_every:  # a missing or foreign FID network is refused before anything is written
        from wgan.metrics import load_feature_network

        setup.feature_network = load_feature_network(config.fid_weights, device=device)
    if resume:
        n_run = folder.read_run_info().get("n_images")
        if n_run is not None and n_run != setup.images.shape[0]:
            raise UsageError(f"the data has {setup.images.shape[0]} images but the run trained on {n_run}")
        # last of the checks: rows after the checkpoint (a crash) go, a corrupt file refuses
        setup.dropped = folder.truncate_metrics(int(checkpoint["epoch"]))
    return setup


def _start_engine(setup: Setup) -> tuple[Engine, torch.Tensor]:
    """The engine, from the checkpoint when resuming; the data set on the device."""
    config, device, folder = setup.config, setup.device, setup.folder
    if device.type == "cuda" and not config.deterministic:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
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


def _evaluation(setup: Setup, engine: Engine) -> Evaluation | None:
    """The run's evaluator (reference features computed once, cached in the run folder) and its
    best-so-far record, read back from checkpoints/best.pt when resuming."""
    if setup.feature_network is None:
        return None
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


def _record_start(setup: Setup, engine: Engine, runner: EpochRunner, logger: WandbLogger) -> None:
    """run.json, W&B and the start-up line: what runs (as resolved, and the epoch runner picked),
    where, by which process."""
    config, folder, resuming = setup.config, setup.folder, setup.checkpoint is not None
    labels = {**engine.labels, "cuda_graph": runner.cuda_graph}
    if not resuming and logger.active:
        logger.log_image("real", folder.real_sample_path, 0, caption="real images")
    logger.update_config({"impl": labels})
    folder.update_run_info(
        status="running",
        epoch=engine.epoch,
        checkpoint_epoch=engine.epoch if resuming else None,
        device=str(setup.device),
        fused=config.fused,
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
        f"run folder {folder.path}: {'resuming at epoch ' + str(engine.epoch) if resuming else 'new run'}, "
        f"{setup.images.shape[0]} images on {setup.device}, {'fused' if config.fused else 'eager'} "
        f"({labels})",
        file=sys.stderr,
    )


def run(config_file: str | None, out: str | None, resume: str | None, explicit: dict[str, Any]) -> int:
    """Everything the CLI does after parsing; returns the exit code."""
    from wgan.data import DataError
    from wgan.metrics import MetricsError

    made: list[Path] = []
    try:
        setup = _prepare(config_file, out, resume, explicit, made)
    except KeyboardInterrupt:
        _remove_made(made)
        print("interrupted before training started", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, DataError, RunFolderError, CheckpointError, UsageError, OSError, MetricsError) as exc:
        _remove_made(made)
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE

    engine, images = _start_engine(setup)
    config, folder = setup.config, setup.folder
    info = folder.read_run_info()
    logger = WandbLogger(config.wandb, folder.path, config.to_dict(), run_id=info.get("wandb_id"), notes=config.notes)
    runner = epoch_runner(engine, images)  # the one place: CUDA-graph replay where it applies, else plain
    evaluation = _evaluation(setup, engine)
    _record_start(setup, engine, runner, logger)
    try:
        outcome = fit(
            engine,
            images,
            folder,
            logger,
            checkpoint_epoch=engine.epoch if setup.checkpoint else None,
            epoch_fn=runner.run,
            evaluation=evaluation,
        )
    except BaseException as exc:
        folder.update_run_info(status="failed", message=_one_line(exc))
        logger.finish(EXIT_FAILED)
        if not isinstance(exc, OSError):
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    if config.report:
        _write_report(folder, logger, setup.device)
    logger.finish(outcome.exit_code)
    if outcome.status == "completed":
        print(f"{outcome.message}; run folder: {folder.path}")
    else:
        print(("error: " if outcome.status == "nan" else "") + outcome.message, file=sys.stderr)
        print(f"run folder: {folder.path}")
    return outcome.exit_code


def _write_report(folder: RunFolder, logger: WandbLogger, device: torch.device) -> None:
    """The Training Analysis Report of the run folder; its summary goes to W&B too.

    A report that cannot be written never turns a finished (or interrupted) training into a
    failure: the checkpoints are safe, and ``python -m wgan.report RUN_DIR`` can retry.
    """
    from wgan.report import write_report

    try:
        summary = write_report(folder.path, device=str(device))
    except Exception as exc:  # the report is an add-on to a run whose state is already saved
        print(
            f"warning: the report could not be written ({_one_line(exc)}); "
            f"retry with: python -m wgan.report {folder.path}",
            file=sys.stderr,
        )
        return
    logger.log_summary(summary.get("wandb", {}))
    print(
        f"report: {summary.get('report', folder.path / 'analysis_report.md')} "
        f"(stability: {summary.get('stability')}, quality: {summary.get('quality')})",
        file=sys.stderr,
    )


def _default_out() -> Path:
    from wgan.run_folder import default_run_dir

    return default_run_dir("runs")


def _remove_made(made: list[Path]) -> None:
    """Remove folders this invocation created, deepest first, if still empty."""
    for path in reversed(made):
        try:
            path.rmdir()
        except OSError:
            break


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}:{where}" if where else exc.strerror
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--config",
    "config_file",
    type=str,
    default=None,
    metavar="FILE",
    help="JSON or YAML file of config fields (options given here override it)",
)
@click.option("--out", type=str, default=None, metavar="DIR", help="run folder to create  [default: runs/<UTC time>]")
@click.option(
    "--resume",
    type=str,
    default=None,
    metavar="RUN_DIR",
    help="continue the run in RUN_DIR from its last checkpoint (only execution options may change)",
)
@_config_options
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, out: str | None, resume: str | None, **values: Any) -> None:
    """Train the WGAN (weight clipping) on CIFAR-10 horses or your own images."""
    try:
        code = run(config_file, out, resume, _explicit(ctx, values))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    ctx.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``wgan-train``)."""
    cli.main(args=argv, prog_name="python -m wgan.train")


if __name__ == "__main__":
    main()
