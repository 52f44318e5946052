"""``bash bench/gpu_check.sh --rehearse``: every stage of the GPU check, run for real on a CPU.

The GPU check is one command for the first H200 this project gets, so nothing it calls may rot
before then: the rehearsal runs the same script, with every test id, path and option it uses,
on a CPU (the CUDA tests skip, the benchmarks take their fast CPU cases, ``wgan.check`` runs
``--quick --device cpu``), within the 3 minutes the issue allows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_check_rehearses_every_stage_on_a_cpu(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["GPU_CHECK_OUT"] = str(tmp_path)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's python
    env.pop("TRITON_INTERPRET", None)  # the script decides
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--rehearse"], cwd=REPO, env=env, capture_output=True, text=True, timeout=400
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    stages = [line.split("\t") for line in (tmp_path / "stages.tsv").read_text().splitlines()]
    assert [s[0] for s in stages] == [
        "check",
        "tests",
        "test_bench_rmsprop",
        "test_bench_critic",
        "test_bench_generator",
        "test_bench_epoch",
        "stack_wgan",
        "stack_book",
    ]
    assert all(s[3] == "0" and int(s[1]) <= int(s[2]) for s in stages), stages  # passed, within budget
    check = json.loads((tmp_path / "check.json").read_text())
    assert check["device"] == "cpu" and check["environment"]["triton_interpreter"] is True
    sections = {r["section"] for r in check["results"]}
    assert {"kernel", "epoch", "timing"} <= sections
    assert all(r["ok"] is not False for r in check["results"]), check["results"]
    assert sorted(p.name for p in tmp_path.glob("bench_*.json")) == [
        "bench_critic.json",
        "bench_epoch.json",
        "bench_generator.json",
        "bench_rmsprop.json",
    ]
    last = proc.stdout.strip().splitlines()
    ratios_at = max(i for i, line in enumerate(last) if line.startswith("== ratios"))
    assert any("fused_ref" in line for line in last[ratios_at:]), last[ratios_at:]  # the table is the end
    assert elapsed < 180 * (1.5 if os.environ.get("CI") else 2.5), f"the rehearsal took {elapsed:.0f} s"
