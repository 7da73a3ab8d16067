"""The simulator's shared fixture: one small labelled file (the engine's fixtures are
in ``tests/conftest.py``)."""

from __future__ import annotations

import pytest

from .helpers import simulate_file


@pytest.fixture(scope="module")
def cxi_file(tmp_path_factory):
    """32 frames of every kind, 65 px."""
    path = tmp_path_factory.mktemp("sim") / "frames.cxi"
    return simulate_file(path, "--seed", 3, "--radius", 150, 300, "--fluence", 2e4, 2e5, n=32)
