"""A fused training epoch replayed from CUDA graphs.

Why: at the seed's size an epoch is ~1.5 TFLOP spread over hundreds of small launches (six
optimizer steps, dozens of small convolutions and their glue). Once every Triton kernel is
compiled, the launch overhead, not the arithmetic, is what a GPU waits on. Capturing one critic
step and one generator step and replaying them (n_critic + 1 replays per epoch) removes it.

What makes the captured step identical to the uncaptured fused path:

* Static buffers: the data set already lives on the device as one tensor, the batch indices and
  z are drawn inside the graph from the engine's own device ``torch.Generator`` (registered with
  both graphs, so each replay advances it exactly as the eager calls would), gradients come from
  the graph's pool and the captured step copies them into ``FusedRMSprop``'s flat buffer, and the
  learning rates are 0-d device tensors read by the kernel (change them with ``fill_`` between
  replays; a Python float would be frozen into the graph).
* Warm-up runs the real steps on a side stream (compiling every Triton kernel, building the
  optimizer's block tables, turning the gradients into flat-buffer views), then every tensor of
  the training state and the sampler's state are restored, so warm-up leaves no trace.
* The generator's polyphase kernels (wgan.models.fused_generator) are computed once before
  capture, read at fixed addresses by every captured forward, and recomputed in place at the end
  of the captured generator step (:func:`pinned_polyphase`): once per generator update, as the
  uncaptured epoch does, instead of once per forward.
* Metrics are written by the graphs into static 0-d tensors and copied out once per epoch with a
  single stack (no host synchronisation); the trainer reads them back every few epochs as usual.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from wgan.models.fused_generator import FusedGenerator
from wgan.training.engine import Engine


class CudaGraphUnavailable(RuntimeError):
    """The installed torch or the engine's setup cannot run the captured path."""


def _training_tensors(engine: Engine) -> list[torch.Tensor]:
    """Every tensor a training step writes: parameters, buffers, optimizer state and the generator's
    weight average with its warm-up scalars (--g-ema; stable objects)."""
    tensors: list[torch.Tensor] = []
    for module in (engine.generator, engine.critic):
        tensors += list(module.parameters()) + list(module.buffers())
    for opt in (engine.opt_generator, engine.opt_critic):
        for state in opt.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    tensors += list(engine.ema or [])
    tensors += [t for t in (engine.ema_step, engine.ema_decay) if t is not None]
    return tensors


@contextlib.contextmanager
def state_preserved(engine: Engine) -> Iterator[None]:
    """Run training steps (a warm-up) and leave no trace: every tensor the steps wrote, the
    sampler and the epoch count are put back in place (same tensors, so views and graph
    addresses stay valid). State the steps created lazily is zeroed, which is torch's fresh state."""
    saved = {id(t): (t, t.detach().clone()) for t in _training_tensors(engine)}
    sampler_state = engine.sampler.get_state()
    epoch = engine.epoch
    try:
        yield
    finally:
        with torch.no_grad():
            for t in _training_tensors(engine):
                if id(t) in saved:
                    t.copy_(saved[id(t)][1])
                else:
                    t.zero_()
        engine.sampler.set_state(sampler_state)
        engine.epoch = epoch


@dataclass(frozen=True)
class PinnedPolyphase:
    """The fused generator's polyphase kernels at fixed addresses, and what recomputes them there."""

    kernels: list[torch.Tensor]  # kept alive for as long as graphs that read them
    refresh: Callable[[], None]


@contextlib.contextmanager
def pinned_polyphase(engine: Engine) -> Iterator[PinnedPolyphase]:
    """Inside, the generator's forwards read polyphase kernels computed once, here, outside any
    graph (one forward whose every trace, batch-norm statistics and draws included, is undone);
    ``refresh()`` recomputes them in place after the generator's weights change. The steps a
    graph captures in this scope read and refresh those kernels, and only those."""
    generator = engine.generator
    if not isinstance(generator, FusedGenerator):
        yield PinnedPolyphase([], lambda: None)
        return
    with generator.polyphase_reused(pinned=True):
        with state_preserved(engine), torch.no_grad():
            generator(engine.draw_z())
        yield PinnedPolyphase(generator.cached_polyphase(), generator.refresh_polyphase)


class CudaGraphEpoch:
    """One captured critic step and one captured generator step of a fused engine on CUDA."""

    def __init__(self, engine: Engine, images: torch.Tensor, warmup_epochs: int = 2) -> None:
        if engine.device.type != "cuda" or images.device.type != "cuda":
            raise CudaGraphUnavailable("CUDA graphs need the engine and the data on a CUDA device")
        if not engine.fused:
            raise CudaGraphUnavailable("CUDA graphs are only wired for the fused path")
        if not hasattr(torch.cuda.CUDAGraph, "register_generator_state"):
            raise CudaGraphUnavailable(
                f"torch {torch.__version__} cannot register a custom generator with a CUDA graph"
            )
        self.engine = engine
        self.images = images
        engine.use_device_learning_rates()

        # Warm up on a side stream, then put back every bit of state the warm-up changed.
        sampler_state = engine.sampler.get_state()
        with state_preserved(engine):
            side = torch.cuda.Stream(device=engine.device)
            side.wait_stream(torch.cuda.current_stream(engine.device))
            with torch.cuda.stream(side):
                for _ in range(warmup_epochs):
                    engine.run_epoch(images)
            torch.cuda.current_stream(engine.device).wait_stream(side)

        self.critic_graph = torch.cuda.CUDAGraph()
        self.generator_graph = torch.cuda.CUDAGraph()
        for graph in (self.critic_graph, self.generator_graph):
            graph.register_generator_state(engine.sampler)
        with pinned_polyphase(engine) as polyphase:
            with torch.cuda.graph(self.critic_graph):
                self._critic_out = engine.critic_step(engine.draw_real(images))
            with torch.cuda.graph(self.generator_graph, pool=self.critic_graph.pool()):
                critic_stats = engine.critic_weight_stats()
                g_loss = engine.generator_step()
                polyphase.refresh()
                g_stats = engine.generator_weight_stats()
                self._generator_out = (g_loss, critic_stats, g_stats)
        self._polyphase = polyphase  # the graphs read these kernels' memory
        torch.cuda.current_stream(engine.device).synchronize()
        engine.sampler.set_state(sampler_state)  # capture records draws; replays start from here

    def run_epoch(self) -> dict[str, torch.Tensor]:
        """n_critic critic replays then one generator replay; values copied out of the graph pool."""
        engine = self.engine
        for _ in range(engine.config.n_critic):
            self.critic_graph.replay()
        self.generator_graph.replay()
        g_loss, critic_stats, g_stats = self._generator_out
        values = engine.finish_epoch(self._critic_out, critic_stats, g_loss, g_stats)
        # One stack copies every value out of the static buffers the next replay overwrites.
        stacked = torch.stack([v.reshape(()) for v in values.values()])
        return dict(zip(values, stacked.unbind()))


@dataclass(frozen=True)
class EpochRunner:
    """How the trainer runs an epoch, and the label of that choice for run.json."""

    run: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    cuda_graph: str  # "on", "off", or "off (why)"


def wants_cuda_graph(engine: Engine) -> bool:
    return engine.fused and engine.config.cuda_graph and engine.device.type == "cuda"


def captured_or_plain(
    engine: Engine, capture: Callable[[], Callable[[], dict[str, torch.Tensor]]]
) -> tuple[Callable[[], dict[str, torch.Tensor]] | None, str]:
    """``capture()``'s replay and "on"; or, when capturing raises anything (no usable torch, a kernel
    that cannot be captured, a driver error), None and "off (why)", with every bit of training state
    put back as it was before the attempt and one warning line naming the error: the run goes on
    uncaptured instead of dying."""
    try:
        with state_preserved(engine):
            replay = capture()
    except Exception as exc:  # any capture failure: the plain epoch still trains correctly
        why = str(exc).splitlines()[0] if str(exc) else ""
        why = f"{type(exc).__name__}: {why}" if not isinstance(exc, CudaGraphUnavailable) else why
        warnings.warn(f"CUDA graphs off: {why}; running the fused path uncaptured", stacklevel=3)
        return None, f"off ({why})"
    return replay, "on"


def epoch_runner(engine: Engine, images: torch.Tensor) -> EpochRunner:
    """CUDA-graph replay of the engine's epoch where it applies (fused, on CUDA, ``--cuda-graph``)
    and can be captured; else the engine's own :meth:`~wgan.training.engine.Engine.run_epoch`. Capturing
    needs the data set's final tensor: replays draw from it and only from it."""
    if not wants_cuda_graph(engine):
        return EpochRunner(engine.run_epoch, "off")
    graph_epoch, label = captured_or_plain(engine, lambda: CudaGraphEpoch(engine, images).run_epoch)
    if graph_epoch is None:
        return EpochRunner(engine.run_epoch, label)

    def replay(batch_source: torch.Tensor) -> dict[str, torch.Tensor]:
        if batch_source is not images:
            raise ValueError("a captured epoch draws from the data tensor it was captured with")
        return graph_epoch()

    return EpochRunner(replay, label)
