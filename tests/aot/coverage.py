"""Which ``@triton.jit`` functions of ``kernels/`` must be compiled, read from the source.

A kernel is a jit function passed to ``kernels._launch.launch(op, kernel, ...)``, directly or through
an op family's ``launch_*`` method (``layout.launch_tiles(kernel, ...)``): it must appear among the
compiled kernels. A helper is a jit function only called from other jit functions
(``_score_coefficients``): Triton inlines it into its callers, so it is covered when a caller
that calls it is. A jit function that is neither launched nor called from a covered jit function
is never compiled at all, and fails the check.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

KERNELS = Path(__file__).resolve().parents[2] / "kernels"


@dataclass
class JitSource:
    launched: set[str] = field(default_factory=set)  # passed to launch(...)
    calls: dict[str, set[str]] = field(default_factory=dict)  # jit function -> jit functions it calls
    where: dict[str, str] = field(default_factory=dict)  # jit function -> "file.py:line"


def _is_jit(node: ast.FunctionDef) -> bool:
    for dec in node.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        if isinstance(target, ast.Attribute) and target.attr in ("jit", "autotune", "heuristics"):
            return True
        if isinstance(target, ast.Name) and target.id == "jit":
            return True
    return False


def _call_name(call: ast.Call) -> str:
    """``f`` of ``f(...)`` or ``x.f(...)``."""
    return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")


def _called_names(node: ast.AST) -> set[str]:
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            names.add(_call_name(sub))
    return names


def _launch_targets(tree: ast.Module) -> set[str]:
    """Names given as the ``kernel`` argument of ``launch(op, kernel, grid, ...)``, or as the first
    argument of a launcher method that forwards it there (``layout.launch_tiles(kernel, ...)`` in
    kernels/bn_act.py); the caller keeps only the names that are jit functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _call_name(node)
            if name == "launch" and len(node.args) >= 2 and isinstance(node.args[1], ast.Name):
                found.add(node.args[1].id)
            if name.startswith("launch_") and node.args and isinstance(node.args[0], ast.Name):
                found.add(node.args[0].id)
    return found


def read_kernels(directory: Path = KERNELS) -> JitSource:
    src = JitSource()
    for path in sorted(directory.glob("*.py")):
        tree = ast.parse(path.read_text())
        jitted = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and _is_jit(n)}
        for name, node in jitted.items():
            src.where[name] = f"{path.name}:{node.lineno}"
        for name, node in jitted.items():
            src.calls[name] = _called_names(node) & set(src.where)
        src.launched |= _launch_targets(tree) & set(jitted)
    return src


def covered(src: JitSource, compiled: set[str]) -> dict[str, str]:
    """``{jit function: how it is covered}``; those not covered are missing from the result."""
    result = {name: "compiled" for name in src.launched & compiled}
    frontier = list(result)
    while frontier:
        caller = frontier.pop()
        for callee in src.calls.get(caller, ()):
            if callee not in result:
                result[callee] = f"inlined into {caller}"
                frontier.append(callee)
    return result


def uncovered(src: JitSource, compiled: set[str]) -> list[str]:
    """One message per jit function that was never compiled, directly or inlined."""
    done = covered(src, compiled)
    messages = []
    for name, where in sorted(src.where.items()):
        if name in done:
            continue
        if name in src.launched:
            messages.append(f"{where} {name} is launched by the project but no case compiled it")
        else:
            callers = sorted(caller for caller, callees in src.calls.items() if name in callees)
            messages.append(
                f"{where} {name} is not launched through launch(...) and none of its callers "
                f"({', '.join(callers) or 'none'}) was compiled"
            )
    return messages
