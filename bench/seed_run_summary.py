"""One JSON line for the GPU check's results.jsonl: how far the seed run got in its budget.

Usage: ``python bench/seed_run_summary.py RUN_FOLDER EXIT_STATUS``. Reads the run folder's
metrics.jsonl and run.json (plain json: the GPU image may lack numpy), prints the line: epochs
reached, median epoch time, the 12000-epoch projection, the precision and kernels that ran.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path


def summary(run: Path, exit_status: int) -> dict:
    rows = []
    metrics = run / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by the stop
                continue
    info = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
    times = [r["epoch_time"] for r in rows[1:] if isinstance(r.get("epoch_time"), (int, float))]
    median = statistics.median(times) if times else None
    return {
        "time": round(time.time(), 3),
        "section": "seed_run",
        "run_folder": str(run),
        "exit_status": exit_status,
        "stopped_at_budget": exit_status == 124,
        "epochs": rows[-1]["epoch"] if rows else 0,
        "checkpoint": (run / "checkpoints" / "last.pt").exists(),
        "median_epoch_s": median,
        "projected_12000_epochs_s": median * 12000 if median else None,
        "precision": info.get("precision"),
        "impl": info.get("impl"),
        "status": info.get("status"),
    }


if __name__ == "__main__":
    print(json.dumps(summary(Path(sys.argv[1]), int(sys.argv[2]))), flush=True)
