"""Data flows one way: cesaa -> routing record -> analysis -> app.  Checked statically (ast)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every name a file imports (module level and inside functions), with its line; ``from m
    import x`` gives ``m.x`` (a submodule of ``m`` or a name defined in it); a relative import
    is resolved against the file's own package."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0 and path.is_relative_to(ROOT):
            base = list(path.relative_to(ROOT).with_suffix("").parts)[: -node.level]
            mod = ".".join(base + ([node.module] if node.module else []))
            out += [(f"{mod}.{a.name}", node.lineno) for a in node.names]
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
    """Import edges among the modules under ``package``.  Names resolve as Python would find
    them from the importing file: the full dotted name, or a bare name of a module beside it or
    at the package's top (Streamlit runs app/main.py with app/ on sys.path, so ``import loaders``
    in app/ or app/views/ is app/loaders.py)."""
    modules = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    assert modules, f"no modules under {package}"
    top = package.replace("/", ".")
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        here = mod.rsplit(".", 1)[0]
        for name, _ in _imports(path):
            # "from analysis.x import y" names analysis.x.y: the longest known module prefix wins
            for prefix in ("", f"{here}.", f"{top}."):
                target = _known_prefix(prefix + name, modules, prefix.count(".") + 1)
                if target is not None:
                    if target != mod:
                        graph[mod].add(target)
                    break
    return graph


def _known_prefix(name: str, modules: dict, shortest: int) -> str | None:
    """The longest prefix of ``name`` that is a module, of at least ``shortest`` parts."""
    parts = name.split(".")
    for i in range(len(parts), shortest - 1, -1):
        if ".".join(parts[:i]) in modules:
            return ".".join(parts[:i])
    return None


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


def test_bare_name_imports_are_seen(tmp_path: Path, monkeypatch) -> None:
    """app/views/x.py's ``import loaders`` and app/a.py's ``from b import f`` are edges to
    app.loaders and app.b, so a cycle through bare names is found."""
    app = tmp_path / "app"
    (app / "views").mkdir(parents=True)
    (app / "a.py").write_text("from b import f\n")
    (app / "b.py").write_text("def f():\n    import a\n")
    (app / "views" / "page.py").write_text("import a\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    graph = _graph("app")
    assert graph["app.views.page"] == {"app.a"}
    assert _cycles(graph, "app") == [["app.a", "app.b", "app.a"]]


@pytest.mark.parametrize("package", ["analysis", "cesaa", "app", "bench"])
def test_no_import_cycles(package: str) -> None:
    graph = _graph(package)
    package = package.replace("/", ".")
    # a package's __init__ re-exports its submodules; edges into it are not module cycles
    inits = {m for m in graph if (ROOT / m.replace(".", "/") / "__init__.py").is_file()}
    assert _cycles({m: deps - (inits - {package}) for m, deps in graph.items()}, package) == []


@pytest.mark.parametrize("package", ["analysis", "cesaa/routing"])
def test_no_module_imports_its_package(package: str) -> None:
    graph = _graph(package)
    package = package.replace("/", ".")
    inits = [m for m, deps in graph.items() if package in deps and m != package]
    assert inits == [], f"modules importing the package {package} itself: {inits}"
