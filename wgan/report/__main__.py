"""``python -m wgan.report RUN_DIR``: the Training Analysis Report of a run, from its folder alone.

The command line only; the report is made in :mod:`wgan.report.writer`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from wgan.errors import OneLineCommand, UserError, one_line
from wgan.report.writer import write_report


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(file_okay=True, dir_okay=True, path_type=Path))
@click.option(
    "--fid-weights",
    type=click.Path(path_type=Path),
    default=None,
    help="Local Inception-v3 TorchScript file for FID/KID (nothing is downloaded); trusted code: it runs when "
    "loaded, so give only a file you trust [default: the file `make fid-weights` fetched, sha256-checked first].",
)
@click.option(
    "--samples",
    "n_samples",
    type=int,
    default=256,
    show_default=True,
    help="Samples drawn from each checkpoint's generator (fixed seed).",
)
@click.option("--device", default="cpu", show_default=True, help="Where the generator runs: cpu, cuda, cuda:N or auto.")
@click.option(
    "--fid/--no-fid",
    default=None,
    help="Measure FID/KID against the real-vs-real floor [default: when the run evaluated (--eval-every) "
    "or --fid-weights is given]. Minutes on a CPU: every image goes through Inception once.",
)
def main(run_dir: Path, fid_weights: Path | None, n_samples: int, device: str, fid: bool | None) -> None:
    """Write RUN_DIR/analysis_report.md and RUN_DIR/plots/*.png from a run folder."""
    try:
        result = write_report(run_dir, fid_weights=fid_weights, n_samples=n_samples, device=device, fid=fid)
    except UserError as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"{result['report']}: {result['stability']} | {result['quality']} | {result['score']}")


if __name__ == "__main__":
    main()
