"""No import cycles inside layert2v/: module-level, lazy (inside functions) and TYPE_CHECKING imports all count, and
importing a module counts as importing the packages around it (their __init__ runs first).

Modules that import each other, directly or around a circle, cannot be read or moved one at a time. Arrows point
down (docs/ARCHITECTURE.md): cli and ui use pipeline, editing, training and data; nothing below imports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "layert2v"

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
        while name.startswith("layert2v."):  # and the packages it sits in, up to (not including) the root package
            if name != module and not module.startswith(name + "."):  # its own packages are already being imported
                found.add(name)
            name = name.rpartition(".")[0]
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


def test_the_cycle_finder_finds_a_circle_through_a_lazy_import_and_a_package():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]
    known = modules()
    tree = ast.parse("def f():\n    from .pipeline import X\n    from .eval.trajectory import Y\n"
                     "from .trajectory import Z\n")
    node = {n.module: n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    lazy, nested, sibling = node["pipeline"], node["eval.trajectory"], node["trajectory"]
    assert imported("layert2v.editing", lazy, False, known) == {"layert2v.pipeline"}
    # eval/__init__ runs before eval.trajectory; from inside eval, the package is already being imported
    assert imported("layert2v.trajectory", nested, False, known) == {"layert2v.eval", "layert2v.eval.trajectory"}
    assert imported("layert2v.eval.report", sibling, False, known) == {"layert2v.eval.trajectory"}


def test_no_import_cycles_inside_the_package():
    found = cycles(import_graph())
    assert not found, f"import cycle(s) inside layert2v/: {[sorted(c) for c in found]}"
