"""RMSprop + weight clipping: kernels.FusedRMSprop against the eager and compiled torch steps.

One timed call is ``steps_per_call`` optimizer steps (RMSprop, then every parameter clamped to
[-0.01, 0.01]; the WGAN recipe's lr 5e-5, alpha 0.99, eps 1e-8), followed on CUDA by a
synchronisation: host launch overhead is part of what is measured, as in a training loop. Cases:

* ``fused_triton`` / ``fused_ref``: FusedRMSprop (one Triton launch per step / whole-buffer torch ops)
* ``torch_forloop``: ``torch.optim.RMSprop(foreach=False)`` + a ``clamp_`` per parameter
* ``torch_foreach``: ``torch.optim.RMSprop(foreach=True)`` + ``torch._foreach_clamp_min_/max_``
* ``torch_compile``: the foreach step and clamps under ``torch.compile`` (CUDA only: on an AVX-512
  CPU, torch 2.13's inductor code for it corrupted memory and returned wrong values, which this
  benchmark's parity check caught)
* ``copy`` (50M set only): ``dst.copy_(src)`` of the same number of fp32 values, the device's copy
  bandwidth that the fused kernel's achieved bandwidth is reported against (bench/ratios.py)

Sets: the seed critic's 10 tensors (670,401 values) and 50M values in 10 tensors of 2000 x 2500.
Gradients are random and fixed (a trainer that zeroes with ``set_to_none=False`` keeps them in
place: the fused optimizer then copies nothing). After timing, every case checks its parameters
against ``torch.optim.RMSprop`` + ``clamp_`` run for the same number of steps from the same start:
relative error <= 1e-6, measured against the magnitude summed into each value (``|p0| +
sum |step|``, as in tests/test_rmsprop.py).

On CPU the Triton kernel runs in the interpreter: its timings say nothing about performance and
it runs one round only. The CPU comparison that matters is ``fused_ref`` against ``torch_forloop``.
CPU cases run on one thread: on a shared 2-core machine torch's two OpenMP threads spin against
other processes and single ops take 100x longer, which would make every ratio noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from helpers import CRITIC_SHAPES

from kernels._dispatch import triton_can_run
from kernels.rmsprop import FusedRMSprop

CUDA = torch.cuda.is_available()
LR, ALPHA, EPS, CLIP = 5e-5, 0.99, 1e-8, 0.01
SETS = {"critic": CRITIC_SHAPES, "50m": [(2000, 2500)] * 10}
CASES = ["fused_triton", "fused_ref", "torch_forloop", "torch_foreach", "torch_compile", "copy"]
RTOL = 1e-6
# (rounds, steps per timed call) per device and set; the interpreter gets one round of one step
SCHEDULE = {("cuda", "critic"): (30, 50), ("cuda", "50m"): (10, 5), ("cpu", "critic"): (10, 1), ("cpu", "50m"): (3, 1)}
# bytes one fused step moves for this config (no momentum, not centered): p, g, square_avg read;
# p, square_avg written
BYTES_PER_VALUE = 5 * 4


@pytest.fixture(autouse=True)
def one_cpu_thread(request):
    device = request.node.callspec.params.get("device", "cpu")
    if device != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def initial(shapes, device: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    params = [(torch.randn(s, generator=gen) * 0.02).to(device) for s in shapes]
    grads = [torch.randn(s, generator=gen).to(device) for s in shapes]
    return params, grads


def build(case: str, params: list[torch.Tensor], grads: list[torch.Tensor]) -> Callable[[], None]:
    """One optimizer step of ``case`` on ``params`` (whose .grad is set here, once)."""
    for p, g in zip(params, grads):
        p.requires_grad_()
        p.grad = g.clone()
    if case in ("fused_triton", "fused_ref"):
        opt = FusedRMSprop(params, lr=LR, alpha=ALPHA, eps=EPS, clip_value=CLIP, impl=case.removeprefix("fused_"))
        return opt.step
    opt = torch.optim.RMSprop(params, lr=LR, alpha=ALPHA, eps=EPS, foreach=case != "torch_forloop")
    if case == "torch_forloop":

        def step() -> None:
            opt.step()
            with torch.no_grad():
                for p in params:
                    p.clamp_(-CLIP, CLIP)

        return step

    @torch.no_grad()
    def foreach_step() -> None:
        opt.step()
        torch._foreach_clamp_min_(params, -CLIP)
        torch._foreach_clamp_max_(params, CLIP)

    if case == "torch_foreach":
        return foreach_step
    return torch.compile(foreach_step)


def reference(params0: list[torch.Tensor], grads: list[torch.Tensor], steps: int):
    """torch for-loop RMSprop + clamp_: final parameters and the magnitude summed into each value."""
    params = [p.clone().requires_grad_() for p in params0]
    for p, g in zip(params, grads):
        p.grad = g
    opt = torch.optim.RMSprop(params, lr=LR, alpha=ALPHA, eps=EPS, foreach=False)
    scale = [p.detach().abs() for p in params]
    for _ in range(steps):
        before = [p.detach().clone() for p in params]
        opt.step()
        with torch.no_grad():
            for p, b, s in zip(params, before, scale):
                s.add_((p - b).abs())
                p.clamp_(-CLIP, CLIP)
    return [p.detach() for p in params], scale


def assert_parity(params: list[torch.Tensor], params0, grads, steps: int) -> float:
    expected, scale = reference(params0, grads, steps)
    worst = 0.0
    for a, b, s in zip(params, expected, scale):
        assert torch.isfinite(a).all()
        err = ((a.detach() - b).abs() / torch.maximum(b.abs(), s).clamp_min(1e-30)).max().item()
        worst = max(worst, err)
    assert worst <= RTOL, f"relative error {worst:.3g} after {steps} steps"
    return worst


DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(not CUDA, reason="CUDA cases need a GPU")),
]


def skip_reason(device: str, set_name: str, case: str) -> str | None:
    if case == "copy" and set_name != "50m":
        return "the copy bandwidth is measured on the 50M set only"
    if case == "fused_triton" and not triton_can_run(device):
        return f"Triton cannot run on {device} here (no TRITON_INTERPRET=1)"
    if case == "torch_compile" and device == "cpu":
        return (
            "torch 2.13's inductor CPU code for the foreach RMSprop step + clamps gave wrong values and heap "
            "corruption ('free(): invalid pointer') on an AVX-512 machine (2026-12-01); the compile baseline "
            "is measured on CUDA"
        )
    return None


def time_copy(benchmark, device: str, n_values: int, rounds: int, per_call: int) -> None:
    """The device's copy bandwidth: what the fused kernel's is reported against."""
    src = torch.randn(n_values, device=device)
    dst = torch.empty_like(src)

    def copy_call() -> None:
        for _ in range(per_call):
            dst.copy_(src)
        sync(device)

    benchmark.pedantic(copy_call, rounds=rounds, warmup_rounds=1, iterations=1)
    assert torch.equal(dst, src)


def built_step(case: str, params: list[torch.Tensor], grads: list[torch.Tensor]) -> Callable[[], None]:
    """The case's step; torch.compile's compiled (and run once) outside the timing."""
    try:
        step = build(case, params, grads)
        if case == "torch_compile":
            step()
    except Exception as exc:  # a compiler toolchain problem is a skip, not a failure
        if case != "torch_compile":
            raise
        pytest.skip(f"torch.compile failed here: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return step


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("set_name", list(SETS))
@pytest.mark.parametrize("device", DEVICES)
def test_rmsprop_clip_step(benchmark, device: str, set_name: str, case: str) -> None:
    reason = skip_reason(device, set_name, case)
    if reason:
        pytest.skip(reason)
    shapes = SETS[set_name]
    n_values = sum(math.prod(s) for s in shapes)
    rounds, per_call = SCHEDULE[(device, set_name)]
    interpreted = case == "fused_triton" and device == "cpu"
    if interpreted:
        rounds, per_call = 1, 1
    benchmark.group = f"rmsprop-{device}-{set_name}"
    benchmark.extra_info.update(
        device=device,
        set=set_name,
        case=case,
        n_values=n_values,
        steps_per_call=per_call,
        interpreted=interpreted,
        bytes_per_step=(2 * 4 if case == "copy" else BYTES_PER_VALUE) * n_values,
    )
    if case == "copy":
        time_copy(benchmark, device, n_values, rounds, per_call)
        return
    params0, grads = initial(shapes, device)
    params = [p.clone() for p in params0]
    step = built_step(case, params, grads)
    done = 1 if case == "torch_compile" else 0

    def timed() -> None:
        nonlocal done
        for _ in range(per_call):
            step()
        done += per_call
        sync(device)

    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=0 if interpreted else 1, iterations=1)
    worst = assert_parity(params, params0, grads, done)
    benchmark.extra_info.update(steps_checked=done, max_rel_error=worst)
