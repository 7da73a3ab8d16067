"""The walls of the architecture (docs/architecture.md), checked on the import graph.

The graph holds every ``import`` and ``from ... import`` statement of every
module of ``ccfkit``, ``trainer`` and ``ccfsort``, those inside functions
(imported on use) included. Also checked here: the size of modules and
functions, and that no text points outside the repository. Draw the graph with::

    python tests/test_layers.py            # one line per module: what it imports
    python tests/test_layers.py --dot      # Graphviz: ... | dot -Tsvg > imports.svg
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The three packages, bottom to top (docs/architecture.md).
PACKAGES = ("ccfkit", "trainer", "ccfsort")
#: The math: formulas of docs/ccf.md on arrays, with no backend, I/O or engine.
MATH = ("ccfkit.polar", "ccfkit.fourier", "ccfkit.ccf")
#: What the trainer proper may import from ccfkit: the store (its reader), the
#: atomic file writer, the output guard, provenance. Light modules: no numba, no dask.
TRAINER_MAY_IMPORT = ("ccfkit.store", "ccfkit.atomic", "ccfkit.outputs", "ccfkit.provenance")
#: The command lines: the only modules that import the workflows of ccfsort (on use).
COMMAND_LINES = ("ccfkit.cli", "trainer.cli", "trainer.__main__")
#: What importing the store reader, the trainer's modules and its command line must not load.
HEAVY = ("numba", "dask", "ccfkit.engine", "ccfkit.pipeline")
LIGHT_IMPORTS = (
    "ccfkit.store", "trainer.data", "trainer.model", "trainer.loop", "trainer.inference",
    "trainer.cli",
)  # fmt: skip


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path, name: str) -> str:
    """The package that relative imports in the file ``path`` (module ``name``) start from."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The absolute module name of ``from ... import``, relative ones resolved in ``package``."""
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
    return base


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that the file ``path`` (module ``name``) imports."""
    package = _package_of(path, name)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
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


def import_graph(
    root: Path = ROOT, package: str | tuple[str, ...] = "ccfkit"
) -> dict[str, set[str]]:
    """``{module: modules of the packages it imports}`` over every ``.py`` file of ``package``.

    ``package``: one package name, or several (edges between them included).
    A submodule import (``from ccfkit.io.cxi import x``) counts as an edge to
    ``ccfkit.io.cxi`` only, not to the packages above it.
    """
    packages = (package,) if isinstance(package, str) else package
    files = {
        _module_name(p, root): p for name in packages for p in sorted((root / name).rglob("*.py"))
    }
    known = set(files)
    return {name: _imports(path, name, known) for name, path in files.items()}


def _in(module: str, packages) -> bool:
    """Whether ``module`` is one of ``packages`` or inside one (``a.b`` is in ``a``)."""
    return any(module == p or module.startswith(p + ".") for p in packages)


def _load_time_imports(path: Path) -> set[str]:
    """Top-level names a module imports when it is loaded (every import outside a function)."""
    names, todo = set(), [ast.parse(path.read_text())]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module.split(".")[0])
        todo.extend(ast.iter_child_nodes(node))
    return names


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


def test_every_relative_import_names_a_module_of_its_own_package():
    """``from .config import X`` in a module moved to another package finds no ``config``."""
    missing = []
    for package in PACKAGES:
        files = {_module_name(p, ROOT): p for p in (ROOT / package).rglob("*.py")}
        for name, path in sorted(files.items()):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level:
                    target = _absolute(node, _package_of(path, name))
                    if target not in files:
                        missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {target}")
    assert missing == []


def test_the_architecture_page_names_the_tests_of_this_module():
    """docs/architecture.md gives each wall's test by name: those tests exist here."""
    named = set(re.findall(r"`(test_\w+)`", (ROOT / "docs" / "architecture.md").read_text()))
    assert len(named) >= 8
    assert sorted(t for t in named if not callable(globals().get(t))) == []


def test_no_import_loop_within_or_between_the_packages():
    assert cycles(import_graph(ROOT, PACKAGES)) == []


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


def test_ccfkit_never_imports_the_trainer_or_ccfsort_and_torch_only_for_bf16():
    """The engine is the bottom layer; torch is the trainer's, borrowed only for bf16 products."""
    assert not {"trainer", "ccfsort"} & _outside_imports()
    assert "torch" not in _outside_imports(skip={"ccfkit/backends/_bf16.py"})
    assert "torch" in _outside_imports()  # the check sees the one place that does


def test_the_trainer_proper_imports_only_the_light_modules_of_ccfkit():
    """model, data, loop, inference...: the store reader, atomic files, provenance; no ccfsort."""
    graph = import_graph(ROOT, PACKAGES)
    wrong = {
        module: sorted(
            target
            for target in targets
            if _in(target, ("ccfsort",))
            or (_in(target, ("ccfkit",)) and not _in(target, TRAINER_MAY_IMPORT))
        )
        for module, targets in graph.items()
        if _in(module, ("trainer",)) and module not in COMMAND_LINES
    }
    assert {module: targets for module, targets in wrong.items() if targets} == {}


def test_only_the_command_lines_import_ccfsort_and_only_on_use():
    graph = import_graph(ROOT, PACKAGES)
    importers = {
        module
        for module, targets in graph.items()
        if not _in(module, ("ccfsort",)) and any(_in(t, ("ccfsort",)) for t in targets)
    }
    assert importers <= set(COMMAND_LINES)
    for module in importers:  # inside the command that needs it, not when the CLI loads
        path = ROOT / (module.replace(".", "/") + ".py")
        assert "ccfsort" not in _load_time_imports(path), module


def test_the_store_reader_the_trainer_and_its_command_line_load_no_engine():
    """Importing each of LIGHT_IMPORTS (one fresh process) loads no numba, dask, engine, build."""
    pytest.importorskip("torch")  # the trainer's modules import it
    code = (
        "import importlib, json, sys\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = {}\n"
        f"for name in {LIGHT_IMPORTS!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded[name] = sorted(m for m in heavy if m in sys.modules)\n"
        "print(json.dumps(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert json.loads(result.stdout) == {name: [] for name in LIGHT_IMPORTS}


def test_the_engine_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; "  # any 'import torch' now raises
        "import ccfkit, ccfkit.engine, ccfkit.pipeline, ccfkit.cli, ccfkit.simulate.cxi_file; "
        "ccfkit.compute_maps"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------
# Readable units: no module over 700 lines, no function body over 90
# --------------------------------------------------------------------------

MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 90
#: The units over those limits today, each at most the size named (it may only
#: shrink): remove an entry once its unit is split; the list should end empty.
ALLOWED_LONG: dict[str, int] = {}


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its docstring left out (to the last line of the body)."""
    body = node.body
    if (
        len(body) > 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    return node.end_lineno - body[0].lineno + 1


def _functions(tree: ast.AST, prefix: str = ""):
    """``(qualified name, node)`` of every function in ``tree``: methods and nested ones too."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from _functions(node, name + ".")
        else:
            yield from _functions(node, prefix)


def unit_sizes(root: Path = ROOT, packages=PACKAGES) -> dict[str, int]:
    """``{"pkg/module.py": lines, "pkg/module.py:function": body lines}`` of every unit."""
    sizes = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            key = path.relative_to(root).as_posix()
            text = path.read_text()
            sizes[key] = len(text.splitlines())
            for name, node in _functions(ast.parse(text)):
                sizes[f"{key}:{name}"] = _body_lines(node)
    return sizes


def too_long(sizes: dict[str, int]) -> dict[str, int]:
    """The units of ``sizes`` over their limit (modules 700 lines, function bodies 90)."""
    return {
        key: n
        for key, n in sizes.items()
        if n > (MAX_FUNCTION_LINES if ":" in key else MAX_MODULE_LINES)
    }


def test_unit_sizes_count_bodies_without_docstrings(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(91))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(
        f'def long():\n    """Doc."""\n{body}\n\n\nclass C:\n    def short(self):\n'
        '        """Doc\n\n        more.\n        """\n        return 1\n'
    )
    sizes = unit_sizes(tmp_path, ("pkg",))
    assert sizes == {"pkg/m.py": 102, "pkg/m.py:long": 91, "pkg/m.py:C.short": 1}
    assert too_long(sizes) == {"pkg/m.py:long": 91}


def test_no_module_over_700_lines_and_no_function_body_over_90():
    over = too_long(unit_sizes())
    new = {key: n for key, n in over.items() if key not in ALLOWED_LONG}
    grown = {key: n for key, n in over.items() if n > ALLOWED_LONG.get(key, n)}
    assert new == {}, "split these units"
    assert grown == {}, "these units may only shrink"


def test_the_allow_list_of_long_units_names_only_current_ones():
    """An entry whose unit is gone or within the limit is struck off, so the list shrinks."""
    over = too_long(unit_sizes())
    assert sorted(set(ALLOWED_LONG) - set(over)) == [], "strike these off ALLOWED_LONG"


# --------------------------------------------------------------------------
# No text points outside the repository (cite docs/ or the paper)
# --------------------------------------------------------------------------

#: Written so that this file does not match itself.
OUTSIDE_POINTERS = re.compile(
    r"\bthe\s+issue\b|\bissues?\s+#?\d|\bpromises?\s+\(\d+\)|\.\./shared\b|/work/+shared\b"
    r"|(?<![\w./-])shared/(?-i:[A-Z]+)\.md",
    re.IGNORECASE,
)
#: A page named in capitals (a notes file): outside the repository unless the repository has it.
UPPER_CASE_PAGE = re.compile(r"\b[A-Z][A-Z_]*\.md\b")
#: Where the project's text lives: code, tests, benchmarks, docs.
TEXT = ("ccfkit", "trainer", "ccfsort", "tests", "benchmarks", "docs")
TEXT_FILES = ("README.md", "Makefile", "pyproject.toml", "environment.yml")
SUFFIXES = {".py", ".md", ".toml", ".json", ".c", ".txt", ".yml", ".cfg", ".sh"}


def outside_pointers(root: Path = ROOT) -> list[str]:
    """``path:line: text`` of every line of the project's text that points outside it."""
    paths = [root / name for name in TEXT_FILES if (root / name).is_file()]
    for folder in TEXT:
        paths += [p for p in sorted((root / folder).rglob("*")) if p.suffix in SUFFIXES]
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            pages = UPPER_CASE_PAGE.findall(line)
            if OUTSIDE_POINTERS.search(line) or any(not (root / p).is_file() for p in pages):
                found.append(f"{path.relative_to(root).as_posix()}:{number}: {line.strip()}")
    return found


def test_the_pointer_check_finds_each_kind(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# A project\n")
    lines = [
        "as the " + "issue asks",
        "the baseline of promise" + " (1)",
        "see ../" + "shared/" + "SPEC" + ".md",
        "/work/" + "shared/seed/paper.txt",
        "measured in shared/" + "PERFORMANCE" + ".md",
        "since issue" + " 14",
        "the set-up of PERFORMANCE" + ".md",
        "the paper (Zimmermann et al., 2019), docs/ccf.md: fine",
        "an issue of scale; a shared/ folder; promise (not a number); README.md: fine",
    ]
    (tmp_path / "docs" / "page.md").write_text("\n".join(lines) + "\n")
    assert [hit.split(":")[1] for hit in outside_pointers(tmp_path)] == list("1234567")


def test_no_text_points_outside_the_repository():
    assert outside_pointers() == []


if __name__ == "__main__":
    edges = import_graph(ROOT, PACKAGES)
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
