"""The package's shape, checked from the source: the modules import each other without a circle
(module-level, function-level and TYPE_CHECKING imports alike), no function is longer than 80
lines and no module longer than 400.

The import graph is built with ``ast``, so nothing is imported to check it. An edge ``A -> B``
means that running ``A`` (at import time or in any of its functions) may import ``B``:

- ``import matchnas.x.y`` and ``from matchnas.x.y import name`` give ``A -> matchnas.x.y``, and
  ``from matchnas.x import y`` gives ``A -> matchnas.x.y`` when ``y`` is a module;
- importing ``matchnas.x.y`` runs the package ``matchnas.x`` first, so ``A -> matchnas.x`` too,
  unless ``A`` is inside that package (it is already running);
- a package that exports names lazily (PEP 562: an ``_EXPORTS`` table read by ``__getattr__``)
  imports each table entry's module when the name is used, so ``from pkg import name`` gives
  ``A -> _EXPORTS[name]`` and the package itself has an edge to every module of its table.

Function-level imports that keep the command line light (``cli.py`` imports a command's modules
only when the command runs) are edges like any other: they are fine as long as they close no
circle. The root package ``matchnas`` is left out as a target of the second rule only: every
module is inside it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of src/matchnas (a package by its __init__)."""
    found = {}
    for path in sorted((SRC / "matchnas").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _lazy_exports(package: str) -> dict[str, str]:
    """A package's PEP 562 table ``_EXPORTS = {name: module}`` (empty when it has none)."""
    if not MODULES[package].name == "__init__.py":
        return {}
    for node in TREES[package].body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The matchnas modules one import statement of ``module`` names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "matchnas"]
    base = node.module or ""
    if node.level:  # relative: from the importing module's package
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    if base.split(".")[0] != "matchnas":
        return []
    exports = _lazy_exports(base) if base in MODULES else {}
    targets = []
    for alias in node.names:
        if f"{base}.{alias.name}" in MODULES:
            targets.append(f"{base}.{alias.name}")
        elif alias.name in exports:
            targets.append(exports[alias.name])
        else:
            targets.append(base)
    return targets


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` over src/matchnas (see the module docstring)."""
    graph: dict[str, dict[str, int]] = {name: {} for name in MODULES}
    for module, tree in TREES.items():
        edges = graph[module]
        for node in ast.walk(tree):  # every import, at any depth: functions and TYPE_CHECKING too
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(module, node):
                parts = target.split(".")
                for depth in range(2, len(parts) + 1):  # the packages it runs first, then itself
                    name = ".".join(parts[:depth])
                    if name in MODULES and name != module and not module.startswith(name + "."):
                        edges.setdefault(name, node.lineno)
        for target in _lazy_exports(module).values():
            edges.setdefault(target, 0)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_src():
    graph = import_graph()
    circles = cycles(graph)
    described = [
        "; ".join(f"{a} -> {b} (line {graph[a][b]})" for a in circle for b in graph[a] if b in circle)
        for circle in circles
    ]
    assert not circles, "import cycles:\n" + "\n".join(described)


def test_the_cycle_check_sees_function_level_and_type_checking_imports():
    graph = import_graph()
    assert "matchnas.predict" in graph["matchnas.cli"]  # imported inside _cmd_predict only
    assert "matchnas.run" in graph["matchnas.search.context"]  # under TYPE_CHECKING
    assert "matchnas.train.loop" in graph["matchnas.train"]  # the package's lazy table
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_run_reads_no_layer_above_it():
    """Everything after training stands on matchnas.run: it never imports search, export or the
    training loop, directly or through another module."""
    graph = import_graph()
    seen, todo = set(), ["matchnas.run"]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    above = sorted(m for m in seen if m.startswith(("matchnas.search", "matchnas.export", "matchnas.train")))
    assert not above, f"matchnas.run reaches {above}"


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_and_modules_are_short(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{MODULES[module]} has {lines} lines (at most {MAX_MODULE_LINES})"
    long = [f"{f.name} (line {f.lineno}): {f.end_lineno - f.lineno + 1} lines" for f in _functions(TREES[module])
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{MODULES[module]}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"
