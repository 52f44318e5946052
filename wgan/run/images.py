"""Image grids as real PNG files (Pillow), shared by the trainer's samples and the report."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from wgan.run.atomic import atomic_write


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] floats in [-1, 1] -> uint8 [N, H, W, C] (C = 1 is kept as grey)."""
    x = images.detach().float().cpu().clamp(-1, 1)
    x = ((x + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def grid_array(images: torch.Tensor, nrow: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile images into one uint8 array [H', W', C], ``nrow`` images per row (default: square)."""
    return tile(to_uint8(images), nrow=nrow, pad=pad, pad_value=pad_value)


def tile(pixels: np.ndarray, nrow: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """:func:`grid_array` of images already in uint8 [N, H, W, C] (the sampler keeps only those)."""
    n, h, w, c = pixels.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / nrow))
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = pixels[i]
    return grid


def save_png(pixels: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Write one uint8 [H, W, C] image as a PNG atomically; ``scale`` enlarges it (nearest)."""
    img = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return atomic_write(path, lambda fh: img.save(fh, format="PNG"))


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2) -> Path:
    """Write a PNG grid atomically; ``scale`` enlarges (nearest) so 32x32 images stay legible."""
    return save_png(grid_array(images, nrow=nrow), path, scale=scale)
