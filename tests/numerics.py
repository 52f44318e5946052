"""Error bounds the numeric tests share: every tolerance comes from one of these.

A floating-point sum of ``n`` terms, in any order, is within ``gamma(n) * sum |terms|`` of the exact
sum (``gamma(n) = n u / (1 - n u)``, ``u`` the unit roundoff of the format; Higham, "Accuracy and
Stability of Numerical Algorithms", 3.1). Two implementations of the same sum are then within
twice that of each other. Tests compute the magnitudes ``sum |terms|`` with the same operation on
absolute values (a convolution of ``|x|`` with ``|w|``, the sum of ``|g|``), never from what
happened to pass on one machine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# bf16 keeps 8 significant bits, TF32 11 (10 stored): u = 2**-8 and 2**-11
_UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.float16: 2.0**-11,
                  torch.bfloat16: 2.0**-8, "tf32": 2.0**-11}


def unit_roundoff(dtype: torch.dtype | str) -> float:
    return _UNIT_ROUNDOFF[dtype]


def gamma(n: int, dtype: torch.dtype | str = torch.float32) -> float:
    """Higham's gamma_n: the relative bound of a sum of n terms, relative to the sum of |terms|."""
    nu = max(int(n), 1) * unit_roundoff(dtype)
    assert nu < 1, f"gamma({n}) does not exist in {dtype}"
    return nu / (1 - nu)


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor | float, what: str = "") -> None:
    """Every element finite and ``|actual - expected| <= bound`` (bound per element or scalar)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values (an element not written, or NaN leaked in)"
    diff = (actual.detach().double() - expected.detach().double()).abs()
    bound = torch.as_tensor(bound, dtype=torch.float64, device=diff.device)
    excess = diff - bound
    if excess.numel() and excess.max() > 0:
        i = int(excess.flatten().argmax())
        b = bound.flatten()[i] if bound.numel() > 1 else bound
        raise AssertionError(f"{what}: {int((excess > 0).sum())} of {diff.numel()} elements over their bound; "
                             f"worst |diff| {float(diff.flatten()[i]):.3g} > bound {float(b):.3g}")


PROBABILISTIC_LAMBDA = 6.0  # standard deviations: P(|error| > 6 sigma) < 2e-9 for a normal error


def critic_score_rms(critic: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """[N] root-sum-square magnitudes of the critic's scores: ``m_0 = |x|``, and per layer
    ``m_{l+1} = sqrt(conv(m_l**2, W**2) + b**2)``.

    Probabilistic rounding analysis (Higham and Mary, SIAM J. Sci. Comput. 41(5), 2019): rounding
    errors of independent operations add in quadrature, so a layer that rounds its inputs and
    weights with unit roundoff ``u`` adds an error of standard deviation at most ``2 u`` times
    ``sqrt(sum (w x)**2)`` to each output, and passes the errors it received through ``W``, which
    scales their variance by ``W**2``. Over L layers a score's error then has a standard deviation
    of at most ``2 L u`` times this magnitude (LeakyReLU is 1-Lipschitz). The worst-case bound
    (``sum |w x|`` chained) is larger by about ``sqrt(fan-in)`` per layer: looser than the scores
    themselves after four layers, so it could not tell a sign error from rounding.
    """
    m = images.detach().float() ** 2
    with torch.no_grad():
        for conv in critic.convs:
            m = F.conv2d(m, conv.weight.detach().float() ** 2, conv.bias.detach().float() ** 2, conv.stride,
                         conv.padding)
        m = F.linear(m.flatten(1), critic.fc.weight.detach().float() ** 2, critic.fc.bias.detach().float() ** 2)
    return m.squeeze(1).sqrt()
