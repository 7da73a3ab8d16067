"""The public entry points: :func:`compute_maps`, and each stage on a chosen backend.

The math modules (:mod:`~ccfkit.polar`, :mod:`~ccfkit.fourier`,
:mod:`~ccfkit.ccf`) hold the definitions, array-generic; the backends apply
them; this module is where a backend is chosen (one direction of import:
engine -> backends -> math).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields as dataclass_fields

import numpy as np

from .backends import get_backend
from .ccf import MapSettings, Scale, resolve_settings
from .geometry import ScatteringGeometry
from .polar import PlanSpec, PolarImages, PolarPlan, RingGrid

__all__ = ["angular_fourier", "compute_maps", "full_map", "merge_maps", "order_map", "resample"]


def compute_maps(
    images,
    *,
    center: tuple[float, float] | None = None,
    mask=None,
    grid: RingGrid | None = None,
    settings: MapSettings | None = None,
    backend="auto",
    scattering: ScatteringGeometry | None = None,
    out=None,
    **fields,
):
    """Merged two-point cross-correlation maps of diffraction images (§5.3).

    Resamples each image to polar coordinates (docs/ccf.md), keeps the rings
    with enough valid samples, takes the angular Fourier orders (Eq. 15), and
    merges the full map at separation ``delta`` (Eq. 13, lower triangle and
    diagonal) with the first order's map (Eq. 14, or the mask-corrected
    estimator; upper triangle), each triangle scaled on its own. Each further
    order adds a channel holding its order map.

    Parameters
    ----------
    images : (B, H, W) or (H, W) array
        Detector images, row ``y`` then column ``x``. Unusable pixels (NaN,
        +-inf, at least :data:`~ccfkit.polar.HUGE_PIXEL` = 2^56 in magnitude:
        their products would overflow float32) are masked in their image. A
        CuPy array stays on the GPU.
    center : (float, float), optional
        Beam centre ``(cx, cy)`` in pixels, ``cx`` along columns; default the
        middle of the detector.
    mask : (H, W) bool array, optional
        True for good pixels.
    grid : RingGrid, optional
        The polar grid (:class:`~ccfkit.polar.RingGrid`: ``q_bins``,
        ``phi_bins``, ``r_min``, ``r_max``, ``min_ring_fraction``, ``q_range``).
    settings : MapSettings, optional
        What maps to compute (:class:`~ccfkit.ccf.MapSettings`: ``orders``,
        ``delta``, ``estimator``, ``scale``, ``precision``).
    backend : {"auto", "numpy", "numba", "cupy"} or Backend
        Where to compute (see :mod:`ccfkit.backends`).
    scattering : ScatteringGeometry, optional
        Pixel size, distance and wavelength (:mod:`ccfkit.geometry`): needed
        by a grid whose rings are placed in momentum transfer (``q_range``).
    out : float32 array, optional
        The array to write the maps into, of the shape returned, C-contiguous,
        of the backend's array type; returned. A buffer reused from call to
        call spares the operating system's zeroing of fresh memory.
    **fields
        Instead of ``grid`` and ``settings``: any of their fields as keywords,
        the others at their defaults (``order=n`` means ``orders=(n,)``):
        ``orders`` (default ``(8,)``, the paper's single merged map), ``order``,
        ``q_bins``, ``phi_bins``, ``r_min`` (a number, or ``"auto"``: the
        smallest radius from which every ring is used under the mask),
        ``r_max``, ``min_ring_fraction``, ``delta`` (radians), ``estimator``
        (``"ring"``, Eq. 14, or ``"mask-corrected"``, docs/ccf.md), ``scale``
        and ``precision`` (docs/ccf.md, "Precision").

    Returns
    -------
    maps : float32 array
        (B, Q, Q) for one order, (B, C, Q, Q) for ``C`` orders; the batch axis
        is dropped for a single (H, W) image. ``maps[b, i, j]``: full map for
        ``i >= j``, order map for ``i < j``; row/column ``k`` is the radius
        ``r_k`` of :func:`~ccfkit.polar.make_polar_plan` (also in ``plan.radius``).
        ``out`` itself when given.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> maps = compute_maps(rng.random((2, 65, 65)), q_bins=32, phi_bins=64)
    >>> maps.shape, maps.dtype
    ((2, 32, 32), dtype('float32'))
    >>> compute_maps(rng.random((2, 65, 65)), orders=(8, 2), q_bins=32, phi_bins=64).shape
    (2, 2, 32, 32)
    """
    engine = get_backend(backend)
    single = np.ndim(images) == 2
    if np.ndim(images) not in (2, 3):
        raise ValueError(f"images must be (B, H, W) or (H, W), got shape {np.shape(images)}")
    grid_keys = {f.name for f in dataclass_fields(RingGrid)} & fields.keys()
    grid = RingGrid.resolve(grid, **{key: fields.pop(key) for key in grid_keys})
    settings = resolve_settings(settings, **fields)
    shape = tuple(np.shape(images)[-2:])
    plan = PlanSpec.describe(
        shape,
        center=center,
        mask=None if mask is None else _host(mask),
        grid=grid,
        scattering=scattering,
    ).plan()  # built once per geometry, then reused by later calls
    batch = engine.as_batch(images, plan.shape)
    target = out[None] if single and out is not None else out  # (Q, Q) -> (1, Q, Q)
    maps = engine.merged_maps(batch, plan, settings, out=target)
    if out is not None:
        return out
    if not _on_gpu(images):
        maps = engine.to_numpy(maps)
    return maps[0] if single else maps


def resample(images, plan: PolarPlan, *, backend="numpy") -> PolarImages:
    """Resample a batch of images onto the polar grid of ``plan``.

    Parameters
    ----------
    images : (B, H, W) or (H, W) array
        Detector images; unusable pixels (NaN, +-inf, huge) make invalid samples.
    plan : PolarPlan
        The geometry, from :func:`~ccfkit.polar.make_polar_plan`.
    backend : str or Backend
        ``"numpy"`` (reference), ``"numba"``, ``"cupy"`` or ``"auto"``.

    Returns
    -------
    PolarImages
        Values and validity of shape (B, Q, P), with the radii and angles.
    """
    engine = get_backend(backend)
    return engine.resample(engine.as_batch(images, plan.shape), plan)


def angular_fourier(values, valid, orders: Sequence[int] | None = None, *, backend="numpy"):
    """Angular Fourier coefficients ``F[b, k, n]`` of polar images (Eq. 15).

    Parameters
    ----------
    values, valid : (B, Q, P) arrays
        A :class:`~ccfkit.polar.PolarImages` batch's values and validity.
    orders : sequence of int, optional
        Orders ``n`` to compute; ``None`` for all ``0 .. P/2``.
    backend : str or Backend

    Returns
    -------
    (B, Q, N) complex array
    """
    return get_backend(backend).fourier(values, valid, orders)


def full_map(values, valid, delta: float = 0.0, *, backend="numpy"):
    """Full CCF (Eq. 13) of polar images; see :func:`~ccfkit.ccf.full_map_reference`."""
    return get_backend(backend).full_map(values, valid, delta)


def order_map(coefficients, *, backend="numpy"):
    """Order-n CCF (Eq. 14); see :func:`~ccfkit.ccf.order_map_reference`."""
    return get_backend(backend).order_map(coefficients)


def merge_maps(full, order, scale: Scale | str = Scale.MAXABS, means=None, *, backend="numpy"):
    """Merged triangle map (§5.3); see :func:`~ccfkit.ccf.merge_maps_reference`."""
    return get_backend(backend).merge_maps(full, order, scale, means)


def _host(array) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


def _on_gpu(array) -> bool:
    return type(array).__module__.startswith("cupy")
