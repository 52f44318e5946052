"""Print a short table of ratios from a pytest-benchmark JSON: each fused case against each baseline.

Why: the GPU check ends with these lines, so a reader sees the speed-ups (and the fused kernel's
bandwidth against a measured device copy) without opening the JSON. Conventions the benchmarks
follow (bench/test_bench_rmsprop.py): ``benchmark.group`` groups comparable cases;
``extra_info["case"]`` names the case (``fused_*`` are ours, ``copy`` is the bandwidth yardstick,
anything else is a baseline); ``extra_info["steps_per_call"]`` divides the timed call into steps;
``extra_info["bytes_per_step"]`` gives the bytes one step moves (read + written).

Usage: ``python bench/ratios.py FILE [FILE ...] [--stat median|min|mean]``, each FILE a pytest-benchmark
JSON or the GPU check's ``results.jsonl`` (its ``bench`` lines: one per case, appended as each case
ends, so a benchmark file stopped at its time budget still shows the cases it finished). A ratio is
baseline time / fused time: above 1 the fused case is faster.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import click


def _per_step(bench: dict, stat: str) -> float:
    info = bench.get("extra_info", {})
    return float(bench["stats"][stat]) / max(int(info.get("steps_per_call", 1)), 1)


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def ratio_lines(data: dict, stat: str = "median") -> list[str]:
    groups: dict[str, dict[str, dict]] = defaultdict(dict)
    for bench in data.get("benchmarks", []):
        case = bench.get("extra_info", {}).get("case") or bench.get("name", "?")
        groups[bench.get("group") or "ungrouped"][case] = bench
    lines = []
    for group in sorted(groups):
        cases = groups[group]
        fused = sorted(c for c in cases if c.startswith("fused"))
        baselines = sorted(c for c in cases if not c.startswith("fused") and c != "copy")
        copy = cases.get("copy")
        copy_bw = None
        if copy is not None and copy.get("extra_info", {}).get("bytes_per_step"):
            copy_bw = copy["extra_info"]["bytes_per_step"] / _per_step(copy, stat)
        for name in fused:
            bench = cases[name]
            t = _per_step(bench, stat)
            parts = [f"{group:<24} {name:<14} {_fmt_time(t):>10}/step"]
            parts += [f"{b} {_per_step(cases[b], stat) / t:.2f}x" for b in baselines]
            nbytes = bench.get("extra_info", {}).get("bytes_per_step")
            if copy_bw and nbytes:
                bw = nbytes / t
                parts.append(
                    f"bandwidth {bw / 1e9:.0f} GB/s = {100 * bw / copy_bw:.0f}% of copy ({copy_bw / 1e9:.0f} GB/s)"
                )
            info = bench.get("extra_info", {})
            if info.get("projected_12000_epochs_s"):
                parts.append(f"12000 epochs ~ {info['projected_12000_epochs_s']:.0f} s")
            if info.get("tf32_floor_fraction"):
                parts.append(f"{100 * info['tf32_floor_fraction']:.1f}% of the TF32 floor")
            if bench.get("extra_info", {}).get("interpreted"):
                parts.append("(Triton interpreter: not a performance number)")
            lines.append("  ".join(parts))
    return lines


def _from_result_line(record: dict) -> dict:
    """A ``bench`` line of results.jsonl (bench/conftest.py) in pytest-benchmark's shape."""
    stats = {"median": record["median_s"], "min": record["min_s"], "mean": record.get("mean_s", record["median_s"])}
    return {
        "name": record["name"],
        "group": record.get("group"),
        "extra_info": record.get("extra_info", {}),
        "stats": stats,
    }


def read_benchmarks(path: Path) -> list[dict]:
    """The benchmark cases of a pytest-benchmark JSON, or of a results.jsonl (its ``bench`` lines;
    a last line cut off mid-write is skipped)."""
    text = path.read_text()
    if path.suffix != ".jsonl":
        return json.loads(text).get("benchmarks", [])
    cases = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("section") == "bench":
            cases.append(_from_result_line(record))
    return cases


@click.command()
@click.argument("json_paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--stat", type=click.Choice(["median", "min", "mean"]), default="median", show_default=True)
def main(json_paths: tuple[Path, ...], stat: str) -> None:
    """Print fused-vs-baseline ratios from JSON_PATHS (pytest --benchmark-json files or results.jsonl)."""
    data: dict = {"benchmarks": []}
    for path in json_paths:
        try:
            data["benchmarks"] += read_benchmarks(path)
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise click.UsageError(f"cannot read benchmark results {path}: {exc}") from exc
    lines = ratio_lines(data, stat)
    if not lines:
        names = ", ".join(str(p) for p in json_paths)
        raise click.UsageError(f"{names}: no fused benchmark (extra_info['case'] starting with 'fused')")
    click.echo(f"ratios ({stat} time per step; 'NAME 3.00x' = NAME takes 3x as long as the fused case):")
    for line in lines:
        click.echo(line)


if __name__ == "__main__":
    main()
