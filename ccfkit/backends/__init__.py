"""Backends: the same computation on NumPy (reference), Numba (CPU) and CuPy (GPU).

A backend only *applies* a :class:`~ccfkit.polar.PolarPlan`; the geometry is
the plan's. ``get_backend`` names them:

========  ==============================================================
numpy     The reference and test oracle: simple, array-generic, float64.
numba     The CPU default: fused nogil kernels + BLAS, threads over images.
cupy      The GPU: the reference code on CuPy arrays, float32, cuBLAS.
auto      cupy when CUDA is usable, else numba, else numpy (logged).
========  ==============================================================
"""

from __future__ import annotations

import functools
import logging

from ._base import Backend, BackendUnavailableError

__all__ = ["NAMES", "Backend", "BackendUnavailableError", "available_backends", "get_backend"]

logger = logging.getLogger(__name__)

#: Backend names in the order ``"auto"`` tries them.
NAMES = ("cupy", "numba", "numpy")


@functools.cache
def _make(name: str) -> Backend:
    """The backend of that name (one instance per process); BackendUnavailableError if it cannot run.

    Unavailability is not cached: an exception leaves no cache entry, so a
    failed CuPy import is retried on the next call.
    """
    if name == "numpy":
        from .array import NumpyBackend

        return NumpyBackend()
    if name == "numba":
        from .numba import NumbaBackend

        return NumbaBackend()
    if name == "cupy":
        from .array import CupyBackend

        return CupyBackend()
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(NAMES + ('auto',))}")


def get_backend(backend: str | Backend = "auto") -> Backend:
    """Resolve a backend name (or pass a Backend instance through).

    Parameters
    ----------
    backend : {"auto", "numpy", "numba", "cupy"} or Backend
        An explicit name that cannot run raises; ``"auto"`` steps down from
        CuPy to Numba to NumPy and logs why.

    Returns
    -------
    Backend

    Raises
    ------
    BackendUnavailableError
        When an explicitly requested backend cannot run here.
    """
    if isinstance(backend, Backend):
        return backend
    name = str(backend).lower()
    return _make(name) if name != "auto" else _auto()


@functools.lru_cache(maxsize=1)
def _auto() -> Backend:
    """The first backend of NAMES that runs here (decided once per process)."""
    for candidate in NAMES:
        try:
            backend = _make(candidate)
        except BackendUnavailableError as error:
            logger.info("backend %s unavailable (%s); trying the next one", candidate, error)
            continue
        logger.info("backend auto: %s", candidate)
        return backend
    raise AssertionError("the numpy backend is always available")  # pragma: no cover


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine."""
    names = []
    for name in NAMES:
        try:
            _make(name)
        except BackendUnavailableError:
            continue
        names.append(name)
    return names
