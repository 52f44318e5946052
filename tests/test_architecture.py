"""The arrows between modules, as docs/design.md draws them, enforced.

- ``kernels`` never imports ``wgan`` (a library of its own).
- Inside ``wgan`` every module sits on a layer and imports only from lower layers or its own
  package: errors < config, devices, data < models < run < fid < training, report < the commands (and
  ``wgan.training.trainer``, which runs a training and then its report).
- The run folder and the report never reach ``wgan.training`` or ``kernels``, not even through
  another module: whoever reads a run folder never loads the training engine or Triton.
- No import cycle anywhere.

Imports inside functions count too (a lazy import is still an arrow), and the last test checks
the real commands in a subprocess, so an import that these static rules cannot see still fails.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "wgan")

# (module prefix, layer): the longest matching prefix decides; a module may import its own package
# and any lower layer.
LAYERS: dict[str, float] = {
    "wgan.errors": 0,
    "wgan.config": 1,
    "wgan.devices": 1,
    "wgan.data": 1,
    "wgan.sweep": 1.5,  # a sweep's member configs from the command line's lists
    "wgan.models": 2,
    "wgan.run": 3,
    "wgan.fid": 4,
    "wgan.training": 5,
    "wgan.report": 5,
    "wgan.training.trainer": 5.5,  # a whole invocation: set up, train, then the report
    "wgan.training.sweep_trainer": 5.5,  # a sweep's invocation: members trained stacked, then the sweep report
    "wgan.sample": 6,
    "wgan.train": 6,
    "wgan.check": 6,
    "wgan.fid_weights": 6,
    "wgan.report.__main__": 6,
}
# Readers of a run folder: none of these may reach a forbidden module, directly or not.
READERS = ("wgan.run", "wgan.report", "wgan.sample", "wgan.fid")
FORBIDDEN_FOR_READERS = ("wgan.training", "kernels", "wgan.models.fused_critic", "wgan.models.fused_generator")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (``from wgan.run import folder`` counts as
    ``wgan.run.folder`` when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found.update(subs or ({node.module} & known))
    found.discard(module_name(path))
    return found


def graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    known = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, known) for p in files}


def layer_of(module: str) -> tuple[str, float] | None:
    """(the LAYERS prefix that places ``module``, its layer); None for a package's own __init__."""
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    if not matches:
        return None
    prefix = max(matches, key=len)
    return prefix, LAYERS[prefix]


def upward_arrows(edges: dict[str, set[str]]) -> list[str]:
    """Imports of a module on the same or a higher layer, outside the importer's own package."""
    bad = []
    for module, deps in edges.items():
        here = layer_of(module)
        for dep in deps:
            there = layer_of(dep)
            if here is None or there is None or dep.startswith(here[0] + ".") or dep == here[0]:
                continue
            if there[1] >= here[1]:
                bad.append(f"{module} (layer {here[1]}) imports {dep} (layer {there[1]})")
    return sorted(bad)


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for nxt in edges.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def readers_reaching_training(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for module in sorted(edges):
        if module == "wgan.report.__main__" or not module.startswith(READERS):
            continue
        hits = sorted(m for m in reachable(edges, module) if m.startswith(FORBIDDEN_FOR_READERS))
        if hits:
            bad.append(f"{module} reaches {', '.join(hits)}")
    return bad


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_is_read() -> None:
    edges = graph()
    assert "wgan.training.engine" in edges["wgan.training.cuda_graph"]  # the runner depends on the engine...
    assert "wgan.training.cuda_graph" not in edges["wgan.training.engine"]  # ...never the reverse
    assert "wgan.run.generator" in edges["wgan.report.quality"]  # a nested module's imports are read
    unplaced = [m for m in edges if m.startswith("wgan.") and layer_of(m) is None and not m.count(".") == 1]
    assert not unplaced, f"modules on no layer: {unplaced}"


def test_every_wgan_module_has_a_layer() -> None:
    """A new top-level module or package must be placed in LAYERS (and in docs/design.md)."""
    tops = {m for m in graph() if m.startswith("wgan.")}
    assert all(layer_of(m) is not None for m in tops), sorted(m for m in tops if layer_of(m) is None)


def test_kernels_never_import_wgan() -> None:
    offenders = {m: d for m, d in graph().items() if m.startswith("kernels") and any(x.startswith("wgan") for x in d)}
    assert not offenders, offenders


def test_imports_run_down_the_layers() -> None:
    assert upward_arrows(graph()) == []


def test_readers_of_a_run_folder_never_reach_training_or_kernels() -> None:
    assert readers_reaching_training(graph()) == []


def test_no_import_cycle() -> None:
    found = cycle(graph())
    assert found is None, " -> ".join(found)


def test_the_rules_catch_a_planted_import() -> None:
    """The checks above are not vacuous: a report module importing the engine fails both rules."""
    edges = {k: set(v) for k, v in graph().items()}
    edges["wgan.report.plots"].add("wgan.training.engine")
    assert any("wgan.report.plots" in line for line in upward_arrows(edges))
    assert any(line.startswith("wgan.report.plots reaches") for line in readers_reaching_training(edges))
    edges = {k: set(v) for k, v in graph().items()}
    edges["wgan.run.folder"].add("wgan.models.fused_generator")  # kernels, one step removed
    assert any("kernels" in line for line in readers_reaching_training(edges))


def test_the_cycle_finder_finds_one() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
except SystemExit:
    pass
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("triton", "kernels") or m.startswith("wgan.training"))
print("LOADED:" + ",".join(loaded))
"""


@pytest.mark.parametrize("command", ["wgan.report", "wgan.sample"])
def test_the_readers_commands_load_neither_triton_nor_the_engine(command: str) -> None:
    """``python -m wgan.report --help`` and ``wgan.sample --help``, in a real process."""
    proc = subprocess.run([sys.executable, "-c", PROBE, command], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout, proc.stdout[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("LOADED:"))
    assert line == "LOADED:", f"{command} --help imported {line[len('LOADED:') :]}"
