"""The runtime's modules and subpackages import each other in one direction only.

A cycle hidden by a function-level import (`checkpoint` importing `convert` inside a function while
`convert` imports `checkpoint` at the top) works until someone moves the import; this test reads
every import, at any level, and fails on a cycle between top-level units of `litgpt_runtime`
(a module such as `checkpoint`, or a subpackage such as `convert` taken as a whole).
"""

from __future__ import annotations

import ast
from pathlib import Path

import litgpt_runtime

PACKAGE = Path(litgpt_runtime.__file__).parent


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        source = _unit(".".join(parts).removesuffix(".__init__"))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = ([f"{node.module}.{a.name}" for a in node.names] if node.module == "litgpt_runtime"
                           else [node.module])
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("litgpt_runtime.") and _unit(target) != source:
                    graph.setdefault(source, set()).add(_unit(target))
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_no_import_cycles_between_modules_and_subpackages():
    graph = import_graph()
    assert "litgpt_runtime.checkpoint" in graph  # the graph was read
    cycles = [c for c in (cycle_through(graph, unit) for unit in sorted(graph)) if c]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_test_sees_a_cycle_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle_through(graph, "a") == ["a", "b", "c", "a"] and cycle_through(graph, "d") is None
