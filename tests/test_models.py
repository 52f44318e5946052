"""The seed models: the original Keras parameter counts and the shapes they map between."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wgan.config import WGANConfig
from wgan.models.eager import Critic, Generator, count_trainable

SEED_CRITIC_PARAMS = 670_401  # the book's Keras critic
SEED_GENERATOR_PARAMS = 879_619  # the book's Keras generator, trainable only (BN running stats excluded)


def test_seed_parameter_counts_match_the_keras_models() -> None:
    config = WGANConfig()
    assert count_trainable(Critic(config)) == SEED_CRITIC_PARAMS
    assert count_trainable(Generator(config)) == SEED_GENERATOR_PARAMS


def test_critic_shapes_match_the_config_description() -> None:
    config = WGANConfig()
    shapes = [tuple(p.shape) for p in Critic(config).parameters()]
    assert shapes == config.critic_params_shapes
    assert all(conv.bias is not None for conv in Critic(config).convs)  # the fused critic splits it off


@pytest.mark.parametrize("batch", [1, 3])
def test_seed_models_map_z_to_images_to_scores(batch: int) -> None:
    config = WGANConfig()
    torch.manual_seed(0)
    gen, critic = Generator(config).eval(), Critic(config)
    z = torch.randn(batch, config.z_dim)
    images = gen(z)
    assert images.shape == (batch, 3, 32, 32)
    assert images.abs().max() <= 1.0  # tanh output, the data's [-1, 1] range
    scores = critic(images)
    assert scores.shape == (batch,)
    assert torch.isfinite(scores).all()


def test_small_config_shapes() -> None:
    config = WGANConfig(
        image_size=16,
        generator_initial_size=4,
        generator_upsample=(2, 2, 1),
        generator_filters=(8, 8, 1),
        image_channels=1,
        critic_filters=(4, 8),
        critic_strides=(2, 2),
        z_dim=5,
    ).validate()
    gen, critic = Generator(config).train(), Critic(config)
    images = gen(torch.randn(4, 5))
    assert images.shape == (4, 1, 16, 16)
    assert critic(images).shape == (4,)
    assert critic.feature_shape == (8, 4, 4)


def test_weights_follow_the_seed_initialiser() -> None:
    config = WGANConfig()
    torch.manual_seed(0)
    critic = Critic(config)
    for m in critic.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert torch.count_nonzero(m.bias) == 0
    w = torch.cat([c.weight.reshape(-1) for c in critic.convs])
    assert abs(w.std().item() - config.weight_init_std) < 0.002
    assert abs(w.mean().item()) < 0.001


def test_generator_batch_norm_uses_keras_momentum_and_eps() -> None:
    gen = Generator(WGANConfig())
    norms = [m for m in gen.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.momentum == 0.2 and m.eps == 1e-3 for m in norms)
