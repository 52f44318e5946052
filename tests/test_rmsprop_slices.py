"""kernels.FusedRMSprop with per-slice hyper-parameters (``SliceHParams``): one launch, S copies.

A param group whose parameters are S copies of one model stacked along the first dimension gets
each copy's lr, alpha, eps, clip and average decay from device tables. The reference is what S
separate runs do: ``torch.optim.RMSprop`` with one param group per slice (the slices of every
parameter, that slice's values), then each slice clamped to its own clip, and each slice's average
moved by ``torch._foreach_lerp_`` with its own decay. Tolerance: tests/test_rmsprop.py's (RTOL
relative to the magnitude S each value was accumulated from, TorchRun's scale), both for the Triton
kernel (the interpreter here) and the plain-PyTorch reference, from fresh random gradients and odd
sizes (one element per slice, sizes that are no multiple of the 64-element alignment).

Poisoning: the alignment padding and the skipped slice's state and gradients hold NaN before each
step; nothing NaN may reach a parameter, and the skipped slice must be neither read nor written.
"""

from __future__ import annotations

import pytest
import torch
from helpers import triton_kernel_marks
from test_rmsprop import DEVICE, RTOL, STEPS, TorchRun, max_rel_error, random_grads

from kernels.rmsprop import FusedRMSprop, SliceHParams

pytestmark = triton_kernel_marks()

IMPLS = ["triton", "ref"]
COPIES = 3
# per copy: (lr, alpha, eps, clip); the clips bite (0.02 < the initial 0.05 spread) or not (5.0)
HPARAMS = [(1e-2, 0.99, 1e-8, 0.02), (3e-3, 0.9, 1e-6, 5.0), (2e-2, 0.5, 1e-3, 0.05)]
SHAPES = [(COPIES, 7, 5), (COPIES,), (COPIES, 130), (COPIES, 1, 1), (COPIES, 65)]


def table(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=DEVICE)


def slice_hparams(ema: bool, skip: frozenset[int] = frozenset()) -> SliceHParams:
    lr, alpha, eps, clip = (table(list(v)) for v in zip(*HPARAMS))
    decay = torch.zeros(COPIES, dtype=torch.float64, device=DEVICE) if ema else None
    return SliceHParams(lr=lr, alpha=alpha, eps=eps, clip_value=clip, ema_decay=decay, skip=skip)


def stacked_params(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=gen, dtype=torch.float64) * 0.05).to(DEVICE, dtype) for s in SHAPES]


def per_copy_reference(start: list[torch.Tensor], copies: list[int]) -> TorchRun:
    """torch.optim.RMSprop, one param group per copy (its slices of every parameter, its values)."""
    groups = []
    for s in copies:
        lr, alpha, eps, clip = HPARAMS[s]
        groups.append(dict(params=[p[s].clone() for p in start], lr=lr, alpha=alpha, eps=eps, clip_value=clip))
    return TorchRun(groups)


def decay_at(t: int, s: int) -> float:
    """Each copy its own warm-up, min(beta_s, (1 + t) / (10 + t)): a different decay per slice."""
    return min((0.9, 0.5, 0.0)[s], (1 + t) / (10 + t))


def check_against_torch(
    opt: FusedRMSprop, params: list[torch.Tensor], ref: TorchRun, copies: list[int], ema: list[list] | None
) -> None:
    """Every slice's parameters, square_avg (and average) within RTOL of its own torch run."""
    for gi, s in enumerate(copies):
        for i, p in enumerate(params):
            where = f"copy {s} param {i} {tuple(p.shape)}"
            scale = ref.scale[(gi, i, "param")]
            assert max_rel_error(p.detach()[s], ref.params[gi][i], scale) <= RTOL, where
            mine, theirs = opt.state[p]["square_avg"][s], ref.opt.state[ref.params[gi][i]]["square_avg"]
            assert max_rel_error(mine, theirs, ref.scale[(gi, i, "square_avg")]) <= RTOL, where
            if ema is not None:
                average = opt.ema_params()[i][s]
                assert max_rel_error(average, ema[gi][i], ema_scale(ref, gi, i)) <= RTOL, where


def ema_scale(ref: TorchRun, gi: int, i: int) -> torch.Tensor:
    """An average is a convex combination of the parameters it saw: bounded by their largest scale
    (tests/test_rmsprop.py's run_and_average); the final scale is the largest (it only grows)."""
    return ref.scale[(gi, i, "param")]


def run_steps(
    opt: FusedRMSprop, params: list[torch.Tensor], ref: TorchRun, copies: list[int], steps: int, seed: int, **how
) -> list[list[torch.Tensor]] | None:
    """``steps`` steps of the sliced optimizer and of the per-copy torch run, from fresh random gradients.

    ``missing``: every 4th step one parameter (in turn) has no gradient: its slices are clamped only,
    each to its own clip, and still averaged. ``poison``: the gradients of the slices not in
    ``copies`` are NaN. With an average, each slice's decay follows its own warm-up, written into
    the device table in place before each step; returns the eager per-copy averages beside it."""
    slices = opt.param_groups[0]["slices"]
    shapes = [tuple(p.shape) for p in params]
    averages = [[p.detach()[s].clone() for p in params] for s in copies] if slices.ema_decay is not None else None
    gen = torch.Generator().manual_seed(seed)
    for t in range(steps):
        grads = random_grads(shapes, gen, params[0].dtype)
        missing = t % len(shapes) if how.get("missing") and t % 4 == 3 else None
        for i, (p, g) in enumerate(zip(params, grads)):
            p.grad = None if i == missing else g.clone()
            if p.grad is not None and how.get("poison"):
                for s in set(range(COPIES)) - set(copies):
                    p.grad[s] = float("nan")
        if averages is not None:
            slices.ema_decay.copy_(table([decay_at(t, s) for s in range(COPIES)]))
        opt.step()
        ref.step([[None if i == missing else g[s] for i, g in enumerate(grads)] for s in copies])
        for s_i, s in enumerate(averages and copies or []):
            torch._foreach_lerp_(averages[s_i], [p.detach() for p in ref.params[s_i]], 1 - decay_at(t, s))
    return averages


def sliced_optimizer(params: list[torch.Tensor], impl: str, ema: bool, skip: frozenset[int] = frozenset()):
    slices = slice_hparams(ema, skip)
    group = {"params": params, "slices": slices}
    return FusedRMSprop([group], clip_value=1.0, ema_decay=0.0 if ema else None, impl=impl)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ema", [False, True], ids=["no_ema", "ema"])
def test_each_slice_is_its_own_torch_rmsprop_and_clamp(impl: str, dtype: torch.dtype, ema: bool) -> None:
    """Odd sizes (one element per slice, sizes off the 64-element alignment), parameters without a
    gradient now and then, each copy its own lr, alpha, eps, clip and average decay."""
    start = stacked_params(dtype)
    params = [p.clone().requires_grad_() for p in start]
    opt = sliced_optimizer(params, impl, ema)
    copies = list(range(COPIES))
    ref = per_copy_reference(start, copies)
    averages = run_steps(opt, params, ref, copies, STEPS, seed=7, missing=True)
    check_against_torch(opt, params, ref, copies, averages)
    assert not torch.allclose(params[2].detach()[0], params[2].detach()[1])  # the copies did differ


@pytest.mark.parametrize("impl", IMPLS)
def test_a_skipped_slice_is_neither_read_nor_written(impl: str) -> None:
    """Slice 0 skipped (a diverged copy): its gradients are NaN and its state poisoned with NaN,
    which stays NaN; its parameters and average do not move. The alignment padding is poisoned too.
    The other copies match torch, and every element of copy 1 (whose clip never bites) moved."""
    start = stacked_params(torch.float32, seed=3)
    params = [p.clone().requires_grad_() for p in start]
    opt = sliced_optimizer(params, impl, ema=True, skip=frozenset({0}))
    copies = [1, 2]
    ref = per_copy_reference(start, copies)
    bucket = opt._buckets[0][0]
    frozen_average = [a[0].clone() for a in opt.ema_params()]  # the average starts as the parameters
    padding = torch.ones(bucket.total, dtype=torch.bool, device=DEVICE)
    skipped = torch.zeros(bucket.total, dtype=torch.bool, device=DEVICE)
    for off, p in zip(bucket.offsets, params):
        padding[off : off + p.numel()] = False
        skipped[off : off + p.numel() // COPIES] = True
    with torch.no_grad():
        bucket.square_avg[skipped] = float("nan")
        for name in ("param_flat", "grad_flat", "square_avg", "ema"):
            getattr(bucket, name)[padding] = float("nan")
    frozen = [p.detach()[0].clone() for p in params]
    averages = run_steps(opt, params, ref, copies, 6, seed=10, poison=True)
    assert torch.isnan(bucket.square_avg[skipped]).all()
    for p, before, average, kept in zip(params, frozen, opt.ema_params(), frozen_average):
        assert torch.equal(p.detach()[0], before) and torch.equal(average[0], kept)
    assert all((p.detach()[1] != q[1]).all() for p, q in zip(params, start))
    check_against_torch(opt, params, ref, copies, averages)


@pytest.mark.parametrize("impl", IMPLS)
def test_slices_longer_than_a_block(impl: str) -> None:
    """70,001 values per copy: more than one block per slice (the interpreter's largest is 65,536)."""
    shapes = [(COPIES, 70_001), (COPIES, 5)]
    gen = torch.Generator().manual_seed(2)
    start = [(torch.randn(s, generator=gen) * 0.05).to(DEVICE) for s in shapes]
    params = [p.clone().requires_grad_() for p in start]
    opt = sliced_optimizer(params, impl, ema=False)
    ref = per_copy_reference(start, list(range(COPIES)))
    run_steps(opt, params, ref, list(range(COPIES)), 3, seed=4)
    check_against_torch(opt, params, ref, list(range(COPIES)), None)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda s: {"slices": SliceHParams(s.lr.float(), s.alpha, s.eps, s.clip_value)}, "float64 tensor of 3"),
        (
            lambda s: {"slices": SliceHParams(s.lr[:2], s.alpha[:2], s.eps[:2], s.clip_value[:2])},
            "first dimension must be 2",
        ),
        (lambda s: {"slices": SliceHParams(s.lr, s.alpha, s.eps)}, "no clip_value table"),
        (lambda s: {"slices": SliceHParams(-s.lr, s.alpha, s.eps, s.clip_value)}, "lr out of range"),
        (lambda s: {"slices": SliceHParams(s.lr, s.alpha, s.eps, s.clip_value, skip=frozenset({3}))}, "outside"),
        (lambda s: {"slices": "fast"}, "SliceHParams"),
    ],
)
def test_bad_slice_tables_are_refused(make, words: str) -> None:
    params = [p.requires_grad_() for p in stacked_params(torch.float32)]
    with pytest.raises((ValueError, TypeError), match=words):
        FusedRMSprop([{"params": params, **make(slice_hparams(False))}], clip_value=1.0)
