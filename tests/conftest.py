"""Kernel tests run on CPU through the Triton interpreter; the mode must be set before triton loads.

The tests also run with one CPU thread: with two, oneDNN's convolutions round differently from
one run to the next now and then (about 1 process in 12 here), and several tests compare training
runs bit for bit. `--deterministic` does the same for users who need that.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

if not torch.cuda.is_available():
    torch.set_num_threads(1)
