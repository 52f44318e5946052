"""Checkpoints that survive a crash mid-write and load without unpickling arbitrary code.

A checkpoint is a plain dict of tensors, dicts, lists, numbers and strings (the contract in
docs/design.md), so ``torch.load(weights_only=True)`` reads it. It is written to a temporary
file in the same folder, fsynced and renamed over the target: a reader sees the old file or the
new one, never half of one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from wgan.errors import UserError
from wgan.run.atomic import atomic_write

REQUIRED_KEYS = ("epoch", "config", "generator", "critic", "opt_generator", "opt_critic", "rng", "fixed_z")


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable or not one of ours."""


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`wgan.run.atomic.atomic_write`."""
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {', '.join(missing)}")
    return atomic_torch_save(state, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; raise CheckpointError on anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise CheckpointError(f"cannot read checkpoint {path}: {_why(exc)}") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise CheckpointError(f"{path} is not a WGAN checkpoint (expected keys {', '.join(REQUIRED_KEYS)})")
    return state


def _why(exc: Exception) -> str:
    """torch's reason in one line, without its advice to retry with ``weights_only=False`` (which
    would run whatever the file's pickle holds)."""
    text = str(exc).strip()
    if "weights_only" in text or "Weights only load failed" in text:
        return "it holds pickled objects other than tensors, dicts, lists, numbers and strings (not loaded)"
    return (text.splitlines() or [type(exc).__name__])[0]


def read_best_state(path: Path) -> dict[str, Any] | None:
    """checkpoints/best.pt's state (with its "evaluation" record); None when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return load_checkpoint(path)
    except CheckpointError:
        return None
