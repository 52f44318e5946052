"""The seed's critic and generator, built from a :class:`~wgan.config.WGANConfig`.

The models know nothing of training. The critic keeps a bias on every convolution so that the
fused critic can run the convolution without it and apply bias + LeakyReLU in one kernel, while
holding exactly the same parameters (and ``state_dict``) as this eager module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wgan.config import WGANConfig, conv_out_side


def init_weights(module: nn.Module, std: float) -> None:
    """N(0, std) weights and zero biases for convs and linears, as the seed's Keras initialiser."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def keras_same_padding(side: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) of Keras's 'same' padding: the total ``(ceil(side / stride) - 1) * stride +
    kernel - side`` with the extra pixel *after* (a stride-2, 5x5 conv of 32 pixels pads 1 and 2).
    PyTorch's ``padding=kernel // 2`` pads both sides equally; the output sizes agree."""
    total = max((-(-side // stride) - 1) * stride + kernel - side, 0)
    return total // 2, total - total // 2


class Critic(nn.Module):
    """Strided 'same' convolutions with LeakyReLU, no batch norm, then flatten -> linear(1).

    ``config.recipe == "book"`` pads each convolution's input as Keras does ('same', asymmetric for
    stride 2); the parameters are the same either way.
    """

    def __init__(self, config: WGANConfig) -> None:
        super().__init__()
        self.negative_slope = config.critic_leaky_slope
        k = config.critic_kernel_size
        convs, self.input_pads = [], []
        prev, side = config.image_channels, config.image_size
        for filters, stride in zip(config.critic_filters, config.critic_strides):
            keras = config.recipe == "book"
            convs.append(nn.Conv2d(prev, filters, k, stride=stride, padding=0 if keras else k // 2, bias=True))
            before, after = keras_same_padding(side, k, stride)
            self.input_pads.append((before, after, before, after) if keras else None)
            prev, side = filters, conv_out_side(side, k, stride)
        self.convs = nn.ModuleList(convs)
        self.feature_shape = (prev, side, side)
        self.fc = nn.Linear(prev * side * side, 1)
        init_weights(self, config.weight_init_std)

    def pad(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Convolution ``i``'s input with its explicit padding (the book's recipe), else as it is."""
        pads = self.input_pads[i]
        return x if pads is None else F.pad(x, pads)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = F.leaky_relu(conv(self.pad(i, x)), self.negative_slope)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores, shape [N]: higher means 'more real' under this project's sign convention."""
        return self.fc(self.features(x)).squeeze(1)


class Generator(nn.Module):
    """linear -> BN -> LeakyReLU -> reshape, then [upsample -> conv -> BN -> LeakyReLU]..., tanh."""

    def __init__(self, config: WGANConfig) -> None:
        super().__init__()
        self.z_dim = config.z_dim
        side, channels = config.generator_initial_size, config.generator_initial_channels
        self.initial_shape = (channels, side, side)
        bn = dict(momentum=config.generator_bn_momentum, eps=config.generator_bn_eps)
        slope = config.generator_leaky_slope
        self.stem = nn.Sequential(
            nn.Linear(config.z_dim, channels * side * side),
            nn.BatchNorm1d(channels * side * side, **bn),
            nn.LeakyReLU(slope),
        )
        k = config.generator_kernel_size
        layers: list[nn.Module] = []
        prev = channels
        last = len(config.generator_filters) - 1
        for i, (filters, up) in enumerate(zip(config.generator_filters, config.generator_upsample)):
            if up > 1:
                layers += [nn.Upsample(scale_factor=up, mode="nearest"), nn.Conv2d(prev, filters, k, padding=k // 2)]
            else:
                layers.append(nn.ConvTranspose2d(prev, filters, k, stride=1, padding=k // 2))
            if i < last:
                layers += [nn.BatchNorm2d(filters, **bn), nn.LeakyReLU(slope)]
            prev = filters
        layers.append(nn.Tanh())
        self.body = nn.Sequential(*layers)
        init_weights(self, config.weight_init_std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.stem(z).view(z.shape[0], *self.initial_shape)
        return self.body(x)


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
