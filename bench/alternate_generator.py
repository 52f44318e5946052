"""Generator speed on a shared CPU: eager and fused calls alternating in one process.

Why beside bench/test_bench_generator.py: pytest-benchmark times one case after another, so on a
machine whose other jobs come and go (the shared 2-core development machine) two cases can see
different loads and their ratio says more about the neighbours than about the code. Here every
round runs each variant once, back to back, so each round's ratio compares like with like; the
median of the per-round ratios and the load averages seen are printed. Parity is the benchmark
file's business (this script only times).

Usage: ``python bench/alternate_generator.py [--batch 64] [--rounds 9] [--threads 2] [--step fwd+bwd]
[--clock wall|cpu] [--compile]``
"""

from __future__ import annotations

import os
import statistics
import time

import click
import torch

from wgan.config import WGANConfig
from wgan.models.eager import Generator
from wgan.models.fused_generator import FusedGenerator


def _variants(config: WGANConfig, compiled: bool) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    eager = Generator(config).train()
    eager_cl = Generator(config).train()
    eager_cl.load_state_dict(eager.state_dict())
    eager_cl.to(memory_format=torch.channels_last)
    out: dict[str, torch.nn.Module] = {"eager": eager, "eager (channels_last)": eager_cl}
    for name, layout in (("fused (ref)", None), ("fused (ref, nchw)", False), ("fused (ref, channels_last)", True)):
        fused = FusedGenerator(config, impl="ref", channels_last=layout).train()
        fused.load_state_dict(eager.state_dict())
        out[name] = fused
    if compiled:  # built here on the first (warm-up) call: about a minute of C++ per shape on this CPU
        out["torch.compile(eager)"] = torch.compile(eager)
    return out


@click.command()
@click.option("--batch", default=64, show_default=True)
@click.option("--rounds", default=9, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--step", type=click.Choice(["fwd", "fwd+bwd"]), default="fwd+bwd", show_default=True)
@click.option(
    "--clock",
    type=click.Choice(["wall", "cpu"]),
    default="wall",
    show_default=True,
    help="cpu: this process's CPU time (time.process_time), which a busy neighbour inflates far "
    "less than wall time; meaningful with --threads 1 (idle OpenMP threads spin)",
)
@click.option("--compile", "compiled", is_flag=True, help="add torch.compile of the eager generator")
def main(batch: int, rounds: int, threads: int, step: str, clock: str, compiled: bool) -> None:
    """Print per-variant median times and the median per-round ratio eager / variant."""
    torch.set_num_threads(threads)
    timer = time.process_time if clock == "cpu" else time.perf_counter
    models = _variants(WGANConfig(), compiled)
    g = torch.Generator().manual_seed(batch)
    z = torch.randn(batch, 100, generator=g)
    proj = torch.randn(batch, 3, 32, 32, generator=g)

    def call(model: torch.nn.Module) -> None:
        if step == "fwd":
            with torch.no_grad():
                model(z)
            return
        for p in model.parameters():
            p.grad = None
        (model(z) * proj).sum().backward()

    for model in models.values():  # warm-up
        call(model)
    times: dict[str, list[float]] = {name: [] for name in models}
    loads = []
    for _ in range(rounds):
        for name, model in models.items():
            start = timer()
            call(model)
            times[name].append(timer() - start)
        loads.append(os.getloadavg()[0])
    click.echo(
        f"generator {step}, batch {batch}, {threads} threads, {clock} clock, {rounds} rounds, "
        f"1-min load average {min(loads):.1f}-{max(loads):.1f} (torch {torch.__version__})"
    )
    for name, ts in times.items():
        line = f"  {name:<28} median {statistics.median(ts) * 1e3:8.1f} ms"
        if name != "eager":
            ratios = sorted(e / t for e, t in zip(times["eager"], ts))
            line += (
                f"   eager / this: median {statistics.median(ratios):.2f} "
                f"(quartiles {ratios[len(ratios) // 4]:.2f}-{ratios[(3 * len(ratios)) // 4]:.2f})"
            )
        click.echo(line)


if __name__ == "__main__":
    main()
