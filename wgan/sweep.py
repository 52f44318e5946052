"""A sweep on the command line: ``--seeds 0-7`` and comma lists of per-run hyper-parameters.

``wgan.train --seeds 0-3 --lr-critic 5e-5,1e-4`` asks for 8 runs (the product of the lists and the
seeds). Each member's config is an ordinary single-valued :class:`~wgan.config.WGANConfig`: the
lists live only here, between the command line and the configs. The stack trains its members side
by side, so whatever is not per member (architecture, batch size, n_critic, recipe, epochs) must be
one value; a list there is refused with a line that says how to split the sweep.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from wgan.config import ConfigError, WGANConfig, option_name, resolve_config

# the hyper-parameters a member may have of its own (in the order member names show them)
SWEEPABLE = ("lr_critic", "lr_generator", "clip_threshold", "g_ema", "rmsprop_alpha", "rmsprop_eps")
MAX_MEMBERS = 4096
_RANGE = re.compile(r"^(\d+)-(\d+)$")


class SweepError(ConfigError):
    """A sweep that cannot be run as asked."""


class SweepList(tuple):
    """Several values given for one option (``--lr-critic 5e-5,1e-4``)."""


def split_values(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


def parse_seeds(text: str) -> list[int]:
    """``0-3`` -> [0, 1, 2, 3]; ``0,2,5`` -> [0, 2, 5]; ranges and values may be mixed."""
    seeds: list[int] = []
    for part in split_values(text):
        match = _RANGE.match(part)
        if match:
            low, high = int(match.group(1)), int(match.group(2))
            if high < low:
                raise SweepError(f"--seeds {text}: the range {part} is empty (write low-high)")
            if high - low + 1 > MAX_MEMBERS:
                raise SweepError(f"--seeds {text}: {high - low + 1} seeds; at most {MAX_MEMBERS} in one sweep")
            seeds.extend(range(low, high + 1))
        elif part.isdigit():
            seeds.append(int(part))
        else:
            raise SweepError(f"--seeds {text}: {part!r} is neither a seed nor a range like 0-7")
    if not seeds:
        raise SweepError(f"--seeds {text!r} names no seed; give e.g. --seeds 0-3 or --seeds 0,2,5")
    if len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds {text}: a seed is named twice")
    return seeds


@dataclass(frozen=True)
class Member:
    """One run of a sweep: its index, its own settings and its config."""

    index: int
    settings: dict[str, Any]  # seed and every swept hyper-parameter, by field name
    config: WGANConfig

    @property
    def name(self) -> str:
        """Its run folder's name in the sweep folder: ``003-seed2`` or ``003-lr_critic=0.0001-seed2``."""
        swept = [f"{k}={self.settings[k]:g}" for k in SWEEPABLE if k in self.settings]
        return "-".join([f"{self.index:03d}", *swept, f"seed{self.settings['seed']}"])


def is_sweep(seeds: str | None, explicit: dict[str, Any]) -> bool:
    return seeds is not None or any(isinstance(v, SweepList) for v in explicit.values())


def members(seeds: str | None, from_file: dict[str, Any], explicit: dict[str, Any]) -> list[Member]:
    """The product of the swept lists and the seeds, as member configs (validated)."""
    shared = {k: v for k, v in explicit.items() if not isinstance(v, SweepList)}
    lists = {k: list(v) for k, v in explicit.items() if isinstance(v, SweepList)}
    for key in lists:
        if key not in SWEEPABLE + ("seed",):
            raise SweepError(
                f"{option_name(key)} is shared by a stack (given {','.join(map(str, lists[key]))}); "
                f"split the sweep: run one sweep per value, e.g. {option_name(key)} {lists[key][0]} --out SWEEP_1, "
                f"{option_name(key)} {lists[key][1]} --out SWEEP_2"
            )
    if "seed" in lists or ("seed" in shared and seeds is not None):
        if seeds is not None:
            raise SweepError("--seed and --seeds both given; give the seeds once, with --seeds")
        seeds = ",".join(str(s) for s in lists.pop("seed"))
    seed_list = parse_seeds(seeds) if seeds is not None else [int(shared.pop("seed", from_file.get("seed", 0)))]
    keys = [k for k in SWEEPABLE if k in lists]
    combos = list(itertools.product(*(lists[k] for k in keys), seed_list))
    if len(combos) > MAX_MEMBERS:
        raise SweepError(f"the sweep has {len(combos)} members; at most {MAX_MEMBERS} in one sweep")
    out = []
    for index, combo in enumerate(combos):
        settings = {**dict(zip(keys, combo[:-1])), "seed": combo[-1]}
        config = resolve_config(from_file, {**shared, **settings})
        settings = {k: getattr(config, k) for k in keys} | {"seed": config.seed}
        out.append(Member(index, settings, config))
    return out


def split(n_members: int, world_size: int) -> list[list[int]]:
    """Which member indices each rank trains: round robin, so every rank's stack is the same size
    give or take one."""
    return [list(range(rank, n_members, world_size)) for rank in range(world_size)]
