"""No import cycles inside layert2v/: module-level, lazy (inside functions) and TYPE_CHECKING imports all count.

Modules that import each other, directly or around a circle, cannot be read or moved one at a time. Arrows point
down (docs/ARCHITECTURE.md): cli and ui use pipeline, editing, training and data; nothing below imports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "layert2v"

# Circles that existed when this test was written; each one removed must be deleted here too (the test says so),
# and the list must end empty.
KNOWN_CYCLES: list[frozenset[str]] = [
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(module: str, node: ast.Import | ast.ImportFrom, is_package: bool, known: dict[str, Path]) -> set[str]:
    """The layert2v modules an import statement loads (a package's __init__ when a name is not a submodule)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            parent = ".".join(base + ([node.module] if node.module else []))
        else:
            parent = node.module or ""
        names = [f"{parent}.{a.name}" if f"{parent}.{a.name}" in known else parent for a in node.names]
    found = set()
    for name in names:
        while name and name not in known:  # `import layert2v.x.y` of an attribute: its module
            name = name.rpartition(".")[0]
        if name.startswith("layert2v") and name != module:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[module] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[module] |= imported(module, node, path.name == "__init__.py", known)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle_through_a_lazy_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]
    tree = ast.parse("def f():\n    from .pipeline import X\n")
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom))
    assert imported("layert2v.editing", node, False, modules()) == {"layert2v.pipeline"}


def test_no_import_cycles_inside_the_package():
    found = cycles(import_graph())
    new = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not new, f"import cycle(s) inside layert2v/: {new}"
    assert not gone, f"these cycles are gone: delete them from KNOWN_CYCLES in {Path(__file__).name}: {gone}"
