"""Every kernel launch goes through kernels/_launch.py, and the rules there hold.

The rules (tile, grid limits, device guard, dtype check) live in one module so that a new kernel
cannot forget one; this test is what makes "cannot" true: it parses every module of kernels/ and
fails on a ``kernel[grid](...)`` launch or a ``wrap_triton`` call anywhere else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from kernels import _launch
from kernels.rmsprop import _build_plan, wide_offsets

KERNELS = Path(__file__).resolve().parents[1] / "kernels"


def _jit_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(target, ast.Attribute) and target.attr in ("jit", "autotune"):
                    names.add(node.name)
    return names


def _direct_launches(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    jitted = _jit_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript):
            base = node.func.value
            name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            if name in jitted or name.endswith("_kernel"):
                found.append(f"{path.name}:{node.lineno} launches {name}[...] directly")
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name == "wrap_triton":
                found.append(f"{path.name}:{node.lineno} calls wrap_triton")
    return found


def test_every_kernel_is_launched_through_the_shared_launcher() -> None:
    modules = [p for p in sorted(KERNELS.glob("*.py")) if p.name != "_launch.py"]
    assert any(_jit_names(ast.parse(p.read_text())) for p in modules), "no @triton.jit kernel found at all"
    offenders = [line for p in modules for line in _direct_launches(p)]
    assert not offenders, "launch through kernels._launch.launch instead:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "grid, ok",
    [
        ((2**31 - 1,), True),
        ((2**31,), False),
        ((1, 65535, 65535), True),
        ((1, 65536), False),
        ((1, 1, 65536), False),
    ],
)
def test_grids_over_cuda_limits_are_refused(grid, ok: bool) -> None:
    if ok:
        _launch.check_grid("op", grid)
    else:
        with pytest.raises(ValueError, match="over CUDA's limit"):
            _launch.check_grid("op", grid)


def test_a_1d_grid_carries_counts_over_the_y_limit() -> None:
    (n,) = _launch.grid_1d(3, 70000)
    assert n == 210000
    _launch.check_grid("op", (n,))


def test_device_guard_is_a_no_op_off_cuda() -> None:
    for device in ("cpu", "meta"):
        with _launch.device_guard(torch.device(device)):
            pass


@pytest.mark.parametrize(
    "dtype, error", [(torch.int32, "floating point"), (torch.bfloat16, "CUDA only"), (torch.float16, "CUDA only")]
)
def test_dtype_rule(dtype: torch.dtype, error: str) -> None:
    with pytest.raises(TypeError, match=error):
        _launch.check_float("op", x=torch.zeros(2, dtype=dtype))
    _launch.check_float("op", x=torch.zeros(2, dtype=torch.float16, device="meta"))  # a GPU stand-in: allowed


def test_rmsprop_block_table_is_64_bit_when_offsets_come_within_a_block_of_2_31() -> None:
    """The last block of a table row starts below ``total`` but its lanes reach ``start + BLOCK``:
    an int32 table there wraps to negative offsets that pass ``offs < end``."""
    block = 1 << 16
    total = 2**31 - block // 2  # below 2**31 - 1, so a threshold on total alone picked int32
    assert wide_offsets(total, block) and not wide_offsets(2**31 - 2 * block, block)
    half = total // 2 // 64 * 64
    plan = _build_plan([0, half], [half, total - half], [True, False], False, total, block, torch.device("cpu"))
    assert plan.use_table and plan.table.dtype == torch.int64
    assert int(plan.table[:, 1].max()) <= total
