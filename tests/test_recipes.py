"""--recipe book (the book's Keras training) and --g-ema (the generator's weight average).

The book recipe is checked against a plain eager implementation of it written here, one epoch
from the same state in float64: two critic optimizer steps per iteration (reals, then fakes),
fakes made with batch norm in inference mode, RMSprop with eps inside the square root, Keras
'same' padding on the stride-2 convolutions, the clip after both steps.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY

from kernels import triton_can_run
from wgan.config import WGANConfig, resolve_config
from wgan.models.eager import Critic, Generator, keras_same_padding
from wgan.training.engine import build_engine
from wgan.training.parity import relative_difference, same_state_parity

IMPLS = [
    "ref",
    pytest.param("triton", marks=pytest.mark.skipif(not triton_can_run("cpu"), reason="needs TRITON_INTERPRET=1")),
]


def config(**overrides: object) -> WGANConfig:
    return WGANConfig.from_dict({**TINY, **overrides}).validate()


@functools.cache
def images() -> torch.Tensor:
    return torch.rand(60, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1


def trained(cfg: WGANConfig, epochs: int = 5) -> dict:
    engine = build_engine(cfg, "cpu")
    for _ in range(epochs):
        engine.run_epoch(images())
    return copy.deepcopy(engine.state_dict())


# ------------------------------------------------------------------------------------------------
# the book, written out
# ------------------------------------------------------------------------------------------------
def keras_rmsprop(p: torch.Tensor, square_avg: torch.Tensor, lr: float, rho: float, eps: float) -> None:
    square_avg.mul_(rho).add_((1 - rho) * p.grad * p.grad)
    p.sub_(lr * p.grad / torch.sqrt(square_avg + eps))


def keras_critic(critic: Critic, x: torch.Tensor, cfg: WGANConfig) -> torch.Tensor:
    """Scores with Keras's 'same' padding (asymmetric for stride 2), written out."""
    side = x.shape[-1]
    for conv in critic.convs:
        before, after = keras_same_padding(side, conv.kernel_size[0], conv.stride[0])
        x = F.leaky_relu(
            F.conv2d(F.pad(x, (before, after, before, after)), conv.weight, conv.bias, conv.stride),
            cfg.critic_leaky_slope,
        )
        side = x.shape[-1]
    return F.linear(x.flatten(1), critic.fc.weight, critic.fc.bias).squeeze(1)


def book_epoch(state: dict, data: torch.Tensor) -> dict[str, object]:
    """One epoch of the book's Keras loop, from a training state, in float64."""
    cfg = WGANConfig.from_dict(state["config"])
    generator, critic = Generator(cfg).double(), Critic(cfg).double()
    generator.load_state_dict(state["generator"])
    critic.load_state_dict(state["critic"])
    sq = {
        "critic": [
            state["opt_critic"]["state"].get(i, {}).get("square_avg", torch.zeros(p.shape)).double()
            for i, p in enumerate(critic.parameters())
        ],
        "generator": [
            state["opt_generator"]["state"].get(i, {}).get("square_avg", torch.zeros(p.shape)).double()
            for i, p in enumerate(generator.parameters())
        ],
    }
    draws = torch.Generator().manual_seed(0)
    draws.set_state(state["rng"]["sampler"])
    data = data.double()

    def step(model, key, loss, lr):
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p, s in zip(model.parameters(), sq[key]):
                keras_rmsprop(p, s, lr, cfg.rmsprop_alpha, cfg.rmsprop_eps)
        return loss.detach()

    for _ in range(cfg.n_critic):
        real = data[torch.randint(data.shape[0], (cfg.batch_size,), generator=draws)]
        z = torch.randn(cfg.batch_size, cfg.z_dim, generator=draws).double()
        with torch.no_grad():
            fake = generator.eval()(z)  # Keras predict: batch norm in inference mode
        generator.train()
        d_real = step(critic, "critic", -keras_critic(critic, real, cfg).mean(), cfg.lr_critic)  # train_on_batch
        d_fake = step(critic, "critic", keras_critic(critic, fake, cfg).mean(), cfg.lr_critic)
        with torch.no_grad():
            for p in critic.parameters():
                p.clamp_(-cfg.clip_threshold, cfg.clip_threshold)
    z = torch.randn(cfg.batch_size, cfg.z_dim, generator=draws).double()
    critic.requires_grad_(False)
    g_loss = step(generator, "generator", -keras_critic(critic, generator(z), cfg).mean(), cfg.lr_generator)
    return {"d_loss_real": d_real, "d_loss_fake": d_fake, "g_loss": g_loss, "critic": critic, "generator": generator}


def test_the_book_recipe_is_the_book_written_out() -> None:
    state = trained(config(recipe="book", rmsprop_alpha=0.9, rmsprop_eps=1e-7))
    expected = book_epoch(state, images())
    engine = build_engine(WGANConfig.from_dict(state["config"]), "cpu", dtype=torch.float64)
    engine.load_state_dict(copy.deepcopy(state))
    got = engine.run_epoch(engine.prepare_images(images()))
    for key in ("d_loss_real", "d_loss_fake", "g_loss"):
        assert relative_difference(got[key], expected[key]) <= 1e-5, key
    for model in ("critic", "generator"):
        theirs = dict(getattr(engine, model).named_parameters())
        for name, p in expected[model].named_parameters():
            assert relative_difference(theirs[name], p, floor=engine.config.lr_critic) <= 1e-5, f"{model}.{name}"


@pytest.mark.parametrize("impl", IMPLS)
def test_the_fused_path_runs_the_book_recipe_too(impl: str) -> None:
    state = trained(config(recipe="book", rmsprop_alpha=0.9, rmsprop_eps=1e-7, g_ema=0.9))
    report = same_state_parity(state, images(), impl=impl)
    assert report.ok, report.summary()


def test_the_recipes_train_differently_from_the_same_state() -> None:
    state = trained(config())
    a = build_engine(config(), "cpu")
    b = build_engine(config(recipe="book"), "cpu")
    for engine in (a, b):
        engine.load_state_dict(copy.deepcopy(state))
        engine.run_epoch(images())
    assert any(not torch.equal(p, q) for p, q in zip(a.critic.parameters(), b.critic.parameters()))


def test_the_book_recipe_brings_the_books_optimizer_settings() -> None:
    book = resolve_config({}, {"recipe": "book"})
    assert (book.rmsprop_alpha, book.rmsprop_eps) == (0.9, 1e-7)
    asked = resolve_config({}, {"recipe": "book", "rmsprop_alpha": 0.95})
    assert (asked.rmsprop_alpha, asked.rmsprop_eps) == (0.95, 1e-7)
    assert resolve_config({}, {}).rmsprop_alpha == 0.99  # the wgan recipe: torch's
    engine = build_engine(book, "cpu")
    assert (
        engine.labels["recipe"] == "book" and engine.labels["optimizer"] == "wgan.training.keras_rmsprop.KerasRMSprop"
    )


def test_a_book_config_built_anywhere_has_the_books_optimizer() -> None:
    """Library code that builds ``WGANConfig(recipe="book")`` (no CLI, no file) gets Keras's rho and
    epsilon, and the engine's optimizer really uses them."""
    book = WGANConfig(recipe="book")
    assert (book.rmsprop_alpha, book.rmsprop_eps) == (0.9, 1e-7)
    assert (WGANConfig().rmsprop_alpha, WGANConfig().rmsprop_eps) == (0.99, 1e-8)
    assert WGANConfig.from_dict({"recipe": "book"}).rmsprop_alpha == 0.9
    assert WGANConfig(recipe="book", rmsprop_eps=1e-5).rmsprop_eps == 1e-5  # asked for: kept
    engine = build_engine(config(recipe="book"), "cpu")
    group = engine.opt_critic.param_groups[0]
    assert (group["alpha"], group["eps"]) == (0.9, 1e-7)


# ------------------------------------------------------------------------------------------------
# --g-ema
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
def test_the_fused_weight_average_matches_the_eager_one(impl: str) -> None:
    report = same_state_parity(trained(config(g_ema=0.9)), images(), impl=impl)
    assert report.ok, report.summary()
    assert any(d.name.startswith("generator_ema.") for d in report.differences)


@pytest.mark.parametrize("fused", [False, True])
def test_the_weight_average_resumes_exactly(fused: bool) -> None:
    cfg = config(g_ema=0.8, fused=fused)
    whole = build_engine(cfg, "cpu", impl="ref")
    for _ in range(4):
        whole.run_epoch(images())
    first = build_engine(cfg, "cpu", impl="ref")
    for _ in range(2):
        first.run_epoch(images())
    state = copy.deepcopy(first.state_dict())
    assert "generator_ema" in state
    second = build_engine(cfg, "cpu", impl="ref")
    second.load_state_dict(state)
    for _ in range(2):
        second.run_epoch(images())
    assert all(torch.equal(a, b) for a, b in zip(whole.ema, second.ema))
    assert torch.equal(whole.sample(), second.sample())


def test_samples_come_from_the_average_with_the_live_batch_norm_statistics() -> None:
    engine = build_engine(config(g_ema=0.5), "cpu")
    for _ in range(3):
        engine.run_epoch(images())
    average = engine.ema_generator()
    for a, b in zip(average.buffers(), engine.generator.buffers()):
        assert torch.equal(a, b)  # as StyleGAN copies them
    assert not torch.equal(engine.sample(), engine.sample(ema=False))
    assert torch.equal(engine.sample(ema=False), engine.generator.eval()(engine.fixed_z))
    assert engine.labels["generator_ema"] == "0.5"
