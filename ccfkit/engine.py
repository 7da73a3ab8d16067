"""The one-call entry point: images in, merged CCF maps out."""

from __future__ import annotations

import numpy as np

from .backends import get_backend
from .ccf import Scale
from .polar import PlanSpec

__all__ = ["compute_maps"]


def compute_maps(
    images,
    *,
    order: int = 8,
    center: tuple[float, float] | None = None,
    mask=None,
    q_bins: int = 224,
    phi_bins: int = 512,
    r_min: float = 0.0,
    r_max: float | None = None,
    delta: float = 0.0,
    scale: Scale | str = "maxabs",
    backend="auto",
):
    """Merged two-point cross-correlation maps of diffraction images (§5.3).

    Resamples each image to polar coordinates (SPEC §1), takes the angular
    Fourier order ``order`` (Eq. 15), and merges the full map at separation
    ``delta`` (Eq. 13, lower triangle and diagonal) with the order-n map
    (Eq. 14, upper triangle), each triangle scaled on its own (SPEC §4).

    Parameters
    ----------
    images : (B, H, W) or (H, W) array
        Detector images, row ``y`` then column ``x``. NaN/inf pixels are
        treated as masked. A CuPy array stays on the GPU.
    order : int
        Angular order ``n`` of the upper triangle (the paper uses 8).
    center : (float, float), optional
        Beam centre ``(cx, cy)`` in pixels, ``cx`` along columns; default the
        middle of the detector.
    mask : (H, W) bool array, optional
        True for good pixels.
    q_bins, phi_bins : int
        Radial bins ``Q`` (the map is Q x Q) and angular samples ``P``.
    r_min, r_max : float
        Radial range in pixels; ``r_max`` defaults to the largest full circle.
    delta : float
        Angular separation of the full map, in radians.
    scale : {"maxabs", "none"}
        ``"maxabs"`` divides each triangle by its largest absolute value;
        ``"none"`` returns the maps of SPEC §3.
    backend : {"auto", "numpy", "numba", "cupy"} or Backend
        Where to compute (see :mod:`ccfkit.backends`).

    Returns
    -------
    maps : (B, Q, Q) float32 array, or (Q, Q) for a single (H, W) image
        ``maps[b, i, j]``: full map for ``i >= j``, order map for ``i < j``;
        row/column ``k`` is the radius ``r_k`` of
        :func:`~ccfkit.polar.make_polar_plan` (also in ``plan.radius``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> maps = compute_maps(rng.random((2, 65, 65)), q_bins=32, phi_bins=64)
    >>> maps.shape, maps.dtype
    ((2, 32, 32), dtype('float32'))
    """
    engine = get_backend(backend)
    single = np.ndim(images) == 2
    if np.ndim(images) not in (2, 3):
        raise ValueError(f"images must be (B, H, W) or (H, W), got shape {np.shape(images)}")
    shape = tuple(np.shape(images)[-2:])
    plan = PlanSpec.describe(
        shape,
        center=center,
        mask=None if mask is None else _host(mask),
        q_bins=q_bins,
        phi_bins=phi_bins,
        r_min=r_min,
        r_max=r_max,
    ).plan()  # built once per geometry, then reused by later calls
    if not 0 <= order <= phi_bins // 2:
        raise ValueError(f"order must lie in 0..phi_bins/2 = 0..{phi_bins // 2}, got {order}")
    batch = engine.as_batch(images, plan.shape)
    maps = engine.merged_maps(
        batch, plan, order=int(order), delta=float(delta), scale=Scale(scale)
    )
    if not _on_gpu(images):
        maps = engine.to_numpy(maps)
    return maps[0] if single else maps


def _host(array) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


def _on_gpu(array) -> bool:
    return type(array).__module__.startswith("cupy")
