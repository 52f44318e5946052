"""The shared helpers of the tests (and of the benchmarks' parity checks): one module.

* the tiny model config of the trainer tests (:data:`TINY`), image folders and config files;
* the CLI runners: a real subprocess, or click's in-process runner;
* the error bounds every numeric tolerance comes from (re-exported from the package, where
  ``python -m wgan.check`` uses them too: the ops' in :mod:`kernels.error_bounds`, the critic's in
  :mod:`wgan.models.numerics`), and :func:`assert_within`, which applies them.

Imports nothing that the GPU image lacks (PIL, wandb) at module level: the GPU check uses it.
The fixtures (``poison_outputs``, ``data``, ``cfg``) are in tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from kernels.error_bounds import (  # noqa: F401  (re-exported for the tests)
    bias_leaky_relu_bounds,
    gamma,
    over_bound,
    unit_roundoff,
    wasserstein_grad_bounds,
    wasserstein_loss_bounds,
)
from wgan.models.numerics import (  # noqa: F401  (re-exported for the tests)
    PROBABILISTIC_LAMBDA,
    critic_magnitudes,
    critic_rounding_factor,
    critic_score_rms,
)

# 16x16 images, a few filters: one epoch at batch 8 takes ~20 ms on a CPU core.
TINY: dict[str, Any] = {
    "image_size": 16,
    "generator_initial_size": 4,
    "generator_initial_channels": 8,
    "generator_filters": [8, 8, 3],
    "generator_upsample": [2, 2, 1],
    "critic_filters": [8, 16, 16],
    "critic_strides": [2, 2, 1],
    "critic_kernel_size": 3,
    "generator_kernel_size": 3,
    "z_dim": 8,
    "batch_size": 8,
}


REPO = Path(__file__).resolve().parents[1]

# One epoch-log row as docs/design.md promises it to readers of a run folder, written out here
# (not imported from wgan.run.columns) so that a change of the code's list fails the tests.
DOCUMENTED_ROW = ["epoch", "d_loss", "d_loss_real", "d_loss_fake", "g_loss", "wasserstein_estimate", "clip_ratio"]
DOCUMENTED_ROW += ["critic_weight_mean", "critic_weight_std", "generator_weight_mean", "generator_weight_std"]
DOCUMENTED_ROW += ["epoch_time", "images_per_s"]


def write_images(folder: Path, n: int = 40, size: int = 16, seed: int = 0) -> Path:
    """``n`` random ``size``x``size`` PNGs (Pillow imported here: the GPU image has none)."""
    import numpy as np
    from PIL import Image

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


def run_subprocess(
    args: list[str], cwd: Path, timeout: float = 120, module: str = "wgan.train"
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def invoke(args: list[str], command: Any = None) -> Any:
    """The real CLI in-process (click's runner): no interpreter start-up per case; ``command``
    defaults to the trainer's."""
    from click.testing import CliRunner

    if command is None:
        from wgan.train import cli as command

    return CliRunner().invoke(command, args, catch_exceptions=True)


def strict_json(line: str) -> Any:
    """``json.loads`` as jq and JavaScript parse: a bare NaN or Infinity is an error."""

    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name} in {line!r}")

    return json.loads(line, parse_constant=refuse)


def read_epoch_log(run: Path) -> list[dict[str, Any]]:
    """metrics.jsonl parsed strictly, each row as logged (the values its ``non_finite`` key names: NaN)."""
    from wgan.run.folder import decode_row

    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [decode_row(strict_json(line)) for line in lines if line.strip()]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor | float, what: str = "") -> None:
    """Every element finite and ``|actual - expected| <= bound`` (bound per element or scalar)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    n_bad, ratio, diff = over_bound(actual, expected, bound)
    assert n_bad == 0, (
        f"{what}: {n_bad} of {actual.numel()} elements over their bound (non-finite, or "
        f"|diff| > bound); worst |diff| {diff:.3g} = {ratio:.3g} x its bound"
    )


def train_args(config: Path | None, data: Path, out: Path, *flags: str, **options: Any) -> list[str]:
    """The trainer's command line of a test: ``--config`` (unless None), ``--data``, ``--out``,
    W&B off (unless ``wandb=...`` is given), then ``flags`` as given and ``options`` as
    ``--name value`` (``lr_critic=1e-3`` -> ``--lr-critic 1e-3``)."""
    args = (["--config", str(config)] if config is not None else []) + ["--data", str(data), "--out", str(out)]
    options.setdefault("wandb", "disabled")
    for name, value in options.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    return args + list(flags)


# -- the kernel tests' common ground (tests/test_bias_act.py, test_bn_act.py, test_wasserstein.py,
#    test_rmsprop.py and bench/test_bench_rmsprop.py) ---------------------------------------------


def triton_kernel_marks() -> list[Any]:
    """The ``pytestmark`` of a module that runs the Triton kernels: skipped where Triton cannot run
    (no CUDA and no ``TRITON_INTERPRET=1``), and every buffer the launchers allocate starts as NaN
    (the ``poison_outputs`` fixture of tests/conftest.py), so an element a kernel fails to write
    fails the test instead of passing on leftover zeros. pytest is imported here, not at the top:
    the GPU check imports this module without it."""
    import pytest

    from kernels._dispatch import triton_can_run

    return [
        pytest.mark.skipif(
            not triton_can_run("cpu") and not torch.cuda.is_available(),
            reason="Triton cannot run here (no CUDA and no TRITON_INTERPRET=1)",
        ),
        pytest.mark.usefixtures("poison_outputs"),
    ]


# The seed critic's parameter shapes (WGANConfig().critic_params_shapes, written out because
# kernels/ and its tests never import wgan): 670,401 values, what the fused optimizer steps.
CRITIC_SHAPES: list[tuple[int, ...]] = [
    (32, 3, 5, 5),
    (32,),
    (64, 32, 5, 5),
    (64,),
    (128, 64, 5, 5),
    (128,),
    (128, 128, 5, 5),
    (128,),
    (1, 2048),
    (1,),
]
