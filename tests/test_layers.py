"""The walls of the architecture: the math imports no backend, readers load no engine."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ccfkit"


def _imports(path: Path) -> set[str]:
    """Modules a file imports, relative ones as written (``.backends``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", ["polar", "fourier", "ccf"])
def test_the_math_modules_import_no_backend_and_no_io(module):
    imported = _imports(PACKAGE / f"{module}.py")
    assert not {name for name in imported if "backends" in name or "io" in name.split(".")}


def test_reading_a_store_loads_neither_engine_nor_numba():
    code = (
        "import sys, trainer.data, ccfkit.store; "
        "print(sorted(m for m in ('ccfkit.engine', 'ccfkit.backends', 'numba') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
