"""winlab's modules import each other one way: the import graph inside `winlab/` has no cycle
(issue 12). Imports are read from the source (top-level and function-level `import`/`from`),
so a lazy import inside a function that closes a cycle counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import winlab

WINLAB = Path(winlab.__file__).parent


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for f in sorted(WINLAB.glob("*.py")):
        mod = f"winlab.{f.stem}" if f.stem != "__init__" else "winlab"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "winlab":
                    deps |= {f"winlab.{a.name}" for a in node.names}
                elif node.module.startswith("winlab."):
                    deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("winlab.")}
        graph[mod] = deps - {mod}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return [*stack[stack.index(d):], d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_winlab_import_graph_has_no_cycle() -> None:
    graph = _graph()
    assert "winlab.fixtures" in graph and "winlab.host" in graph["winlab.fixtures"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
