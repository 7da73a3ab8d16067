"""The walls of the architecture, checked on the import graph of ``ccfkit`` (and ``trainer``).

The graph holds every ``import`` and ``from ... import`` statement of every
module, those inside functions (imported on use) included. Draw it with::

    python tests/test_layers.py            # one line per module: what it imports
    python tests/test_layers.py --dot      # Graphviz: ... | dot -Tsvg > imports.svg
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ccfkit"
#: The math: formulas of docs/ccf.md on arrays, with no backend, I/O or engine.
MATH = ("ccfkit.polar", "ccfkit.fourier", "ccfkit.ccf")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that the file ``path`` (module ``name``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from . import simulate`` names a module; ``from .io.cxi import DATA_PATH`` a value
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a.b.value -> a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path = ROOT, package: str = "ccfkit") -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` over every ``.py`` file of ``package``.

    A submodule import (``from ccfkit.io.cxi import x``) counts as an edge to
    ``ccfkit.io.cxi`` only, not to the packages above it.
    """
    files = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    known = set(files)
    return {name: _imports(path, name, known) for name, path in files.items()}


def _outside_imports(root: Path = ROOT, package: str = "ccfkit", skip=()) -> set[str]:
    """Top-level names of every module that ``package`` imports (its own excluded).

    ``skip``: paths relative to ``root`` of modules left out.
    """
    names = set()
    for path in (root / package).rglob("*.py"):
        if path.relative_to(root).as_posix() in skip:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names.add(node.module.split(".")[0])
    return names


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others (``start`` excluded)."""
    seen, todo = set(), list(graph[start])
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    seen.discard(start)
    return seen


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The import loops: strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# --------------------------------------------------------------------------
# The helpers on small graphs
# --------------------------------------------------------------------------


def test_cycles_finds_a_loop_and_only_the_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_resolves_relative_and_submodule_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "io").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from ._version import v\n")
    (pkg / "_version.py").write_text("v = 1\n")
    (pkg / "sim.py").write_text("from .io.cxi import PATH\nfrom . import maths as m\n")
    (pkg / "maths.py").write_text("import numpy\n")
    (pkg / "io" / "__init__.py").write_text("")
    (pkg / "io" / "cxi.py").write_text("from .. import _version\nPATH = 1\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph == {
        "pkg": {"pkg._version"},
        "pkg._version": set(),
        "pkg.io": set(),
        "pkg.io.cxi": {"pkg._version"},
        "pkg.maths": set(),
        "pkg.sim": {"pkg.io.cxi", "pkg.maths"},
    }
    assert reachable(graph, "pkg.sim") == {"pkg.io.cxi", "pkg._version", "pkg.maths"}


# --------------------------------------------------------------------------
# The walls
# --------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["ccfkit", "trainer"])
def test_no_import_loop(package):
    assert cycles(import_graph(ROOT, package)) == []


@pytest.mark.parametrize("module", MATH)
def test_the_math_modules_import_no_backend_io_or_engine(module):
    below = reachable(import_graph(), module)
    assert not {
        name
        for name in below
        if name.startswith(("ccfkit.backends", "ccfkit.io"))
        or name in ("ccfkit.engine", "ccfkit.store", "ccfkit.pipeline", "ccfkit.cli")
    }


def test_io_does_not_import_the_simulation():
    graph = import_graph()
    for module in (name for name in graph if name.startswith("ccfkit.io")):
        assert not {n for n in reachable(graph, module) if n.startswith("ccfkit.simulate")}


def test_ccfkit_never_imports_the_trainer_and_torch_only_for_bf16():
    """torch is the trainer's; the engine borrows it only for the optional bf16 product."""
    assert "trainer" not in _outside_imports()
    assert "torch" not in _outside_imports(skip={"ccfkit/backends/_bf16.py"})
    assert "torch" in _outside_imports()  # the check sees the one place that does


def test_reading_a_store_loads_neither_engine_nor_numba():
    pytest.importorskip("torch")  # trainer.data is the trainer's store reader
    code = (
        "import sys, trainer.data, ccfkit.store; "
        "print(sorted(m for m in ('ccfkit.engine', 'ccfkit.backends', 'numba') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_engine_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; "  # any 'import torch' now raises
        "import ccfkit, ccfkit.engine, ccfkit.pipeline, ccfkit.cli, ccfkit.simulate.cxi_file; "
        "ccfkit.compute_maps"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


if __name__ == "__main__":
    edges = import_graph()
    if "--dot" in sys.argv:
        print("digraph ccfkit {\n  rankdir=LR;")
        for name in sorted(edges):
            for target in sorted(edges[name]):
                print(f'  "{name}" -> "{target}";')
        print("}")
    else:
        for name in sorted(edges):
            print(f"{name:28} -> {', '.join(sorted(edges[name])) or '-'}")
        print(f"loops: {cycles(edges) or 'none'}")
