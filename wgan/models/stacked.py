"""N copies of one architecture run as one: stacked parameters, one vmapped pass.

Why a stack: one seed run of the seed's models is far too small to fill a GPU (and costs the same
per run on a CPU whether alone or stacked), so a sweep of seeds or hyper-parameters trains its
members side by side. :class:`StackedModule` holds each parameter and buffer of N modules of one
architecture as one ``[N, ...]`` tensor (``torch.func.stack_module_state``) and runs them with
``torch.func.vmap`` over ``functional_call``: vmap lowers the batched convolutions to grouped
convolutions and the linears to batched matmuls, so the N members run as one set of kernels.

Batch norm in training mode updates each member's running statistics in its own slice of the
stacked buffers (vmap writes in-place updates through to the stacked tensor); in eval mode it
reads them. Nothing mixes members: every op of these models is per sample and per channel.

``mode="loop"`` runs the members one after another on views of the same stacked tensors instead:
on a CPU, oneDNN's grouped convolutions and vmap's layout copies cost more than they save (measured:
docs/performance.md), while the stacked optimizer step still runs once for all members. It is also
the mode of the fused models (FusedCritic, FusedGenerator), whose Triton ops vmap cannot trace.

``method`` calls another method of the module than ``forward`` on each member, with the member's
tensors swapped in (``FusedCritic.critic_losses``: one batched real+fake pass and the fused head);
a method that returns a tuple gives a tuple of stacked values.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class _Method(nn.Module):
    """Calls a method of ``module`` by name: functional_call runs ``forward`` only."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.m = module

    def forward(self, method: str, *inputs: torch.Tensor) -> object:
        return getattr(self.m, method)(*inputs)


class StackedModule:
    """``params`` (leaf tensors [N, ...] that take gradients) and ``buffers`` ([N, ...]) of N modules
    of one architecture; :meth:`__call__` runs all N on their own inputs ``[N, batch, ...]``."""

    MODES = ("vmap", "loop")

    def __init__(self, modules: Sequence[nn.Module], mode: str = "vmap") -> None:
        if not modules:
            raise ValueError("a stack needs at least one module")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        params, buffers = stack_module_state(list(modules))
        self.params: dict[str, torch.Tensor] = params
        self.buffers: dict[str, torch.Tensor] = buffers
        self.n = len(modules)
        self.template = copy.deepcopy(modules[0]).to("meta")  # the code; its tensors are never read
        self._method = _Method(self.template)

    def __call__(
        self, *inputs: torch.Tensor, train: bool = True, frozen: bool = False, method: str = "forward"
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Every member's ``method`` (its forward by default) on its own slice of each input
        ([N, batch, ...] -> [N, ...]).

        ``train`` False: batch norm reads the running statistics (inference mode) and updates
        nothing. ``frozen``: the parameters are detached (no gradient reaches them)."""
        params = {k: v.detach() for k, v in self.params.items()} if frozen else self.params
        was = self.template.training
        self.template.train(train)
        try:
            if self.mode == "vmap":
                return vmap(functools.partial(self._one, method=method))(params, self.buffers, *inputs)
            return self._loop(params, inputs, method)
        finally:
            self.template.train(was)

    def _loop(
        self, params: dict[str, torch.Tensor], inputs: tuple[torch.Tensor, ...], method: str
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The members one by one on views of the stacked tensors (unbind: one stack in the backward)."""
        p_views = {k: v.unbind(0) for k, v in params.items()}
        b_views = {k: v.unbind(0) for k, v in self.buffers.items()}
        outs = [
            self._one(
                {k: v[i] for k, v in p_views.items()},
                {k: v[i] for k, v in b_views.items()},
                *(x[i] for x in inputs),
                method=method,
            )
            for i in range(self.n)
        ]
        if isinstance(outs[0], tuple):
            return tuple(torch.stack(parts) for parts in zip(*outs))
        return torch.stack(outs)

    def _one(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], *inputs: torch.Tensor, method: str
    ) -> torch.Tensor:
        if method == "forward":
            return functional_call(self.template, (params, buffers), inputs)
        named = ({f"m.{k}": v for k, v in params.items()}, {f"m.{k}": v for k, v in buffers.items()})
        return functional_call(self._method, named, (method, *inputs))

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """The stacked parameters in the members' registration order (``module.parameters()``)."""
        return list(self.params.items())

    @torch.no_grad()
    def copy_into(self, index: int, module: nn.Module) -> None:
        """Member ``index``'s parameters and buffers into ``module`` (one of the stacked modules)."""
        for name, p in module.named_parameters():
            p.copy_(self.params[name][index])
        for name, b in module.named_buffers():
            b.copy_(self.buffers[name][index])

    @torch.no_grad()
    def copy_from(self, index: int, module: nn.Module) -> None:
        """``module``'s parameters and buffers into member ``index``'s slices."""
        for name, p in module.named_parameters():
            self.params[name][index].copy_(p)
        for name, b in module.named_buffers():
            self.buffers[name][index].copy_(b)
