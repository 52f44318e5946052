"""``python -m wgan.report RUN_DIR``: the Training Analysis Report of a run, from its folder alone.

``python -m wgan.report SWEEP_DIR [OTHER_SWEEP_DIR]``: the sweep report (wgan.report.sweep) of a sweep
folder or of a folder of run folders; two folders are compared.

The command line only; the report is made in :mod:`wgan.report.writer`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from wgan.errors import OneLineCommand, UserError, one_line
from wgan.report.sweep import is_sweep_like, write_sweep_report
from wgan.report.writer import write_report


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=True, dir_okay=True, path_type=Path))
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
def main(run_dirs: tuple[Path, ...], fid_weights: Path | None, n_samples: int, device: str, fid: bool | None) -> None:
    """Write RUN_DIR/analysis_report.md and RUN_DIR/plots/*.png from a run folder; for a sweep folder
    (or a folder of run folders; two to compare them), SWEEP_DIR/sweep_report.md."""
    options = dict(fid_weights=fid_weights, n_samples=n_samples, device=device, fid=fid)
    try:
        if len(run_dirs) > 1 or is_sweep_like(run_dirs[0]):
            sweep = write_sweep_report(run_dirs, **options)
            click.echo(f"{sweep['report']}: {sweep['members']} runs")
            return
        result = write_report(run_dirs[0], **options)
    except UserError as exc:
        click.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"{result['report']}: {result['stability']} | {result['quality']} | {result['score']}")


if __name__ == "__main__":
    main()
