"""Kernel tests run on CPU through the Triton interpreter; the mode must be set before triton loads.

The tests run with one CPU thread, CUDA or not (a GPU box has many cores, and the CPU-side
references of the CUDA tests are compared bit for bit too): with two, oneDNN's convolutions round
differently from one run to the next now and then (about 1 process in 12 here), and several tests
compare training runs bit for bit. ``WGAN_TEST_THREADS=N`` runs them with N threads instead (the
kernel tests hold at any count; the bit-for-bit trainer tests need 1). ``--deterministic`` does
the same for users who need that.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

torch.set_num_threads(int(os.environ.get("WGAN_TEST_THREADS", "1")))
