"""The training loop: epochs, readbacks, records, evaluations, samples, checkpoints and stops.

:func:`fit` trains an engine from its epoch to ``config.epochs`` into a run folder. Values stay on
the device between readbacks; a checkpoint is written only after its epoch's values were read back
and found finite, so last.pt never holds a diverged state. Signals (:class:`StopRequest`) finish the
epoch and checkpoint; the progress bar (:class:`Progress`) is the loop's face.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from wgan.config import WGANConfig
from wgan.errors import EXIT_NAN, EXIT_OK
from wgan.run.checkpoint import save_checkpoint
from wgan.run.folder import RunFolder
from wgan.run.images import save_grid
from wgan.training.engine import DEVICE_METRICS, Engine
from wgan.training.evaluation import Evaluation
from wgan.training.wandb_log import WandbLogger

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
    evaluate: bool = False  # KID/FID (wgan.training.evaluation); always with a checkpoint

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
        self.plain(lambda: _summary_values(row, total))

    def plain(self, line: Callable[[], str]) -> None:
        """Off a terminal (a batch job's log), ``line()`` at most every 30 s instead of the bar."""
        if not self.tty and time.monotonic() - self.last_plain > 30:
            self.last_plain = time.monotonic()
            print(line(), file=sys.stderr, flush=True)


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
        self.folder.append_epoch_log(rows)
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
    KID/FID to the rows of its epochs and keeps checkpoints/best.pt (wgan.training.evaluation).
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
