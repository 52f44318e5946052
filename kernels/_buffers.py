"""Output buffers of the kernel launchers, and the test switch that poisons them.

With ``POISON_OUTPUTS`` set (the parity tests set it), every buffer a launcher allocates starts as
NaN, so an element a kernel fails to write makes the test fail instead of passing on leftover
zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

POISON_OUTPUTS = False
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # what the launchers accept


def alloc(
    shape: Sequence[int], dtype: torch.dtype, device: torch.device, stride: Sequence[int] | None = None
) -> torch.Tensor:
    if stride is None:
        out = torch.empty(tuple(shape), dtype=dtype, device=device)
    else:
        out = torch.empty_strided(tuple(shape), tuple(stride), dtype=dtype, device=device)
    if POISON_OUTPUTS:
        out.fill_(float("nan"))
    return out
