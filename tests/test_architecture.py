"""The architecture: core never imports Qt or the GUI, the layers hold (import-linter), and no import cycles."""

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_importing_all_of_core_loads_no_qt():
    code = (
        "import importlib, pkgutil, sys, core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph', 'gui'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, f"core imported Qt/GUI modules: {result.stdout} {result.stderr[-2000:]}"


def test_import_linter_contract():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("lint-imports is missing: it is part of the dev dependencies (make test installs it)")
    result = subprocess.run([exe], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]


def test_every_core_module_imports():
    import core

    for module in pkgutil.walk_packages(core.__path__, "core."):
        importlib.import_module(module.name)


def _import_cycles(*packages: str) -> list[list[str]]:
    """Groups of modules that import one another in a loop (strongly connected components of the import graph)."""
    import grimp

    graph = grimp.build_graph(*packages)
    order, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    return cycles


def test_no_module_imports_itself_through_others():
    assert _import_cycles("core", "gui") == []


def test_the_cycle_finder_finds_a_cycle(tmp_path, monkeypatch):
    """The check above would see a loop: two modules importing each other."""
    package = tmp_path / "loopy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from loopy import b\n")
    (package / "b.py").write_text("from loopy import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _import_cycles("loopy") == [["loopy.a", "loopy.b"]]
