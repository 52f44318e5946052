"""Rounding-error magnitudes of the seed critic: what bounds the difference of two implementations.

The op-level bounds are in :mod:`kernels.error_bounds`; these chain them through the critic's
layers (tests, benchmarks and ``python -m wgan.check`` use them). Two kinds:

* worst case: the critic run on ``|x|`` with ``|W|`` (``sum |terms|`` at every layer, chained),
  times ``2 gamma_K`` for K the total length of the chained sums. Rigorous, and tight enough in
  float64; in fp32 it grows by about ``sqrt(fan-in)`` per layer and after four layers exceeds the
  scores themselves;
* probabilistic (Higham and Mary, SIAM J. Sci. Comput. 41(5), 2019): rounding errors of
  independent operations add in quadrature, so the magnitudes are root-sum-squares and the factor
  is ``lambda u sqrt(n)`` per sum, with ``lambda = 6`` standard deviations (a normal error exceeds
  that with probability below 2e-9). For fp32 timed paths and lower-precision switches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels.error_bounds import gamma, unit_roundoff

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
            m = F.conv2d(
                m, conv.weight.detach().float() ** 2, conv.bias.detach().float() ** 2, conv.stride, conv.padding
            )
        m = F.linear(m.flatten(1), critic.fc.weight.detach().float() ** 2, critic.fc.bias.detach().float() ** 2)
    return m.squeeze(1).sqrt()


def critic_magnitudes(
    critic: torch.nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    upstream: torch.Tensor,
    power: int = 1,
    features: bool = False,
) -> tuple:
    """Magnitudes of what the critic's losses and parameter gradients sum, through every layer.

    ``power=1``: the worst-case magnitudes (``sum |terms|``, chained); ``power=2``: root-sum-square
    magnitudes (the probabilistic analysis, see :func:`critic_score_rms`). The critic is run on
    ``|x|**p`` with weights ``|W|**p`` (LeakyReLU as ``|f'|**p`` at the real pre-activations).
    That network is linear in its weights, so the gradient of ``sum_i |c_i|**p m_i`` with respect to
    ``|W|**p`` is ``sum |grad_out|**p |x_in|**p`` layer by layer, the magnitude of each weight
    gradient's terms (``c_i``: each score's coefficient in the upstream-weighted losses).
    Returns ([d_loss, d_loss_real, d_loss_fake] magnitudes, {parameter name, or "input" for the
    images: gradient magnitude}), and with ``features=True`` also the flattened features' magnitudes.
    """
    n_real, n = real.shape[0], real.shape[0] + fake.shape[0]
    x = torch.cat([real, fake]).detach().double()
    leaves = {name: (p.detach().double().abs() ** power).requires_grad_() for name, p in critic.named_parameters()}
    leaves["input"] = (x.abs() ** power).requires_grad_()  # the gradient reaching the images, too
    m = leaves["input"]
    for i, conv in enumerate(critic.convs):
        pre = F.conv2d(x, conv.weight.detach().double(), conv.bias.detach().double(), conv.stride, conv.padding)
        slope = torch.where(pre > 0, 1.0, abs(critic.negative_slope)) ** power
        m = F.conv2d(m, leaves[f"convs.{i}.weight"], leaves[f"convs.{i}.bias"], conv.stride, conv.padding) * slope
        x = F.leaky_relu(pre, critic.negative_slope)
    feature_mags = m.flatten(1).detach() ** (1.0 / power)
    scores = F.linear(m.flatten(1), leaves["fc.weight"], leaves["fc.bias"]).squeeze(1)
    g = upstream.double().abs()
    coef = torch.cat(
        [
            torch.full((n_real,), float(g[0] + g[1]) / n_real),
            torch.full((n - n_real,), float(g[0] + g[2]) / max(n - n_real, 1)),
        ]
    ).to(scores.device)
    grads = torch.autograd.grad((coef**power * scores).sum(), list(leaves.values()))
    root = 1.0 / power
    real_mag = (scores[:n_real].sum() / n_real**power) ** root
    fake_mag = (scores[n_real:].sum() / max(n - n_real, 1) ** power) ** root
    losses = torch.stack([real_mag + fake_mag, real_mag, fake_mag]).detach()
    grad_mags = {name: gr.detach() ** root for name, gr in zip(leaves, grads)}
    return (losses, grad_mags, feature_mags) if features else (losses, grad_mags)


def critic_sums(critic: torch.nn.Module, images: torch.Tensor) -> list[int]:
    """The lengths of the sums a critic's forward and backward chain: every layer's fan-in, and
    the largest weight-gradient sum (batch x the first layer's output positions)."""
    fan_ins = [conv.weight[0].numel() for conv in critic.convs] + [critic.fc.weight.shape[1]]
    with torch.no_grad():
        positions = critic.convs[0](images[:1].to(critic.convs[0].weight.dtype)).shape[-2:].numel()
    return fan_ins + [images.shape[0] * positions]


def critic_rounding_factor(
    critic: torch.nn.Module, images: torch.Tensor, dtype: torch.dtype, probabilistic: bool = False
) -> float:
    """What multiplies :func:`critic_magnitudes` to bound |implementation A - implementation B|.

    Worst case (``power=1`` magnitudes): ``2 gamma_K``, K the total length of the chained sums.
    Probabilistic (``power=2``): ``2 lambda u sum_l sqrt(n_l)``: a sum of n terms rounded in any
    order has an error of standard deviation at most ``u sqrt(n)`` times its terms' root-sum-square
    (each partial sum rounded independently), and the chained sums' errors add at most linearly.
    """
    sums = critic_sums(critic, images)
    if probabilistic:
        return 2 * PROBABILISTIC_LAMBDA * unit_roundoff(dtype) * sum(n**0.5 for n in sums)
    return 2 * gamma(sum(sums), dtype)
