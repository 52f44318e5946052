"""The tiny model config of the trainer tests (no PIL/wandb imports: the GPU check uses it)."""

from __future__ import annotations

from typing import Any

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
