"""The package's static import graph has no cycles, and dt_fast.kernels imports nothing above it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dt_fast"


def module_name(path: Path) -> str:
    """dt_fast.x.y of a file of the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the dt_fast modules it imports anywhere in its file (function-level imports included)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules["dt_fast._C"] = None  # the compiled extension: imports nothing of the package
    graph: dict[str, set[str]] = {"dt_fast._C": set()}
    for name, path in modules.items():
        if path is None:
            continue
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from pkg import sub` imports the submodule; `from pkg import name` the package's __init__
                subs = [f"{node.module}.{a.name}" for a in node.names]
                bases = [s if s in modules else node.module for s in subs]
            elif isinstance(node, ast.Import):
                bases = [a.name for a in node.names]
            else:
                continue
            targets.update(b for b in bases if b in modules and b != name)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle found by depth-first search, each as the list of modules on it."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_checks_find_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_kernels_import_nothing_above_them() -> None:
    graph = import_graph()
    up = {
        m: sorted(t for t in ts if not t.startswith("dt_fast.kernels"))
        for m, ts in graph.items()
        if m.startswith("dt_fast.kernels")
    }
    assert {m: ts for m, ts in up.items() if ts} == {}
