"""Benchmarks run on CPU through the Triton interpreter; the mode must be set before triton loads.

The benchmarks' parity checks use the error bounds of kernels/error_bounds.py and
wgan/models/numerics.py (one home for them).
"""

import os
import sys
from pathlib import Path

if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
