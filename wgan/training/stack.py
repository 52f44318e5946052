"""Many runs, one process: N member engines trained as one stack (``--seeds``, sweeps).

Each member is an ordinary single-run :class:`~wgan.training.engine.Engine` built by
``build_engine`` from its own config, so its initial weights, its sampler (the device random stream
its batches and z come from) and its checkpoint format are exactly those of the run ``--seed i``.
:class:`StackedEngine` then trains the members' models as stacked tensors
(:class:`wgan.models.stacked.StackedModule`: one vmapped, grouped pass for all members, or the
members one after another on views of the stacked tensors) and updates them once for all members.
Every member draws its batches and z from its own sampler in the order its single run draws them;
so member i, from the same state, makes the epoch its single run makes (wgan.training.parity's
method, checked in float64 by :func:`stacked_parity`).

Eager members (the default): RMSprop and the clip run on the stacked tensors
(:class:`StackedRMSprop`), each member's hyper-parameters broadcast as ``[N, 1, ...]`` tensors; the
math is torch.optim.RMSprop's (``--recipe wgan``) or wgan.training.keras_rmsprop's (``--recipe
book``: eps inside the root).

Fused members (``--fused``, built by ``build_engine`` exactly as a single ``--fused`` run builds
them): each member runs its FusedCritic (one real+fake pass, the fused Wasserstein head) and
FusedGenerator (its polyphase kernels computed once per epoch per member), in ``loop`` mode (vmap
cannot trace the Triton ops), and :class:`StackedFusedRMSprop` updates every member's parameters of
one model in ONE kernels.FusedRMSprop launch, reading each member's lr, alpha, eps, clip and the
generator average's decay from per-member device tables (kernels.rmsprop.SliceHParams).

:meth:`StackedEngine.sync_members` writes the stack's state back into the member engines, whose
``state_dict`` then is the checkpoint of the single run. A member that diverges is frozen
(:meth:`StackedEngine.freeze`): it is no longer updated (eager: masked out; fused: its slices are
left out of the launch) and its state is no longer written back. How eager stacked models run is
``mode``: ``vmap`` (grouped kernels; the GPU default) or ``loop`` (the CPU default;
docs/performance.md says why); fused ones run ``loop``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from kernels.rmsprop import FusedRMSprop, SliceHParams
from wgan.models.fused_critic import at_least_fp32
from wgan.models.fused_generator import FusedGenerator
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
        self.slots = self._new_slots()
        for i in range(stacked.n):
            self.load_member(i)

    def _new_slots(self) -> dict[str, _Slot]:
        return {
            name: _Slot(torch.zeros_like(p), torch.zeros(self.stacked.n, dtype=torch.float32, device=p.device))
            for name, p in self.stacked.params.items()
        }

    @torch.no_grad()
    def freeze_member(self, index: int) -> None:
        """Member ``index`` diverged: its state made finite (harmless); the step masks it out."""
        for slot in self.slots.values():
            slot.square_avg[index].nan_to_num_(0.0, 0.0, 0.0)

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


def _table(values: Sequence[float], device: torch.device) -> torch.Tensor:
    """Per-member values as the fused optimizer reads them: float64 on the device (SliceHParams)."""
    return torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)


class StackedFusedRMSprop(StackedRMSprop):
    """Every member's parameters of one model updated by ONE kernels.FusedRMSprop launch per step.

    The stacked parameters ``[N, ...]`` are one param group whose slice i is member i: its lr, alpha
    and eps (and the critic's clip, the generator average's decay) are row i of float64 device tables
    (kernels.rmsprop.SliceHParams), so the launch makes each member's own update, the clamp and the
    average included, as the member's own FusedRMSprop would. The state is loaded from and written back
    to the members' optimizers as :class:`StackedRMSprop` does (the slots are views of the fused
    optimizer's state); a frozen member's slices are left out of the launch."""

    def __init__(
        self,
        stacked: StackedModule,
        optimizers: Sequence[torch.optim.Optimizer],
        modules: Sequence[torch.nn.Module],
        eps_inside_sqrt: bool,
        *,
        clip: Sequence[float] | None = None,
        average: bool = False,
        impl: str | None = None,
    ) -> None:
        params = list(stacked.params.values())
        device = params[0].device
        groups = [opt.param_groups[0] for opt in optimizers]
        self.tables = SliceHParams(
            lr=_table([g["lr"] for g in groups], device),
            alpha=_table([g["alpha"] for g in groups], device),
            eps=_table([g["eps"] for g in groups], device),
            clip_value=_table(clip, device) if clip is not None else None,
            ema_decay=torch.zeros(stacked.n, dtype=torch.float64, device=device) if average else None,
        )
        self.clip_switch = max(clip) if clip is not None else None  # the group's "clip on" (values: the table)
        self.fused = FusedRMSprop(
            [{"params": params, "slices": self.tables}],
            lr=float(groups[0]["lr"]),
            alpha=float(groups[0]["alpha"]),
            eps=float(groups[0]["eps"]),
            clip_value=self.clip_switch,
            eps_inside_sqrt=eps_inside_sqrt,
            ema_decay=0.0 if average else None,
            impl=impl,
        )
        super().__init__(stacked, optimizers, modules, eps_inside_sqrt)

    def _new_slots(self) -> dict[str, _Slot]:
        """Views of the fused optimizer's state (made now, zero: a fresh member's state)."""
        state = self.fused.state_dict()
        params = list(self.stacked.params.values())
        state["state"] = {
            i: {"step": torch.tensor(0.0), "square_avg": torch.zeros_like(p)} for i, p in enumerate(params)
        }
        self.fused.load_state_dict(state)
        return {
            name: _Slot(
                self.fused.state[p]["square_avg"], torch.zeros(self.stacked.n, dtype=torch.float32, device=p.device)
            )
            for name, p in self.stacked.params.items()
        }

    @property
    def impl(self) -> str:
        return ",".join(sorted(set(self.fused.impls)))

    def averages(self) -> dict[str, torch.Tensor]:
        """The generator's averages, [N, ...] per parameter: views of the buffer the launch updates."""
        return dict(zip(self.stacked.params, self.fused.ema_params()))

    @torch.no_grad()
    def schedule_decay(self, decay: torch.Tensor) -> None:
        """This step's average decay of every member ([N], on the device) into the launch's table."""
        assert self.tables.ema_decay is not None
        self.tables.ema_decay.copy_(decay)

    @torch.no_grad()
    def step(self, active: torch.Tensor, all_active: bool = True, clip: bool = False) -> None:
        """One launch: every active member's update (and, ``clip``, its clamp; with an average, its
        average); the frozen members' slices are not in it. Step counts as StackedRMSprop keeps them."""
        counted = [self.slots[name] for name, p in self.stacked.params.items() if p.grad is not None]
        if self.clip_switch is not None:
            self.fused.param_groups[0]["clip_value"] = self.clip_switch if clip else None
        self.fused.step()
        for slot in counted:
            slot.step.add_(active.to(slot.step.dtype))

    def freeze_member(self, index: int) -> None:
        super().freeze_member(index)
        self.tables = dataclasses.replace(self.tables, skip=self.tables.skip | {index})
        self.fused.param_groups[0]["slices"] = self.tables


class StackedEngine:
    """N member engines (one architecture, batch size, n_critic and recipe; all eager or all fused)
    trained as one."""

    def __init__(self, members: Sequence[Engine], mode: str | None = None, impl: str | None = None) -> None:
        """``mode``: how the stacked models run (wgan.models.stacked): ``vmap`` (grouped kernels, the
        default on a GPU) or ``loop`` (the default on a CPU, where grouped convolutions do not pay;
        the only mode of fused members). ``impl``: the fused optimizer's kernels ('triton', 'ref',
        None: Triton where it can run), as build_engine's."""
        self.members = list(members)
        check_stackable([m.config for m in self.members])
        self.fused = self.members[0].fused
        if any(m.fused != self.fused for m in self.members):
            raise ValueError("a stack's members are all eager or all fused")
        first = self.members[0]
        self.config, self.device, self.n = first.config, first.device, len(self.members)
        mode = mode or ("loop" if self.device.type == "cpu" or self.fused else "vmap")
        if self.fused and mode != "loop":
            raise ValueError("fused members run one after another (mode 'loop'): vmap cannot trace their Triton ops")
        self.mode = mode
        self.critic = StackedModule([m.critic for m in self.members], mode)
        self.generator = StackedModule([m.generator for m in self.members], mode)
        like = next(iter(self.critic.params.values()))
        self.clip = _per_member([m.config.clip_threshold for m in self.members], like)
        self.ema_beta = _per_member([m.config.g_ema for m in self.members], like)
        # each member's warm-up step count (wgan.config.ema_decay_at), as its engine keeps it
        self.ema_step = _per_member([float(m.ema_step) if m.ema_step is not None else 0.0 for m in self.members], like)
        self.keeps_ema = any(m.ema is not None for m in self.members)
        self._optimizers(first.config.recipe == "book", impl)
        for i, m in enumerate(self.members):
            self._load_ema(i, m)
        self.active = torch.ones(self.n, dtype=torch.bool, device=self.device)
        self.all_active = True  # the host's copy of active.all(), kept by freeze()
        self.epoch = first.epoch

    def _optimizers(self, book: bool, impl: str | None) -> None:
        """The stacked optimizers (and the generator's averages): eager StackedRMSprop, or one
        fused launch per model with the members' values in device tables."""
        critics, generators = [m.critic for m in self.members], [m.generator for m in self.members]
        opt_critics, opt_generators = [m.opt_critic for m in self.members], [m.opt_generator for m in self.members]
        if not self.fused:
            self.opt_critic = StackedRMSprop(self.critic, opt_critics, critics, book)
            self.opt_generator = StackedRMSprop(self.generator, opt_generators, generators, book)
            self.ema = {k: v.detach().clone() for k, v in self.generator.params.items()} if self.keeps_ema else {}
            return
        clips = [m.config.clip_threshold for m in self.members]
        self.opt_critic = StackedFusedRMSprop(self.critic, opt_critics, critics, book, clip=clips, impl=impl)
        self.opt_generator = StackedFusedRMSprop(
            self.generator, opt_generators, generators, book, average=self.keeps_ema, impl=impl
        )
        self.ema = self.opt_generator.averages() if self.keeps_ema else {}

    @property
    def labels(self) -> dict[str, str]:
        """What the stack runs, beside the members' own labels (run.json's ``impl``)."""
        if self.fused:
            assert isinstance(self.opt_critic, StackedFusedRMSprop)
            optimizer = f"kernels.FusedRMSprop[{self.opt_critic.impl}], one launch per model for all members"
        else:
            optimizer = "wgan.training.stack.StackedRMSprop" + (" (Keras eps)" if self.config.recipe == "book" else "")
        return {"optimizer": optimizer, "stack": f"{self.n} members, {self.mode}"}

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
        with torch.no_grad(), self.autocast():
            fake = self.generator(z)
        self.opt_critic.zero_grad()
        d_loss, d_real, d_fake = self._critic_losses(real, fake)
        d_loss.sum().backward()
        self._critic_update(clip=True)
        return d_loss.detach(), d_real.detach(), d_fake.detach()

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The members' mixed precision (Engine.autocast; a stack shares its precision)."""
        return self.members[0].autocast()

    def _critic_losses(self, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[N] (d_loss, d_real, d_fake): the fused critic's one real+fake pass and fused head per
        member (FusedCritic.critic_losses), or the eager critic's scores of both batches at once."""
        if self.fused:
            with self.autocast():
                losses = self.critic(real, fake, method="critic_losses")
            return tuple(at_least_fp32(t) for t in losses)
        batch = real.shape[1]
        with self.autocast():
            scores = at_least_fp32(self.scores(torch.cat([real, fake], dim=1)))  # fp32 means under autocast
        d_real, d_fake = -scores[:, :batch].mean(1), scores[:, batch:].mean(1)
        return d_real + d_fake, d_real, d_fake

    def _mean_score(self, x: torch.Tensor) -> torch.Tensor:
        """[N] E[C(x)] (Engine.mean_score): minus the fused generator head's loss, or the scores' mean."""
        if self.fused:
            with self.autocast():
                return -at_least_fp32(self.critic(x, method="generator_loss"))
        with self.autocast():
            return at_least_fp32(self.scores(x)).mean(1)

    def _generator_loss(self, z: torch.Tensor) -> torch.Tensor:
        """[N] -E[C(G(z))] against the frozen critics (Engine.generator_loss)."""
        if self.fused:
            with self.autocast():
                return at_least_fp32(self.critic(self.generator(z), frozen=True, method="generator_loss"))
        with self.autocast():
            return -at_least_fp32(self.scores(self.generator(z), frozen=True)).mean(1)

    def critic_step_book(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The book's critic iteration (Engine.critic_step_book): inference-mode fakes, a step on
        the reals, a step on the fakes, then the clip."""
        z = self.draw_z()
        with torch.no_grad(), self.autocast():
            fake = self.generator(z, train=False)
        losses = []
        for batch, sign, clip in ((real, -1.0, False), (fake, 1.0, True)):
            self.opt_critic.zero_grad()
            loss = sign * self._mean_score(batch)
            loss.sum().backward()
            self._critic_update(clip=clip)
            losses.append(loss.detach())
        return losses[0] + losses[1], losses[0], losses[1]

    def _critic_update(self, clip: bool) -> None:
        if isinstance(self.opt_critic, StackedFusedRMSprop):  # the clamp is in the launch
            self.opt_critic.step(self.active, self.all_active, clip=clip)
            return
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
        g_loss = self._generator_loss(z)
        g_loss.sum().backward()
        if isinstance(self.opt_generator, StackedFusedRMSprop):  # the average is in the launch
            if self.keeps_ema:
                self.opt_generator.schedule_decay(self._ema_decay())
            self.opt_generator.step(self.active, self.all_active)
            if self.keeps_ema:
                self.ema_step.add_(self.active.to(self.ema_step.dtype))
            return g_loss.detach()
        self.opt_generator.step(self.active, self.all_active)
        if self.keeps_ema:
            self._update_ema()
        return g_loss.detach()

    def _ema_decay(self) -> torch.Tensor:
        """Every member's decay this step, with its engine's warm-up: min(beta, (1 + t) / (10 + t))."""
        t = self.ema_step
        return torch.minimum((t + 1) / (t + 10), self.ema_beta)

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Every member's eager average (Engine._update_ema's lerp), masked to the active members."""
        weight = (1 - self._ema_decay()) * self.active
        for name, p in self.generator.params.items():
            self.ema[name].lerp_(p.detach(), _broadcast(weight, p))
        self.ema_step.add_(self.active.to(self.ema_step.dtype))

    def polyphase_scope(self) -> contextlib.AbstractContextManager[Any]:
        """Fused: each member's polyphase kernels computed once per epoch, as in its single run (the
        template's cache keeps one kernel per member's weights: FusedGenerator._phases)."""
        template = self.generator.template
        return template.polyphase_reused() if isinstance(template, FusedGenerator) else contextlib.nullcontext()

    # n_critic critic steps then one generator step of every member, counted and named as a single run
    # does it (Engine.run_epoch and finish_epoch), each value [N] instead of 0-d
    run_epoch = Engine.run_epoch
    finish_epoch = Engine.finish_epoch

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
            opt.freeze_member(index)

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
    fused: bool = False,
    impl: str | None = None,
) -> list:
    """One epoch of a stack built from the training ``states`` (checkpoint dicts, one per member,
    each with its own config) against one epoch of each member's single-run engine from the same
    state, in float64 (wgan.training.parity's method); one ParityReport per member. ``fused``: the
    members and the single runs are built fused (kernels ``impl``), as ``--fused`` builds them."""
    import copy

    from wgan.config import WGANConfig
    from wgan.training.engine import build_engine
    from wgan.training.parity import BOUND, ParityReport, engine_differences

    def engine(state: dict) -> Engine:
        config = WGANConfig.from_dict(state["config"]).replace(fused=fused, precision="fp32")
        built = build_engine(config, device, impl=impl, dtype=dtype)
        built.load_state_dict(copy.deepcopy(state))
        return built

    members = [engine(s) for s in states]
    stack = StackedEngine(members, mode, impl=impl)
    stacked_out = stack.run_epoch(members[0].prepare_images(images))
    stack.sync_members()
    reports = []
    kind = f"fused[{impl or 'auto'}]" if fused else "eager"
    for i, (state, member) in enumerate(zip(states, members)):
        single = engine(state)
        single_out = single.run_epoch(single.prepare_images(images))
        report = ParityReport(f"{kind} single run", f"{kind} stack member {i}", bound or BOUND, dtype)
        report.differences += engine_differences(single, member, single_out, {k: v[i] for k, v in stacked_out.items()})
        reports.append(report)
    return reports
