"""Launch rules shared by every kernel of this package: tile size, grid, device, dtypes.

Why one place: each rule here was once forgotten by one launcher (a missing device guard, a grid
over CUDA's y limit, a half-precision input sent to the interpreter). A launcher now calls
:func:`launch` and cannot skip any of them; ``tests/test_launch_rules.py`` checks that no kernel
in ``kernels/`` is launched any other way.

* **Tiles.** The Triton interpreter (CPU tensors under ``TRITON_INTERPRET=1``) runs programs one
  after another at about a millisecond each, so it gets few, large tiles. A GPU (and the ``meta``
  device the ahead-of-time compile test uses to stand for one) gets the tuned tile.
* **Grids.** CUDA allows ``x < 2**31`` and ``y, z <= 65535`` programs. Launchers use 1-D grids
  and split the program id inside the kernel (:func:`grid_1d`), so no shape the public ops accept
  can reach the y/z limits; :func:`check_grid` refuses any grid over the limits with a clear error
  instead of a driver failure.
* **Device.** Triton launches on the *current* CUDA device; a tensor on ``cuda:1`` while
  ``cuda:0`` is current would be read with the wrong context. :func:`launch` switches device when
  the tensors' device is not the current one.
* **Dtypes.** Float types only; the interpreter has no fp16/bf16 arithmetic, so half types on a
  CPU are refused with a message that names the reference path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kernels._buffers import FLOAT_DTYPES
from kernels._dispatch import interpreter_on

GPU_TILE = 4096  # elements per program on a GPU: modest registers, thousands of programs at batch 1024
INTERPRETER_TILE = 1 << 16  # the interpreter pays per program: few, large ones
GPU_WARPS = 4
CUDA_GRID_LIMITS = (2**31 - 1, 65535, 65535)
HALF_TYPES = (torch.float16, torch.bfloat16)
TILE_OVERRIDE: int | None = None  # tests set a tiny tile to force many programs and partial tiles
FORCE_INT64_INDICES = False  # tests run the 64-bit index path on inputs small enough to check


def interpreted(device: torch.device) -> bool:
    """True when a launch on ``device`` runs in Triton's interpreter (CPU tensors)."""
    return device.type == "cpu" and interpreter_on()


def tile_elements(device: torch.device, gpu: int = GPU_TILE) -> int:
    """Elements one program handles: ``gpu`` on a GPU, the interpreter's large tile on a CPU."""
    if TILE_OVERRIDE is not None:
        return TILE_OVERRIDE
    return INTERPRETER_TILE if interpreted(device) else gpu


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1): Triton block shapes are powers of two."""
    return 1 << max(0, int(n) - 1).bit_length()


def tile_2d(rows: int, cols: int, device: torch.device, gpu: int = GPU_TILE) -> tuple[int, int]:
    """(block_rows, block_cols) of a row-major ``[rows, cols]`` tile within the tile budget,
    as wide as the columns allow (coalesced along the contiguous dimension)."""
    budget = tile_elements(device, gpu)
    block_cols = min(next_pow2(cols), budget)
    block_rows = max(1, min(next_pow2(rows), budget // block_cols))
    return block_rows, block_cols


def row_reduction_tile(rows: int, count: int, device: torch.device, gpu: int = GPU_TILE) -> tuple[int, int]:
    """(block_rows, block_count) of a fixed-order reduction of each row of a row-major ``[rows,
    count]`` matrix, a program per block of rows, each reading its rows' values contiguously.

    On a GPU a program takes one row, or as many as give each of its threads a value when the rows
    are short: the rows spread over the SMs instead of a few programs looping over all of them.
    The interpreter, which pays per program, takes as many rows as its tile holds."""
    budget = tile_elements(device, gpu)
    block_count = min(next_pow2(count), budget)
    fill = budget if interpreted(device) else GPU_WARPS * 32
    block_rows = max(1, min(next_pow2(rows), fill // block_count))
    return block_rows, block_count


def cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def grid_1d(*counts: int) -> tuple[int]:
    """One grid axis for a product of program counts; kernels split ``program_id(0)`` back
    (last count fastest), so each count alone may exceed CUDA's y/z limit."""
    return (math.prod(int(c) for c in counts),)


def int64_indices(*extents: int) -> bool:
    """Whether index arithmetic must be 64-bit: a tile's ``start + arange(BLOCK)`` reaches up to
    ``extent + BLOCK``, which must stay below 2**31 to be computed in int32 (kernels take a ``WIDE``
    flag and widen the program id before they multiply it)."""
    return FORCE_INT64_INDICES or max(int(e) for e in extents) >= 2**31


@dataclass(frozen=True)
class MatrixTiles:
    """A row-major ``[rows, cols]`` matrix cut into ``[block_r, block_l]`` tiles, one program each
    on a 1-D grid that the kernel splits back with ``n_col_programs`` (:func:`grid_1d`): the grid,
    program counts and index width every 2-D launcher needs, computed one way. Op families extend
    it with their own geometry and argument lists."""

    device: torch.device
    rows: int
    cols: int
    block_r: int
    block_l: int

    @property
    def n_row_programs(self) -> int:
        return cdiv(self.rows, self.block_r)

    @property
    def n_col_programs(self) -> int:
        return cdiv(self.cols, self.block_l)

    @property
    def grid(self) -> tuple[int]:
        return grid_1d(self.n_row_programs, self.n_col_programs)

    @property
    def tile_meta(self) -> dict[str, Any]:
        """The compile-time tile arguments: ``WIDE`` (64-bit indices, :func:`int64_indices`) and the tile."""
        wide = int64_indices(self.rows + self.block_r, self.cols + self.block_l)
        return dict(WIDE=wide, BLOCK_R=self.block_r, BLOCK_L=self.block_l)


def check_grid(op: str, grid: Sequence[int]) -> None:
    """Refuse a grid that CUDA cannot launch (x < 2**31, y and z <= 65535)."""
    for axis, (n, limit) in enumerate(zip(grid, CUDA_GRID_LIMITS)):
        if n > limit:
            raise ValueError(
                f"{op}: the input needs {n} programs on grid axis {'xyz'[axis]}, over CUDA's "
                f"limit of {limit}; split the input into smaller calls"
            )
    if len(grid) > 3:
        raise ValueError(f"{op}: a grid has at most 3 axes, got {len(grid)}")


def check_float(op: str, **tensors: torch.Tensor) -> None:
    """Float dtypes only; half types run on CUDA only (the interpreter has no half arithmetic)."""
    for name, t in tensors.items():
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{op}: {name} must be floating point, got {t.dtype}")
        if t.device.type == "cpu" and t.dtype in HALF_TYPES:
            raise TypeError(
                f"{op}: {name} is {t.dtype}, which runs on CUDA only (the Triton interpreter has "
                "no half types); use impl='ref' or float32 on CPU"
            )


def check_same_device(op: str, first: torch.Tensor, **others: torch.Tensor) -> None:
    for name, t in others.items():
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but the input is on {first.device}")


def device_guard(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Make ``device`` the current CUDA device for the launch (a no-op when it already is)."""
    if device.type == "cuda" and device.index is not None and device.index != torch.cuda.current_device():
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def launch(
    op: str,
    kernel: Any,
    grid: Sequence[int],
    *args: Any,
    device: torch.device,
    wrap: bool = False,
    num_warps: int = GPU_WARPS,
    **meta: Any,
) -> None:
    """Launch ``kernel[grid](*args, **meta)`` on ``device`` with every rule of this module.

    ``wrap=True`` goes through ``torch.library.wrap_triton`` (inside a registered ``triton_op``, so
    torch.compile and CUDA graphs see the kernel). An empty grid launches nothing.
    """
    grid = tuple(int(g) for g in grid)
    check_grid(op, grid)
    if 0 in grid:
        return
    if wrap:
        from torch.library import wrap_triton

        kernel = wrap_triton(kernel)
    if not interpreted(device):
        meta["num_warps"] = num_warps
    with device_guard(device):
        kernel[grid](*args, **meta)
