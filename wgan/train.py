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
import json
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
from wgan.config import ConfigError, WGANConfig, _coerce
from wgan.devices import resolve_device
from wgan.engine import DEVICE_METRICS, Engine, build_engine
from wgan.images import save_grid, to_uint8
from wgan.run_folder import RunFolder, RunFolderError, utc_now
from wgan.wandb_log import WandbLogger

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NAN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# Fields that may change when a run is resumed: they change how the run is executed and
# recorded, not what it computes (eager and fused compute the same thing). ``data`` may point at
# a moved copy of the data set; the image count must then match the run's.
EXECUTION_FIELDS = ("epochs", "fused", "device", "cuda_graph", "tf32", "channels_last", "amp", "deterministic",
                    "sample_every",
                    "checkpoint_every", "log_every", "wandb", "report", "notes")
RESUMABLE_FIELDS = EXECUTION_FIELDS + ("data",)
METRIC_KEYS = ("epoch",) + DEVICE_METRICS + ("epoch_time", "images_per_s")
REFERENCE_MAX, REFERENCE_SEED = 2048, 20240  # reference.npz: min(N, 2048) images, fixed draw

FIELD_HELP = {
    "data": "training data: CIFAR-10 archive/folder, image folder or .npz [default: CIFAR-10 cache, downloaded]",
    "data_class": "CIFAR-10 class, by name or index",
    "data_split": "CIFAR-10 split",
    "resize": "resize images of another size instead of refusing them",
    "image_size": "image side in pixels",
    "image_channels": "image channels (3 = RGB, 1 = grey)",
    "critic_filters": "critic convolution filters, comma-separated",
    "critic_kernel_size": "critic convolution kernel size",
    "critic_strides": "critic convolution strides, one per filter",
    "critic_leaky_slope": "critic LeakyReLU negative slope",
    "z_dim": "latent dimension",
    "generator_initial_size": "side of the generator's first feature map",
    "generator_initial_channels": "channels of the generator's first feature map",
    "generator_filters": "generator convolution filters, comma-separated (last = image channels)",
    "generator_kernel_size": "generator convolution kernel size",
    "generator_upsample": "generator upsampling factors, one per filter (1 = transposed conv)",
    "generator_leaky_slope": "generator LeakyReLU negative slope",
    "generator_bn_momentum": "generator batch-norm momentum (PyTorch convention; Keras 0.8 = 0.2)",
    "generator_bn_eps": "generator batch-norm epsilon",
    "weight_init_std": "std of the N(0, std) weight initialisation",
    "optimizer": "optimizer of both models",
    "lr_critic": "critic learning rate",
    "lr_generator": "generator learning rate",
    "rmsprop_alpha": "RMSprop smoothing constant (Keras rho)",
    "rmsprop_eps": "RMSprop epsilon (added after the square root)",
    "n_critic": "critic steps per generator step (one epoch = n_critic + 1 steps)",
    "clip_threshold": "critic weights are clipped to [-clip, clip] after every critic step",
    "batch_size": "images per batch",
    "epochs": "total epochs of the run (a resumed run trains up to this many)",
    "seed": "random seed (weights, batches, z)",
    "fused": "use the project's fused kernels (same algorithm as the eager reference)",
    "device": "auto, cpu, cuda or cuda:N",
    "cuda_graph": "with --fused on CUDA, capture one critic and one generator step and replay them",
    "tf32": "CUDA: TF32 tensor cores for convolutions and matmuls (faster; ~1e-3 relative error)",
    "channels_last": "NHWC memory layout for activations and conv weights",
    "amp": "autocast the forward passes: none or bf16 (weights, optimizer state and losses stay fp32)",
    "deterministic": "bit-reproducible runs: one CPU thread (oneDNN's threaded convs vary run to run), "
                     "deterministic cuDNN",
    "sample_every": "write a 5x5 sample grid every this many epochs (and at the last)",
    "checkpoint_every": "write checkpoints/epoch_NNNNN.pt and last.pt every this many epochs",
    "log_every": "read metrics back from the device every this many epochs",
    "wandb": "Weights & Biases: auto = online with credentials, else offline",
    "report": "write analysis_report.md and plots/ when training ends or is interrupted",
    "notes": "free text stored with the run",
}
CHOICES = {"amp": ("none", "bf16"), "wandb": ("auto", "online", "offline", "disabled"),
           "data_split": ("train", "test", "train+test"), "optimizer": ("rmsprop",)}


class UsageError(ValueError):
    """A bad command line that no other module's error type covers; one-line message."""


# --- CLI options generated from the config ------------------------------------------------------

def _option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _config_options(func: Any) -> Any:
    defaults = WGANConfig()
    for f in reversed([f for f in dataclasses.fields(WGANConfig) if f.name != "extra"]):
        default = getattr(defaults, f.name)
        help_text = FIELD_HELP.get(f.name, f.name.replace("_", " "))
        name = _option_name(f.name)
        if isinstance(default, bool):
            option = click.option(f"{name}/--no-{name[2:]}", f.name, default=default, show_default=True,
                                  help=help_text)
        elif isinstance(default, tuple):
            option = click.option(name, f.name, type=str, default=",".join(map(str, default)), show_default=True,
                                  help=help_text)
        elif f.name in CHOICES:
            option = click.option(name, f.name, type=click.Choice(CHOICES[f.name]), default=default,
                                  show_default=True, help=help_text)
        elif f.name == "data":
            option = click.option(name, f.name, type=str, default=None, metavar="PATH", help=help_text)
        else:
            kind = {int: click.INT, float: click.FLOAT, str: click.STRING}[type(default)]
            option = click.option(name, f.name, type=kind, default=default, show_default=True, help=help_text)
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
    """The fields a config file sets (validated through WGANConfig.from_file first)."""
    config = WGANConfig.from_file(path)
    text = Path(path).read_text()
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(text)
    else:
        raw = json.loads(text)
    return {key: getattr(config, key) for key in raw}


def resolve_config(base: WGANConfig, file_values: dict[str, Any], cli_values: dict[str, Any], *,
                   resuming: bool) -> WGANConfig:
    """Layer the config file and the command line over ``base`` (defaults, or the run's config).

    When resuming, a hyper-parameter that differs from the run's value is refused: the
    checkpoint's weights and optimizer state belong to the run's hyper-parameters.
    """
    defaults = WGANConfig()
    changes: dict[str, Any] = {}
    for source in (file_values, cli_values):
        for key, value in source.items():
            changes[key] = _coerce(key, value, getattr(defaults, key))
    if resuming:
        for key, value in changes.items():
            if key not in RESUMABLE_FIELDS and value != getattr(base, key):
                raise ConfigError(
                    f"{_option_name(key)} is a hyper-parameter of the run ({_show(getattr(base, key))}) and cannot "
                    f"change on --resume (asked {_show(value)}); start a new run instead")
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


# --- SIGINT ----------------------------------------------------------------------------------

class StopRequest:
    """First Ctrl-C: finish the epoch, checkpoint, exit. Second: abandon the epoch at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("interrupt: finishing this epoch, then writing a checkpoint (Ctrl-C again to abandon it)",
                   file=sys.stderr)


# --- the training loop -----------------------------------------------------------------------

@dataclasses.dataclass
class Outcome:
    status: str  # completed | interrupted | nan
    exit_code: int
    epoch: int  # last epoch whose metrics were written
    checkpoint_epoch: int | None
    message: str


def _write_checkpoint(engine: Engine, folder: RunFolder, epoch: int, numbered: bool) -> None:
    state = engine.state_dict()
    if numbered:
        save_checkpoint(state, folder.epoch_checkpoint(epoch))
    save_checkpoint(state, folder.last_checkpoint)


def _rows(epochs: list[int], stacked: torch.Tensor, times: list[float], images_per_epoch: int
          ) -> list[dict[str, Any]]:
    values = stacked.tolist()
    rows = []
    for epoch, vals, seconds in zip(epochs, values, times):
        row: dict[str, Any] = {"epoch": epoch}
        row.update(zip(DEVICE_METRICS, (float(v) for v in vals)))
        row["epoch_time"] = seconds
        row["images_per_s"] = images_per_epoch / seconds if seconds > 0 else float("inf")
        rows.append(row)
    return rows


def images_per_epoch(config: WGANConfig) -> int:
    """Images through a model per epoch: n_critic x (real + fake batch) + one generator batch."""
    return (2 * config.n_critic + 1) * config.batch_size


def fit(engine: Engine, images: torch.Tensor, folder: RunFolder, logger: WandbLogger | None = None, *,
        progress: bool | None = None, checkpoint_epoch: int | None = None,
        epoch_fn: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None) -> Outcome:
    """Train from ``engine.epoch`` to ``config.epochs``, recording into ``folder``.

    ``epoch_fn`` replaces ``engine.run_epoch`` (e.g. a CUDA-graph replay of the same epoch); it
    must return the same 0-d device tensors and advance ``engine.epoch``.

    Values stay on the device until a readback (every ``log_every`` epochs, and at every sample,
    checkpoint, stop or last epoch); a checkpoint is only written after its epoch's values were
    read back and found finite, so last.pt never holds a diverged state.
    """
    config = engine.config
    total = config.epochs
    clock = EpochClock(engine.device)
    per_epoch = images_per_epoch(config)
    pending: list[tuple[int, torch.Tensor, Any, Any]] = []
    last_row: dict[str, Any] | None = None
    tty = sys.stderr.isatty() if progress is None else progress
    # a pty may report a 0x0 size, and tqdm hides a bar at row >= nrows: shutil falls back to 100x20
    size = shutil.get_terminal_size((100, 20))
    bar = tqdm(total=total, initial=engine.epoch, unit="epoch", file=sys.stderr, ncols=min(size.columns, 140),
               nrows=max(size.lines, 2), disable=not tty, smoothing=0.05, desc="train")
    last_plain = time.monotonic()
    started = time.monotonic()
    first_epoch = engine.epoch
    outcome: Outcome | None = None
    run_epoch = epoch_fn or engine.run_epoch

    with StopRequest() as stop:
        try:
            while engine.epoch < total:
                start = clock.mark()
                stats = run_epoch(images)
                end = clock.mark()
                epoch = engine.epoch
                pending.append((epoch, torch.stack([stats[k] for k in DEVICE_METRICS]), start, end))
                bar.update(1)
                checkpoint_due = epoch % config.checkpoint_every == 0 or epoch == total
                sample_due = epoch % config.sample_every == 0 or epoch == total
                stopping = stop.requested  # one snapshot: a signal during the readback waits an epoch
                if not (epoch % config.log_every == 0 or checkpoint_due or sample_due or stopping):
                    continue

                # ---- readback: the one host sync of this window ----
                stacked = torch.stack([p[1] for p in pending]).cpu()
                times = [clock.seconds(p[2], p[3]) for p in pending]
                rows = _rows([p[0] for p in pending], stacked, times, per_epoch)
                pending.clear()
                bad = next((i for i, r in enumerate(rows) if not all(math.isfinite(r[k]) for k in DEVICE_METRICS)),
                           None)
                if bad is not None:
                    rows = rows[:bad + 1]
                folder.append_metrics(rows)
                if logger is not None:
                    logger.log_metrics(rows)
                last_row = rows[-1]
                if bad is not None:
                    outcome = _diverged(rows[-1], folder, checkpoint_epoch)
                    break
                bar.set_postfix(d_loss=f"{last_row['d_loss']:.4g}", g_loss=f"{last_row['g_loss']:.4g}",
                                W=f"{last_row['wasserstein_estimate']:.4g}", refresh=False)
                if not tty and time.monotonic() - last_plain > 30:
                    last_plain = time.monotonic()
                    print(_summary_values(last_row, total), file=sys.stderr, flush=True)

                if sample_due:
                    path = save_grid(engine.sample(), folder.sample_path(epoch), nrow=5)
                    if logger is not None:
                        logger.log_image("samples", path, epoch, caption=f"epoch {epoch}")
                if checkpoint_due or stopping:
                    _write_checkpoint(engine, folder, epoch, numbered=epoch % config.checkpoint_every == 0)
                    checkpoint_epoch = epoch
                folder.update_run_info(status="running", epoch=epoch, checkpoint_epoch=checkpoint_epoch)
                if stopping:
                    outcome = Outcome("interrupted", EXIT_INTERRUPTED, epoch, checkpoint_epoch,
                                      f"interrupted after epoch {epoch}; checkpoint written; resume with: "
                                      f"python -m wgan.train --resume {folder.path}")
                    break
        except KeyboardInterrupt:  # a second Ctrl-C: the epoch in flight is abandoned
            done = last_row["epoch"] if last_row else first_epoch
            resume = (f"resume from epoch {checkpoint_epoch} with: python -m wgan.train --resume {folder.path}"
                      if checkpoint_epoch else "no checkpoint was written")
            outcome = Outcome("interrupted", EXIT_INTERRUPTED, done, checkpoint_epoch,
                              f"interrupted during epoch {engine.epoch + 1}; the epoch was abandoned; {resume}")
        finally:
            bar.close()

    if outcome is None:
        elapsed = time.monotonic() - started
        trained = engine.epoch - first_epoch
        outcome = Outcome("completed", EXIT_OK, engine.epoch, checkpoint_epoch,
                          f"trained epochs {first_epoch + 1}-{engine.epoch} of {total} in {elapsed:.1f} s"
                          f" ({trained / max(elapsed, 1e-9):.2f} epochs/s); "
                          + (_summary_values(last_row, total) if last_row else ""))
    folder.update_run_info(status=outcome.status, epoch=outcome.epoch, checkpoint_epoch=outcome.checkpoint_epoch,
                           message=outcome.message)
    return outcome


def _summary_values(row: dict[str, Any], total: int) -> str:
    return (f"epoch {row['epoch']}/{total}: d_loss {row['d_loss']:.4g}, g_loss {row['g_loss']:.4g}, "
            f"wasserstein {row['wasserstein_estimate']:.4g}, clip_ratio {row['clip_ratio']:.3f}")


def _diverged(row: dict[str, Any], folder: RunFolder, checkpoint_epoch: int | None) -> Outcome:
    bad = ", ".join(f"{k}={row[k]}" for k in DEVICE_METRICS if not math.isfinite(row[k]))
    keep = (f"the last good checkpoint ({folder.last_checkpoint}, epoch {checkpoint_epoch}) is kept"
            if checkpoint_epoch else "no checkpoint had been written yet")
    return Outcome("nan", EXIT_NAN, row["epoch"], checkpoint_epoch,
                   f"training diverged at epoch {row['epoch']} ({bad}); stopped; {keep}")


# --- setting a run up ------------------------------------------------------------------------

def _reference_indices(n: int) -> np.ndarray:
    return np.random.default_rng(REFERENCE_SEED).permutation(n)[:min(n, REFERENCE_MAX)]


def start_run(config: WGANConfig, images: torch.Tensor, folder: RunFolder) -> None:
    """Write what a fresh run folder holds before its first epoch (``images`` on the CPU)."""
    folder.write_config(config)
    idx = _reference_indices(images.shape[0])
    ref = images[torch.from_numpy(idx)]
    folder.write_reference(to_uint8(ref))
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

    return load_images(config.data, data_class=config.data_class, split=config.data_split,
                       image_size=config.image_size, channels=config.image_channels, resize=config.resize)


def run(config_file: str | None, out: str | None, resume: str | None, explicit: dict[str, Any]) -> int:
    """Everything the CLI does after parsing; returns the exit code."""
    from wgan.data import DataError

    made: list[Path] = []
    setup_errors = (ConfigError, DataError, RunFolderError, CheckpointError, UsageError, OSError)
    try:
        file_values = _file_values(config_file) if config_file else {}
        if resume:
            folder = RunFolder.open_existing(resume)
            if out and Path(out).resolve() != folder.path.resolve():
                raise UsageError("--out and --resume name different folders; a resumed run continues in its own folder")
            base = folder.read_config()
            config = resolve_config(base, file_values, explicit, resuming=True)
            checkpoint = load_checkpoint(folder.last_checkpoint)
            ckpt_config = WGANConfig.from_dict(checkpoint["config"])
            for f in dataclasses.fields(WGANConfig):
                same = getattr(ckpt_config, f.name) == getattr(base, f.name)
                if f.name not in RESUMABLE_FIELDS + ("extra",) and not same:
                    raise CheckpointError(f"{folder.last_checkpoint} and config.json disagree on {f.name}")
            done = int(checkpoint["epoch"])
            if done >= config.epochs:
                raise UsageError(f"the run in {folder.path} has already trained {done} epochs; "
                                 f"pass --epochs N with N > {done} to train more")
        else:
            config = resolve_config(WGANConfig(), file_values, explicit, resuming=False)
        if config.data is not None:
            config = dataclasses.replace(config, data=str(Path(config.data).expanduser().resolve()))
        try:
            device = resolve_device(config.device)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not resume:
            folder, made = RunFolder.create(Path(out) if out else _default_out())
        images = _load_data(config)
        if resume:
            n_run = folder.read_run_info().get("n_images")
            if n_run is not None and n_run != images.shape[0]:
                raise UsageError(f"the data has {images.shape[0]} images but the run trained on {n_run}")
            # last of the checks: rows after the checkpoint (a crash) go, a corrupt file refuses
            dropped = folder.truncate_metrics(done)
    except KeyboardInterrupt:
        _remove_made(made)
        print("interrupted before training started", file=sys.stderr)
        return EXIT_INTERRUPTED
    except setup_errors as exc:
        _remove_made(made)
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE

    if device.type == "cuda" and not config.deterministic:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    engine = build_engine(config, device)
    images_cpu, images = images, engine.prepare_images(images)
    checkpoint_epoch = None
    if resume:
        exact = engine.load_state_dict(checkpoint)
        checkpoint_epoch = engine.epoch
        if not exact:
            print(f"warning: the run's batch sampler ran on {checkpoint['rng'].get('sampler_device')}, now on "
                  f"{device.type}: training continues reproducibly but not with the uninterrupted run's draws",
                  file=sys.stderr)
        if dropped:
            print(f"note: dropped {dropped} metrics row(s) after the checkpoint's epoch {engine.epoch}",
                  file=sys.stderr)
        folder.write_config(config)
    else:
        start_run(config, images_cpu, folder)
    del images_cpu

    info = folder.read_run_info()
    logger = WandbLogger(config.wandb, folder.path, config.to_dict(), run_id=info.get("wandb_id"),
                         notes=config.notes)
    if not resume and logger.active:
        logger.log_image("real", folder.real_sample_path, 0, caption="real images")
    folder.update_run_info(status="running", epoch=engine.epoch, checkpoint_epoch=checkpoint_epoch,
                           device=str(device), fused=config.fused, impl=engine.impl, wandb_url=logger.url,
                           wandb_id=logger.run_id, wandb_mode=logger.mode if logger.active else "disabled",
                           n_images=int(images.shape[0]), message=None, **_versions(),
                           **({} if resume else {"started": utc_now()}))
    print(f"run folder {folder.path}: {'resuming at epoch ' + str(engine.epoch) if resume else 'new run'}, "
          f"{images.shape[0]} images on {device}, {'fused' if config.fused else 'eager'} ({engine.impl})",
          file=sys.stderr)
    try:
        outcome = fit(engine, images, folder, logger, checkpoint_epoch=checkpoint_epoch,
                      epoch_fn=engine.epoch_runner(images))
    except OSError as exc:
        folder.update_run_info(status="failed", message=_one_line(exc))
        logger.finish(EXIT_FAILED)
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except BaseException as exc:
        folder.update_run_info(status="failed", message=_one_line(exc))
        logger.finish(EXIT_FAILED)
        raise
    if config.report:
        _write_report(folder, logger, device)
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
        print(f"warning: the report could not be written ({_one_line(exc)}); "
              f"retry with: python -m wgan.report {folder.path}", file=sys.stderr)
        return
    logger.log_summary(summary.get("wandb", {}))
    print(f"report: {summary.get('report', folder.path / 'analysis_report.md')} "
          f"(stability: {summary.get('stability')}, quality: {summary.get('quality')})", file=sys.stderr)


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
@click.option("--config", "config_file", type=str, default=None, metavar="FILE",
              help="JSON or YAML file of config fields (options given here override it)")
@click.option("--out", type=str, default=None, metavar="DIR", help="run folder to create  [default: runs/<UTC time>]")
@click.option("--resume", type=str, default=None, metavar="RUN_DIR",
              help="continue the run in RUN_DIR from its last checkpoint (only execution options may change)")
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
