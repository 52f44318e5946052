"""``bash bench/gpu_check.sh --rehearse``: every stage of the GPU check, run for real on a CPU.

The GPU check is one command for the first H200 this project gets, so nothing it calls may rot
before then: the rehearsal runs the same script, with the same stage list and every test id,
path and option it uses, on a CPU (the CUDA tests skip, the benchmarks take their fast CPU cases,
``wgan.check`` runs ``--quick --device cpu``, the seed run trains small batches until its budget
stops it). Every result is a JSON line in results.jsonl, written as it is measured: a stage
stopped at its budget keeps what it had written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import write_images

REPO = Path(__file__).resolve().parents[1]
STAGES = [
    "check",
    "seed_run",
    "bench_epoch",
    "bench_rmsprop",
    "bench_critic",
    "bench_generator",
    "tests",
    "stack_wgan",
    "stack_book",
    "compile",
]


def rehearse(out: Path, **env_overrides: str) -> tuple[subprocess.CompletedProcess, float]:
    env = dict(os.environ)
    env["GPU_CHECK_OUT"] = str(out)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's python
    env.pop("TRITON_INTERPRET", None)  # the script decides
    env.pop("GPU_CHECK_DATA", None)
    env.update(env_overrides)
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--rehearse"], cwd=REPO, env=env, capture_output=True, text=True, timeout=400
    )
    return proc, time.monotonic() - start


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_the_gpu_check_rehearses_every_stage_on_a_cpu(tmp_path: Path) -> None:
    data = write_images(tmp_path / "horses", n=40, size=32)
    out = tmp_path / "out"
    proc, elapsed = rehearse(out, GPU_CHECK_DATA=str(data))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    stages = [line.split("\t") for line in (out / "stages.tsv").read_text().splitlines()]
    assert [s[0] for s in stages] == STAGES
    # passed within budget; the seed run is stopped by its budget (124) with a checkpoint
    assert all((s[3] == "0" or s[0] == "seed_run" and s[3] == "124") and int(s[1]) <= int(s[2]) + 10 for s in stages)
    results = lines(out)
    assert results[0]["section"] == "environment" and results[0]["triton_interpreter"] is True
    assert {"kernel", "epoch", "timing"} <= {r["section"] for r in results}
    assert all(r.get("ok") is not False for r in results), [r for r in results if r.get("ok") is False]
    timed = {r["name"].split(",")[0] for r in results if r["section"] == "timing"}
    assert timed == {"eager fp32", "fused (ref kernels) fp32", "eager bf16", "fused (ref kernels) bf16"}
    seed = next(r for r in results if r["section"] == "seed_run")
    assert seed["stopped_at_budget"] and seed["checkpoint"] and seed["epochs"] >= 1 and seed["precision"] == "fp32"
    assert (out / "seed_run" / "checkpoints" / "last.pt").exists()  # the run folder is kept
    bench = [r for r in results if r["section"] == "bench"]
    assert any("fused_ref" in str(r["extra_info"]) for r in bench) and all(r["median_s"] > 0 for r in bench)
    assert [r["name"] for r in results if r["section"] == "stage"] == STAGES  # one line per stage, in order
    assert sorted(p.name for p in out.glob("bench_*.json")) == [
        "bench_critic.json",
        "bench_epoch.json",
        "bench_generator.json",
        "bench_rmsprop.json",
    ]
    last = proc.stdout.strip().splitlines()
    ratios_at = max(i for i, line in enumerate(last) if line.startswith("== ratios"))
    assert any("fused_ref" in line for line in last[ratios_at:]), last[ratios_at:]  # the table is at the end
    assert elapsed < 150 * (1.5 if os.environ.get("CI") else 2.5), f"the rehearsal took {elapsed:.0f} s"


def test_a_stage_stopped_mid_way_keeps_the_lines_it_wrote(tmp_path: Path) -> None:
    """The check stage alone with a budget far below what it needs: timeout stops it (124), and the
    lines it had written (the environment at least, whole lines) are all in results.jsonl; a seed
    run without data is skipped with its reason."""
    # the full CPU check (not --quick: its batch-512 epochs take minutes), so 12 s always stops it
    proc, _ = rehearse(
        tmp_path, GPU_CHECK_STAGES="check seed_run", GPU_CHECK_BUDGET_CHECK="12", GPU_CHECK_CHECK_ARGS="--device cpu"
    )
    stages = [line.split("\t") for line in (tmp_path / "stages.tsv").read_text().splitlines()]
    assert [s[0] for s in stages] == ["check"] and stages[0][3] == "124", stages
    assert proc.returncode == 124, proc.stdout[-2000:]
    results = lines(tmp_path)  # every line parses: nothing half-written
    assert results[0]["section"] == "environment"
    written = [r for r in results if r["section"] in ("kernel", "epoch", "timing")]
    timed = [r for r in written if r["section"] == "timing"]
    assert len(timed) < 4  # it really was stopped before the end (a whole CPU check times 4 cases)
    assert results[-2]["section"] == "stage" and results[-2]["exit_status"] == 124
    if not (REPO / "horses").is_dir():  # no data anywhere: the stage says why instead of running
        assert results[-1] == {**results[-1], "section": "seed_run", "skipped": True}
        assert "GPU_CHECK_DATA" in results[-1]["why"]


def test_the_ratios_come_from_the_result_lines_even_when_a_file_was_cut_off(tmp_path: Path) -> None:
    """bench/ratios.py on results.jsonl: the bench lines of a benchmark file that never wrote its
    JSON (stopped at its budget) give the table; other sections and a torn last line are skipped."""
    case = {"section": "bench", "group": "epoch fp32", "min_s": 0.5, "rounds": 3}
    records = [
        {"section": "environment", "torch": "x"},
        {**case, "name": "a", "median_s": 0.9, "extra_info": {"case": "eager"}},
        {**case, "name": "b", "median_s": 0.3, "extra_info": {"case": "fused_triton"}},
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"section": "bench", "na')
    proc = subprocess.run(
        [sys.executable, "bench/ratios.py", str(results)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if "fused_triton" in line]
    assert line.split()[:2] == ["epoch", "fp32"] and "300 ms/step" in line and "eager 3.00x" in line
