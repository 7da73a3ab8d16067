"""The input readers' error type (re-exported by :mod:`ccfkit.io.source`)."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """The input cannot be processed; the message says why, in one line."""
