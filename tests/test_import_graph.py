"""The packages' import graph, read from the source with ``ast`` (every ``import``, at module level, inside a
function or under ``TYPE_CHECKING``; a name a package re-exports lazily counts as an import of the file it
comes from): no file imports from a layer above its own, no two files import each other, directly or
through others, and the foundation ``robustsam_prior.core`` imports nothing of the project but itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("robustsam_prior", "restore", "eval", "pipelines")  # bottom to top
CORE = "robustsam_prior.core"  # the plumbing every layer uses: stdlib, third-party and itself only


def _modules() -> dict[str, Path]:
    out = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _lazy_exports(path: Path) -> dict[str, str]:
    """A package ``__init__``'s ``_EXPORTS`` table (public name -> submodule, :mod:`robustsam_prior.core.lazy`)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    lazy = {name: _lazy_exports(path) for name, path in modules.items() if path.name == "__init__.py"}

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(filter(None, (known(a.name) for a in node.names)))
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".")
                if not node.level:
                    base = node.module or ""
                for a in node.names:  # `from pkg import sub` imports the file pkg/sub.py
                    target = known(f"{base}.{a.name}") if f"{base}.{a.name}" in modules else known(base)
                    if target in lazy and a.name in lazy[target]:  # a lazy re-export: the file it comes from
                        target = known(f"{target}.{lazy[target][a.name]}")
                    if target:
                        targets.add(target)
        graph[name] = targets - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

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
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph():
    return _graph()


def test_the_graph_sees_the_imports(graph):
    assert "robustsam_prior.degradations.base" in graph["robustsam_prior.degradations.api"]  # from .base import
    assert "robustsam_prior.degradations.haze" in graph["robustsam_prior.degradations.api"]  # from . import haze
    assert "eval.metrics.accumulator" in graph["pipelines.steps"]  # inside a function, through a lazy re-export
    assert "robustsam_prior.degradations.files" in graph["pipelines.steps"]  # `from pkg import degrade_file`
    assert f"{CORE}.fileio" in graph[f"{CORE}.checkpoint"]  # from .fileio import, inside core
    assert f"{CORE}.registry" in graph["robustsam_prior.prior"]  # from .core.registry import
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_point_down_only(graph):
    layer = {package: i for i, package in enumerate(LAYERS)}
    up = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                if layer[b.split(".")[0]] > layer[a.split(".")[0]])
    assert up == []


def test_no_import_cycles_between_files(graph):
    assert _cycles(graph) == []


def _in_core(name: str) -> bool:
    return name == CORE or name.startswith(CORE + ".")


def test_core_imports_nothing_of_the_project_but_itself(graph):
    assert any(_in_core(name) for name in graph)
    outside = sorted(f"{a} -> {b}" for a, targets in graph.items() if _in_core(a)
                     for b in targets if not _in_core(b))
    assert outside == []
