"""Triton kernels for WGAN training, each with a plain-PyTorch reference of the same math.

This package is a library of its own: it never imports ``wgan``.
"""

from kernels._dispatch import resolve_impl, triton_can_run
from kernels.bias_act import bias_leaky_relu, bias_leaky_relu_reference
from kernels.bn_act import bn_leaky_relu_shuffle, bn_leaky_relu_shuffle_reference
from kernels.rmsprop import FusedRMSprop, rmsprop_clip_step  # noqa: F401  (public API)
from kernels.upsample_conv import (
    polyphase_weight,
    reuse_polyphase_weight,
    upsample_conv2d,
    upsample_conv2d_phases,
    upsample_conv2d_reference,
)
from kernels.wasserstein import (
    wasserstein_critic_head,
    wasserstein_critic_head_reference,
    wasserstein_generator_head,
    wasserstein_generator_head_reference,
)

__all__ = [
    "resolve_impl",
    "triton_can_run",
    "bias_leaky_relu",
    "bias_leaky_relu_reference",
    "wasserstein_critic_head",
    "wasserstein_critic_head_reference",
    "wasserstein_generator_head",
    "wasserstein_generator_head_reference",
    "bn_leaky_relu_shuffle",
    "bn_leaky_relu_shuffle_reference",
    "polyphase_weight",
    "reuse_polyphase_weight",
    "upsample_conv2d",
    "upsample_conv2d_phases",
    "upsample_conv2d_reference",
]
