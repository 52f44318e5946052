"""The one loader of a checkpoint's generator, used by the sampler, the report and evaluation, and
the one loop that turns latents into images.

Like stylegan2-ada-pytorch's ``legacy.load_network_pkl``, every tool that needs a trained
generator goes through :func:`load_generator`, which validates: the file is read with
``weights_only=True`` (:func:`wgan.run.checkpoint.load_checkpoint`), its config must be valid, and
the weights must fit the generator that config describes. Only the eager
:class:`~wgan.models.eager.Generator` is built, so reading a run folder never loads Triton.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wgan.config import ConfigError, WGANConfig
from wgan.models.eager import Generator
from wgan.run.checkpoint import CheckpointError, load_checkpoint

EMA_KEY = "generator_ema"  # a checkpoint's averaged generator (--g-ema), when the run kept one
GENERATION_CHUNK = 256  # latents per forward: bounds the device memory whatever the image count
EVAL_Z_SEED_OFFSET = 2  # seed + 1 draws the sample grids' z; seed + 2 the evaluations'


@dataclass(frozen=True)
class LoadedGenerator:
    """A checkpoint's generator, ready to sample (inference mode), and what it came from."""

    generator: Generator
    config: WGANConfig
    epoch: int
    ema: bool  # the averaged weights (generator_ema), not the raw ones
    path: Path

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def kind(self) -> str:
        """How the report names the weights: "EMA" or "raw"."""
        return "EMA" if self.ema else "raw"


def load_generator(path: Path, ema: bool | None, device: torch.device | str = "cpu") -> LoadedGenerator:
    """The generator of checkpoint ``path``: its averaged weights when ``ema`` is True, its raw ones
    when False, and by default (None) the averaged ones where the checkpoint has them, as the
    trainer's samples and evaluations use them. Any problem is a one-line CheckpointError."""
    state = load_checkpoint(path)
    use_ema = _use_ema(state, ema, path)
    try:
        config = WGANConfig.from_dict(state["config"]).validate()
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its config is not valid: {exc}") from None
    generator = Generator(config)
    key = EMA_KEY if use_ema else "generator"
    try:
        generator.load_state_dict(state[key])
    except (RuntimeError, TypeError, AttributeError):
        raise CheckpointError(f"{path}: its {key} weights do not fit the generator its config describes") from None
    generator.to(device).eval()  # batch norm from its running statistics, as when samples are used
    return LoadedGenerator(generator, config, int(state["epoch"]), use_ema, Path(path))


def _use_ema(state: dict[str, Any], ema: bool | None, path: Path) -> bool:
    """``--ema`` / ``--raw`` as given; by default the averaged weights where the checkpoint has them."""
    has_ema = EMA_KEY in state
    if ema and not has_ema:
        raise CheckpointError(f"--ema: {path} holds no EMA weights ({EMA_KEY}); sample its raw generator with --raw")
    return has_ema if ema is None else ema


def generate(
    generator: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    device: torch.device | str,
    chunk: int = GENERATION_CHUNK,
) -> Iterator[torch.Tensor]:
    """The images of ``z`` (float32, on the CPU), ``chunk`` latents at a time, without autograd:
    a large count never sits on the device at once. Batch norm reads its running statistics when
    the generator is in eval mode (:func:`load_generator` puts it there)."""
    with torch.no_grad():
        for part in z.split(chunk):
            yield generator(part.to(device)).float().cpu()


def generate_all(generator: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, device: Any) -> torch.Tensor:
    """:func:`generate`, concatenated."""
    return torch.cat(list(generate(generator, z, device)))


def evaluation_z(config: WGANConfig) -> torch.Tensor:
    """The evaluations' fixed z (CPU, [eval_samples, z_dim]): the trainer's and the report's
    evaluations draw the same images."""
    generator = torch.Generator().manual_seed(config.seed + EVAL_Z_SEED_OFFSET)
    return torch.randn(config.eval_samples, config.z_dim, generator=generator)
