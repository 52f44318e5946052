"""kernels.FusedRMSprop (Triton and reference) against torch.optim.RMSprop followed by clamp_.

Runs on CPU under the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1), on CUDA when
there is a GPU (bench/gpu_check.sh). The eager reference is ``opt.step(); for p in params:
p.clamp_(-c, c)``: the clip applies to EVERY parameter, with or without a gradient.

Tolerance: maximum relative error <= 1e-6 per element after 20 steps, where the relative error of
a value is ``|fused - torch| / max(|torch|, S, 1e-30)`` and ``S`` is the magnitude the value was
accumulated from in the torch run: ``|x0| + sum_k |dx_k|`` (for parameters, ``dx_k`` is the step
before the clamp; with momentum, ``S`` also adds ``lr * S_buf`` each step, ``S_buf`` being the
momentum-weighted sum of ``|g / avg|`` the buffer is built from). Rounding error of a sum is bounded
relative to the magnitudes summed, not to the result, which can cancel to ~0 (momentum buffers
do); a plain |a-b|/|b| would fail on such elements whatever the kernel. The Triton kernel cannot be
bitwise equal to torch on CPU: torch's vectorised CPU sqrt is not correctly rounded (about 0.7% of
elements are 1 ulp off), the kernel's is.

Poisoning: the optimizer's flat buffers hold elements that belong to no parameter (alignment
padding) and regions of parameters without gradient; tests fill those with NaN before a step and
check that nothing NaN reaches a parameter or state that must be updated, and that every element of
every updated parameter changed (an element the kernel skipped keeps its old value and fails).
"""

from __future__ import annotations

import copy
import io
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from helpers import CRITIC_SHAPES

import kernels
from kernels import _dispatch
from kernels.rmsprop import FusedRMSprop, rmsprop_clip_step

pytestmark = pytest.mark.skipif(
    not _dispatch.triton_can_run("cpu") and not torch.cuda.is_available(),
    reason="Triton cannot run here (no CUDA and no TRITON_INTERPRET=1)",
)

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
RTOL = 1e-6
STEPS = 20
IMPLS = ["triton", "ref"]
ODD_SHAPES = [(1,), (7,), (1025,), ()]
STATE_KEYS = ("square_avg", "momentum_buffer", "grad_avg")
COMBOS = list(itertools.product([0.0, 0.9], [False, True], [0.0, 0.1], [False, True], [None, 0.01]))
COMBO_IDS = [f"mom{m}-{'cen' if c else 'plain'}-wd{w}-{'max' if x else 'min'}-clip{k}" for m, c, w, x, k in COMBOS]


def test_critic_shapes_hold_the_seed_critic_values() -> None:
    assert sum(math.prod(s) for s in CRITIC_SHAPES) == 670_401 and len(CRITIC_SHAPES) == 10


# ------------------------------------------------------------------------------------------------
# Reference harness
# ------------------------------------------------------------------------------------------------


def initial_params(shapes, seed: int = 0, dtype=torch.float32) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=gen) * 0.05).to(DEVICE, dtype) for s in shapes]


def random_grads(shapes, gen: torch.Generator, dtype=torch.float32) -> list[torch.Tensor]:
    return [torch.randn(s, generator=gen).to(DEVICE, dtype) for s in shapes]


def torch_hparams(group: dict) -> dict:
    return {k: v for k, v in group.items() if k != "clip_value"}


class TorchRun:
    """torch.optim.RMSprop + clamp_ on every parameter, tracking each value's magnitude scale S.

    Besides the magnitudes summed into each value, S carries the error the update inherits from
    forming its gradient: ``g_eff = (-g if maximize else g) + wd * p`` is a sum rounded once, so it
    may be off by ``u * A`` with ``A = |g| + wd * (|p| + S_p)`` (the terms' magnitudes, plus the
    parameter's own allowed error); the step turns that into at most ``|f'(g_eff)| * A`` in
    ``f = g_eff / avg`` (``f'`` taken analytically, centered included). Where ``g_eff`` cancels
    to near zero (``|g| ~ wd |p|``) ``avg`` approaches ``eps`` and ``f'`` grows to ~``1 / eps``:
    that element's update is ill-conditioned in any implementation, and its scale says so.
    """

    def __init__(self, groups: list[dict]) -> None:
        self.groups = groups
        self.params = [[p.clone().requires_grad_() for p in g["params"]] for g in groups]
        self.opt = torch.optim.RMSprop(
            [{**torch_hparams(g), "params": ps} for g, ps in zip(groups, self.params)], foreach=False
        )
        self.scale: dict[tuple[int, int, str], torch.Tensor] = {}
        for gi, ps in enumerate(self.params):
            for i, p in enumerate(ps):
                self.scale[(gi, i, "param")] = p.detach().abs().clone()

    def lr(self, gi: int) -> float:
        return float(self.opt.param_groups[gi]["lr"])

    def _sensitivity(
        self, group: dict, g: torch.Tensor, p: torch.Tensor, states: dict[str, torch.Tensor], p_scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(g_eff, A, |f'(g_eff)|) in float64 from the state before the step."""
        alpha, eps, wd = group["alpha"], group["eps"], group["weight_decay"]
        g, p = g.double(), p.double()
        g_eff = (-g if group["maximize"] else g) + wd * p
        a = g.abs() + wd * (p.abs() + p_scale.double())
        sq = alpha * states.get("square_avg", torch.zeros_like(g)).double() + (1 - alpha) * g_eff * g_eff
        dv = 2 * (1 - alpha) * g_eff
        if group["centered"]:
            ga = alpha * states.get("grad_avg", torch.zeros_like(g)).double() + (1 - alpha) * g_eff
            sq, dv = sq - ga * ga, dv - 2 * (1 - alpha) * ga
        root = sq.clamp_min(0).sqrt()
        avg = root + eps
        slope = 1 / avg - torch.where(root > 0, g_eff * dv / (2 * root.clamp_min(1e-300) * avg * avg), 0.0)
        return g_eff, a, slope.abs()

    def step(self, grads: list[list[torch.Tensor | None]]) -> None:
        before = {}
        for gi, (ps, gs) in enumerate(zip(self.params, grads)):
            for i, (p, g) in enumerate(zip(ps, gs)):
                p.grad = None if g is None else g.clone()
                state = self.opt.state[p]
                before[(gi, i)] = (p.detach().clone(), {k: state[k].clone() for k in STATE_KEYS if k in state})
        sens = {
            key: self._sensitivity(
                self.opt.param_groups[key[0]],
                self.params[key[0]][key[1]].grad,
                *before[key],
                self.scale[(*key, "param")],
            )
            for key in before
            if self.params[key[0]][key[1]].grad is not None
        }
        self.opt.step()
        for gi, (ps, group) in enumerate(zip(self.params, self.opt.param_groups)):
            for i, p in enumerate(ps):
                if p.grad is not None:
                    self._grow_scales(gi, i, group, before[(gi, i)], sens[(gi, i)])
        with torch.no_grad():
            for ps, g in zip(self.params, self.groups):
                if g.get("clip_value") is not None:
                    for p in ps:
                        p.clamp_(-g["clip_value"], g["clip_value"])

    def _grow_scales(self, gi: int, i: int, group: dict, before: tuple, sens: tuple) -> None:
        """Add one step's magnitudes (and inherited gradient error) to the parameter's scales."""
        p = self.params[gi][i]
        p_before, st_before = before
        g_eff, a, slope = sens
        state = self.opt.state[p]
        inherited = {
            "square_avg": 2 * (1 - group["alpha"]) * g_eff.abs() * a,
            "grad_avg": (1 - group["alpha"]) * a,
            "momentum_buffer": slope * a,
        }
        for k in (k for k in STATE_KEYS if k in state):
            prev = st_before.get(k, torch.zeros_like(state[k]))
            s = self.scale.setdefault((gi, i, k), prev.abs().clone())
            m = group["momentum"] if k == "momentum_buffer" else 1.0
            s.mul_(m).add_((state[k] - m * prev).abs() + inherited[k].to(s.dtype))
        s = self.scale[(gi, i, "param")]
        s.add_((p.detach() - p_before).abs())
        if group["momentum"] > 0:
            s.add_(self.lr(gi) * self.scale[(gi, i, "momentum_buffer")])
        else:
            s.add_((self.lr(gi) * slope * a).to(s.dtype))


class FusedRun:
    def __init__(self, groups: list[dict], impl: str) -> None:
        self.params = [[p.clone().requires_grad_() for p in g["params"]] for g in groups]
        self.opt = FusedRMSprop([{**g, "params": ps} for g, ps in zip(groups, self.params)], impl=impl)

    def step(self, grads: list[list[torch.Tensor | None]]) -> None:
        for ps, gs in zip(self.params, grads):
            for p, g in zip(ps, gs):
                p.grad = None if g is None else g.clone()
        self.opt.step()


def max_rel_error(actual: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor | None) -> float:
    actual, expected = actual.detach().double(), expected.detach().double()
    if actual.numel() == 0:
        return 0.0
    assert torch.isfinite(actual).all(), "non-finite values: an element was not written, or NaN leaked in"
    denom = expected.abs() if scale is None else torch.maximum(expected.abs(), scale.double())
    return ((actual - expected).abs() / denom.clamp_min(1e-30)).max().item()


def assert_matches(fused: FusedRun, ref: TorchRun, rtol: float = RTOL) -> float:
    """Parameters, every state tensor and the step counts agree; returns the worst relative error."""
    worst = 0.0
    for gi, (fps, tps) in enumerate(zip(fused.params, ref.params)):
        for i, (fp, tp) in enumerate(zip(fps, tps)):
            err = max_rel_error(fp, tp, ref.scale[(gi, i, "param")])
            assert err <= rtol, f"group {gi} param {i} {tuple(tp.shape)}: relative error {err:.3g}"
            worst = max(worst, err)
            fs, ts = fused.opt.state.get(fp, {}), ref.opt.state.get(tp, {})
            assert sorted(fs) == sorted(ts), f"group {gi} param {i}: state keys {sorted(fs)} != {sorted(ts)}"
            for k in ts:
                if k == "step":
                    assert float(fs[k]) == float(ts[k]), f"group {gi} param {i}: step {fs[k]} != {ts[k]}"
                    continue
                err = max_rel_error(fs[k], ts[k], ref.scale.get((gi, i, k)))
                assert err <= rtol, f"group {gi} param {i} {k}: relative error {err:.3g}"
                worst = max(worst, err)
    return worst


def run_and_compare(
    groups: list[dict], impls: list[str], steps: int = STEPS, seed: int = 1, grad_pattern=None
) -> dict[str, float]:
    """Fresh random gradients every step (``grad_pattern(step, group, i) -> bool``: has a grad)."""
    ref = TorchRun(groups)
    runs = {impl: FusedRun(groups, impl) for impl in impls}
    gen = torch.Generator().manual_seed(seed)
    shapes = [[tuple(p.shape) for p in g["params"]] for g in groups]
    for k in range(steps):
        grads = [random_grads(s, gen) for s in shapes]
        if grad_pattern is not None:
            grads = [[g if grad_pattern(k, gi, i) else None for i, g in enumerate(gs)] for gi, gs in enumerate(grads)]
        ref.step(grads)
        for run in runs.values():
            run.step(grads)
    return {impl: assert_matches(run, ref) for impl, run in runs.items()}


# torch's RMSprop defaults and no clip: a param group that spells out every key torch reads
EVERY_KEY_DEFAULTS = dict(
    lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0, maximize=False, clip_value=None
)


def combo_group(shapes, combo, lr: float = 1e-2) -> dict:
    momentum, centered, weight_decay, maximize, clip = combo
    return dict(
        params=initial_params(shapes),
        lr=lr,
        alpha=0.99,
        eps=1e-8,
        momentum=momentum,
        centered=centered,
        weight_decay=weight_decay,
        maximize=maximize,
        clip_value=clip,
    )


# ------------------------------------------------------------------------------------------------
# Parity over every combination
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
def test_critic_shapes_match_torch_rmsprop_and_clamp(combo) -> None:
    errors = run_and_compare([combo_group(CRITIC_SHAPES, combo)], IMPLS)
    assert set(errors) == set(IMPLS)


@pytest.mark.parametrize("combo", COMBOS, ids=COMBO_IDS)
def test_odd_sizes_match_torch_rmsprop_and_clamp(combo) -> None:
    run_and_compare([combo_group(ODD_SHAPES, combo)], IMPLS)


def test_default_hyper_parameters_match_torch() -> None:
    params = initial_params([(3, 5), (11,)])
    a = [p.clone().requires_grad_() for p in params]
    b = [p.clone().requires_grad_() for p in params]
    fused, eager = FusedRMSprop(a), torch.optim.RMSprop(b)
    assert {
        k: fused.defaults[k] for k in ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
    } == {k: eager.defaults[k] for k in ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")}
    assert fused.defaults["clip_value"] is None


# ------------------------------------------------------------------------------------------------
# None gradients, param groups, tensor lr
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("clip", [None, 0.01])
def test_none_grads_are_skipped_like_torch(impl: str, clip) -> None:
    shapes = [(5, 7), (1,), (300,), (), (64, 3), (2, 2, 2)]

    def pattern(step: int, gi: int, i: int) -> bool:  # varying patterns, incl. no grad at all
        if step == 3:
            return False
        return i != 1 and (i + step) % 3 != 0 or step in (0, 5)

    group = combo_group(shapes, (0.9, True, 0.1, False, clip))
    run_and_compare([group], [impl], steps=12, grad_pattern=pattern)


@pytest.mark.parametrize("impl", IMPLS)
def test_clip_applies_to_params_without_grad(impl: str) -> None:
    """The drop-in target clamps every parameter after the step, the ones torch skipped included."""
    shapes = [(70,), (5, 5), (3,), (200,)]
    pattern = [False, True, False, True]  # the first and third never get a gradient
    params = [torch.full(s, v, device=DEVICE) for s, v in zip(shapes, (0.3, -0.2, -0.5, 0.04))]
    group = {**EVERY_KEY_DEFAULTS, "params": params, "clip_value": 0.1}
    run_and_compare([group], [impl], steps=3, grad_pattern=lambda k, gi, i: pattern[i])
    fused = FusedRun([group], impl)
    fused.step([[None] * 4])  # no gradient at all: only the clamp
    expected = [torch.tensor(v).item() for v in (0.1, -0.1, -0.1, 0.04)]  # the clamp bounds, as fp32
    assert [p.detach().flatten()[0].item() for p in fused.params[0]] == expected
    assert not fused.opt.state


@pytest.mark.parametrize("impl", IMPLS)
def test_a_parameter_that_never_has_a_grad_gets_no_state(impl: str) -> None:
    params = [p.requires_grad_() for p in initial_params([(4,), (6,)])]
    before = params[1].detach().clone()
    opt = FusedRMSprop(params, momentum=0.9, impl=impl)
    for _ in range(3):
        params[0].grad = torch.randn(4, device=DEVICE)
        opt.step()
    assert params[1] not in opt.state or not opt.state[params[1]]
    assert torch.equal(params[1].detach(), before)
    assert float(opt.state[params[0]]["step"]) == 3
    assert len(opt.state_dict()["state"]) == 1


@pytest.mark.parametrize("impl", IMPLS)
def test_several_param_groups_with_their_own_hyper_parameters(impl: str) -> None:
    groups = [
        dict(params=initial_params([(33, 5), (5,)], seed=2), lr=1e-2, momentum=0.9, clip_value=0.01),
        dict(
            params=initial_params([(17,), (), (1025,)], seed=3),
            lr=3e-3,
            centered=True,
            weight_decay=0.1,
            maximize=True,
            alpha=0.9,
            eps=1e-6,
        ),
        dict(params=initial_params([(2, 3, 4)], seed=4), lr=5e-2, clip_value=0.05, momentum=0.5, centered=True),
    ]
    for g in groups:  # torch needs every key in each group
        for k, v in EVERY_KEY_DEFAULTS.items():
            g.setdefault(k, v)
    run_and_compare(groups, [impl])


@pytest.mark.parametrize("impl", IMPLS)
def test_tensor_lr_is_read_every_step(impl: str) -> None:
    shapes = [(40, 3), (9,)]
    lr_t, lr_f = torch.tensor(1e-2, device=DEVICE), torch.tensor(1e-2, device=DEVICE)
    ref = TorchRun([dict(params=initial_params(shapes), lr=lr_t, momentum=0.0, clip_value=0.02)])
    fused = FusedRun([dict(params=initial_params(shapes), lr=lr_f, momentum=0.0, clip_value=0.02)], impl)
    gen = torch.Generator().manual_seed(5)
    snapshots = []
    for k in range(STEPS):
        if k in (5, 10, 15):
            new = {5: 3e-3, 10: 0.0, 15: 2e-2}[k]
            lr_t.fill_(new)
            lr_f.fill_(new)
        grads = [random_grads(shapes, gen)]
        ref.step(grads)
        fused.step(grads)
        snapshots.append([p.detach().clone() for p in fused.params[0]])
    assert_matches(fused, ref)
    # lr == 0 for steps 10..14: the parameters did not move (the clip had already been applied)
    for k in range(11, 15):
        assert all(torch.equal(a, b) for a, b in zip(snapshots[k], snapshots[10]))
    assert not torch.equal(snapshots[16][0], snapshots[14][0])


# ------------------------------------------------------------------------------------------------
# state_dict both ways
# ------------------------------------------------------------------------------------------------


def _roundtrip(sd: dict) -> dict:
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("direction", ["torch_to_fused", "fused_to_torch"])
def test_state_dict_moves_between_torch_and_fused(impl: str, direction: str) -> None:
    shapes = [(16, 3, 3), (16,), (), (300,)]
    hp = dict(lr=1e-2, momentum=0.9, centered=True, weight_decay=0.1, clip_value=0.05)
    gen = torch.Generator().manual_seed(7)
    # first half: torch (or fused) alone
    group = dict(params=initial_params(shapes, seed=8), **hp)
    first: TorchRun | FusedRun = TorchRun([group]) if direction == "torch_to_fused" else FusedRun([group], impl)
    for k in range(10):  # parameter 2 has no gradient for the first steps: no state to move for it
        grads = random_grads(shapes, gen)
        grads[2] = grads[2] if k >= 8 else None
        first.step([grads])
    sd = copy.deepcopy(first.opt.state_dict()) if direction == "torch_to_fused" else _roundtrip(first.opt.state_dict())
    now = [p.detach().clone() for p in first.params[0]]
    # second half: torch and fused both continue from the moved state
    if direction == "torch_to_fused":
        ref = first
        fused = FusedRun([dict(params=now, **hp)], impl)
        fused.opt.load_state_dict(sd)
        bucket = fused.opt._buckets[0][0]
        for p in fused.params[0]:  # the loaded state lives in the flat buffers (views, not copies)
            for k in ("square_avg", "momentum_buffer", "grad_avg"):
                assert (
                    fused.opt.state[p][k].untyped_storage().data_ptr()
                    == getattr(bucket, k).untyped_storage().data_ptr()
                )
    else:
        fused = first
        ref = TorchRun([dict(params=now, **hp)])
        ref.opt.load_state_dict(sd)
    for _ in range(10):
        grads = [random_grads(shapes, gen)]
        ref.step(grads)
        fused.step(grads)
    assert float(fused.opt.state[fused.params[0][0]]["step"]) == 20
    assert_matches(fused, ref)


@pytest.mark.parametrize("impl", IMPLS)
def test_load_state_dict_resets_state_of_params_without_saved_state(impl: str) -> None:
    params = [p.requires_grad_() for p in initial_params([(5,), (3,)])]
    opt = FusedRMSprop(params, impl=impl)
    empty = copy.deepcopy(opt.state_dict())
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    opt.load_state_dict(empty)
    assert not opt.state
    bucket = opt._buckets[0][0]
    assert not bucket.square_avg.any() and not bucket.steps.any()


def test_state_dict_keeps_hyper_parameters_and_clip() -> None:
    a, b = [p.requires_grad_() for p in initial_params([(5,), (2,)])]
    opt = FusedRMSprop([{"params": [a]}, {"params": [b], "clip_value": 0.5}], lr=3e-3, clip_value=0.02)
    torch_sd = torch.optim.RMSprop(
        [
            {"params": [a.detach().clone().requires_grad_()]},
            {"params": [b.detach().clone().requires_grad_()], "lr": 1e-4},
        ],
        lr=7e-3,
    ).state_dict()
    opt.load_state_dict(torch_sd)  # a torch state dict has no clip_value: each group keeps its own
    assert [g["lr"] for g in opt.param_groups] == [7e-3, 1e-4]
    assert [g["clip_value"] for g in opt.param_groups] == [0.02, 0.5]
    fused_sd = copy.deepcopy(opt.state_dict())
    fused_sd["param_groups"][1]["clip_value"] = 0.25
    opt.load_state_dict(fused_sd)  # ours has one: it is loaded like every hyper-parameter
    assert [g["clip_value"] for g in opt.param_groups] == [0.02, 0.25]


# ------------------------------------------------------------------------------------------------
# Flat buffers: views, poison, zero-copy gradients, replaced data, layouts, dtypes
# ------------------------------------------------------------------------------------------------


def _not_a_param_mask(bucket, active: list[bool] | None = None) -> torch.Tensor:
    """True on elements of the flat buffers outside every (active) parameter."""
    mask = torch.ones(bucket.total, dtype=torch.bool, device=DEVICE)
    for i, p in enumerate(bucket.params):
        if active is None or active[i]:
            mask[bucket.offsets[i] : bucket.offsets[i] + p.numel()] = False
    return mask


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("clip", [None, 5.0], ids=["no_clip", "clip"])  # 5.0: clamp-only blocks, never bites
def test_poisoned_padding_and_skipped_params_stay_out_of_the_update(impl: str, clip) -> None:
    shapes = [(3, 7), (1,), (130,), (), (65,)]
    params = [p.requires_grad_() for p in initial_params(shapes)]
    opt = FusedRMSprop(params, lr=1e-2, momentum=0.9, centered=True, clip_value=clip, impl=impl)
    ref = TorchRun(
        [dict(params=[p.detach().clone() for p in params], lr=1e-2, momentum=0.9, centered=True, clip_value=clip)]
    )
    gen = torch.Generator().manual_seed(11)
    bucket = opt._buckets[0][0]
    patterns = [[True] * 5, [True, False, True, True, False], [True, True, True, False, False], [True] * 5]
    for step, active in enumerate(patterns):
        grads = random_grads(shapes, gen)
        for p, g, a in zip(params, grads, active):
            p.grad = g.clone() if a else None
        outside = _not_a_param_mask(bucket)
        skipped = ~_not_a_param_mask(bucket, [not a for a in active])
        params_before = [p.detach().clone() for p in params]
        if step > 0:  # from step 1 on every parameter has state
            saved = {name: getattr(bucket, name)[skipped].clone() for name in STATE_KEYS}
            with torch.no_grad():
                for name in ("param_flat", "grad_flat", "square_avg", "momentum_buffer", "grad_avg"):
                    getattr(bucket, name)[outside] = float("nan")  # belongs to no parameter
                for name in ("square_avg", "momentum_buffer", "grad_avg", "grad_flat"):
                    getattr(bucket, name)[skipped] = float("nan")  # must be neither read nor written
        opt.step()
        ref.step([[g if a else None for g, a in zip(grads, active)]])
        if step > 0:
            for name in STATE_KEYS:
                assert torch.isnan(getattr(bucket, name)[skipped]).all(), name
                getattr(bucket, name)[skipped] = saved[name]  # these parameters resume later
        for p, before, a in zip(params, params_before, active):
            assert torch.isfinite(p).all()
            if a:  # every element of every updated parameter was written
                assert (p.detach() != before).all()
            else:
                assert torch.equal(p.detach(), before)
        fused = FusedRun.__new__(FusedRun)
        fused.params, fused.opt = [params], opt
        assert_matches(fused, ref)  # parameters, every state and the step counts, against S


@pytest.mark.parametrize("impl", IMPLS)
def test_params_and_state_are_views_into_the_flat_buffers(impl: str) -> None:
    params = [p.requires_grad_() for p in initial_params([(3, 4), (5,)])]
    opt = FusedRMSprop(params, momentum=0.9, centered=True, impl=impl)
    bucket = opt._buckets[0][0]
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    base = bucket.param_flat.untyped_storage().data_ptr()
    for i, p in enumerate(params):
        assert p.untyped_storage().data_ptr() == base
        assert p.data_ptr() == bucket.param_flat.data_ptr() + bucket.offsets[i] * p.element_size()
        assert bucket.offsets[i] % 64 == 0
        assert p.grad.data_ptr() == bucket.grad_flat.data_ptr() + bucket.offsets[i] * p.element_size()
        assert opt.state[p]["square_avg"].data_ptr() == bucket.square_avg.data_ptr() + bucket.offsets[i] * 4


@pytest.mark.parametrize("impl", IMPLS)
def test_backward_accumulates_into_the_flat_gradient_buffer(impl: str) -> None:
    """Backward writes straight into the optimizer's flat gradient buffer (same addresses every
    step), and the steps taken from it are torch's RMSprop + clamp on those same gradients."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).to(DEVICE)
    eager = copy.deepcopy(model)
    opt = FusedRMSprop(model.parameters(), lr=1e-2, clip_value=0.3, impl=impl)
    ref = TorchRun([dict(params=[p.detach().clone() for p in model.parameters()], lr=1e-2, clip_value=0.3)])
    grad_ptrs = None
    for k in range(4):
        x = torch.randn(8, 6, device=DEVICE)
        opt.zero_grad(set_to_none=False)
        model(x).square().mean().backward()
        if k == 0:  # the same weights so far: the same gradients, bit for bit
            eager(x).square().mean().backward()
            assert all(torch.equal(p.grad, q.grad) for p, q in zip(model.parameters(), eager.parameters()))
        ref.step([[p.grad.detach().clone() for p in model.parameters()]])
        opt.step()
        ptrs = [p.grad.data_ptr() for p in model.parameters()]
        assert grad_ptrs is None or ptrs == grad_ptrs  # later steps copied nothing: same buffers
        grad_ptrs = ptrs
    fused = FusedRun.__new__(FusedRun)
    fused.params, fused.opt = [list(model.parameters())], opt
    assert_matches(fused, ref)


@pytest.mark.parametrize("impl", IMPLS)
def test_replaced_param_data_of_the_same_kind_is_taken_over(impl: str) -> None:
    params = [p.requires_grad_() for p in initial_params([(4, 4), (3,)])]
    opt = FusedRMSprop(params, lr=1e-2, impl=impl)
    with torch.no_grad():
        params[0].data = torch.full((4, 4), 0.25, device=DEVICE)  # e.g. load_state_dict(assign=True)
    params[0].grad = torch.ones(4, 4, device=DEVICE)
    opt.step()
    expected = torch.full((4, 4), 0.25 - 1e-2 * 1.0 / (math.sqrt(0.01) + 1e-8), dtype=torch.float64)
    # one step: the magnitudes summed are |p0| + |dx| = 0.25 + 0.1
    assert max_rel_error(params[0], expected, torch.full((4, 4), 0.35)) <= RTOL
    bucket = opt._buckets[0][0]
    assert params[0].data_ptr() == bucket.param_flat.data_ptr()  # re-pointed into the flat buffer


def test_channels_last_parameters_keep_their_layout() -> None:
    p = torch.randn(4, 3, 5, 5, device=DEVICE).contiguous(memory_format=torch.channels_last).requires_grad_()
    q = p.detach().clone().requires_grad_()
    opt = FusedRMSprop([p], lr=1e-2)
    ref = TorchRun([dict(params=[q.detach()], lr=1e-2)])
    g = torch.randn(4, 3, 5, 5, device=DEVICE).contiguous(memory_format=torch.channels_last)
    p.grad = g.clone()
    opt.step()
    ref.step([[g.clone()]])
    assert p.is_contiguous(memory_format=torch.channels_last)
    assert max_rel_error(p, ref.params[0][0], ref.scale[(0, 0, "param")]) <= RTOL


def test_empty_parameter_is_counted_like_torch() -> None:
    params = [torch.zeros(0, device=DEVICE, requires_grad=True), torch.ones(3, device=DEVICE, requires_grad=True)]
    opt = FusedRMSprop(params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert float(opt.state[params[0]]["step"]) == 1 and float(opt.state[params[1]]["step"]) == 1


LOW_PRECISION = [
    pytest.param(torch.float16, id="fp16"),
    pytest.param(
        torch.bfloat16,
        id="bf16",
        marks=pytest.mark.skipif(
            not CUDA, reason="the Triton interpreter has no bf16 arithmetic: bf16 runs on CUDA only"
        ),
    ),
]


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_params_with_fp32_state(dtype: torch.dtype) -> None:
    """Triton vs the reference on the same math (fp32 state, parameters rounded once per step)."""
    shapes = [(30, 7), (1,), (513,)]
    runs = {}
    for impl in IMPLS:
        params = [p.requires_grad_() for p in initial_params(shapes, dtype=dtype)]
        opt = FusedRMSprop(params, lr=1e-2, momentum=0.9, centered=True, clip_value=0.05, impl=impl)
        gen = torch.Generator().manual_seed(3)
        for _ in range(STEPS):
            for p, g in zip(params, random_grads(shapes, gen, dtype)):
                p.grad = g
            opt.step()
        runs[impl] = (params, opt)
    (pt, ot), (pr, orf) = runs["triton"], runs["ref"]
    ulp = torch.finfo(dtype).eps
    for a, b in zip(pt, pr):
        assert a.dtype == dtype and ot.state[a]["square_avg"].dtype == torch.float32
        # an fp32 difference of an ulp can round the parameter to the neighbouring low-precision value
        assert ((a.float() - b.float()).abs() <= ulp * b.float().abs() + 1e-7).all()
        err = max_rel_error(ot.state[a]["square_avg"], orf.state[b]["square_avg"], None)
        assert err <= RTOL


@pytest.mark.parametrize("impl", IMPLS)
def test_float64_params_get_float64_state_and_match_torch(impl: str) -> None:
    """fp64 parameters (wgan.training.parity runs whole epochs in fp64) keep fp64 state and torch's math;
    the Triton kernel reads its scalar hyper-parameters as fp32 (Triton's float scalar), a relative
    change of at most 2**-24 in each, well inside the bound."""
    group = dict(
        params=initial_params([(33, 5), (7,), ()], dtype=torch.float64),
        lr=1e-2,
        momentum=0.9,
        centered=True,
        weight_decay=0.1,
        clip_value=0.05,
    )
    fused = FusedRun([group], impl)
    assert fused.opt._buckets[0][0].square_avg.dtype == torch.float64
    ref = TorchRun([group])
    gen = torch.Generator().manual_seed(12)
    for _ in range(STEPS):
        grads = [random_grads([(33, 5), (7,), ()], gen, torch.float64)]
        ref.step(grads)
        fused.step(grads)
    assert_matches(fused, ref)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("clip", [None, 0.01])
def test_eps_inside_the_root_matches_the_keras_formula(impl: str, clip) -> None:
    """``eps_inside_sqrt``: ``p -= lr g / sqrt(v + eps)`` (TensorFlow's RMSprop, the book's), against
    the plain reference of that formula (wgan.training.keras_rmsprop); the same magnitude-scaled bound
    (no weight decay here: the gradient is an input, formed without rounding)."""
    from wgan.training.keras_rmsprop import KerasRMSprop

    shapes = CRITIC_SHAPES[:4] + ODD_SHAPES
    start = initial_params(shapes)
    mine = [p.clone().requires_grad_() for p in start]
    ref = [p.clone().requires_grad_() for p in start]
    opt = FusedRMSprop(mine, lr=5e-5, alpha=0.9, eps=1e-7, eps_inside_sqrt=True, clip_value=clip, impl=impl)
    keras = KerasRMSprop(ref, lr=5e-5, alpha=0.9, eps=1e-7)
    scale = [p.detach().abs().clone() for p in start]
    gen = torch.Generator().manual_seed(13)
    for _ in range(STEPS):
        grads = random_grads(shapes, gen)
        before = [q.detach().clone() for q in ref]
        for p, q, g in zip(mine, ref, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        keras.step()
        with torch.no_grad():
            for q, s_, b in zip(ref, scale, before):
                s_.add_((q - b).abs())
                if clip is not None:
                    q.clamp_(-clip, clip)
    for p, q, s_ in zip(mine, ref, scale):
        assert max_rel_error(p, q, s_) <= RTOL
        assert max_rel_error(opt.state[p]["square_avg"], keras.state[q]["square_avg"], None) <= RTOL


def run_and_average(
    fused: FusedRun, ref: TorchRun, shapes: list, seed: int, no_grad_every: int, decay_at: Callable[[int], Any]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """STEPS steps of both runs (every ``no_grad_every``-th parameter without a gradient, in turn),
    and beside them the eager average ``torch._foreach_lerp_(ema, params, 1 - decay_at(t))`` of the
    reference's parameters, with the largest magnitude scale each parameter reached (the bound's S)."""
    ema = [p.detach().clone() for p in ref.params[0]]
    worst_scale = [ref.scale[(0, i, "param")].clone() for i in range(len(shapes))]
    gen = torch.Generator().manual_seed(seed)
    for t in range(STEPS):
        decay = decay_at(t)
        grads = [[g if (t + i) % no_grad_every else None for i, g in enumerate(random_grads(shapes, gen))]]
        ref.step(grads)
        fused.step(grads)
        torch._foreach_lerp_(ema, [p.detach() for p in ref.params[0]], 1 - decay)
        for i, s_ in enumerate(worst_scale):
            torch.maximum(s_, ref.scale[(0, i, "param")], out=s_)
    return ema, worst_scale


@pytest.mark.parametrize("impl", IMPLS)
def test_ema_is_updated_in_the_same_launch_like_a_foreach_lerp(impl: str) -> None:
    """``ema_decay``: after each step (and clip) every parameter's average moves toward it, as the
    eager ``torch._foreach_lerp_(ema, params, 1 - beta)``; a parameter without a gradient too.
    An average is a convex combination of the parameters it saw, so its error is bounded by the
    largest magnitude scale those parameters had (the scale S of TorchRun), times RTOL."""
    beta = 0.9
    shapes = [(33, 5), (7,), (1025,), ()]
    group = dict(params=initial_params(shapes), lr=1e-2, momentum=0.9, clip_value=0.05)
    fused = FusedRun([{**group, "ema_decay": beta}], impl)
    ref = TorchRun([group])
    ema, worst_scale = run_and_average(fused, ref, shapes, seed=14, no_grad_every=4, decay_at=lambda t: beta)
    assert_matches(fused, ref)
    views = fused.opt.ema_params()
    assert [tuple(v.shape) for v in views] == [tuple(s) for s in shapes]
    for v, e, s_ in zip(views, ema, worst_scale):
        assert max_rel_error(v, e, s_) <= RTOL


@pytest.mark.parametrize("impl", IMPLS)
def test_a_tensor_ema_decay_is_read_at_every_step_like_a_foreach_lerp(impl: str) -> None:
    """``ema_decay`` as a 0-d device tensor, changed in place between steps (a warm-up schedule,
    here StyleGAN's min(beta, (1+t)/(10+t)), whose first weights 1 - decay are above 0.5 and later
    ones below: both of torch's lerp branches), as a CUDA-graph replay would see it: the average
    follows the plain ``torch._foreach_lerp_(ema, params, 1 - decay)`` of each step's value. A
    convex combination of the parameters seen, so within RTOL of their largest scale (as above)."""
    beta = 0.7
    shapes = [(9, 4), (3,), (700,), ()]
    group = dict(params=initial_params(shapes, seed=5), lr=1e-2, clip_value=0.05)
    decay = torch.zeros((), device=DEVICE)
    fused = FusedRun([{**group, "ema_decay": decay}], impl)
    ref = TorchRun([group])

    def decay_at(t: int) -> torch.Tensor:
        return decay.fill_(min(beta, (1 + t) / (10 + t)))

    ema, worst_scale = run_and_average(fused, ref, shapes, seed=23, no_grad_every=3, decay_at=decay_at)
    assert_matches(fused, ref)
    for v, e, s_ in zip(fused.opt.ema_params(), ema, worst_scale):
        assert max_rel_error(v, e, s_) <= RTOL
    far = [p.detach() for p in fused.params[0]]  # the average is not the parameters themselves
    assert any(max_rel_error(v, p, None) > 1e-3 for v, p in zip(fused.opt.ema_params(), far))


def test_a_tensor_ema_decay_on_another_device_is_refused_before_any_write() -> None:
    params = [p.requires_grad_() for p in initial_params([(4,)])]
    opt = FusedRMSprop(params, lr=1e-2, ema_decay=torch.tensor(0.5, device="meta"))
    params[0].grad = torch.ones_like(params[0])
    before = params[0].detach().clone()
    with pytest.raises(ValueError, match="ema_decay tensor is on meta"):
        opt.step()
    assert torch.equal(params[0].detach(), before)
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        FusedRMSprop(initial_params([(4,)]), ema_decay=torch.tensor(1.5))


def test_ema_params_are_views_that_restore_an_average() -> None:
    params = [p.requires_grad_() for p in initial_params([(4, 3), (5,)])]
    opt = FusedRMSprop(params, lr=1e-2, ema_decay=0.5)
    views = opt.ema_params()
    assert all(torch.equal(v, p.detach()) for v, p in zip(views, params))  # starts as the parameters
    with torch.no_grad():
        for v in views:
            v.fill_(0.25)  # a resumed run copies its saved average in
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    for v, p in zip(opt.ema_params(), params):  # one lerp: rounded a few times, relative to |e| + |p|
        expected = 0.5 * 0.25 + 0.5 * p.detach().double()
        assert max_rel_error(v, expected, 0.25 + p.detach().abs()) <= RTOL


# ------------------------------------------------------------------------------------------------
# Functional entry and dispatch
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", IMPLS)
def test_functional_step_on_flat_buffers(impl: str) -> None:
    n = 1031
    gen = torch.Generator().manual_seed(4)
    p = (torch.randn(n, generator=gen) * 0.05).to(DEVICE)
    q = p.clone().requires_grad_()
    sq, buf, gavg = (torch.zeros(n, device=DEVICE) for _ in range(3))
    step = torch.zeros(2, device=DEVICE)
    ref = TorchRun([dict(params=[q.detach()], lr=1e-2, momentum=0.9, centered=True, clip_value=0.05)])
    for _ in range(5):
        g = torch.randn(n, generator=gen).to(DEVICE)
        used = rmsprop_clip_step(
            p,
            g,
            sq,
            grad_avg=gavg,
            momentum_buffer=buf,
            step=step,
            lr=1e-2,
            momentum=0.9,
            centered=True,
            clip_value=0.05,
            impl=impl,
        )
        assert used == impl
        ref.step([[g.clone()]])
    state = ref.opt.state[ref.params[0][0]]
    assert max_rel_error(p, ref.params[0][0], ref.scale[(0, 0, "param")]) <= RTOL
    for name, mine in (("square_avg", sq), ("momentum_buffer", buf), ("grad_avg", gavg)):
        assert max_rel_error(mine, state[name], ref.scale[(0, 0, name)]) <= RTOL, name
    assert step.tolist() == [5.0, 5.0]


def test_impl_none_picks_triton_where_it_can_run_and_logs_once(caplog) -> None:
    _dispatch.log_once.cache_clear()
    with caplog.at_level(logging.INFO, logger="kernels"):
        opt = FusedRMSprop([torch.zeros(3, device=DEVICE, requires_grad=True)])
        FusedRMSprop([torch.zeros(3, device=DEVICE, requires_grad=True)])
    assert opt.impls == ["triton"]
    messages = [r.getMessage() for r in caplog.records if "FusedRMSprop" in r.getMessage()]
    assert messages == [f"kernels.FusedRMSprop: impl='triton' on {opt.param_groups[0]['params'][0].device}"]
    assert kernels.FusedRMSprop is FusedRMSprop


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors, nothing touched
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(lr=-1e-3), ValueError, "lr"),
        (dict(lr=float("nan")), ValueError, "lr"),
        (dict(eps=-1e-8), ValueError, "eps"),
        (dict(alpha=-0.5), ValueError, "alpha"),
        (dict(weight_decay=-0.1), ValueError, "weight_decay"),
        (dict(momentum=-0.9), ValueError, "momentum"),
        (dict(clip_value=0.0), ValueError, "clip_value"),
        (dict(clip_value=-0.01), ValueError, "clip_value"),
        (dict(clip_value="0.01"), TypeError, "clip_value"),
        (dict(lr=torch.tensor([1e-3, 1e-3])), ValueError, "lr"),
        (dict(lr=torch.tensor(-1e-3)), ValueError, "lr"),
        (dict(impl="cuda"), ValueError, "impl"),
    ],
)
def test_bad_hyper_parameters_are_refused(kwargs, exc, words) -> None:
    with pytest.raises(exc, match=words):
        FusedRMSprop([torch.zeros(3, device=DEVICE, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(
    "make, exc, words",
    [
        (lambda: [torch.zeros(3, dtype=torch.complex64, requires_grad=True)], TypeError, "complex64"),
        (lambda: [torch.zeros(3, dtype=torch.int32)], TypeError, "int32"),
        (
            lambda: [
                torch.zeros(3, device=DEVICE, requires_grad=True),
                torch.zeros(3, device="meta", requires_grad=True),
            ],
            ValueError,
            "device",
        ),
    ],
)
def test_bad_parameters_are_refused(make, exc, words) -> None:
    with pytest.raises(exc, match=words):
        FusedRMSprop(make())


def snapshot(opt: FusedRMSprop) -> list[torch.Tensor]:
    out = []
    for buckets in opt._buckets:
        for b in buckets:
            out += [b.param_flat.clone(), b.square_avg.clone(), b.steps.clone()]
            out += [t.clone() for t in (b.momentum_buffer, b.grad_avg) if t is not None]
    for state in opt.state.values():
        out += [v.clone() for v in state.values()]
    return out


def two_group_optimizer(impl: str):
    a = [p.requires_grad_() for p in initial_params([(4, 3), (5,)], seed=1)]
    b = [p.requires_grad_() for p in initial_params([(6,)], seed=2)]
    opt = FusedRMSprop([{"params": a}, {"params": b, "momentum": 0.9}], lr=1e-2, clip_value=0.1, impl=impl)
    for p in a + b:
        p.grad = torch.randn_like(p)
    opt.step()
    for p in a + b:
        p.grad = torch.randn_like(p)
    return opt, a, b


def _sparse_grad(opt, a, b):
    b[0].grad = torch.randn(6, device=DEVICE).to_sparse()


def _negative_lr(opt, a, b):
    opt.param_groups[1]["lr"] = -1.0


def _bad_clip(opt, a, b):
    opt.param_groups[1]["clip_value"] = 0.0


def _moved_param(opt, a, b):
    with torch.no_grad():
        b[0].data = b[0].data.double()
    b[0].grad = torch.randn(6, dtype=torch.float64, device=DEVICE)


HAS_GRAD_DTYPE = hasattr(torch.zeros(1), "grad_dtype")  # torch >= 2.10: a gradient may differ from its param
needs_grad_dtype = pytest.mark.skipif(
    not HAS_GRAD_DTYPE,
    reason="this torch has no Tensor.grad_dtype: a gradient cannot differ in dtype from its parameter",
)


def _integer_grad(opt, a, b):
    b[0].grad_dtype = None
    b[0].grad = torch.zeros(6, dtype=torch.int64, device=DEVICE)


def _half_grad(opt, a, b):
    b[0].grad_dtype = None
    b[0].grad = torch.zeros(6, dtype=torch.float16, device=DEVICE)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(
    "spoil, exc, words",
    [
        (_sparse_grad, TypeError, "sparse"),
        (_negative_lr, ValueError, "lr"),
        (_bad_clip, ValueError, "clip_value"),
        (_moved_param, ValueError, "after the optimizer was built"),
        pytest.param(_integer_grad, TypeError, "floating-point gradients", marks=needs_grad_dtype),
        pytest.param(
            _half_grad, ValueError, "gradient of parameter 0 of param group 1 is torch.float16", marks=needs_grad_dtype
        ),
    ],
)
def test_a_failing_step_leaves_everything_untouched(impl: str, spoil, exc, words) -> None:
    opt, a, b = two_group_optimizer(impl)
    before = snapshot(opt)
    grads_before = [p.grad.clone() for p in a]
    spoil(opt, a, b)
    with pytest.raises(exc, match=words):
        opt.step()
    after = snapshot(opt)
    assert len(before) == len(after)
    assert all(torch.equal(x, y) for x, y in zip(before, after))  # group 0 (valid) was not stepped either
    assert all(torch.equal(p.grad, g) for p, g in zip(a, grads_before))


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(grad=torch.zeros(10, dtype=torch.int32)), TypeError, "grad"),
        (dict(grad=torch.zeros(10).to_sparse()), TypeError, "sparse"),
        (dict(grad=torch.zeros(9)), ValueError, "grad"),
        (dict(square_avg=torch.zeros(10, dtype=torch.float16)), TypeError, "square_avg"),
        (dict(momentum=0.9), ValueError, "momentum_buffer"),
        (dict(centered=True), ValueError, "grad_avg"),
        (dict(lr=-1.0), ValueError, "lr"),
        (dict(param=torch.zeros(10, dtype=torch.complex64)), TypeError, "param"),
    ],
)
def test_functional_bad_input(kwargs, exc, words) -> None:
    args = dict(param=torch.zeros(10), grad=torch.zeros(10), square_avg=torch.zeros(10))
    args.update(kwargs)
    args = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) and not v.is_sparse else v for k, v in args.items()}
    before = args["param"].clone()
    with pytest.raises(exc, match=words):
        rmsprop_clip_step(**args)
    assert torch.equal(args["param"], before)


# ------------------------------------------------------------------------------------------------
# CUDA only: no host synchronisation, CUDA graph capture with a tensor lr
# ------------------------------------------------------------------------------------------------

cuda_only = pytest.mark.skipif(not CUDA, reason="CUDA only: host-device synchronisation and CUDA graphs")


@cuda_only
def test_step_never_synchronises_with_the_device() -> None:
    params = [p.requires_grad_() for p in initial_params(CRITIC_SHAPES)]
    opt = FusedRMSprop(params, lr=torch.tensor(5e-5, device=DEVICE), clip_value=0.01)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # compiles the kernel, builds the plan
    for p in params:
        p.grad = torch.randn_like(p)  # fresh tensors: the gather path runs too
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda_only
def test_step_can_be_captured_in_a_cuda_graph() -> None:
    shapes = CRITIC_SHAPES
    lr = torch.tensor(1e-2, device=DEVICE)
    params = [p.requires_grad_() for p in initial_params(shapes)]
    opt = FusedRMSprop(params, lr=lr, momentum=0.9, clip_value=0.01)
    ref = TorchRun([dict(params=initial_params(shapes), lr=1e-2, momentum=0.9, clip_value=0.01)])
    gen = torch.Generator().manual_seed(9)
    grads = random_grads(shapes, gen)
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()  # warm-up: compiles, re-points p.grad at the flat buffer
    ref.step([grads])
    graph = torch.cuda.CUDAGraph()
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        opt.step()
    for k in range(5):
        grads = random_grads(shapes, gen)
        new_lr = 1e-2 if k < 3 else 4e-3
        lr.fill_(new_lr)
        ref.opt.param_groups[0]["lr"] = new_lr
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.grad.copy_(g)
        graph.replay()
        ref.step([grads])
    torch.cuda.synchronize()
    fused = FusedRun.__new__(FusedRun)
    fused.params, fused.opt = [params], opt
    assert_matches(fused, ref)
