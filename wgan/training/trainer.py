"""A whole training invocation: set up, train, report; the exit code for the command line.

``wgan.train`` (the CLI) parses options and calls :func:`train`; everything after parsing is here.
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from wgan.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UserError, is_disk_error, one_line
from wgan.run.folder import RunFolder
from wgan.training.cuda_graph import epoch_runner
from wgan.training.loop import fit
from wgan.training.setup import Claim, Setup, prepare, record_start, start_engine, start_evaluation
from wgan.training.wandb_log import WandbLogger


def train(config_file: str | None, out: str | None, resume: str | None, explicit: dict[str, Any]) -> int:
    """Everything the CLI does after parsing; returns the exit code. The run folder stays locked
    (one process per folder) until the training, its records and its report are done."""
    claim = Claim()
    try:
        setup = prepare(config_file, out, resume, explicit, claim)
    except KeyboardInterrupt:
        claim.give_back()
        print("interrupted before training started", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UserError, OSError) as exc:
        claim.give_back()
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    assert claim.lock is not None
    with claim.lock:
        return _train_locked(setup)


def _train_locked(setup: Setup) -> int:
    config, folder = setup.config, setup.folder
    try:
        engine, images = start_engine(setup)
        info = folder.read_run_info()
        logger = WandbLogger(
            config.wandb, folder.path, config.to_dict(), run_id=info.get("wandb_id"), notes=config.notes
        )
        runner = epoch_runner(engine, images)  # the one place: CUDA-graph replay where it applies, else plain
        evaluation = start_evaluation(setup, engine)
        record_start(setup, engine, runner, logger)
    except (OSError, UserError) as exc:  # a full or read-only disk, a foreign FID cache...
        return _failed(folder, exc, "before training started")
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
        logger.finish(EXIT_FAILED)
        if not isinstance(exc, OSError):
            _record_failure(folder, exc)
            raise
        return _failed(folder, exc, "during training")
    if config.report:
        _write_report(folder, logger, setup.device)
    logger.finish(outcome.exit_code)
    if outcome.status == "completed":
        print(f"{outcome.message}; run folder: {folder.path}")
    else:
        print(("error: " if outcome.status == "nan" else "") + outcome.message, file=sys.stderr)
        print(f"run folder: {folder.path}")
    return outcome.exit_code


def _failed(folder: RunFolder, exc: BaseException, when: str) -> int:
    """One ``error:`` line for a failure of the machine (disk full, read-only) or of a file; run.json
    says ``failed`` with the same line where it can still be written. The checkpoints on disk stay."""
    message = f"{one_line(exc)} ({when})"
    if is_disk_error(exc):
        message += "; free space or make the folder writable, then: python -m wgan.train --resume " + str(folder.path)
    recorded = _record_failure(folder, exc, message)
    print(f"error: {message}" + ("" if recorded else f"; {folder.run_json.name} could not be updated"), file=sys.stderr)
    return EXIT_USAGE if isinstance(exc, UserError) else EXIT_FAILED


def _record_failure(folder: RunFolder, exc: BaseException, message: str | None = None) -> bool:
    """run.json ``failed`` with a one-line message; False when even that cannot be written."""
    try:
        folder.update_run_info(status="failed", message=message or one_line(exc))
    except (OSError, UserError, ValueError):
        return False
    return True


def _write_report(folder: RunFolder, logger: WandbLogger, device: torch.device) -> None:
    """The Training Analysis Report of the run folder; its summary goes to W&B too.

    A report that cannot be written never turns a finished (or interrupted) training into a
    failure: the checkpoints are safe, and ``python -m wgan.report RUN_DIR`` can retry.
    """
    from wgan.report.writer import write_report

    try:
        summary = write_report(folder.path, device=str(device))
    except Exception as exc:  # the report is an add-on to a run whose state is already saved
        print(
            f"warning: the report could not be written ({one_line(exc)}); "
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
