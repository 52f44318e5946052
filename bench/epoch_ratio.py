"""Eager vs fused epoch time in one process, epochs alternating (docs/performance.md's CPU ratios).

``python bench/epoch_ratio.py [--batch 64] [--epochs 12]`` builds the seed configuration eager and
fused (fp32, kernels as the trainer picks them: Triton where it runs, else the plain-PyTorch
references), warms both up, then times them epoch by epoch in turn, so that whatever else the
machine does falls on both alike, and prints each median and the ratio eager / fused.
"""

from __future__ import annotations

import statistics
import time

import click
import torch

from wgan.config import WGANConfig
from wgan.training.engine import build_engine


def _timed_epoch(engine, images) -> float:
    start = time.perf_counter()
    engine.run_epoch(images)
    return time.perf_counter() - start


@click.command()
@click.option("--batch", default=64, show_default=True)
@click.option("--epochs", default=12, show_default=True, help="timed epochs per path (after 2 warm-up epochs)")
def main(batch: int, epochs: int) -> None:
    images = torch.rand(1024, 3, 32, 32, generator=torch.Generator().manual_seed(7)) * 2 - 1
    engines = {
        name: build_engine(WGANConfig(batch_size=batch, fused=name == "fused").validate(), "cpu")
        for name in ("eager", "fused")
    }
    data = {name: engine.prepare_images(images) for name, engine in engines.items()}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for epoch in range(epochs + 2):
        for name, engine in engines.items():
            seconds = _timed_epoch(engine, data[name])
            if epoch >= 2:
                times[name].append(seconds)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"batch {batch}, {epochs} epochs each, {torch.get_num_threads()} threads: "
        f"eager {med['eager'] * 1e3:.0f} ms, fused {med['fused'] * 1e3:.0f} ms, "
        f"eager/fused {med['eager'] / med['fused']:.2f}"
    )


if __name__ == "__main__":
    main()
