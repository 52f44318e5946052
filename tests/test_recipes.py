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
from helpers import TINY, assert_within, invoke, unit_roundoff

from kernels import triton_can_run
from wgan.config import WGANConfig, ema_decay_at, resolve_config
from wgan.models.eager import Critic, Generator, keras_same_padding
from wgan.training.cuda_graph import state_preserved
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
    assert state["generator_ema_step"] == 2 and int(second.ema_step) == int(whole.ema_step) == 4
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
    assert engine.labels["generator_ema"] == "0.5, warm-up (1+t)/(10+t)"


def test_the_average_warms_up_with_the_ramp_on_the_device() -> None:
    """Step t's decay is min(beta, (1+t)/(10+t)) (wgan.config.ema_decay_at), computed on the device
    in the engine's dtype (one rounding of the quotient), and the step count moves once per epoch."""
    beta = 0.6
    engine = build_engine(config(g_ema=beta, fused=True), "cpu", impl="ref")
    assert [ema_decay_at(beta, t) for t in (0, 1, 2, 8, 20)] == [0.1, 2 / 11, 3 / 12, 9 / 18, beta]
    decays = []
    for t in range(20):
        engine.run_epoch(images())
        decays.append(float(engine.ema_decay))
        assert int(engine.ema_step) == t + 1
        assert engine.opt_generator.param_groups[0]["ema_decay"] is engine.ema_decay  # what the launch reads
    expected = torch.tensor([ema_decay_at(beta, t) for t in range(20)])
    assert_within(torch.tensor(decays), expected, unit_roundoff(torch.float32) * expected, "decays")


@pytest.mark.parametrize("fused", [False, True])
def test_the_first_average_is_mostly_the_first_step(fused: bool) -> None:
    """Decay 0.1 at step 0: the average after one epoch is 0.1 initial + 0.9 updated weights (a
    convex combination: within a few roundings of the larger of the two), not beta's 0.999 initial."""
    engine = build_engine(config(g_ema=0.999, fused=fused), "cpu", impl="ref")
    start = [p.detach().clone() for p in engine.generator.parameters()]
    engine.run_epoch(images())
    for average, p0, p1 in zip(engine.ema, start, engine.generator.parameters()):
        expected = 0.1 * p0.double() + 0.9 * p1.detach().double()
        scale = 4 * unit_roundoff(torch.float32) * torch.maximum(p0.abs(), p1.detach().abs())
        assert_within(average.double(), expected, scale.double(), "average after one step")


@pytest.mark.parametrize("fused", [False, True])
def test_warm_up_before_capture_restores_the_average(fused: bool) -> None:
    """The CUDA-graph warm-up's restore (wgan.training.cuda_graph.state_preserved) puts the average and
    its warm-up scalars back too, so the epochs after it are a fresh engine's, average included."""
    fresh = build_engine(config(g_ema=0.9, fused=fused), "cpu", impl="ref")
    engine = build_engine(config(g_ema=0.9, fused=fused), "cpu", impl="ref")
    with state_preserved(engine):
        for _ in range(2):
            engine.run_epoch(images())
    assert int(engine.ema_step) == 0
    for _ in range(3):
        fresh.run_epoch(images())
        engine.run_epoch(images())
    assert all(torch.equal(a, b) for a, b in zip(fresh.ema, engine.ema))
    assert torch.equal(fresh.ema_step, engine.ema_step) and torch.equal(fresh.ema_decay, engine.ema_decay)


def test_an_averaged_run_resumes_exactly_through_the_cli(tmp_path, data, cfg) -> None:
    """--g-ema with --deterministic (the cfg fixture): 2 epochs then a resume to 4 ends with the
    uninterrupted run's average and warm-up step count, bit for bit."""
    threads = torch.get_num_threads()  # --deterministic sets one thread in this process
    try:
        base = ["--config", str(cfg), "--data", str(data), "--wandb", "disabled", "--no-report", "--g-ema", "0.9"]
        for out, epochs in (("whole", "4"), ("split", "2")):
            result = invoke([*base, "--out", str(tmp_path / out), "--epochs", epochs])
            assert result.exit_code == 0, result.output
        result = invoke(["--resume", str(tmp_path / "split"), "--epochs", "4", "--no-report"])
        assert result.exit_code == 0, result.output
    finally:
        torch.set_num_threads(threads)
    whole, split = (
        torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True) for name in ("whole", "split")
    )
    assert whole["generator_ema_step"] == split["generator_ema_step"] == 4
    assert whole["generator_ema"].keys() == split["generator_ema"].keys()
    assert all(torch.equal(whole["generator_ema"][k], split["generator_ema"][k]) for k in whole["generator_ema"])
