"""The arrows between modules run one way: kernels/ never imports wgan/, and neither package
has an import cycle (imports inside functions count too: a lazy import is still an arrow)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "wgan")


def module_name(path: Path) -> str:
    return path.parent.name if path.stem == "__init__" else f"{path.parent.name}.{path.stem}"


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (``from wgan import x`` counts as ``wgan.x`` when
    ``wgan.x`` is a module)."""
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
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py"))]
    known = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, known) for p in files}


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
    assert "wgan.engine" in edges["wgan.cuda_graph"]  # the runner depends on the engine...
    assert "wgan.cuda_graph" not in edges["wgan.engine"]  # ...never the reverse


def test_kernels_never_import_wgan() -> None:
    offenders = {m: d for m, d in graph().items() if m.startswith("kernels") and any(x.startswith("wgan") for x in d)}
    assert not offenders, offenders


def test_no_import_cycle() -> None:
    found = cycle(graph())
    assert found is None, " -> ".join(found)


def test_the_cycle_finder_finds_one() -> None:
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None
