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


def _elementwise_ops(x_cl: bool) -> dict[str, object]:
    """Every kernel with a WIDE flag (kernels/_launch.py int64_indices), forward and backward, on
    odd shapes: returns a function of no arguments giving its outputs and gradients."""
    import kernels

    def bias_act():
        x = torch.randn(3, 5, 7, 9)
        x = (x.contiguous(memory_format=torch.channels_last) if x_cl else x).requires_grad_()
        b = torch.randn(5, requires_grad=True)
        y = kernels.bias_leaky_relu(x, b, 0.2, impl="triton")
        y.backward(torch.randn_like(y))
        return y, x.grad, b.grad

    def head():
        f, w = torch.randn(37, 53, requires_grad=True), torch.randn(1, 53, requires_grad=True)
        b = torch.randn(1, requires_grad=True)
        loss, real, fake = kernels.wasserstein_critic_head(f, w, b, 17, impl="triton")
        (loss + 0.5 * real).backward()
        return loss, real, fake, f.grad, w.grad, b.grad

    def bn_act():
        x = torch.randn(3, 4 * 5, 7, 9)
        x = (x.contiguous(memory_format=torch.channels_last) if x_cl else x).requires_grad_()
        g, b = torch.rand(5).add_(0.5).requires_grad_(), torch.randn(5, requires_grad=True)
        rm, rv = torch.zeros(5), torch.ones(5)
        y = kernels.bn_leaky_relu_shuffle(x, g, b, rm, rv, True, 0.2, 1e-3, 0.2, 2, impl="triton")
        y.backward(torch.randn_like(y))
        return y, x.grad, g.grad, b.grad, rm, rv

    return {"bias_act": bias_act, "wasserstein": head, "bn_act": bn_act}


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("op", ["bias_act", "wasserstein", "bn_act"])
def test_the_64_bit_index_path_computes_the_same_values(op, channels_last, monkeypatch):
    """The WIDE variant of each kernel (taken past 2**31 elements, which a CPU test cannot
    allocate) forced on a small input, with a tiny tile so that many programs split the grid:
    bit-for-bit the values of the 32-bit path (only the index type differs)."""
    pytest.importorskip("triton")
    monkeypatch.setattr(_launch, "TILE_OVERRIDE", 64)
    seed = torch.seed()
    outputs = {}
    for wide in (False, True):
        monkeypatch.setattr(_launch, "FORCE_INT64_INDICES", wide)
        torch.manual_seed(seed)
        outputs[wide] = _elementwise_ops(channels_last)[op]()
    for narrow, wide in zip(outputs[False], outputs[True]):
        assert torch.equal(narrow, wide)
