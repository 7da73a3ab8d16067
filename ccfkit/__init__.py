"""ccfkit: two-point cross-correlation maps of single-shot diffraction images.

The one-call entry point is :func:`compute_maps`; beneath it each stage is
usable on its own: :func:`make_polar_plan` and :func:`resample` (SPEC §1),
:func:`angular_fourier` (§2), :func:`full_map` and :func:`order_map` (§3),
:func:`merge_maps` (§4). Backends: :func:`get_backend`.
"""

from .backends import available_backends, get_backend
from .ccf import Scale, full_map, merge_maps, order_map
from .engine import compute_maps
from .fourier import angular_fourier
from .polar import PolarImages, PolarPlan, default_r_max, make_polar_plan, resample

__version__ = "0.1.0"

__all__ = [
    "PolarImages",
    "PolarPlan",
    "Scale",
    "__version__",
    "angular_fourier",
    "available_backends",
    "compute_maps",
    "default_r_max",
    "full_map",
    "get_backend",
    "make_polar_plan",
    "merge_maps",
    "order_map",
    "resample",
]
