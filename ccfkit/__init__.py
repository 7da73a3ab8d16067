"""ccfkit: two-point cross-correlation maps of single-shot diffraction images.

The one-call entry point is :func:`compute_maps`; beneath it each stage is
usable on its own: :func:`make_polar_plan` and :func:`resample`,
:func:`angular_fourier` (Eq. 15), :func:`full_map` and :func:`order_map`
(Eqs. 13, 14), :func:`merge_maps` (§5.3); docs/ccf.md states them.
Backends: :func:`get_backend`.

The names are loaded on first use (PEP 562), so that ``import ccfkit.store``
(the trainer's store reader) does not load the engine.
"""

from __future__ import annotations

import importlib

from ._version import __version__

#: public name -> the module that defines it
_EXPORTS = {
    "available_backends": "backends",
    "get_backend": "backends",
    "Estimator": "ccf",
    "MapSettings": "ccf",
    "Scale": "ccf",
    "angular_fourier": "engine",
    "compute_maps": "engine",
    "full_map": "engine",
    "merge_maps": "engine",
    "order_map": "engine",
    "resample": "engine",
    "PolarImages": "polar",
    "PolarPlan": "polar",
    "default_r_max": "polar",
    "make_polar_plan": "polar",
}

__all__ = [  # noqa: RUF022 - grouped by module, as _EXPORTS
    "__version__",
    "available_backends",
    "get_backend",
    "Estimator",
    "MapSettings",
    "Scale",
    "angular_fourier",
    "compute_maps",
    "full_map",
    "merge_maps",
    "order_map",
    "resample",
    "PolarImages",
    "PolarPlan",
    "default_r_max",
    "make_polar_plan",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ccfkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
