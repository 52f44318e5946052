"""Compile every case of :mod:`aot.cases` for each arch, check the limits, write the JSON.

``python tests/aot_compile.py --json OUT.json [--archs 90,80,89] [--jobs 2] [--full]``

* Worker processes (``--jobs``, default: up to 2) each take one (arch, case group) at a time.
* Triton's cache: a fresh temporary directory per run by default (every kernel is compiled from
  scratch, so the run's time is the cold-cache time and ptxas's spill counts are there for every
  variant), removed afterwards. ``--cache-dir DIR`` reuses a directory instead: Triton's cache key
  covers the kernel source, its inlined helpers, the specialisation, the options, the target and
  the compiler and ptxas versions, so a hit is the same cubin; its resource usage is still read
  from that cubin, only ptxas's spill lines are missing (local memory, where spills go, is still
  checked).
* The exit status is 1 when anything failed: a compile error, a resource or grid limit, a jit
  function of ``kernels/`` that no case compiled (:mod:`aot.coverage`).
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
DEFAULT_ARCHS = (90, 80, 89)
PRIMARY_ARCH = 90  # the H200 the project targets: the "primary" tier of tests/aot/cases.py too

_STAND_INS: dict[int, Any] = {}
_CASES: dict[str, Any] = {}


def _prepare_environment(cache_dir: str) -> None:
    """Before triton is imported anywhere: no interpreter (fixed at @triton.jit time), our cache."""
    os.environ["TRITON_INTERPRET"] = "0"
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    for path in (str(REPO), str(TESTS)):
        if path not in sys.path:
            sys.path.insert(0, path)


def arch_supported(arch: int) -> bool:
    """Whether the ptxas Triton uses for ``arch`` lists it among its ``--gpu-name`` values."""
    from triton.backends.nvidia.compiler import sm_arch_from_capability

    from aot.standin import ptxas_for

    help_text = subprocess.run([ptxas_for(arch), "--help"], capture_output=True, text=True).stdout
    return f"'{sm_arch_from_capability(arch)}'" in help_text


def _error(case: str, arch: int, exc: BaseException) -> dict[str, Any]:
    """The failure of one case: the exception, and the innermost frame in the project's code."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if str(REPO) in f.filename and "/tests/aot/" not in f.filename
    ]
    where = f"{Path(frames[-1].filename).relative_to(REPO)}:{frames[-1].lineno}" if frames else "?"
    message = f"{type(exc).__name__}: {exc}"
    return {"case": case, "arch": arch, "where": where, "error": message[:4000]}


def run_task(task: tuple[int, str, list[str]]) -> dict[str, Any]:
    """Run the cases of one group for one arch (in a worker); returns launches and errors."""
    from aot import cases, standin

    arch, group, ids = task
    if not _CASES:
        _CASES.update({c.id: c for c in cases.all_cases()})
    if arch not in _STAND_INS:
        _STAND_INS[arch] = standin.install(arch)
    stand_in = _STAND_INS[arch]
    standin.driver.set_active(stand_in)
    stand_in.launches.clear()
    errors = []
    start = time.perf_counter()
    for case_id in ids:
        stand_in.case = case_id
        try:
            with stand_in.capturing_ptxas_log(), standin.meta_counts_as_gpu():
                _CASES[case_id].run()
        except Exception as exc:  # a compile error or a refused launch: reported, the run goes on
            errors.append(_error(case_id, arch, exc))
        stand_in.take_ptxas_log()
    return {
        "arch": arch,
        "group": group,
        "seconds": time.perf_counter() - start,
        "cases": ids,
        "launches": [launch.to_json() for launch in stand_in.launches],
        "errors": errors,
    }


def make_tasks(archs: list[int], full: bool, pattern: str = "*") -> list[tuple[int, str, list[str]]]:
    from aot.cases import all_cases

    groups: dict[tuple[int, str], list[str]] = defaultdict(list)
    for arch in archs:
        for case in all_cases():
            wanted = case.tier == "all" or full or (case.tier == "primary" and arch == PRIMARY_ARCH)
            if wanted and fnmatch.fnmatchcase(case.id, pattern):
                groups[(arch, case.group)].append(case.id)
    tasks = [(arch, group, ids) for (arch, group), ids in groups.items()]
    return sorted(tasks, key=lambda t: -len(t[2]))  # longest first: the last task to finish is a short one


def run_all(tasks: list[tuple[int, str, list[str]]], jobs: int) -> list[dict[str, Any]]:
    if jobs <= 1:
        return [run_task(t) for t in tasks]
    results = []
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for i, result in enumerate(pool.imap_unordered(run_task, tasks), 1):
            results.append(result)
            print(
                f"[{i}/{len(tasks)}] sm_{result['arch']} {result['group']}: {len(result['launches'])} launches, "
                f"{len(result['errors'])} errors, {result['seconds']:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    return results


def collect(results: list[dict[str, Any]], archs: list[int]) -> dict[str, Any]:
    from aot import checks, coverage

    launches = [launch for r in results for launch in r["launches"]]
    variants = checks.group_variants(launches)
    failures = [
        {
            "kind": "error",
            "arch": e["arch"],
            "kernel": None,
            "cases": [e["case"]],
            "message": f"{e['case']} on sm_{e['arch']} ({e['where']}): {e['error']}",
        }
        for r in results
        for e in r["errors"]
    ]
    for v in variants:
        failures += checks.variant_failures(v)
    src = coverage.read_kernels()
    covered = {}
    for arch in archs:
        compiled = {v["kernel"] for v in variants if v["arch"] == arch}
        failures += [
            {"kind": "coverage", "arch": arch, "kernel": None, "cases": [], "message": f"sm_{arch}: {m}"}
            for m in coverage.uncovered(src, compiled)
        ]
        covered[f"sm_{arch}"] = coverage.covered(src, compiled)
    failures, known = checks.split_known(failures, {case for r in results for case in r["cases"]})
    return {
        "variants": variants,
        "failures": failures,
        "known_failures": known,
        "coverage": covered,
        "summary": checks.summary_rows(variants),
        "summary_seed_model": checks.summary_rows(variants, "seed/*"),
        "n_launches": len(launches),
        "worker_seconds": sum(r["seconds"] for r in results),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="where to write every variant, launch and failure")
    parser.add_argument("--markdown", help="also write the per-kernel summary table here")
    parser.add_argument("--archs", default=",".join(map(str, DEFAULT_ARCHS)), help="compute capabilities, e.g. 90,80")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes")
    parser.add_argument(
        "--full",
        action="store_true",
        help="every case on every arch (default: the tiers of "
        "tests/aot/cases.py: 'all' everywhere, 'primary' on sm_90, 'full' never)",
    )
    parser.add_argument("--cases", default="*", help="only the case ids matching this glob (to debug one case)")
    parser.add_argument("--cache-dir", help="reuse this Triton cache (default: a fresh temporary one per run)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="aot-triton-cache-")
    _prepare_environment(cache_dir)
    from aot import checks, standin

    requested = [int(a) for a in args.archs.split(",") if a.strip()]
    archs = [a for a in requested if arch_supported(a)]
    try:
        results = run_all(make_tasks(archs, args.full, args.cases), args.jobs)
    finally:
        if not args.cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    report = collect(results, archs)
    seconds = time.perf_counter() - start
    header = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "toolchain": standin.toolchain(archs),
        "archs": archs,
        "archs_skipped": [a for a in requested if a not in archs],
        "full": args.full,
        "cases": args.cases,
        "jobs": args.jobs,
        "cache": args.cache_dir or "fresh temporary directory",
        "seconds": round(seconds, 1),
        "worker_seconds": round(report.pop("worker_seconds"), 1),
        "n_variants": {f"sm_{a}": sum(v["arch"] == a for v in report["variants"]) for a in archs},
        "limits": {f"sm_{a}": vars(standin.ARCH_LIMITS[a]) for a in archs},
        "grid_limits": standin.GRID_LIMITS,
        "spill_bound_bytes": {f"sm_{a}": checks.SPILL_BOUND_BYTES[a] for a in archs},
    }
    Path(args.json).write_text(json.dumps({**header, **report}, indent=1))
    table = checks.markdown_table(report["summary"])
    seed_table = checks.markdown_table(report["summary_seed_model"])
    if args.markdown:
        Path(args.markdown).write_text(
            f"All variants:\n\n{table}\n\nThe seed model's launches (seed/* cases):\n\n{seed_table}\n"
        )
    print(table, "\n\nThe seed model's launches:\n", seed_table, sep="")
    print(
        f"\n{header['n_variants']} variants, {report['n_launches']} launches, archs {archs} "
        f"(skipped: {header['archs_skipped']}), {seconds:.0f} s wall, {header['worker_seconds']:.0f} s in workers, "
        f"triton {header['toolchain']['triton']}"
    )
    for known in report["known_failures"]:
        print("KNOWN", known["message"], "--", known["known"])
    for failure in report["failures"]:
        print("FAIL", failure["message"])
    print(f"{len(report['failures'])} failures, {len(report['known_failures'])} known failures")
    return 1 if report["failures"] else 0
