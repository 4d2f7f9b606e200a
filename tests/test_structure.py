"""The package's shape: a one-way import graph, and modules a maintainer can read whole."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "klaviyo_consent"
#: Where Django or an optional extra needs an import inside a function: ``AppConfig.ready``,
#: the pytest plugin (loaded before Django is configured), the fake (the ``test`` extra).
FUNCTION_LEVEL_ALLOWED = {
    "klaviyo_consent/apps.py",
    "klaviyo_consent/testing/pytest_plugin.py",
    "klaviyo_consent/management/commands/klaviyo_consent_fake_server.py",
}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(our module imported, whether inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            nested.update(id(child) for child in ast.walk(node) if child is not node)
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("klaviyo_consent.") or name == "klaviyo_consent":
                found.append((name, id(node) in nested))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {target for target, _ in _imports(path, modules) if target != name}
        for name, path in modules.items()
    }


def test_no_module_of_the_package_imports_one_that_imports_it_back():
    graph = _graph()
    # Strongly connected components (Tarjan): any component of two or more is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert cycles == []


def test_our_own_modules_are_imported_at_the_top_except_where_django_needs_otherwise():
    modules = _modules()
    late = sorted(
        (str(path.relative_to(PACKAGE.parent)), target)
        for path in modules.values()
        for target, inside in _imports(path, modules)
        if inside and str(path.relative_to(PACKAGE.parent)) not in FUNCTION_LEVEL_ALLOWED
    )
    assert late == []


def test_no_module_is_longer_than_a_maintainer_reads_whole():
    too_long = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in _modules().values()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert too_long == {}
