"""Data flows one way: cesaa -> routing record -> analysis -> app.  Checked statically (ast)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every name a file imports (module level and inside functions), with its line; ``from m
    import x`` gives ``m.x`` (a submodule of ``m`` or a name defined in it)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return out


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _upward_imports(package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name, line in _imports(path):
            if name.split(".")[0] in forbidden:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


def test_imports_find_function_level_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import os\n\ndef f():\n    from analysis.stats import RoutingStats\n")
    assert ("analysis.stats.RoutingStats", 4) in _imports(src)
    assert ("os", 1) in _imports(src)


def test_cesaa_imports_no_analysis_app_or_bench() -> None:
    # the analysis subcommands (report, record) reach the CLI through the `cesaa.commands` entry
    # points (cesaa/cli.py: add_plugin_commands), never through an import
    assert _upward_imports("cesaa", ("analysis", "app", "bench")) == []


def test_analysis_imports_no_app_or_bench() -> None:
    assert _upward_imports("analysis", ("app", "bench")) == []


def _graph(package: str) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    assert modules, f"no modules under {package}"
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        for name, _ in _imports(path):
            # "from analysis.x import y" names analysis.x.y: the longest known module prefix wins
            parts = name.split(".")
            for i in range(len(parts), 0, -1):
                target = ".".join(parts[:i])
                if target in modules:
                    if target != mod:
                        graph[mod].add(target)
                    break
    return graph


def _cycles(graph: dict[str, set[str]], skip: str) -> list[list[str]]:
    """Import cycles among the package's modules, ignoring edges into the package ``skip``
    (its ``__init__`` re-exports submodules; a submodule never imports the package itself)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt == skip:
                continue
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"p": set(), "p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}
    assert _cycles(graph, "p") == [["p.a", "p.b", "p.c", "p.a"]]


@pytest.mark.parametrize("package", ["analysis", "cesaa/routing"])
def test_no_import_cycles(package: str) -> None:
    graph = _graph(package)
    package = package.replace("/", ".")
    assert _cycles(graph, package) == []
    inits = [m for m, deps in graph.items() if package in deps and m != package]
    assert inits == [], f"modules importing the package {package} itself: {inits}"
