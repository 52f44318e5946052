"""Device work dispatched by one training epoch, counted op by op (issue 17's measure).

Why count and not time: on a GPU the fused epoch is launch-bound, so the number of kernels it
dispatches is what it pays for; the count is the same on a CPU (it depends on the code's
structure, not on the batch size or the machine), so it can be measured where no GPU is.

What counts: every aten op dispatched below autograd (a :class:`TorchDispatchMode` sees what
actually runs, the backward included) except views and allocations, which launch nothing, plus
every Triton launch through :func:`kernels._launch.launch`. Ops that the Triton interpreter
dispatches *inside* a launch (its copies to numpy and back) are its emulation, not device work,
and are not counted. Run it on a CPU with ``TRITON_INTERPRET=1`` set before ``kernels`` is
imported (bench/conftest.py does), so that the fused path takes its Triton kernels.

``TRITON_INTERPRET=1 python -m bench.op_count`` prints both counts and the ten most frequent ops of each path.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kernels import _launch
from wgan.config import WGANConfig
from wgan.training.engine import build_engine

# allocation and metadata ops: they hand out memory or a new view of it, no kernel runs
NOT_DEVICE_WORK = frozenset(
    {
        "empty",
        "empty_like",
        "empty_strided",
        "new_empty",
        "new_empty_strided",
        "lift_fresh",
        "_to_copy_noop",
        "set_",
        "detach",
        "alias",
        "_unsafe_view",  # a view that autograd does not track as one
        "_record_function_enter_new",  # profiler markers (torch.optim's step), no kernel
        "_record_function_exit",
        "_local_scalar_dense",  # a read-back, not a kernel of the epoch (none is expected)
    }
)


def _is_device_work(func: Any) -> bool:
    if func.is_view or torch.Tag.view_copy in func.tags:
        return False
    return func.overloadpacket.__name__ not in NOT_DEVICE_WORK


@dataclass
class OpCount:
    """Dispatched aten ops (by name) and Triton launches (by kernel name) of the counted code."""

    aten: collections.Counter = field(default_factory=collections.Counter)
    triton: collections.Counter = field(default_factory=collections.Counter)

    @property
    def total(self) -> int:
        return sum(self.aten.values()) + sum(self.triton.values())

    def most_common(self, n: int = 10) -> list[tuple[str, int]]:
        return (self.aten + self.triton).most_common(n)


class _AtenCounter(TorchDispatchMode):
    def __init__(self, count: OpCount) -> None:
        super().__init__()
        self.count = count
        self.inside_launch = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.inside_launch and _is_device_work(func):
            self.count.aten[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def counting() -> Iterator[OpCount]:
    """Count the device work dispatched inside the block (see the module doc)."""
    count = OpCount()
    mode = _AtenCounter(count)
    original = _launch.launch

    def counted_launch(op: str, kernel: Any, *args: Any, **kwargs: Any) -> None:
        count.triton[f"triton:{getattr(kernel, '__name__', getattr(kernel, 'fn', kernel).__name__)}"] += 1
        mode.inside_launch = True
        try:
            original(op, kernel, *args, **kwargs)
        finally:
            mode.inside_launch = False

    _launch.launch = counted_launch
    patched = _patch_importers(original, counted_launch)
    try:
        with mode:
            yield count
    finally:
        _launch.launch = original
        for module in patched:
            module.launch = original


def _patch_importers(original: Any, replacement: Any) -> list[Any]:
    """The kernel modules bound ``launch`` at import (``from kernels._launch import launch``)."""
    import sys

    patched = []
    for name, module in list(sys.modules.items()):
        if name.startswith("kernels.") and getattr(module, "launch", None) is original:
            module.launch = replacement
            patched.append(module)
    return patched


def epoch_ops(fused: bool, batch_size: int = 4, warmup: int = 1, **overrides: Any) -> OpCount:
    """The ops of one epoch of the seed configuration (after ``warmup`` epochs, so lazily built
    state such as the optimizer's tables is not counted), eager or fused with its Triton kernels."""
    config = WGANConfig(batch_size=batch_size, fused=fused, **overrides).validate()
    engine = build_engine(config, "cpu")
    g = torch.Generator().manual_seed(7)
    images = engine.prepare_images(torch.rand(64, 3, config.image_size, config.image_size, generator=g) * 2 - 1)
    for _ in range(warmup):
        engine.run_epoch(images)
    with counting() as count:
        engine.run_epoch(images)
    return count


def main() -> None:
    eager, fused = epoch_ops(False), epoch_ops(True)
    for name, count in (("eager", eager), ("fused", fused)):
        aten, triton = sum(count.aten.values()), sum(count.triton.values())
        print(f"{name}: {count.total} ({aten} aten + {triton} Triton); most frequent: {count.most_common()}")
    print(f"fused / eager = {fused.total / eager.total:.3f}")


if __name__ == "__main__":
    main()
