"""The public entry points: :func:`compute_maps`, and each stage on a chosen backend.

The math modules (:mod:`~ccfkit.polar`, :mod:`~ccfkit.fourier`,
:mod:`~ccfkit.ccf`) hold the definitions, array-generic; the backends apply
them; this module is where a backend is chosen (one direction of import:
engine -> backends -> math).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .backends import get_backend
from .ccf import Estimator, MapSettings, Precision, Scale
from .polar import PlanSpec, PolarImages, PolarPlan, RingGrid

__all__ = ["angular_fourier", "compute_maps", "full_map", "merge_maps", "order_map", "resample"]


def compute_maps(
    images,
    *,
    orders: Sequence[int] | None = None,
    order: int | None = None,
    center: tuple[float, float] | None = None,
    mask=None,
    q_bins: int = 224,
    phi_bins: int = 512,
    r_min: float | str = 0.0,
    r_max: float | None = None,
    min_ring_fraction: float = 0.5,
    delta: float = 0.0,
    estimator: Estimator | str = "ring",
    scale: Scale | str = "maxabs",
    precision: Precision | str = "float32",
    backend="auto",
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
        Detector images, row ``y`` then column ``x``. NaN/inf pixels are
        treated as masked. A CuPy array stays on the GPU.
    orders : sequence of int, optional
        Angular orders ``n``; default ``(8,)``, the paper's single merged map.
    order : int, optional
        One order: ``order=n`` is ``orders=(n,)``.
    center : (float, float), optional
        Beam centre ``(cx, cy)`` in pixels, ``cx`` along columns; default the
        middle of the detector.
    mask : (H, W) bool array, optional
        True for good pixels.
    q_bins, phi_bins : int
        Radial bins ``Q`` (the map is Q x Q) and angular samples ``P``.
    r_min : float or "auto"
        Inner radius in pixels; ``"auto"``: the smallest radius from which
        every ring is used under the mask.
    r_max : float, optional
        Outer radius in pixels; defaults to the largest full circle.
    min_ring_fraction : float in [0, 1]
        Rings with a smaller fraction of valid samples are unused: 0 in every
        map and in no normalisation.
    delta : float
        Angular separation of the full map, in radians.
    estimator : {"ring", "mask-corrected"}
        The order-n estimator (docs/ccf.md): Eq. 14 from each ring's
        coefficients (the paper's), or the Fourier component of the
        mask-corrected full map over all lags, free of mask leakage.
    scale : {"maxabs", "ring", "none"}
        ``"maxabs"`` divides each triangle by its largest absolute value;
        ``"ring"`` divides by the two rings' mean intensities (minus 1 on the
        full triangle) and clips to [-1, 1]; ``"none"`` keeps intensity units.
    precision : {"float32", "bf16", "bf16-emulated"}
        The arithmetic of the full map's product (docs/ccf.md, "Precision"):
        ``"bf16"`` rounds its inputs to bfloat16 and sums in float32 where the
        hardware has bf16 matrix units, and runs in float32 (logged) elsewhere;
        ``"bf16-emulated"`` rounds them on any hardware (slower than float32).
    backend : {"auto", "numpy", "numba", "cupy"} or Backend
        Where to compute (see :mod:`ccfkit.backends`).

    Returns
    -------
    maps : float32 array
        (B, Q, Q) for one order, (B, C, Q, Q) for ``C`` orders; the batch axis
        is dropped for a single (H, W) image. ``maps[b, i, j]``: full map for
        ``i >= j``, order map for ``i < j``; row/column ``k`` is the radius
        ``r_k`` of :func:`~ccfkit.polar.make_polar_plan` (also in ``plan.radius``).

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
    if order is not None and orders is not None:
        raise TypeError("give either order or orders, not both")
    settings = MapSettings(
        orders=(order,) if order is not None else (8,) if orders is None else tuple(orders),
        delta=delta,
        estimator=estimator,
        scale=scale,
        precision=precision,
    )
    shape = tuple(np.shape(images)[-2:])
    grid = RingGrid(q_bins, phi_bins, r_min, r_max, min_ring_fraction)
    plan = PlanSpec.describe(
        shape, center=center, mask=None if mask is None else _host(mask), grid=grid
    ).plan()  # built once per geometry, then reused by later calls
    batch = engine.as_batch(images, plan.shape)
    maps = engine.merged_maps(batch, plan, settings)
    if not _on_gpu(images):
        maps = engine.to_numpy(maps)
    return maps[0] if single else maps


def resample(images, plan: PolarPlan, *, backend="numpy") -> PolarImages:
    """Resample a batch of images onto the polar grid of ``plan``.

    Parameters
    ----------
    images : (B, H, W) or (H, W) array
        Detector images; NaN/inf pixels become invalid samples.
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
