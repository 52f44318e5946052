"""Kernel tests run on CPU through the Triton interpreter; the mode must be set before triton loads."""

import os

if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
