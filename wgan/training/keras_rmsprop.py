"""The book's optimizer: Keras/TensorFlow RMSprop, ``eps`` inside the square root.

``--recipe book`` trains as the book's Keras code does; TensorFlow's RMSprop (``ApplyRMSProp``)
updates ``ms = rho ms + (1 - rho) g**2`` and ``p -= lr g / sqrt(ms + eps)``, where torch's adds
``eps`` after the root. This is the plain reference of that formula, one parameter at a time, for
the eager path (torch has no such option); the fused path runs the same formula as
``kernels.FusedRMSprop(eps_inside_sqrt=True)``, and tests/test_rmsprop.py holds the two together.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class KerasRMSprop(torch.optim.Optimizer):
    """RMSprop with ``eps`` inside the root (rho = ``alpha``); state ``square_avg`` as torch's."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, alpha: float = 0.9, eps: float = 1e-7) -> None:
        for name, value in (("lr", lr), ("alpha", alpha), ("eps", eps)):
            if not value >= 0.0:
                raise ValueError(f"Invalid {name}: {value}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, alpha, eps = float(group["lr"]), group["alpha"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                square_avg = state["square_avg"]
                square_avg.mul_(alpha).addcmul_(p.grad, p.grad, value=1 - alpha)
                p.addcdiv_(p.grad, square_avg.add(eps).sqrt_(), value=-lr)
        return loss
