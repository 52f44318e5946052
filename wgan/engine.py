"""One WGAN training step on the device, eager or fused, behind one interface.

``build_engine`` is the ONE place where ``config.fused`` is decided: everything that differs
between the eager reference and the fused path (optimizer class, clipping, critic module and its
loss functions) is chosen there and nowhere else. How an epoch is *run* (uncaptured, or replayed
from CUDA graphs) is the trainer's choice, made through :func:`wgan.cuda_graph.epoch_runner`, which
depends on this module and never the reverse. Both paths run the same algorithm with the same
random draws (taken in the same order from the engine's device-side ``torch.Generator``), so
their losses agree to rounding.

Nothing here reads a value back to the host: the step methods return 0-d device tensors and
the trainer stacks and reads them back every few epochs, so a GPU is never stalled per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from wgan import metric_names
from wgan.config import WGANConfig
from wgan.fused_critic import FusedCritic, at_least_fp32, critic_losses_reference, generator_loss_reference
from wgan.models import Critic, Generator

DEVICE_METRICS = metric_names.DEVICE  # the per-epoch values run_epoch returns, by name
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
    clip_in_optimizer: bool  # True when the optimizer clamps (fused); else an eager clamp_ loop
    grads_to_none: bool  # zero_grad(set_to_none=...): False keeps FusedRMSprop's flat grad buffer
    fused: bool
    labels: dict[str, str] = field(default_factory=dict)  # what runs: critic, optimizer, kernels, precision
    epoch: int = 0  # completed epochs
    amp_dtype: torch.dtype | None = None  # autocast dtype of the forward passes (None: fp32)
    memory_format: torch.memory_format = torch.contiguous_format
    dtype: torch.dtype = torch.float32  # parameters, activations and z (float64 for parity checks)

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
        idx = torch.randint(images.shape[0], (self.config.batch_size,), device=images.device,
                            generator=self.sampler)
        return images.index_select(0, idx)

    def draw_z(self) -> torch.Tensor:
        z = torch.randn(self.config.batch_size, self.config.z_dim, device=self.device, generator=self.sampler)
        return z.to(self.dtype)  # drawn in fp32 whatever the dtype: the same draws

    def critic_step(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One critic update on ``real`` + a fresh fake batch; returns detached (d, d_real, d_fake).

        The generator stays in train mode (batch statistics) while making the fakes: that is the
        distribution the generator step trains against.
        """
        z = self.draw_z()
        with torch.no_grad(), self.autocast():
            fake = self.generator(z)
        self.opt_critic.zero_grad(set_to_none=self.grads_to_none)
        with self.autocast():
            d_loss, d_loss_real, d_loss_fake = (at_least_fp32(t) for t in self.critic_losses(real, fake))
        d_loss.backward()
        self.opt_critic.step()
        if not self.clip_in_optimizer:
            clip = self.config.clip_threshold
            with torch.no_grad():
                for p in self.critic.parameters():
                    p.clamp_(-clip, clip)
        return d_loss.detach(), d_loss_real.detach(), d_loss_fake.detach()

    def generator_step(self) -> torch.Tensor:
        """One generator update against a frozen critic (its grads are neither made nor kept)."""
        z = self.draw_z()
        self.critic.requires_grad_(False)
        try:
            self.opt_generator.zero_grad(set_to_none=self.grads_to_none)
            with self.autocast():
                g_loss = at_least_fp32(self.generator_loss(self.generator(z)))
            g_loss.backward()
            self.opt_generator.step()
        finally:
            self.critic.requires_grad_(True)
        return g_loss.detach()

    def run_epoch(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """n_critic critic steps then one generator step; every value a 0-d device tensor."""
        critic_losses = None
        for _ in range(self.config.n_critic):
            critic_losses = self.critic_step(self.draw_real(images))
        assert critic_losses is not None  # n_critic >= 1 (validated)
        critic_stats = self.critic_weight_stats()
        g_loss = self.generator_step()
        return self.finish_epoch(critic_losses, critic_stats, g_loss, self.generator_weight_stats())

    def finish_epoch(self, critic_losses: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                     critic_stats: dict[str, torch.Tensor], g_loss: torch.Tensor,
                     generator_stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Count the epoch and name its values (metric_names.DEVICE): the one place both an
        uncaptured epoch and a CUDA-graph replay build them."""
        self.epoch += 1
        d_loss, d_loss_real, d_loss_fake = critic_losses
        values = {"d_loss": d_loss, "d_loss_real": d_loss_real, "d_loss_fake": d_loss_fake, "g_loss": g_loss,
                  "wasserstein_estimate": -d_loss, **critic_stats, **generator_stats}
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
        return {"clip_ratio": clipped.float().mean(), "critic_weight_mean": flat.mean(),
                "critic_weight_std": flat.std(correction=0)}

    def generator_weight_stats(self) -> dict[str, torch.Tensor]:
        g_mean, g_std = _mean_std(self.generator.parameters())
        return {"generator_weight_mean": g_mean, "generator_weight_std": g_std}

    @torch.no_grad()
    def sample(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """Images from ``z`` (default the fixed z) with batch norm in inference mode.

        Inference mode reads the running statistics and changes no state, so sampling never
        perturbs training (resume stays exact whatever the sample cadence).
        """
        was_training = self.generator.training
        self.generator.eval()
        try:
            return self.generator(self.fixed_z if z is None else z)
        finally:
            self.generator.train(was_training)

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
            "rng": {"cpu": torch.get_rng_state(), "cuda": cuda_states,
                    "sampler": self.sampler.get_state(), "sampler_device": self.device.type},
            "fixed_z": self.fixed_z.detach().cpu(),
        }

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
    """An optimizer state_dict with tensor learning rates (set for CUDA graphs) as plain floats,
    so the checkpoint loads into either path's optimizer on any device."""
    groups = [{**g, "lr": float(g["lr"])} if isinstance(g.get("lr"), torch.Tensor) else g
              for g in opt_state["param_groups"]]
    return {**opt_state, "param_groups": groups}


def _mean_std(params: Any) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        return flat.mean(), flat.std(correction=0)


def _rmsprop_kwargs(config: WGANConfig, lr: float) -> dict[str, Any]:
    return dict(lr=lr, alpha=config.rmsprop_alpha, eps=config.rmsprop_eps)


def build_engine(config: WGANConfig, device: torch.device | str, impl: str | None = None,
                 dtype: torch.dtype = torch.float32) -> Engine:
    """Models (seeded, initialised on the CPU so every device starts from the same weights),
    optimizers and the device sampler; eager or fused according to ``config.fused``.

    ``impl`` forces the fused path's kernels to 'triton' or 'ref' (None: Triton where it can
    run); benchmarks use 'ref' for a CPU ratio that does not time the Triton interpreter.
    ``dtype`` float64 runs the whole step in double precision (wgan.parity compares the paths
    there, where rounding cannot be amplified into visible differences).
    """
    device = torch.device(device)
    config.validate()
    if device.type == "cuda":  # process-wide switches; off by default so parity holds in fp32
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32
    if config.deterministic:  # process-wide, like the TF32 switches
        if device.type == "cpu":
            # oneDNN's multi-threaded convolutions round differently from one process to the next
            # (measured: 1 run in ~12 differs at 2 threads, none at 1 thread)
            torch.set_num_threads(1)
        else:
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        generator = Generator(config)
        # ---- the fused choice, part 1 of 2: the critic module (same parameters either way) ---
        critic = FusedCritic(config, impl=impl, channels_last=config.channels_last) if config.fused else Critic(config)
    generator.to(device, dtype, memory_format=memory_format).train()
    critic.to(device, dtype, memory_format=memory_format).train()
    labels: dict[str, str]
    if config.fused:
        critic_losses: CriticLossFn = critic.critic_losses  # one batched real+fake pass, fused head
        generator_loss: GeneratorLossFn = critic.generator_loss
        labels = {"critic": "FusedCritic"}
    else:
        critic_losses = lambda real, fake: critic_losses_reference(critic, real, fake)  # noqa: E731
        generator_loss = lambda fake: generator_loss_reference(critic, fake)  # noqa: E731
        labels = {"critic": "eager"}

    # ---- the fused choice, part 2 of 2: the optimizers and where clipping happens ------------
    # Built after the models are on the device: FusedRMSprop re-points p.data into its flat buffer.
    if config.fused:
        from kernels.rmsprop import FusedRMSprop

        opt_critic: torch.optim.Optimizer = FusedRMSprop(
            critic.parameters(), clip_value=config.clip_threshold, impl=impl,
            **_rmsprop_kwargs(config, config.lr_critic))
        opt_generator: torch.optim.Optimizer = FusedRMSprop(
            generator.parameters(), impl=impl, **_rmsprop_kwargs(config, config.lr_generator))
        labels["optimizer"] = f"kernels.FusedRMSprop[{','.join(sorted(set(opt_critic.impls)))}]"
        labels["kernels"] = kernel_label(critic.kernel_impls(device, torch.bfloat16 if config.amp == "bf16" else dtype))
        clip_in_optimizer, grads_to_none = True, False
    else:
        opt_critic = torch.optim.RMSprop(critic.parameters(), **_rmsprop_kwargs(config, config.lr_critic))
        opt_generator = torch.optim.RMSprop(generator.parameters(), **_rmsprop_kwargs(config, config.lr_generator))
        labels["optimizer"] = "torch.optim.RMSprop"
        clip_in_optimizer, grads_to_none = False, True

    if config.amp != "none" or config.tf32 or config.channels_last:
        labels["precision"] = f"amp={config.amp} tf32={config.tf32} channels_last={config.channels_last}"

    sampler = torch.Generator(device=device)
    sampler.manual_seed(config.seed)
    fixed_z = torch.randn(N_FIXED_Z, config.z_dim, generator=torch.Generator().manual_seed(config.seed + 1))
    return Engine(config=config, device=device, generator=generator, critic=critic,
                  opt_generator=opt_generator, opt_critic=opt_critic, sampler=sampler,
                  fixed_z=fixed_z.to(device, dtype), critic_losses=critic_losses, generator_loss=generator_loss,
                  clip_in_optimizer=clip_in_optimizer, grads_to_none=grads_to_none, fused=config.fused,
                  labels=labels,
                  amp_dtype=torch.bfloat16 if config.amp == "bf16" else None, memory_format=memory_format,
                  dtype=dtype)
