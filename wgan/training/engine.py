"""One WGAN training step on the device, eager or fused, behind one interface.

``build_engine`` is the ONE place where ``config.fused`` is decided: everything that differs
between the eager reference and the fused path (optimizer class, clipping, critic module and its
loss functions) is chosen there and nowhere else. How an epoch is *run* (uncaptured, or replayed
from CUDA graphs) is the trainer's choice, made through :func:`wgan.training.cuda_graph.epoch_runner`, which
depends on this module and never the reverse. Both paths run the same algorithm with the same
random draws (taken in the same order from the engine's device-side ``torch.Generator``), so
their losses agree to rounding.

Nothing here reads a value back to the host: the step methods return 0-d device tensors and
the trainer stacks and reads them back every few epochs, so a GPU is never stalled per step.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from wgan.config import WGANConfig, resolve_precision
from wgan.devices import set_cudnn_flags
from wgan.models.eager import Critic, Generator
from wgan.models.fused_critic import (
    FusedCritic,
    at_least_fp32,
    critic_losses_reference,
    eager_scores,
    generator_loss_reference,
)
from wgan.models.fused_generator import FusedGenerator
from wgan.run import columns

DEVICE_METRICS = columns.DEVICE  # the per-epoch values run_epoch returns, by name
CLIP_TOLERANCE = 1e-6  # a weight within this of +-clip counts as clipped
N_FIXED_Z = 25  # the 5x5 sample grid

CriticLossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
GeneratorLossFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Engine:
    """Models, optimizers and the device RNG of one run; steps return 0-d device tensors."""

    config: WGANConfig
    device: torch.device
    generator: Generator
    critic: Critic
    opt_generator: torch.optim.Optimizer
    opt_critic: torch.optim.Optimizer
    sampler: torch.Generator  # draws batch indices and every z, on the device
    fixed_z: torch.Tensor  # [25, z_dim] for the sample grids; never drawn from ``sampler``
    critic_losses: CriticLossFn
    generator_loss: GeneratorLossFn
    mean_score: GeneratorLossFn  # E[C(x)] of one batch (the book recipe's critic steps)
    clip_in_optimizer: bool  # True when the optimizer clamps (fused); else an eager clamp_ loop
    grads_to_none: bool  # zero_grad(set_to_none=...): True on both paths (see _optimizers)
    fused: bool
    labels: dict[str, str] = field(default_factory=dict)  # what runs: critic, optimizer, kernels, precision
    epoch: int = 0  # completed epochs
    precision: str = "fp32"  # what runs: fp32, tf32 or bf16 (config.precision with auto resolved)
    amp_dtype: torch.dtype | None = None  # autocast dtype of the forward passes (None: fp32)
    memory_format: torch.memory_format = torch.contiguous_format
    dtype: torch.dtype = torch.float32  # parameters, activations and z (float64 for parity checks)
    ema: list[torch.Tensor] | None = None  # the generator's weights averaged (--g-ema), in parameter order
    # With --g-ema, 0-d device tensors (the engine's dtype): generator steps averaged so far, and this
    # step's decay, min(g_ema, (1 + t) / (10 + t)) (wgan.config.ema_decay_at), which the fused optimizer
    # reads inside its launch, so CUDA graphs replay the schedule.
    ema_step: torch.Tensor | None = None
    ema_decay: torch.Tensor | None = None
    _ema_module: torch.nn.Module | None = None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision for forward passes only; losses are returned in fp32."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """The data set on the device in the engine's memory format (done once per run)."""
        return images.to(self.device, self.dtype).contiguous(memory_format=self.memory_format)

    # --- steps ------------------------------------------------------------------------------
    def draw_real(self, images: torch.Tensor) -> torch.Tensor:
        """A batch drawn with replacement on the device (the seed's sampling), no host copy."""
        idx = torch.randint(images.shape[0], (self.config.batch_size,), device=images.device, generator=self.sampler)
        return images.index_select(0, idx)

    def draw_z(self) -> torch.Tensor:
        z = torch.randn(self.config.batch_size, self.config.z_dim, device=self.device, generator=self.sampler)
        return z.to(self.dtype)  # drawn in fp32 whatever the dtype: the same draws

    def critic_step(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One critic update on ``real`` + a fresh fake batch; returns detached (d, d_real, d_fake).

        The generator stays in train mode (batch statistics) while making the fakes: that is the
        distribution the generator step trains against. ``--recipe book``: :meth:`critic_step_book`.
        """
        if self.config.recipe == "book":
            return self.critic_step_book(real)
        z = self.draw_z()
        with torch.no_grad(), self.autocast():
            fake = self.generator(z)
        self.opt_critic.zero_grad(set_to_none=self.grads_to_none)
        with self.autocast():
            d_loss, d_loss_real, d_loss_fake = (at_least_fp32(t) for t in self.critic_losses(real, fake))
        d_loss.backward()
        self._critic_update(clip=True)
        return d_loss.detach(), d_loss_real.detach(), d_loss_fake.detach()

    def critic_step_book(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The book's Keras critic iteration: fakes from ``predict`` (batch norm in inference mode),
        one ``train_on_batch`` on the reals (``-E[C(real)]``), one on the fakes (``E[C(fake)]``),
        each its own optimizer step, then the clip once."""
        z = self.draw_z()
        fake = self.sample(z, ema=False)
        d_losses = []
        for batch, sign, clip in ((real, -1.0, False), (fake, 1.0, True)):
            self.opt_critic.zero_grad(set_to_none=self.grads_to_none)
            with self.autocast():
                loss = sign * at_least_fp32(self.mean_score(batch))
            loss.backward()
            self._critic_update(clip=clip)
            d_losses.append(loss.detach())
        return d_losses[0] + d_losses[1], d_losses[0], d_losses[1]

    def _critic_update(self, clip: bool) -> None:
        """The optimizer step, then (``clip``) every critic weight clamped to ``[-c, c]``: inside the
        fused optimizer's launch, or an eager clamp_ loop."""
        if self.clip_in_optimizer:
            group = self.opt_critic.param_groups[0]
            group["clip_value"] = self.config.clip_threshold if clip else None
            self.opt_critic.step()
            group["clip_value"] = self.config.clip_threshold
            return
        self.opt_critic.step()
        if clip:
            with torch.no_grad():
                for p in self.critic.parameters():
                    p.clamp_(-self.config.clip_threshold, self.config.clip_threshold)

    def generator_step(self) -> torch.Tensor:
        """One generator update against a frozen critic (its grads are neither made nor kept)."""
        z = self.draw_z()
        self.critic.requires_grad_(False)
        try:
            self.opt_generator.zero_grad(set_to_none=self.grads_to_none)
            with self.autocast():
                g_loss = at_least_fp32(self.generator_loss(self.generator(z)))
            g_loss.backward()
            self._schedule_ema_decay()
            self.opt_generator.step()
            self._update_ema()
        finally:
            self.critic.requires_grad_(True)
        return g_loss.detach()

    def _schedule_ema_decay(self) -> None:
        """This step's decay into ``ema_decay``, on the device (no host value: a captured step replays it)."""
        if self.ema_step is not None and self.ema_decay is not None:
            t = self.ema_step
            torch.clamp((t + 1) / (t + 10), max=self.config.g_ema, out=self.ema_decay)

    def _update_ema(self) -> None:
        """The eager average (the fused optimizer did it in its launch), then one more step counted."""
        if self.ema is None or self.ema_step is None or self.ema_decay is None:
            return
        if not self.fused:
            params = [p.detach() for p in self.generator.parameters()]
            torch._foreach_lerp_(self.ema, params, 1 - self.ema_decay)
        self.ema_step.add_(1)

    def run_epoch(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """n_critic critic steps then one generator step; every value a 0-d device tensor."""
        critic_losses = None
        with self.polyphase_scope():
            for _ in range(self.config.n_critic):
                critic_losses = self.critic_step(self.draw_real(images))
            assert critic_losses is not None  # n_critic >= 1 (validated)
            critic_stats = self.critic_weight_stats()
            g_loss = self.generator_step()
        return self.finish_epoch(critic_losses, critic_stats, g_loss, self.generator_weight_stats())

    def polyphase_scope(self) -> contextlib.AbstractContextManager[Any]:
        """The generator's weights change only at its update, the epoch's last step: inside, its
        polyphase kernels are computed once (FusedGenerator.polyphase_reused)."""
        gen = self.generator
        return gen.polyphase_reused() if isinstance(gen, FusedGenerator) else contextlib.nullcontext()

    def finish_epoch(
        self,
        critic_losses: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        critic_stats: dict[str, torch.Tensor],
        g_loss: torch.Tensor,
        generator_stats: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Count the epoch and name its values (columns.DEVICE): the one place both an
        uncaptured epoch and a CUDA-graph replay build them."""
        self.epoch += 1
        d_loss, d_loss_real, d_loss_fake = critic_losses
        values = {
            "d_loss": d_loss,
            "d_loss_real": d_loss_real,
            "d_loss_fake": d_loss_fake,
            "g_loss": g_loss,
            "wasserstein_estimate": -d_loss,
            **critic_stats,
            **generator_stats,
        }
        return {k: values[k] for k in DEVICE_METRICS}

    def use_device_learning_rates(self) -> None:
        """Learning rates as 0-d device tensors, read by the optimizer kernels at every step, so a
        captured step keeps following them (a Python float would be frozen into a CUDA graph)."""
        for opt in (self.opt_critic, self.opt_generator):
            for group in opt.param_groups:
                if not isinstance(group["lr"], torch.Tensor):
                    group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def critic_weight_stats(self) -> dict[str, torch.Tensor]:
        flat = torch.cat([p.detach().reshape(-1) for p in self.critic.parameters()])
        clipped = flat.abs() >= self.config.clip_threshold - CLIP_TOLERANCE
        return {
            "clip_ratio": clipped.float().mean(),
            "critic_weight_mean": flat.mean(),
            "critic_weight_std": flat.std(correction=0),
        }

    def generator_weight_stats(self) -> dict[str, torch.Tensor]:
        g_mean, g_std = _mean_std(self.generator.parameters())
        return {"generator_weight_mean": g_mean, "generator_weight_std": g_std}

    @torch.no_grad()
    def sample(self, z: torch.Tensor | None = None, ema: bool | None = None) -> torch.Tensor:
        """Images from ``z`` (default the fixed z) with batch norm in inference mode, from the
        averaged generator when there is one (``ema`` None) or as asked.

        Inference mode reads the running statistics and changes no state, so sampling never
        perturbs training (resume stays exact whatever the sample cadence).
        """
        generator = self.ema_generator() if (self.ema is not None if ema is None else ema) else self.generator
        was_training = generator.training
        generator.eval()
        try:
            return generator(self.fixed_z if z is None else z)
        finally:
            generator.train(was_training)

    def ema_generator(self) -> torch.nn.Module:
        """The generator with the averaged weights and the live generator's batch-norm buffers
        (as StyleGAN copies them): a copy kept beside the live one, refreshed at each call."""
        if self.ema is None:
            raise ValueError("this engine keeps no generator average (--g-ema 0)")
        if self._ema_module is None:
            self._ema_module = copy.deepcopy(self.generator).requires_grad_(False)
        with torch.no_grad():
            for target, average in zip(self._ema_module.parameters(), self.ema):
                target.copy_(average)
            for target, live in zip(self._ema_module.buffers(), self.generator.buffers()):
                target.copy_(live)
        return self._ema_module

    # --- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs, as weights_only-loadable values (docs/design.md)."""
        cuda_states: list[torch.Tensor] = []
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            cuda_states = [s.clone() for s in torch.cuda.get_rng_state_all()]
        return {
            "epoch": self.epoch,
            "config": self.config.to_dict(),
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_generator": _portable(self.opt_generator.state_dict()),
            "opt_critic": _portable(self.opt_critic.state_dict()),
            "rng": {
                "cpu": torch.get_rng_state(),
                "cuda": cuda_states,
                "sampler": self.sampler.get_state(),
                "sampler_device": self.device.type,
            },
            "fixed_z": self.fixed_z.detach().cpu(),
            **({"generator_ema": self.ema_generator().state_dict()} if self.ema is not None else {}),
            **({"generator_ema_step": int(self.ema_step)} if self.ema_step is not None else {}),
        }

    def _load_ema(self, state: dict[str, Any]) -> None:
        """The saved average into this engine's (a checkpoint without one: the average restarts
        from the loaded weights, as a fresh --g-ema would)."""
        if self.ema is None:
            return
        saved = state.get("generator_ema")
        names = [n for n, _ in self.generator.named_parameters()]
        with torch.no_grad():
            for name, average, live in zip(names, self.ema, self.generator.parameters()):
                average.copy_(saved[name] if saved is not None else live.detach())
        # the warm-up's step count (a checkpoint from before the warm-up: its epochs, one step each)
        steps = state.get("generator_ema_step", int(state["epoch"])) if saved is not None else 0
        if self.ema_step is not None:
            self.ema_step.fill_(float(steps))
        if self.fused:  # the loaded param group holds the saved decay as a number: read the device scalar again
            self.opt_generator.param_groups[0]["ema_decay"] = self.ema_decay

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore a checkpoint; return False when the sampler could not be restored exactly.

        The sampler's state is device-specific (CPU Mersenne Twister vs CUDA Philox): resuming
        on another device type reseeds it from (seed, epoch), which is reproducible but no longer
        the same draws as the uninterrupted run.
        """
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        self.opt_generator.load_state_dict(state["opt_generator"])
        self.opt_critic.load_state_dict(state["opt_critic"])
        self.epoch = int(state["epoch"])
        self.fixed_z = state["fixed_z"].to(self.device, self.dtype)
        self._load_ema(state)
        rng = state["rng"]
        torch.set_rng_state(rng["cpu"])
        if rng.get("cuda") and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if rng.get("sampler_device", self.device.type) == self.device.type:
            self.sampler.set_state(rng["sampler"])
            return True
        self.sampler.manual_seed(self.config.seed * 1_000_003 + self.epoch)
        return False


def kernel_label(impls: dict[str, str]) -> str:
    """'triton' or 'ref' when every op runs the same, else each op's, e.g. 'bias_leaky_relu=ref,...'."""
    kinds = set(impls.values())
    return kinds.pop() if len(kinds) == 1 else ",".join(f"{op}={impl}" for op, impl in sorted(impls.items()))


def _portable(opt_state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state_dict with device scalars (learning rates set for CUDA graphs, the EMA's
    decay) as plain floats, so the checkpoint loads into either path's optimizer on any device."""
    groups = [
        {k: float(v) if k in ("lr", "ema_decay") and isinstance(v, torch.Tensor) else v for k, v in g.items()}
        for g in opt_state["param_groups"]
    ]
    return {**opt_state, "param_groups": groups}


def _mean_std(params: Any) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        return flat.mean(), flat.std(correction=0)


def _rmsprop_kwargs(config: WGANConfig, lr: float) -> dict[str, Any]:
    return dict(lr=lr, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps)


def _set_backends(config: WGANConfig, device: torch.device, precision: str) -> None:
    """Process-wide switches: the CUDA device (CUDA graphs capture on the current device's stream,
    EpochClock times it), TF32 (``precision`` tf32; fp32 and bf16 keep convolutions and matmuls strict
    fp32 outside autocast, so fp32 parity holds), ``cudnn.benchmark`` (every engine, so benchmarks time
    what training runs) and determinism."""
    if device.type == "cuda":
        if device.index is not None:
            torch.cuda.set_device(device)
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        # fixed shapes: cuDNN's fastest kernels (benchmark), found once
        set_cudnn_flags(allow_tf32=tf32, benchmark=not config.deterministic)
    if config.deterministic:
        if device.type == "cpu":
            # oneDNN's multi-threaded convolutions round differently from one process to the next
            # (measured: 1 run in ~12 differs at 2 threads, none at 1 thread)
            torch.set_num_threads(1)
        else:
            set_cudnn_flags(deterministic=True)


@dataclass
class _Losses:
    critic_losses: CriticLossFn
    generator_loss: GeneratorLossFn
    mean_score: GeneratorLossFn
    label: str


def _losses(config: WGANConfig, critic: Critic) -> _Losses:
    """The fused choice, part 2 of 3: how the losses are computed from the critic."""
    if config.fused:
        fused: FusedCritic = critic  # type: ignore[assignment]
        # one batched real+fake pass and the fused head; E[C(x)] is minus the generator head's loss
        return _Losses(fused.critic_losses, fused.generator_loss, lambda x: -fused.generator_loss(x), "FusedCritic")
    return _Losses(
        lambda real, fake: critic_losses_reference(critic, real, fake),
        lambda fake: generator_loss_reference(critic, fake),
        lambda x: eager_scores(critic, x).mean(),
        "eager",
    )


@dataclass
class _Optimizers:
    critic: torch.optim.Optimizer
    generator: torch.optim.Optimizer
    labels: dict[str, str]
    clip_in_optimizer: bool  # the fused optimizer clamps in its launch; else an eager clamp_ loop
    grads_to_none: bool  # zero_grad(set_to_none=...): True on both paths (see _optimizers)
    ema: list[torch.Tensor] | None


def _ema_scalars(config: WGANConfig, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(step count, decay) of the weight average's warm-up, 0-d tensors on the device."""
    step = torch.zeros((), dtype=dtype, device=device)
    return step, torch.full((), min(config.g_ema, 0.1), dtype=dtype, device=device)  # step 0's decay


def _optimizers(
    config: WGANConfig, critic: Critic, generator: Generator, impl: str | None, ema_decay: torch.Tensor | None
) -> _Optimizers:
    """The fused choice, part 3 of 3: the optimizers, where clipping and the weight average run.

    Built after the models are on the device: FusedRMSprop re-points p.data into its flat buffer.
    The book's recipe puts RMSprop's eps inside the square root (Keras/TensorFlow's formula).
    """
    book = config.recipe == "book"
    if config.fused:
        from kernels.rmsprop import FusedRMSprop

        opt_critic = FusedRMSprop(
            critic.parameters(),
            clip_value=config.clip_threshold,
            impl=impl,
            eps_inside_sqrt=book,
            **_rmsprop_kwargs(config, config.lr_critic),
        )
        opt_generator = FusedRMSprop(
            generator.parameters(),
            impl=impl,
            eps_inside_sqrt=book,
            ema_decay=ema_decay,
            **_rmsprop_kwargs(config, config.lr_generator),
        )
        labels = {"optimizer": f"kernels.FusedRMSprop[{','.join(sorted(set(opt_critic.impls)))}]"}
        return _Optimizers(
            # set_to_none=True: backward hands over fresh gradients and the step gathers them into its flat
            # buffer with ONE _foreach_copy_, instead of a zero_ and an accumulating add_ per parameter
            opt_critic,
            opt_generator,
            labels,
            True,
            True,
            opt_generator.ema_params() if ema_decay is not None else None,
        )
    if book:
        from wgan.training.keras_rmsprop import KerasRMSprop as optimizer_class  # noqa: N813
    else:
        optimizer_class = torch.optim.RMSprop
    opt_critic = optimizer_class(critic.parameters(), **_rmsprop_kwargs(config, config.lr_critic))
    opt_generator = optimizer_class(generator.parameters(), **_rmsprop_kwargs(config, config.lr_generator))
    ema = [p.detach().clone() for p in generator.parameters()] if ema_decay is not None else None
    label = "wgan.training.keras_rmsprop.KerasRMSprop" if book else "torch.optim.RMSprop"
    return _Optimizers(opt_critic, opt_generator, {"optimizer": label}, False, True, ema)


def build_engine(
    config: WGANConfig, device: torch.device | str, impl: str | None = None, dtype: torch.dtype = torch.float32
) -> Engine:
    """Models (seeded, initialised on the CPU so every device starts from the same weights),
    optimizers and the device sampler; eager or fused according to ``config.fused``.

    ``impl`` forces the fused path's kernels to 'triton' or 'ref' (None: Triton where it can
    run); benchmarks use 'ref' for a CPU ratio that does not time the Triton interpreter.
    ``dtype`` float64 runs the whole step in double precision (wgan.training.parity compares the paths
    there, where rounding cannot be amplified into visible differences).
    """
    device = torch.device(device)
    config.validate()
    precision = resolve_precision(config.precision, device.type)
    _set_backends(config, device, precision)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        # ---- the fused choice, part 1 of 3: the modules (same parameters and init either way) ----
        generator = (
            FusedGenerator(config, impl=impl, channels_last=True if config.channels_last else None)
            if config.fused
            else Generator(config)
        )
        critic = FusedCritic(config, impl=impl, channels_last=config.channels_last) if config.fused else Critic(config)
    generator.to(device, dtype, memory_format=memory_format).train()
    critic.to(device, dtype, memory_format=memory_format).train()
    losses = _losses(config, critic)
    ema_step, ema_decay = _ema_scalars(config, device, dtype) if config.g_ema else (None, None)
    opts = _optimizers(config, critic, generator, impl, ema_decay)
    labels = {
        "generator": type(generator).__name__ if config.fused else "eager",
        "critic": losses.label,
        **opts.labels,
        "recipe": config.recipe,
        "generator_ema": f"{config.g_ema:g}, warm-up (1+t)/(10+t)" if config.g_ema else "off",
    }
    if config.fused:
        activations = torch.bfloat16 if precision == "bf16" else dtype
        # what FusedCritic's and FusedGenerator's kernels run
        labels["kernels"] = kernel_label(
            {**critic.kernel_impls(device, activations), **generator.kernel_impls(device, activations)}
        )
    labels["precision"] = precision
    if config.channels_last:
        labels["memory_format"] = "channels_last"
    sampler = torch.Generator(device=device)
    sampler.manual_seed(config.seed)
    fixed_z = torch.randn(N_FIXED_Z, config.z_dim, generator=torch.Generator().manual_seed(config.seed + 1))
    return Engine(
        config=config,
        device=device,
        generator=generator,
        critic=critic,
        opt_generator=opts.generator,
        opt_critic=opts.critic,
        sampler=sampler,
        fixed_z=fixed_z.to(device, dtype),
        critic_losses=losses.critic_losses,
        generator_loss=losses.generator_loss,
        mean_score=losses.mean_score,
        clip_in_optimizer=opts.clip_in_optimizer,
        grads_to_none=opts.grads_to_none,
        fused=config.fused,
        labels=labels,
        precision=precision,
        amp_dtype=torch.bfloat16 if precision == "bf16" else None,
        memory_format=memory_format,
        dtype=dtype,
        ema=opts.ema,
        ema_step=ema_step,
        ema_decay=ema_decay,
    )
