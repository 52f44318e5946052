"""Limits every compiled variant and every launch must stay within, and the per-kernel summary.

Bounds (per arch, :data:`aot.standin.ARCH_LIMITS`):

* registers <= 255 per thread, and the block's registers (allocated per warp in units of 256)
  fit the SM's 64K-register file; at most 1024 threads per block;
* shared memory (Triton's dynamic request plus any static shared memory in the cubin) within the
  per-block maximum: sm_90 227 KB, sm_80 163 KB, sm_89 99 KB;
* spills (:data:`SPILL_BOUND_BYTES`): 0 bytes of spill stores, of spill loads (ptxas ``-v``) and
  of stack frame + local memory per thread (cuobjdump: spills land in the stack frame, and this
  bound still holds when a cubin comes from Triton's cache without a ptxas log), 8 bytes on sm_89;
* grids: x <= 2**31 - 1, y and z <= 65535 (and every axis >= 1);
* index width: when an integer argument is >= 2**31 (Triton then types it i64), the kernel must
  not multiply its program id (or a scalar derived from it by div/rem/add/sub) in int32 (an
  ``arith.muli ... : i32`` in the TTIR). Tile offsets are ``program * BLOCK + arange``: in int32
  they wrap past 2**31 and address memory before the buffer. A heuristic on the IR, met by one
  ``pid.to(tl.int64)`` before the multiply, as rmsprop's ``WIDE`` does.

A failure is a dict (kind, arch, kernel, cases, message). :data:`KNOWN_FAILURES` lists the ones
reported and not yet fixed; they are kept apart, and one that no longer occurs is itself a failure
(strict, so the list cannot go stale).
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from typing import Any

from aot.standin import ARCH_LIMITS, GRID_LIMITS

# Bytes per thread allowed for each of: spill stores, spill loads, stack frame + local memory.
# 0 everywhere except sm_89, where ptxas 12.9 spills 8 bytes in one fp32 variant of the rmsprop
# kernel (CENTERED alone: 56 registers, so not for lack of them; sm_80 and sm_90 do not spill it).
# A ratchet: the bound is what the review found, and any new spill fails.
SPILL_BOUND_BYTES = {80: 0, 89: 8, 90: 0}

# (kind, case pattern): why it is known. Every case of a failing variant must match.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}  # the int32 tile offsets it listed are widened now (WIDE)


def failure(kind: str, variant: dict[str, Any], message: str, cases: list[str] | None = None) -> dict[str, Any]:
    cases = cases if cases is not None else [launch["case"] for launch in variant["launches"]]
    return {
        "kind": kind,
        "arch": variant["arch"],
        "kernel": variant["kernel"],
        "cases": cases,
        "message": f"sm_{variant['arch']} {variant['kernel']} ({cases[0]}"
        f"{f' and {len(cases) - 1} more' if len(cases) > 1 else ''}): {message}",
    }


def group_variants(launches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per compiled specialisation (arch, kernel hash), with every launch that used it."""
    variants: dict[tuple[int, str], dict[str, Any]] = {}
    for launch in launches:
        key = (launch["arch"], launch["hash"])
        if key not in variants:
            variants[key] = {
                k: launch[k]
                for k in (
                    "kernel",
                    "arch",
                    "hash",
                    "signature",
                    "constexprs",
                    "divisible_by_16",
                    "num_warps",
                    "num_stages",
                    "shared",
                    "program_offsets_i32",
                    "resources",
                )
            }
            variants[key]["launches"] = []
        variants[key]["launches"].append({"case": launch["case"], "grid": launch["grid"]})
    return sorted(variants.values(), key=lambda v: (v["arch"], v["kernel"], v["hash"]))


def _resource_problems(variant: dict[str, Any]) -> list[str]:
    limits = ARCH_LIMITS[variant["arch"]]
    res = variant["resources"]
    regs, warps = res["registers"], variant["num_warps"]
    per_warp = -(-regs * 32 // limits.register_granularity) * limits.register_granularity
    shared = variant["shared"] + res["static_shared"]
    problems = []
    if regs > limits.max_registers_per_thread:
        problems.append(f"{regs} registers per thread > {limits.max_registers_per_thread}")
    if per_warp * warps > limits.registers_per_sm:
        problems.append(
            f"{regs} registers x {warps * 32} threads needs {per_warp * warps} > the "
            f"{limits.registers_per_sm}-register file"
        )
    if warps * 32 > limits.max_threads_per_block:
        problems.append(f"{warps * 32} threads per block > {limits.max_threads_per_block}")
    if shared > limits.max_shared_per_block:
        problems.append(f"{shared} bytes of shared memory > {limits.max_shared_per_block}")
    if res["ptxas_registers"] is not None and res["ptxas_registers"] != regs:
        problems.append(f"ptxas reported {res['ptxas_registers']} registers, the cubin {regs}")
    return problems


def variant_failures(variant: dict[str, Any]) -> list[dict[str, Any]]:
    found = [failure("resources", variant, p) for p in _resource_problems(variant)]
    res = variant["resources"]
    bound = SPILL_BOUND_BYTES[variant["arch"]]
    if max(res["spill_stores"] or 0, res["spill_loads"] or 0, res["stack"] + res["local"]) > bound:
        found.append(
            failure(
                "spills",
                variant,
                f"{res['spill_stores']} bytes spill stores, {res['spill_loads']} "
                f"bytes spill loads (ptxas), stack frame {res['stack']} + local "
                f"{res['local']} bytes per thread (cubin); bound {bound} bytes each",
            )
        )
    wide = sorted(name for name, ty in variant["signature"].items() if ty in ("i64", "u64"))
    if wide and variant["program_offsets_i32"]:
        found.append(
            failure(
                "index width",
                variant,
                f"{', '.join(wide)} >= 2**31 (i64) but the kernel multiplies "
                "its program id in int32: tile offsets wrap past 2**31",
            )
        )
    over = [
        launch["case"]
        for launch in variant["launches"]
        if any(n < 1 or n > limit for n, limit in zip(launch["grid"], GRID_LIMITS))
    ]
    if over:
        grids = sorted({tuple(launch["grid"]) for launch in variant["launches"] if launch["case"] in over})
        found.append(failure("grid", variant, f"grids {grids} outside CUDA's limits {GRID_LIMITS}", over))
    return found


def is_known(fail: dict[str, Any]) -> str | None:
    """The reason a failure is already reported, if every one of its cases matches a known entry."""
    for (kind, pattern), reason in KNOWN_FAILURES.items():
        if fail["kind"] == kind and all(fnmatch.fnmatchcase(case, pattern) for case in fail["cases"]):
            return reason
    return None


def split_known(failures: list[dict[str, Any]], cases_run: set[str]) -> tuple[list[dict], list[dict]]:
    """(failures, known failures); a known entry whose cases ran without failing is a failure."""
    known, new = [], []
    for fail in failures:
        reason = is_known(fail)
        (known if reason else new).append({**fail, "known": reason} if reason else fail)
    for (kind, pattern), reason in KNOWN_FAILURES.items():
        ran = any(fnmatch.fnmatchcase(case, pattern) for case in cases_run)
        hit = any(f["kind"] == kind and any(fnmatch.fnmatchcase(c, pattern) for c in f["cases"]) for f in known)
        if ran and not hit:
            new.append(
                {
                    "kind": "stale known failure",
                    "arch": None,
                    "kernel": None,
                    "cases": [pattern],
                    "message": f"known {kind} failure {pattern!r} ({reason}) no longer occurs: "
                    "remove it from tests/aot/checks.py KNOWN_FAILURES",
                }
            )
    return new, known


def summary_rows(variants: list[dict[str, Any]], cases: str = "*") -> list[dict[str, Any]]:
    """Per (arch, kernel): variants, launches, max registers / spills / stack+local / shared, max grid x,
    over the variants launched by a case matching ``cases`` (a glob; "seed/*": what the trainer runs)."""
    variants = [
        {**v, "launches": [launch for launch in v["launches"] if fnmatch.fnmatchcase(launch["case"], cases)]}
        for v in variants
    ]
    variants = [v for v in variants if v["launches"]]
    rows: dict[tuple[int, str], dict[str, Any]] = defaultdict(
        lambda: {
            "variants": 0,
            "launches": 0,
            "registers": 0,
            "spill_stores": 0,
            "spill_loads": 0,
            "stack_local": 0,
            "shared": 0,
            "grid_x": 0,
        }
    )
    for v in variants:
        row = rows[(v["arch"], v["kernel"])]
        res = v["resources"]
        row["variants"] += 1
        row["launches"] += len(v["launches"])
        row["registers"] = max(row["registers"], res["registers"])
        row["spill_stores"] = max(row["spill_stores"], res["spill_stores"] or 0)
        row["spill_loads"] = max(row["spill_loads"], res["spill_loads"] or 0)
        row["stack_local"] = max(row["stack_local"], res["stack"] + res["local"])
        row["shared"] = max(row["shared"], v["shared"] + res["static_shared"])
        row["grid_x"] = max([row["grid_x"]] + [launch["grid"][0] for launch in v["launches"]])
    return [{"arch": arch, "kernel": kernel, **row} for (arch, kernel), row in sorted(rows.items())]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| arch | kernel | variants | launches | max registers | max spill stores / loads (bytes) "
        "| max stack+local (bytes) | max shared (bytes) | max grid x |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| sm_{r['arch']} | `{r['kernel']}` | {r['variants']} | {r['launches']} | {r['registers']} "
            f"| {r['spill_stores']} / {r['spill_loads']} | {r['stack_local']} | {r['shared']:,} "
            f"| {r['grid_x']:,} |"
        )
    return "\n".join(lines)
