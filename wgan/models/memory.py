"""Will a batch fit? An estimate of the models' activations, checked before anything is allocated,
so ``--batch-size 10**9`` or ``sample --n 10**9`` is one ``error:`` line, not an allocator's traceback.

The estimate is a lower bound (each layer's output once per image, float32, times the copies a
training step keeps for its backward pass), so it refuses only what cannot fit; a batch it lets
through may still be too large, and then the allocator says so.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from wgan.config import WGANConfig, conv_out_side
from wgan.errors import UserError

FLOAT_BYTES = 4
TRAINING_COPIES = 2  # a layer's output and its gradient, at least, during a training step
GIB = 1 << 30


class MemoryEstimateError(UserError):
    """A batch or sample count that cannot fit in the memory there is."""


def generator_floats(config: WGANConfig) -> int:
    """Floats of the generator's activations per image (its first feature map, each layer's input
    after upsampling and each layer's output)."""
    side, channels = config.generator_initial_size, config.generator_initial_channels
    total = config.z_dim + channels * side * side
    for filters, up in zip(config.generator_filters, config.generator_upsample):
        side *= up
        total += channels * side * side + filters * side * side
        channels = filters
    return total


def critic_floats(config: WGANConfig) -> int:
    """Floats of the critic's activations per image (its input and each convolution's output)."""
    side = config.image_size
    total = config.image_channels * side * side
    for filters, stride in zip(config.critic_filters, config.critic_strides):
        side = conv_out_side(side, config.critic_kernel_size, stride)
        total += filters * side * side
    return total


def training_bytes(config: WGANConfig) -> int:
    """A training step: the generator's batch, and the critic's on reals and fakes, kept for backward."""
    per_image = generator_floats(config) + 2 * critic_floats(config)
    return TRAINING_COPIES * FLOAT_BYTES * config.batch_size * per_image


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: the GPU's free memory, or the host's available memory; None when unknown."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    return host_available_bytes()


def host_available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), else the physical memory; None when neither is known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def refuse_beyond(needed: int, available: int | None, where: str, what: str) -> None:
    """MemoryEstimateError when ``needed`` bytes exceed ``available`` (an unknown amount passes)."""
    if available is not None and needed > available:
        raise MemoryEstimateError(
            f"{what} would need at least {_gib(needed)} on {where} (an estimate), but {_gib(available)} is free; "
            f"choose a smaller value"
        )


def check_training_memory(config: WGANConfig, device: torch.device) -> None:
    """Refuse a --batch-size whose activations alone exceed the device's free memory."""
    refuse_beyond(training_bytes(config), available_bytes(device), str(device), f"--batch-size {config.batch_size}")


def check_sampling_memory(config: WGANConfig, n: int, batch_size: int, grid: bool, device: torch.device) -> None:
    """Refuse ``n`` images (their latents, and the grid's pixels, on the host) or a --batch-size of
    generator activations that cannot fit."""
    pixels = config.image_channels * config.image_size**2
    host = n * config.z_dim * FLOAT_BYTES + (2 * n * pixels if grid else 0)  # the images and the tiled grid
    refuse_beyond(host, host_available_bytes(), "the host", f"{n} images")
    chunk = min(n, batch_size)
    refuse_beyond(
        FLOAT_BYTES * chunk * generator_floats(config), available_bytes(device), str(device), f"--batch-size {chunk}"
    )


def _gib(n: int) -> str:
    return f"{n / GIB:.3g} GiB" if n < 1024 * GIB else f"{n / GIB / 1024:.3g} TiB"
