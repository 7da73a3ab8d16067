"""The input readers' error type (re-exported by :mod:`ccfkit.io.source`)."""

from __future__ import annotations

__all__ = ["InputError", "MissingGeometry"]


class InputError(ValueError):
    """The input cannot be processed; the message says why, in one line."""


class MissingGeometry(InputError):
    """Module-stacked frames given without the geometry that places their pixels."""
