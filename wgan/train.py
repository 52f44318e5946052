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
from wgan.training.trainer import train

# --- CLI options generated from the config ------------------------------------------------------


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
            option = click.option(
                name, f.name, type=click.Choice(meta["choices"]), default=default, show_default=True, help=meta["help"]
            )
        elif default is None and f.name in RECIPE_DEFAULTS["wgan"]:  # the recipe's value unless given
            option = click.option(name, f.name, type=click.FLOAT, default=None, help=meta["help"])
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
@_config_options
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, out: str | None, resume: str | None, **values: Any) -> None:
    """Train the WGAN (weight clipping) on CIFAR-10 horses or your own images."""
    try:
        code = train(config_file, out, resume, _explicit(ctx, values))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    ctx.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``wgan-train``)."""
    cli.main(args=argv, prog_name="python -m wgan.train")


if __name__ == "__main__":
    main()
