"""Shared fixtures of the trainer tests: a tiny model config, a tiny image folder, CLI runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner, Result
from PIL import Image
from tiny import TINY  # noqa: F401  (re-exported for the trainer tests)

REPO = Path(__file__).resolve().parents[1]



def write_images(folder: Path, n: int = 40, size: int = 16, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def write_config(path: Path, **overrides: Any) -> Path:
    path.write_text(json.dumps({**TINY, **overrides}))
    return path


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("WANDB_SILENT", "true")
    return env


def run_subprocess(args: list[str], cwd: Path, timeout: float = 120, module: str = "wgan.train"
                   ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def invoke(args: list[str], command: Any = None) -> Result:
    """The real CLI in-process (click's runner): no interpreter start-up per case; ``command``
    defaults to the trainer's."""
    if command is None:
        from wgan.train import cli as command

    return CliRunner().invoke(command, args, catch_exceptions=True)


def read_metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
