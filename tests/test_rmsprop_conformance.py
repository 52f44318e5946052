"""FusedRMSprop fails the way torch.optim.RMSprop fails: the same exception class on every bad input.

The cases are PyTorch's own RMSprop error inputs (the OptimizerInfo data shipped with torch in
``torch.testing._internal.common_optimizers``) plus the bad inputs this project already rejects.
torch's behaviour is found by calling torch here, never written down by hand, so a torch that
changes its errors changes what this test expects.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn import Parameter

from kernels.rmsprop import FusedRMSprop

common_optimizers = pytest.importorskip(
    "torch.testing._internal.common_optimizers",
    reason="torch's test utilities need expecttest (pip install expecttest)",
)


def torch_error_inputs() -> list:
    return common_optimizers.optim_error_inputs_func_rmsprop(device="cpu", dtype=torch.float32)


def outcome(make) -> str:
    """The exception class the call raises, 'UserWarning' when it only warns, else 'ok'."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            make()
        except Exception as exc:  # the class is what is compared
            return type(exc).__name__
    if any(issubclass(w.category, UserWarning) for w in caught):
        return "UserWarning"
    return "ok"


def construct_and_step(cls, params, kwargs: dict, step: bool):
    def make():
        opt = cls(params, **kwargs)
        if step:
            for group in opt.param_groups:
                for p in group["params"]:
                    p.grad = torch.ones_like(p)
            opt.step()

    return make


def fresh(params):
    """The same parameter structure with new tensors (each optimizer re-points or keeps state)."""
    if params is None:
        return [Parameter(torch.randn(1, 1))]
    if isinstance(params, torch.Tensor):
        return Parameter(params.detach().clone())
    out, seen = [], {}
    for p in params:
        if isinstance(p, dict):
            out.append({**p, "params": fresh_one(p["params"], seen)})
        else:
            out.append(fresh_one(p, seen))
    return out


def fresh_one(p, seen: dict):
    if isinstance(p, tuple):
        return (p[0], fresh_one(p[1], seen))
    if isinstance(p, list):
        return [fresh_one(q, seen) for q in p]
    return seen.setdefault(id(p), Parameter(p.detach().clone()))  # duplicates stay duplicates


CASES = [
    (
        e.optimizer_error_input.desc,
        e.optimizer_error_input.params,
        e.optimizer_error_input.kwargs,
        e.error_on == common_optimizers.OptimizerErrorEnum.STEP_ERROR,
        e.error_type.__name__,
    )
    for e in torch_error_inputs()
]
# the project's own bad inputs, with torch's answer for each found below by calling torch
OURS = [
    ("negative lr", dict(lr=-1e-3)),
    ("nan lr", dict(lr=float("nan"))),
    ("negative eps", dict(eps=-1e-8)),
    ("negative alpha", dict(alpha=-0.5)),
    ("negative weight decay", dict(weight_decay=-0.1)),
    ("negative momentum", dict(momentum=-0.9)),
    ("two-element lr", dict(lr=torch.tensor([1e-3, 1e-3]))),
    ("negative tensor lr", dict(lr=torch.tensor(-1e-3))),
    ("string lr", dict(lr="0.01")),
    ("string eps", dict(eps="1e-8")),
]


def test_torch_ships_rmsprop_error_inputs() -> None:
    assert len(CASES) >= 5, "torch's RMSprop error inputs went missing: this test would check nothing"


@pytest.mark.parametrize("desc, params, kwargs, on_step, torch_says", CASES, ids=[c[0] for c in CASES])
def test_torch_error_inputs_fail_the_same_way(desc, params, kwargs, on_step, torch_says) -> None:
    kwargs = {"lr": 1e-2, **kwargs}
    ours = outcome(construct_and_step(FusedRMSprop, fresh(params), kwargs, on_step))
    theirs = outcome(construct_and_step(torch.optim.RMSprop, fresh(params), kwargs, on_step))
    assert theirs == torch_says, f"torch itself now answers {theirs} to {desc!r}"
    assert ours == theirs, f"{desc}: FusedRMSprop {ours}, torch.optim.RMSprop {theirs}"


@pytest.mark.parametrize("desc, kwargs", OURS, ids=[c[0] for c in OURS])
def test_our_bad_inputs_fail_like_torch(desc, kwargs) -> None:
    theirs = outcome(construct_and_step(torch.optim.RMSprop, fresh(None), kwargs, False))
    ours = outcome(construct_and_step(FusedRMSprop, fresh(None), kwargs, False))
    assert theirs != "ok", f"torch accepts {desc}: not a bad input"
    assert ours == theirs, f"{desc}: FusedRMSprop {ours}, torch.optim.RMSprop {theirs}"
