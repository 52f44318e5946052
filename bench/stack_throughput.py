"""A stack of N runs against the same N runs one after another, in one process (docs/performance.md).

``python bench/stack_throughput.py [--members 4] [--epochs 10] [--batch-size 64] [--fused]``: the
seed configuration (eager, or ``--fused`` on both sides; fp32) on the CPU by default; throughput in
epochs x runs per second. Both sides train the same members (seeds 0..N-1) from their initial
weights, after one warm-up epoch each, and alternate epoch by epoch (the machine's other load hits
both alike).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from wgan.config import WGANConfig
from wgan.training.engine import build_engine
from wgan.training.stack import StackedEngine


def _now(device: str) -> float:
    """The wall clock once the device's queued work is done."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when there is one)")
    parser.add_argument("--recipe", default="wgan", choices=("wgan", "book"))
    parser.add_argument("--mode", default=None, choices=("vmap", "loop"), help="default: loop on a CPU, vmap on a GPU")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--fused", action="store_true", help="fused members and fused single runs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    images = torch.rand(2048, 3, 32, 32) * 2 - 1
    configs = [
        WGANConfig(seed=s, batch_size=args.batch_size, recipe=args.recipe, fused=args.fused, precision="fp32")
        for s in range(args.members)
    ]

    engines = [build_engine(c, args.device) for c in configs]
    stack = StackedEngine([build_engine(c, args.device) for c in configs], args.mode)
    data = engines[0].prepare_images(images)
    for engine in engines:
        engine.run_epoch(data)  # warm-up
    stack.run_epoch(data)
    # the two sides alternate, epoch by epoch, so a change of the machine's load hits both alike
    seconds = {"sequential": 0.0, "stacked": 0.0}
    for _ in range(args.epochs):
        start = _now(args.device)
        for engine in engines:
            engine.run_epoch(data)
        middle = _now(args.device)
        stack.run_epoch(data)
        seconds["sequential"] += middle - start
        seconds["stacked"] += _now(args.device) - middle
    sequential, stacked = (args.members * args.epochs / seconds[k] for k in ("sequential", "stacked"))
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.device}, recipe {args.recipe}, {'fused' if args.fused else 'eager'}, mode {stack.critic.mode}, "
        f"batch {args.batch_size}, "
        f"{args.members} members x {args.epochs} epochs: sequential {sequential:.3f}, "
        f"stacked {stacked:.3f} epochs x runs / s; ratio {stacked / sequential:.2f}x"
    )


if __name__ == "__main__":
    main()
