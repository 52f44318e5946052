"""The critic with its glue fused: one batched pass for real and fake, Triton epilogues and head.

:class:`FusedCritic` subclasses :class:`~wgan.models.Critic` and registers nothing of its own, so
its parameters, their names and its ``state_dict`` are the eager critic's: a checkpoint written by
either path loads into the other. What changes is how the same math runs:

* each convolution runs without its bias (``F.conv2d(x, w, None, ...)``: cuDNN needs no epilogue),
  followed by :func:`kernels.bias_leaky_relu`, which adds the bias and applies LeakyReLU in one
  pass (and computes the bias gradient in its backward);
* :meth:`FusedCritic.critic_losses` concatenates real and fake into one batch, so the critic runs
  once forward and once backward per step instead of twice. This is exact because the critic has
  no batch norm: every sample's score depends only on that sample;
* the last linear layer, the split into real and fake, both means and the losses are one kernel
  (:func:`kernels.wasserstein_critic_head`); the generator's loss uses its generator variant.

``channels_last=True`` converts the batch (and, at construction, the convolution weights) to
channels_last, the layout cuDNN's fastest small-convolution kernels use on recent GPUs. The
head then reads the NHWC activation as it lies and uses the fc weight permuted to NHWC order (a
2048-element copy, differentiable), instead of copying the activation back to NCHW to flatten it.
An optimizer that re-points parameters into a flat buffer gives them back the default layout;
that is harmless (cuDNN follows the input's layout), only the weight conversion is lost.

The eager references below (:func:`critic_losses_reference`, :func:`generator_loss_reference`)
are the seed's math: two separate passes of the plain :class:`Critic` forward, then the means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import kernels
from kernels._dispatch import IMPLS, resolve_impl
from wgan.config import WGANConfig
from wgan.models.eager import Critic

__all__ = ["FusedCritic", "at_least_fp32", "critic_losses_reference", "eager_scores", "generator_loss_reference"]


class FusedCritic(Critic):
    """Same parameters as :class:`Critic`; fused bias+LeakyReLU, batched real+fake, fused head."""

    def __init__(self, config: WGANConfig, impl: str | None = None, channels_last: bool = False) -> None:
        super().__init__(config)
        if impl is not None and impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS} or None, got {impl!r}")
        self.impl = impl
        self.channels_last = bool(channels_last)
        self.ran: dict[str, str] = {}  # op -> the implementation its last call ran (for honest labels)
        if self.channels_last:
            for conv in self.convs:
                conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolution's activation, [N, C, H, W] (channels_last if so configured)."""
        if x.dim() != 4:
            raise ValueError(f"the critic takes images [N, C, H, W], got shape {tuple(x.shape)}")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for i, conv in enumerate(self.convs):
            x = F.conv2d(self.pad(i, x), conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
            self.ran["bias_leaky_relu"] = resolve_impl(self.impl, x.device, x.dtype)
            x = kernels.bias_leaky_relu(x, conv.bias, self.negative_slope, impl=self.impl)
        return x

    def kernel_impls(self, device: torch.device, activation_dtype: torch.dtype) -> dict[str, str]:
        """What each op will run on ``device`` with activations of ``activation_dtype`` (under
        autocast, the convolutions' output dtype), resolved as the calls resolve it."""
        return {
            "bias_leaky_relu": resolve_impl(self.impl, device, activation_dtype),
            "wasserstein_head": resolve_impl(self.impl, device, self.fc.weight.dtype),
        }

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features in NCHW order, as :meth:`Critic.features` returns them."""
        return self.feature_map(x).flatten(1)

    def _head_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features [N, F], fc weight [1, F]) in matching order, without copying the activation."""
        fmap = self.feature_map(x)
        weight = self.fc.weight
        if fmap.dtype != weight.dtype:  # autocast: the head reads fp32, so the losses keep fp32 precision
            fmap = fmap.to(weight.dtype)
        if not fmap.is_contiguous() and fmap.is_contiguous(memory_format=torch.channels_last):
            n, c, h, w = fmap.shape
            feats = fmap.permute(0, 2, 3, 1).reshape(n, h * w * c)  # a view of the NHWC memory
            weight = weight.view(1, c, h, w).permute(0, 2, 3, 1).reshape(1, h * w * c)
            return feats, weight
        return fmap.flatten(1), weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores, shape [N]: higher means 'more real' (as :meth:`Critic.forward`)."""
        feats, weight = self._head_inputs(x)
        return F.linear(feats, weight, self.fc.bias).squeeze(1)

    def critic_losses(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(d_loss, d_loss_real, d_loss_fake)`` from ONE pass over ``cat([real, fake])``."""
        if real.dim() != 4 or fake.dim() != 4 or real.shape[1:] != fake.shape[1:]:
            raise ValueError(
                f"real and fake must be image batches of the same image shape, got {tuple(real.shape)} "
                f"and {tuple(fake.shape)}"
            )
        if real.shape[0] == 0 or fake.shape[0] == 0:
            raise ValueError("real and fake batches must not be empty")
        # torch.cat keeps channels_last when both inputs have it; feature_map converts otherwise
        batch = torch.cat([real, fake])
        feats, weight = self._head_inputs(batch)
        self.ran["wasserstein_head"] = resolve_impl(self.impl, feats.device, feats.dtype)
        return kernels.wasserstein_critic_head(feats, weight, self.fc.bias, real.shape[0], impl=self.impl)

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """``g_loss = -E[C(fake)]``; gradients flow to ``fake`` (and to the critic's parameters)."""
        feats, weight = self._head_inputs(fake)
        self.ran["wasserstein_head"] = resolve_impl(self.impl, feats.device, feats.dtype)
        return kernels.wasserstein_generator_head(feats, weight, self.fc.bias, impl=self.impl)


def eager_scores(critic: Critic, x: torch.Tensor) -> torch.Tensor:
    """The plain :class:`Critic`'s scores, also for a :class:`FusedCritic` (whose ``features`` and
    ``forward`` are the fused ones): the eager layers, explicitly."""
    return critic.fc(Critic.features(critic, x)).squeeze(1)


def critic_losses_reference(
    critic: Critic, real: torch.Tensor, fake: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The eager critic step's losses: two plain :class:`Critic` passes, then the means."""
    d_loss_real = -at_least_fp32(eager_scores(critic, real)).mean()  # fp32 means under autocast
    d_loss_fake = at_least_fp32(eager_scores(critic, fake)).mean()
    return d_loss_real + d_loss_fake, d_loss_real, d_loss_fake


def generator_loss_reference(critic: Critic, fake: torch.Tensor) -> torch.Tensor:
    """``g_loss = -E[C(fake)]`` with the plain :class:`Critic` layers."""
    return -at_least_fp32(eager_scores(critic, fake)).mean()


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """fp32 for half-precision values (autocast), fp64 kept as it is."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()
