"""``python -m wgan.check``: the self-check to run on a new machine, and the heart of the GPU check.

The command line only; the checks are in :mod:`wgan.training.selfcheck` (kernel parity against
the error bounds, fused-vs-eager epoch parity in float64, epoch times, torch.compile on request).
Any parity failure makes the exit status 1; a bad option is one ``error:`` line and status 2.
On a CPU the Triton interpreter is switched on before Triton is imported, unless
``TRITON_INTERPRET`` is already set.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import click
import torch

from wgan.devices import resolve_device
from wgan.errors import EXIT_FAILED, EXIT_OK, OneLineCommand, OneLineError, UserError, one_line
from wgan.training.selfcheck import DEFAULT_SECTIONS, SECTIONS, run_check


def _device(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except UserError as exc:
        raise OneLineError(one_line(exc)) from None


def _check_writable(path: Path, option: str) -> None:
    """An output file can be written: found before minutes of checks, not after them."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
        if path.exists():
            open(path, "ab").close()  # opened for writing, not changed
    except OSError as exc:
        raise OneLineError(f"cannot write {option} {path}: {exc.strerror or exc}") from None


JSONL_PATH = click.Path(dir_okay=False, path_type=Path)


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.option("--quick", is_flag=True, help="small batches and few repeats (under a minute on a CPU)")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write every figure to this JSON file",
)
@click.option("--jsonl", "jsonl_path", type=JSONL_PATH, help="append each result as one JSON line, flushed at once")
@click.option(
    "--sections",
    default=",".join(DEFAULT_SECTIONS),
    show_default=True,
    help=f"comma-separated, run in the order given: {', '.join(SECTIONS)}",
)
@click.option("--timing/--no-timing", default=True, show_default=True, help="the timing section")
def cli(device: str, quick: bool, json_path: Path | None, jsonl_path: Path | None, sections: str, timing: bool) -> None:
    """Check this machine: kernel parity, fused-vs-eager epoch parity, timings."""
    chosen = tuple(s for s in sections.replace(" ", "").split(",") if s)
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown or not chosen:
        raise click.UsageError(f"--sections: choose from {', '.join(SECTIONS)} (got {sections!r})")
    if not timing:
        chosen = tuple(s for s in chosen if s != "timing")
    dev = _device(device)
    for option, path in (("--json", json_path), ("--jsonl", jsonl_path)):
        if path is not None:
            _check_writable(path, option)
    if dev.type == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (nothing imported it yet)
    report = run_check(dev, quick, chosen, jsonl_path)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(
            json.dumps(
                {
                    "device": report.device,
                    "environment": report.environment,
                    "results": [asdict(r) for r in report.results],
                },
                indent=2,
            )
            + "\n"
        )
    failed = report.failed
    print(
        f"wgan.check: {len(report.results) - len(failed)} of {len(report.results)} lines ok"
        + (f"; FAILED: {', '.join(r.name for r in failed)}" if failed else ""),
        flush=True,
    )
    sys.exit(EXIT_FAILED if failed else EXIT_OK)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``wgan-check``)."""
    cli.main(args=argv, prog_name="python -m wgan.check")


if __name__ == "__main__":
    main()
