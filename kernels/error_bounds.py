"""Rounding-error bounds of this package's ops: how far two correct implementations may differ.

Every parity check of the kernels (the tests, ``python -m wgan.check``) compares against these,
never against a tolerance that happened to pass on one machine. The basis: a floating-point sum
of ``n`` terms, in any order, is within ``gamma(n) * sum |terms|`` of the exact sum, with
``gamma(n) = n u / (1 - n u)`` and ``u`` the format's unit roundoff (Higham, "Accuracy and
Stability of Numerical Algorithms", 2nd ed., section 3.1); a product or a division adds ``u`` of
its result. Two implementations are each within such a bound of the exact value, so they are
within twice it of each other: every function here returns that doubled bound, per element.
"""

from __future__ import annotations

import torch

# bf16 keeps 8 significant bits, TF32 11 (10 stored): their u are 2**-8 and 2**-11
_UNIT_ROUNDOFF = {
    torch.float64: 2.0**-53,
    torch.float32: 2.0**-24,
    torch.float16: 2.0**-11,
    torch.bfloat16: 2.0**-8,
    "tf32": 2.0**-11,
}


def unit_roundoff(dtype: torch.dtype | str) -> float:
    return _UNIT_ROUNDOFF[dtype]


def gamma(n: int, dtype: torch.dtype | str = torch.float32) -> float:
    """Higham's gamma_n: the relative bound of a sum of n terms, relative to the sum of |terms|."""
    nu = max(int(n), 1) * unit_roundoff(dtype)
    if not nu < 1:
        raise ValueError(f"gamma({n}) does not exist in {dtype}: n u >= 1")
    return nu / (1 - nu)


def over_bound(actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor | float) -> tuple[int, float, float]:
    """(elements over their bound, the worst |difference| / bound, that element's |difference|).

    Non-finite values in ``actual`` count as over the bound (an element not written, or NaN)."""
    actual, expected = actual.detach(), expected.detach()
    diff = (actual.double() - expected.double()).abs()
    bound = torch.as_tensor(bound, dtype=torch.float64, device=diff.device).detach().expand_as(diff)
    bad = ~torch.isfinite(actual).expand_as(diff) | (diff > bound)
    if diff.numel() == 0:
        return 0, 0.0, 0.0
    ratio = torch.where(bound > 0, diff / bound.clamp_min(1e-300), torch.where(diff > 0, torch.inf, 0.0))
    ratio = torch.where(torch.isfinite(actual).expand_as(diff), ratio, torch.inf)
    worst = int(ratio.flatten().argmax())
    return int(bad.sum()), float(ratio.flatten()[worst]), float(diff.flatten()[worst])


# ------------------------------------------------------------------------------------------------
# kernels.bias_leaky_relu
# ------------------------------------------------------------------------------------------------
def bias_leaky_relu_bounds(
    x: torch.Tensor, bias: torch.Tensor, grad_y: torch.Tensor, grad_x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, grad_x, grad_bias) bounds. ``y = f(x + b)`` rounds the sum and the slope's product
    (``2u`` of ``|x| + |b|``); ``grad_x = f'(z) g`` one product (``u |g|``); ``grad_bias`` sums the
    ``N*H*W`` values of grad_x of its channel (``gamma_n`` of their magnitudes). Computed in the
    precision of ``x``; inputs of a half type are computed in fp32 by the kernel, so pass them as
    fp32 and add the half type's one rounding of each result."""
    u = unit_roundoff(x.dtype)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    magnitude = x.detach().abs() + bias.detach().abs().view(shape)
    dims = [d for d in range(x.dim()) if d != 1]
    n = x.numel() // max(x.shape[1], 1)
    grad_bias = 2 * gamma(n, x.dtype) * grad_x.detach().abs().sum(dims)
    return 2 * 2 * u * magnitude, 2 * u * grad_y.detach().abs(), grad_bias


# ------------------------------------------------------------------------------------------------
# kernels.wasserstein_critic_head / wasserstein_generator_head
# ------------------------------------------------------------------------------------------------
def wasserstein_loss_bounds(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, n_real: int
) -> torch.Tensor:
    """Bounds of ``[d_loss, d_loss_real, d_loss_fake]``: each score is a dot of F terms plus the
    bias (``gamma_{F+1}`` of its magnitudes), each mean a sum of n scores and a division
    (``gamma_{n+1}`` of the scores' magnitudes), d_loss one more sum."""
    x, w, b = (t.detach().double() for t in (features, weight, bias))
    n, f = x.shape
    m_score = (x.abs() @ w.abs().t() + b.abs()).squeeze(1)
    e_score = gamma(f + 1, features.dtype) * m_score
    parts = []
    for rows in (slice(0, n_real), slice(n_real, n)):
        k = len(range(n)[rows])
        parts.append(
            2 * (e_score[rows].mean() + gamma(k + 1, features.dtype) * m_score[rows].mean())
            if k
            else torch.zeros((), dtype=torch.float64, device=x.device)
        )
    real, fake = parts
    total = real + fake + 2 * unit_roundoff(features.dtype) * (real + fake + m_score.mean())
    return torch.stack([total, real, fake])


def wasserstein_grad_bounds(
    features: torch.Tensor, weight: torch.Tensor, n_real: int, upstream: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_features, grad_weight, grad_bias) bounds for the upstream gradient ``[g_d, g_r, g_f]``
    of ``[d_loss, d_loss_real, d_loss_fake]``. Row i's coefficient is a sum of two upstream values
    over a count, magnitude ``(|g_d| + |g_r or g_f|) / n_part``, rounded twice; grad_features =
    c w one product more; grad_weight = sum_i c_i x_i and grad_bias = sum_i c_i, n terms each."""
    x, w, g = features.detach().double(), weight.detach().double(), upstream.detach().double().abs().cpu()
    n = x.shape[0]
    u, dtype = unit_roundoff(features.dtype), features.dtype
    c = torch.full((n,), float(g[0] + g[1]) / n_real, dtype=torch.float64, device=x.device)
    if n > n_real:
        c[n_real:] = float(g[0] + g[2]) / (n - n_real)
    grad_features = 2 * 3 * u * c[:, None] * w.abs()
    grad_weight = 2 * (gamma(n, dtype) + 2 * u) * (c[:, None] * x.abs()).sum(0, keepdim=True)
    grad_bias = 2 * (gamma(n, dtype) + 2 * u) * c.sum().reshape(1)
    return grad_features, grad_weight, grad_bias


# ------------------------------------------------------------------------------------------------
# kernels.FusedRMSprop
# ------------------------------------------------------------------------------------------------
def rmsprop_first_step_bound(
    param: torch.Tensor, grad: torch.Tensor, lr: float, alpha: float, eps: float
) -> torch.Tensor:
    """Bound of one RMSprop step from zero state (no momentum, not centered, no weight decay).

    ``dx = lr g / (sqrt((1 - alpha) g**2) + eps)``: the parameter and the step round a few times
    (``8 u`` of ``|p| + |dx|``), and the gradient's own rounding ``u |g|`` moves the step by
    ``lr |f'(g)| u |g|`` with ``f'(g) = eps / (sqrt(1 - alpha) |g| + eps)**2``, which is large where
    ``|g|`` is near ``eps``: the sign-like first step is ill-conditioned there in any implementation.
    """
    u = unit_roundoff(param.dtype)
    p, g = param.detach().double(), grad.detach().double()
    root = (1 - alpha) ** 0.5 * g.abs()
    dx = lr * g / (root + eps)
    slope = eps / (root + eps) ** 2
    return 2 * (8 * u * (p.abs() + dx.abs()) + lr * slope * u * g.abs())
