"""Shared fixtures of the store's tests."""

from __future__ import annotations

import os

import pytest

from ccfkit.store import direct


@pytest.fixture
def takes_o_direct(tmp_path) -> bool:
    """Whether files in ``tmp_path`` can be opened with O_DIRECT (not on tmpfs, not off Linux)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    probe = tmp_path / "probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o666))
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
    return True


@pytest.fixture
def direct_writes(monkeypatch) -> list[tuple[int, bool]]:
    """``(bytes, whether O_DIRECT wrote them)`` of each O_DIRECT attempt during a test."""
    attempts, real = [], direct.write_blocks_direct

    def spy(path, blocks, nbytes):
        written = real(path, blocks, nbytes)
        attempts.append((nbytes, written))
        return written

    monkeypatch.setattr(direct, "write_blocks_direct", spy)
    return attempts
