"""A whole training invocation: set up, train, report; the exit code for the command line.

``wgan.train`` (the CLI) parses options and calls :func:`train`; everything after parsing is here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from wgan.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, UserError, one_line
from wgan.run.folder import RunFolder
from wgan.training.cuda_graph import epoch_runner
from wgan.training.loop import fit
from wgan.training.setup import prepare, record_start, start_engine, start_evaluation
from wgan.training.wandb_log import WandbLogger


def train(config_file: str | None, out: str | None, resume: str | None, explicit: dict[str, Any]) -> int:
    """Everything the CLI does after parsing; returns the exit code."""
    made: list[Path] = []
    try:
        setup = prepare(config_file, out, resume, explicit, made)
    except KeyboardInterrupt:
        _remove_made(made)
        print("interrupted before training started", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UserError, OSError) as exc:
        _remove_made(made)
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE

    engine, images = start_engine(setup)
    config, folder = setup.config, setup.folder
    info = folder.read_run_info()
    logger = WandbLogger(config.wandb, folder.path, config.to_dict(), run_id=info.get("wandb_id"), notes=config.notes)
    runner = epoch_runner(engine, images)  # the one place: CUDA-graph replay where it applies, else plain
    evaluation = start_evaluation(setup, engine)
    record_start(setup, engine, runner, logger)
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
        folder.update_run_info(status="failed", message=one_line(exc))
        logger.finish(EXIT_FAILED)
        if not isinstance(exc, OSError):
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
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


def _remove_made(made: list[Path]) -> None:
    """Remove folders this invocation created, deepest first, if still empty."""
    for path in reversed(made):
        try:
            path.rmdir()
        except OSError:
            break
