"""The error bounds the tests share, and the assertion that applies them.

The bounds themselves live in the package, where ``python -m wgan.check`` uses them too: the
ops' in :mod:`kernels.error_bounds`, the critic's chained through its layers in
:mod:`wgan.numerics`. Every tolerance of the tests comes from there, never from what happened
to pass on one machine.
"""

from __future__ import annotations

import torch

from kernels.error_bounds import (  # noqa: F401  (re-exported for the tests)
    bias_leaky_relu_bounds,
    gamma,
    over_bound,
    unit_roundoff,
    wasserstein_grad_bounds,
    wasserstein_loss_bounds,
)
from wgan.numerics import (  # noqa: F401  (re-exported for the tests)
    PROBABILISTIC_LAMBDA,
    critic_magnitudes,
    critic_rounding_factor,
    critic_score_rms,
)


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor | float, what: str = "") -> None:
    """Every element finite and ``|actual - expected| <= bound`` (bound per element or scalar)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    n_bad, ratio, diff = over_bound(actual, expected, bound)
    assert n_bad == 0, (f"{what}: {n_bad} of {actual.numel()} elements over their bound (non-finite, or "
                        f"|diff| > bound); worst |diff| {diff:.3g} = {ratio:.3g} x its bound")
