"""The architecture, checked: the sans-I/O core imports no I/O, and no import circle exists."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import aiodisp

PACKAGE = Path(aiodisp.__file__).parent

#: What a sans-I/O module may not import: sockets, loops, threads, processes, clocks.
IO_MODULES = {
    "asyncio", "socket", "selectors", "select", "ssl", "threading", "subprocess",
    "multiprocessing", "concurrent", "signal", "time", "uvloop", "os", "logging",
}
#: The only parts of the package the core may lean on: values and errors, no drivers.
CORE_MAY_IMPORT = {"aiodisp._core", "aiodisp._adapter", "aiodisp._kind", "aiodisp.errors",
                   "aiodisp.retry", "aiodisp.stats"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def top_level_imports(path: Path) -> set[str]:
    """Modules ``path`` imports when it is imported (not under TYPE_CHECKING, not in functions)."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                found.add(target)
                for alias in node.names:  # `from . import x` may import a submodule x
                    found.add(f"{target}.{alias.name}")
            elif isinstance(node, ast.If):
                test = node.test
                if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                    continue
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)

    visit(tree.body)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = {module_name(p): p for p in SOURCES}


@pytest.mark.parametrize("path", [p for p in SOURCES if "_core" in p.parts], ids=str)
def test_the_core_imports_no_io_and_no_driver(path: Path) -> None:
    for target in top_level_imports(path):
        root = target.split(".")[0]
        assert root not in IO_MODULES, f"{module_name(path)} imports {target}"
        if root == "aiodisp":
            allowed = any(target == m or target.startswith(m + ".") for m in CORE_MAY_IMPORT)
            assert allowed, f"{module_name(path)} imports {target}, outside the core's reach"


def test_no_import_circle_among_the_modules() -> None:
    graph = {
        name: {t for t in top_level_imports(path) if t in MODULES and t != name}
        for name, path in MODULES.items()
    }
    # A package's __init__ importing its own submodules is a tree, not a circle.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")} if name else deps
    state: dict[str, int] = {}
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circle = [*path[path.index(dep):], dep]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if dep not in state:
                walk(dep)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    """Each module imported first of all (the order a user's program might use) works."""
    code = (
        "import importlib, subprocess, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    r = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True)\n"
        "    if r.returncode: failed.append((name, r.stderr.decode()[-300:]))\n"
        "print(failed)\n"
        "sys.exit(1 if failed else 0)\n"
    )
    names = sorted(n for n in MODULES if n != "aiodisp.__main__")
    result = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
