"""Many runs, one process: N member engines trained as one stack (``--seeds``, sweeps).

Each member is an ordinary single-run :class:`~wgan.training.engine.Engine` built by
``build_engine`` from its own config, so its initial weights, its sampler (the device random stream
its batches and z come from) and its checkpoint format are exactly those of the run ``--seed i``.
:class:`StackedEngine` then trains the members' models as stacked tensors
(:class:`wgan.models.stacked.StackedModule`: one vmapped, grouped pass for all members) and does
RMSprop and the clip on the stacked tensors, with each member's hyper-parameters broadcast as
``[N, 1, ...]`` tensors. The math is torch.optim.RMSprop's (``--recipe wgan``) or
wgan.training.keras_rmsprop's (``--recipe book``: eps inside the root), and every member draws its
batches and z from its own sampler in the order its single run draws them; so member i, from the
same state, makes the epoch its single run makes (wgan.training.parity checks it in float64).

:meth:`StackedEngine.sync_members` writes the stack's state back into the member engines, whose
``state_dict`` then is the checkpoint of the single run. A member that diverges is frozen
(:meth:`StackedEngine.freeze`): its learning rates become 0 and its state is no longer written back.
The fused kernels are not stacked yet: a stack runs eager (the trainer refuses ``--fused``). How the
stacked models run is ``mode``: ``vmap`` (grouped kernels; the GPU default) or ``loop`` (the CPU
default; docs/performance.md says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from wgan.models.stacked import StackedModule
from wgan.training.engine import CLIP_TOLERANCE, Engine


def _per_member(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([float(v) for v in values], dtype=like.dtype, device=like.device)


def _broadcast(values: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, 1, ...] against a stacked parameter [N, ...]."""
    return values.view(-1, *([1] * (param.dim() - 1)))


@dataclass
class _Slot:
    """One stacked parameter's optimizer state."""

    square_avg: torch.Tensor  # [N, ...]
    step: torch.Tensor  # [N] float (torch's RMSprop keeps a float step count)


class StackedRMSprop:
    """RMSprop on stacked parameters, each member with its own lr, alpha and eps.

    ``eps_inside_sqrt`` False is torch.optim.RMSprop (``p -= lr g / (sqrt(v) + eps)``), True is
    Keras's (``p -= lr g / sqrt(v + eps)``). The state is loaded from and written back to each
    member's own optimizer (torch's state format: ``step``, ``square_avg``)."""

    def __init__(
        self,
        stacked: StackedModule,
        optimizers: Sequence[torch.optim.Optimizer],
        modules: Sequence[torch.nn.Module],
        eps_inside_sqrt: bool,
    ) -> None:
        self.stacked, self.optimizers, self.modules = stacked, list(optimizers), list(modules)
        self.eps_inside_sqrt = eps_inside_sqrt
        like = next(iter(stacked.params.values()))
        groups = [opt.param_groups[0] for opt in self.optimizers]
        self.lr = _per_member([g["lr"] for g in groups], like)
        self.alpha = _per_member([g["alpha"] for g in groups], like)
        self.eps = _per_member([g["eps"] for g in groups], like)
        self.slots = {
            name: _Slot(torch.zeros_like(p), torch.zeros(stacked.n, dtype=torch.float32, device=p.device))
            for name, p in stacked.params.items()
        }
        for i in range(stacked.n):
            self.load_member(i)

    def zero_grad(self) -> None:
        for p in self.stacked.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor, all_active: bool = True) -> None:
        """One update of every member; a member not ``active`` ([N] bool) is left as it is.
        ``all_active`` (a host flag, no device read): the in-place path, no masking."""
        for name, p in self.stacked.params.items():
            if p.grad is None:
                continue
            slot, grad = self.slots[name], p.grad
            alpha, eps, lr = (_broadcast(t, p) for t in (self.alpha, self.eps, self.lr))
            if all_active:
                slot.square_avg.mul_(alpha).addcmul_(grad, grad * (1 - alpha))
                denom = (slot.square_avg + eps).sqrt_() if self.eps_inside_sqrt else slot.square_avg.sqrt().add_(eps)
                p.addcdiv_(grad * lr, denom, value=-1.0)
                slot.step.add_(1.0)
                continue
            new_avg = slot.square_avg * alpha + (1 - alpha) * grad * grad
            denom = (new_avg + eps).sqrt() if self.eps_inside_sqrt else new_avg.sqrt() + eps
            keep = _broadcast(active, p)
            slot.square_avg.copy_(torch.where(keep, new_avg, slot.square_avg))
            p.copy_(torch.where(keep, p - lr * grad / denom, p))
            slot.step.add_(active.to(slot.step.dtype))

    def _member_state(self, index: int) -> list[tuple[str, torch.Tensor, dict]]:
        opt, module = self.optimizers[index], self.modules[index]
        return [(name, p, opt.state[p]) for name, p in module.named_parameters()]

    @torch.no_grad()
    def load_member(self, index: int) -> None:
        """Member ``index``'s optimizer state (empty for a fresh run) into the stack."""
        for name, _, state in self._member_state(index):
            if "square_avg" in state:
                self.slots[name].square_avg[index].copy_(state["square_avg"])
                self.slots[name].step[index] = float(state["step"])

    @torch.no_grad()
    def store_member(self, index: int) -> None:
        """The stack's optimizer state into member ``index``'s optimizer (torch's format)."""
        for name, p, state in self._member_state(index):
            slot = self.slots[name]
            if "square_avg" not in state:
                state["step"] = torch.tensor(0.0)
                state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["square_avg"].copy_(slot.square_avg[index])
            state["step"].fill_(float(slot.step[index]))


class StackedEngine:
    """N eager member engines (one architecture, batch size, n_critic and recipe) trained as one."""

    def __init__(self, members: Sequence[Engine], mode: str | None = None) -> None:
        """``mode``: how the stacked models run (wgan.models.stacked): ``vmap`` (grouped kernels, the
        default on a GPU) or ``loop`` (the default on a CPU, where grouped convolutions do not pay)."""
        self.members = list(members)
        check_stackable([m.config for m in self.members])
        if any(m.fused for m in self.members):
            raise ValueError("the stacked engine runs the eager path; build the members with fused=False")
        first = self.members[0]
        self.config, self.device, self.n = first.config, first.device, len(self.members)
        mode = mode or ("loop" if self.device.type == "cpu" else "vmap")
        self.critic = StackedModule([m.critic for m in self.members], mode)
        self.generator = StackedModule([m.generator for m in self.members], mode)
        book = first.config.recipe == "book"
        self.opt_critic = StackedRMSprop(
            self.critic, [m.opt_critic for m in self.members], [m.critic for m in self.members], book
        )
        self.opt_generator = StackedRMSprop(
            self.generator, [m.opt_generator for m in self.members], [m.generator for m in self.members], book
        )
        like = next(iter(self.critic.params.values()))
        self.clip = _per_member([m.config.clip_threshold for m in self.members], like)
        self.ema_beta = _per_member([m.config.g_ema for m in self.members], like)
        # each member's warm-up step count (wgan.config.ema_decay_at), as its engine keeps it
        self.ema_step = _per_member([float(m.ema_step) if m.ema_step is not None else 0.0 for m in self.members], like)
        self.keeps_ema = any(m.ema is not None for m in self.members)
        self.ema = {k: v.detach().clone() for k, v in self.generator.params.items()} if self.keeps_ema else {}
        for i, m in enumerate(self.members):
            self._load_ema(i, m)
        self.active = torch.ones(self.n, dtype=torch.bool, device=self.device)
        self.all_active = True  # the host's copy of active.all(), kept by freeze()
        self.epoch = first.epoch

    # --- steps ------------------------------------------------------------------------------
    def draw_real(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.draw_real(images) for m in self.members])

    def draw_z(self) -> torch.Tensor:
        return torch.stack([m.draw_z() for m in self.members])

    def scores(self, x: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        return self.critic(x, frozen=frozen)

    def critic_step(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One critic update of every member (Engine.critic_step's math); [N] (d, d_real, d_fake)."""
        if self.config.recipe == "book":
            return self.critic_step_book(real)
        z = self.draw_z()
        with torch.no_grad():
            fake = self.generator(z)
        self.opt_critic.zero_grad()
        batch = real.shape[1]
        scores = self.scores(torch.cat([real, fake], dim=1))
        d_real, d_fake = -scores[:, :batch].mean(1), scores[:, batch:].mean(1)
        d_loss = d_real + d_fake
        d_loss.sum().backward()
        self._critic_update(clip=True)
        return d_loss.detach(), d_real.detach(), d_fake.detach()

    def critic_step_book(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The book's critic iteration (Engine.critic_step_book): inference-mode fakes, a step on
        the reals, a step on the fakes, then the clip."""
        z = self.draw_z()
        with torch.no_grad():
            fake = self.generator(z, train=False)
        losses = []
        for batch, sign, clip in ((real, -1.0, False), (fake, 1.0, True)):
            self.opt_critic.zero_grad()
            loss = sign * self.scores(batch).mean(1)
            loss.sum().backward()
            self._critic_update(clip=clip)
            losses.append(loss.detach())
        return losses[0] + losses[1], losses[0], losses[1]

    def _critic_update(self, clip: bool) -> None:
        self.opt_critic.step(self.active, self.all_active)
        if clip:
            with torch.no_grad():
                for p in self.critic.params.values():
                    c = _broadcast(self.clip, p)
                    p.clamp_(min=-c, max=c)

    def generator_step(self) -> torch.Tensor:
        """One generator update of every member against its frozen critic; [N] g_loss."""
        z = self.draw_z()
        self.opt_generator.zero_grad()
        g_loss = -self.scores(self.generator(z), frozen=True).mean(1)
        g_loss.sum().backward()
        self.opt_generator.step(self.active, self.all_active)
        if self.keeps_ema:
            self._update_ema()
        return g_loss.detach()

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Every member's average, with its engine's warm-up: decay min(beta, (1 + t) / (10 + t))."""
        t = self.ema_step
        decay = torch.minimum((t + 1) / (t + 10), self.ema_beta)
        weight = (1 - decay) * self.active
        for name, p in self.generator.params.items():
            self.ema[name].lerp_(p.detach(), _broadcast(weight, p))
        self.ema_step.add_(self.active.to(self.ema_step.dtype))

    def run_epoch(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """n_critic critic steps then one generator step of every member; each value [N]."""
        critic_losses = None
        for _ in range(self.config.n_critic):
            critic_losses = self.critic_step(self.draw_real(images))
        assert critic_losses is not None  # n_critic >= 1 (validated)
        critic_stats = self.critic_weight_stats()
        g_loss = self.generator_step()
        # the epoch's count and names, as a single run makes them (values [N] instead of 0-d)
        return Engine.finish_epoch(self, critic_losses, critic_stats, g_loss, self.generator_weight_stats())  # type: ignore[arg-type]

    # --- statistics (Engine.critic_weight_stats and generator_weight_stats, per member) -------------
    @staticmethod
    def _flat(stacked: StackedModule) -> torch.Tensor:
        return torch.cat([p.detach().reshape(stacked.n, -1) for p in stacked.params.values()], dim=1)

    @torch.no_grad()
    def critic_weight_stats(self) -> dict[str, torch.Tensor]:
        flat = self._flat(self.critic)
        clipped = flat.abs() >= (self.clip - CLIP_TOLERANCE)[:, None]
        return {
            "clip_ratio": clipped.to(flat.dtype).mean(1),
            "critic_weight_mean": flat.mean(1),
            "critic_weight_std": flat.std(1, correction=0),
        }

    @torch.no_grad()
    def generator_weight_stats(self) -> dict[str, torch.Tensor]:
        flat = self._flat(self.generator)
        return {"generator_weight_mean": flat.mean(1), "generator_weight_std": flat.std(1, correction=0)}

    # --- members ----------------------------------------------------------------------------
    def freeze(self, index: int) -> None:
        """Member ``index`` diverged: no more updates; its values are made finite so they stay
        harmless (the member's engine keeps its last good state, which is never overwritten again)."""
        self.active[index] = False
        self.all_active = False
        with torch.no_grad():
            for tensors in (self.critic.params, self.generator.params, self.generator.buffers, self.ema):
                for t in tensors.values():
                    if t.is_floating_point():
                        t[index].nan_to_num_(0.0, 0.0, 0.0)
            for opt in (self.opt_critic, self.opt_generator):
                for slot in opt.slots.values():
                    slot.square_avg[index].nan_to_num_(0.0, 0.0, 0.0)

    def is_active(self, index: int) -> bool:
        return bool(self.active[index])

    @torch.no_grad()
    def sync_members(self) -> None:
        """Write every active member's state (models, optimizer, average, epoch) into its engine."""
        for i, m in enumerate(self.members):
            if not self.is_active(i):
                continue
            self.critic.copy_into(i, m.critic)
            self.generator.copy_into(i, m.generator)
            self.opt_critic.store_member(i)
            self.opt_generator.store_member(i)
            if m.ema is not None:
                for average, name in zip(m.ema, self.generator.params):
                    average.copy_(self.ema[name][i])
            if m.ema_step is not None:
                m.ema_step.fill_(self.ema_step[i])
            m.epoch = self.epoch

    def _load_ema(self, index: int, member: Engine) -> None:
        if member.ema is None or not self.keeps_ema:
            return
        with torch.no_grad():
            for average, name in zip(member.ema, self.generator.params):
                self.ema[name][index].copy_(average)


# --- what a stack shares ---------------------------------------------------------------------

# The fields a stack's members may differ in; everything else that is not an execution field
# (architecture, batch size, n_critic, recipe, the data) is shared, and so is the epoch count.
PER_MEMBER_FIELDS = ("seed", "lr_critic", "lr_generator", "clip_threshold", "g_ema", "rmsprop_alpha", "rmsprop_eps")


def check_stackable(configs: Sequence) -> None:
    """ValueError naming the first field that differs between members but must be shared."""
    from wgan.config import RESUMABLE_FIELDS

    first = configs[0].to_dict()
    for config in configs[1:]:
        other = config.to_dict()
        for key, value in first.items():
            if key in PER_MEMBER_FIELDS or key == "extra" or (key in RESUMABLE_FIELDS and key != "epochs"):
                continue
            if other[key] != value:
                raise ValueError(f"{key} differs between members ({value!r} vs {other[key]!r}); a stack shares it")


# --- parity: member i of a stack is the run --seed i ---------------------------------------------


def stacked_parity(
    states: Sequence[dict],
    images: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
    bound: float | None = None,
    mode: str | None = None,
) -> list:
    """One epoch of a stack built from the training ``states`` (checkpoint dicts, one per member,
    each with its own config) against one epoch of each member's single-run engine from the same
    state, in float64 (wgan.training.parity's method); one ParityReport per member."""
    import copy

    from wgan.config import WGANConfig
    from wgan.training.engine import build_engine
    from wgan.training.parity import BOUND, ParityReport, engine_differences

    def engine(state: dict) -> Engine:
        built = build_engine(WGANConfig.from_dict(state["config"]).replace(fused=False), device, dtype=dtype)
        built.load_state_dict(copy.deepcopy(state))
        return built

    members = [engine(s) for s in states]
    stack = StackedEngine(members, mode)
    stacked_out = stack.run_epoch(members[0].prepare_images(images))
    stack.sync_members()
    reports = []
    for i, (state, member) in enumerate(zip(states, members)):
        single = engine(state)
        single_out = single.run_epoch(single.prepare_images(images))
        report = ParityReport("eager single run", f"stack member {i}", bound or BOUND, dtype)
        report.differences += engine_differences(single, member, single_out, {k: v[i] for k, v in stacked_out.items()})
        reports.append(report)
    return reports
