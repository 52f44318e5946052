"""wgan.training.parity: one epoch of eager and fused from the same state, along a real trajectory.

The states come from a real eager training of the tiny model: its initial weights, after 50
epochs, and after 300 epochs, when most critic weights sit at the clip. From each, the fused
engine (Triton kernels through the interpreter, and the reference kernels) must match the eager
one in every value within 1e-5 relative (float64: see the module doc of wgan.training.parity), and a
change of one part in a thousand to one hyper-parameter of the candidate must be caught.
"""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from helpers import TINY

from kernels import triton_can_run
from wgan.config import WGANConfig
from wgan.training.engine import build_engine
from wgan.training.parity import BOUND, Difference, ParityReport, relative_difference, same_state_parity

STATE_EPOCHS = (0, 50, 300)
IMPLS = [
    "ref",
    pytest.param(
        "triton",
        marks=pytest.mark.skipif(
            not triton_can_run("cpu"), reason="needs TRITON_INTERPRET=1 (set by tests/conftest.py)"
        ),
    ),
]


def tiny_config(**overrides: object) -> WGANConfig:
    return WGANConfig.from_dict({**TINY, **overrides}).validate()


@functools.cache
def images() -> torch.Tensor:
    return torch.rand(200, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


@functools.cache
def trajectory() -> dict[int, tuple[dict, float]]:
    """{epoch: (training state, clip ratio)} of one eager run of the tiny model."""
    engine = build_engine(tiny_config(), "cpu")
    states = {0: (copy.deepcopy(engine.state_dict()), 0.0)}
    for epoch in range(1, max(STATE_EPOCHS) + 1):
        stats = engine.run_epoch(images())
        if epoch in STATE_EPOCHS:
            states[epoch] = (copy.deepcopy(engine.state_dict()), float(stats["clip_ratio"]))
    return states


def test_the_late_state_has_a_saturated_critic() -> None:
    assert trajectory()[300][1] > 0.9  # most critic weights at +-clip: the regime the issue names


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("epoch", STATE_EPOCHS)
def test_fused_matches_eager_from_states_along_a_trajectory(epoch: int, impl: str) -> None:
    state, _ = trajectory()[epoch]
    report = same_state_parity(state, images(), impl=impl)
    assert report.ok, report.summary() + "\n" + "\n".join(f"{d.name}: {d.relative:.3g}" for d in report.failures())
    names = {d.name for d in report.differences}
    # every loss, every parameter, every optimizer state and every batch-norm statistic was compared
    assert {
        "loss d_loss",
        "loss g_loss",
        "critic.fc.weight",
        "generator.body.2.running_var",
        "opt_critic convs.0.weight square_avg",
        "opt_generator stem.0.weight step",
    } <= names
    n_params = sum(1 for _ in build_engine(tiny_config(), "cpu").critic.parameters())
    assert sum(1 for n in names if n.startswith("opt_critic")) == 2 * n_params  # step + square_avg each


@pytest.mark.parametrize("epoch", STATE_EPOCHS)
@pytest.mark.parametrize(
    "change",
    [
        dict(clip_threshold=0.01 * 1.001),
        dict(generator_bn_momentum=0.2 * 1.001),
        dict(critic_leaky_slope=0.2 * 1.001),
        dict(n_critic=4),
    ],
    ids=["clip", "bn_momentum", "critic_slope", "n_critic"],
)
def test_a_small_real_difference_is_caught(epoch: int, change: dict) -> None:
    """A candidate that computes something else by one part in a thousand fails the bound."""
    state, _ = trajectory()[epoch]
    report = same_state_parity(state, images(), candidate=tiny_config(fused=True, **change), impl="ref")
    assert not report.ok
    assert report.worst.relative > 10 * BOUND


def test_relative_difference_floors_nan_and_shapes() -> None:
    ref = torch.tensor([0.0, 2.0, -4.0], dtype=torch.float64)
    assert relative_difference(ref.clone(), ref) == 0.0
    # -4 + 4e-5 rounds by at most half an ulp of 4 (4.4e-16): 1.1e-11 of the 4e-5 difference
    assert relative_difference(ref + torch.tensor([0.0, 0.0, 4e-5], dtype=torch.float64), ref) == pytest.approx(
        1e-5, rel=1.2e-11
    )
    # 1e-9 in fp32 is off by at most half an fp32 ulp, 2**-25 relative
    assert relative_difference(torch.tensor([1e-9]), torch.tensor([0.0]), floor=1e-4) == pytest.approx(
        1e-5, rel=2.0**-24
    )
    assert math.isnan(relative_difference(torch.tensor([float("nan"), 2.0, -4.0]), ref))
    assert relative_difference(torch.zeros(2), torch.zeros(3)) == float("inf")
    report = ParityReport("a", "b", BOUND, torch.float64, [Difference("x", 0.0), Difference("y", float("nan"))])
    assert not report.ok and report.worst.name == "y"


def test_the_report_names_the_worst_value() -> None:
    state, _ = trajectory()[0]
    report = same_state_parity(state, images(), impl="ref")
    text = report.summary()
    assert "fused[ref] vs eager" in text and "float64" in text and report.worst.name in text
