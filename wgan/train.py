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
import sys
from typing import Any

import click
from click.core import ParameterSource

from wgan.config import RECIPE_DEFAULTS, WGANConfig, option_name
from wgan.errors import EXIT_INTERRUPTED, OneLineCommand
from wgan.run.folder import is_sweep_folder
from wgan.sweep import SweepList, is_sweep, split_values
from wgan.training.trainer import train

# --- CLI options generated from the config ------------------------------------------------------


class OneOrList(click.ParamType):
    """A value, or a comma list of values (a sweep: wgan.sweep) each converted by ``inner``."""

    def __init__(self, inner: click.ParamType) -> None:
        self.inner, self.name = inner, inner.name

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, str) and "," in value:
            values = [self.inner.convert(v, param, ctx) for v in split_values(value)]
            return SweepList(values) if len(values) > 1 else values[0]
        return self.inner.convert(value, param, ctx)

    @property
    def choices(self) -> Any:
        """The inner Choice's choices (help and tests read them)."""
        return getattr(self.inner, "choices", None)

    def get_metavar(self, param: Any, ctx: Any = None) -> str | None:
        return self.inner.get_metavar(param, ctx) if ctx is not None else None


def _config_options(func: Any) -> Any:
    """One click option per config field, with the field's own help, choices and default."""
    for f in reversed([f for f in dataclasses.fields(WGANConfig) if f.name != "extra"]):
        default, meta, name = f.default, f.metadata, option_name(f.name)
        if isinstance(default, bool):
            option = click.option(
                f"{name}/--no-{name[2:]}", f.name, default=default, show_default=True, help=meta["help"]
            )
        elif isinstance(default, tuple):
            option = click.option(
                name, f.name, type=str, default=",".join(map(str, default)), show_default=True, help=meta["help"]
            )
        elif meta.get("choices"):
            kind = OneOrList(click.Choice(meta["choices"]))
            option = click.option(name, f.name, type=kind, default=default, show_default=True, help=meta["help"])
        elif default is None and f.name in RECIPE_DEFAULTS["wgan"]:  # the recipe's value unless given
            option = click.option(name, f.name, type=OneOrList(click.FLOAT), default=None, help=meta["help"])
        elif default is None:
            option = click.option(name, f.name, type=str, default=None, metavar="PATH", help=meta["help"])
        else:
            kind = {int: OneOrList(click.INT), float: OneOrList(click.FLOAT), str: click.STRING}[type(default)]
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


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
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
@click.option(
    "--seeds",
    type=str,
    default=None,
    metavar="LIST",
    help="train several seeds stacked in one process, e.g. 0-7 or 0,2,5 (with comma lists of "
    "--lr-critic, --lr-generator, --clip-threshold, --g-ema, --rmsprop-alpha, --rmsprop-eps: their product); "
    "--out is then a sweep folder of one run folder per member",
)
@_config_options
@click.pass_context
def cli(
    ctx: click.Context, config_file: str | None, out: str | None, resume: str | None, seeds: str | None, **values: Any
) -> None:
    """Train the WGAN (weight clipping) on CIFAR-10 horses or your own images."""
    explicit = _explicit(ctx, values)
    try:
        if is_sweep(seeds, explicit) or (resume is not None and is_sweep_folder(resume)):
            from wgan.training.sweep_trainer import train_sweep

            code = train_sweep(config_file, out, resume, seeds, explicit)
        else:
            code = train(config_file, out, resume, explicit)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    ctx.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``wgan-train``)."""
    cli.main(args=argv, prog_name="python -m wgan.train")


if __name__ == "__main__":
    main()
