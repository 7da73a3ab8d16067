"""The end-to-end demo: patterns made here, maps computed, pictures drawn."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .backends import get_backend
from .ccf import Scale
from .polar import make_polar_plan

logger = logging.getLogger(__name__)


def spheroid_pattern(
    shape: tuple[int, int],
    center: tuple[float, float],
    semi_axes_px: tuple[float, float],
    angle: float,
    *,
    speckle: float = 1.3,
) -> np.ndarray:
    """Small-angle intensity of a uniform particle with an elliptical projection.

    ``I = (3 (sin u - u cos u) / u^3)^2`` with ``u = |k| R(phi)``, where
    ``R(phi)`` is the ellipse's radius along the direction of ``k``: a sphere
    for equal semi-axes, an elongated pattern otherwise.

    Parameters
    ----------
    shape : (int, int)
        ``(H, W)`` in pixels.
    center : (float, float)
        ``(cx, cy)`` in pixels.
    semi_axes_px : (float, float)
        Real-space semi-axes in units of ``1 / (speckle * pixel)``.
    angle : float
        Orientation of the first semi-axis, radians from +x towards +y.
    speckle : float
        Scale between pixels and ``k``.

    Returns
    -------
    (H, W) float32 array, 1 at the centre.
    """
    y, x = np.indices(shape, dtype=np.float64)
    dx, dy = x - center[0], y - center[1]
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = -dx * np.sin(angle) + dy * np.cos(angle)
    a, b = semi_axes_px
    u = speckle * np.sqrt((a * along) ** 2 + (b * across) ** 2) / 100.0
    u = np.where(u < 1e-6, 1e-6, u)
    amplitude = 3 * (np.sin(u) - u * np.cos(u)) / u**3
    return (amplitude**2).astype(np.float32)


def run_demo(out_dir: Path, *, size: int = 259, order: int = 8, backend: str = "auto") -> list[Path]:
    """Compute maps of a sphere and a spheroid pattern and draw them.

    Parameters
    ----------
    out_dir : Path
        Created if needed; receives ``ccf_stages.png`` and ``demo_maps.png``.
    size : int
        Image side in pixels.
    order : int
        Angular order of the upper triangle.
    backend : str
        Backend name for the maps.

    Returns
    -------
    list of Path
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    from .plotting import maps_figure, stages_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    center = ((size - 1) / 2 + 2.5, (size - 1) / 2 - 1.5)
    shapes = [((60.0, 60.0), 0.0), ((80.0, 50.0), 0.6), ((100.0, 40.0), -1.1)]
    clean = np.stack([spheroid_pattern((size, size), center, axes, angle) for axes, angle in shapes])
    photons = rng.poisson(clean * 1e6).astype(np.float32)
    y, x = np.indices((size, size))
    mask = np.hypot(x - center[0], y - center[1]) > 6  # the central hole of an MCP detector

    engine = get_backend(backend)
    plan = make_polar_plan((size, size), center=center, mask=mask)
    logger.info("demo: %d frames of %d x %d on %r", len(photons), size, size, engine)
    merged = engine.to_numpy(
        engine.merged_maps(engine.as_batch(photons, plan.shape), plan, order=order, scale=Scale.MAXABS)
    )
    polar = engine.resample(engine.as_batch(photons[1:2], plan.shape), plan)

    written = []
    fig = stages_figure(
        photons[1],
        engine.to_numpy(polar.values[0]),
        engine.to_numpy(polar.valid[0]),
        merged[1],
        plan.radius,
        mask=mask,
        order=order,
    )
    written.append(out_dir / "ccf_stages.png")
    fig.savefig(written[-1], dpi=90)
    titles = ["sphere", "spheroid, 30 deg", "elongated spheroid, -60 deg"]
    fig = maps_figure(photons, merged, plan.radius, titles=titles, order=order, mask=mask)
    written.append(out_dir / "demo_maps.png")
    fig.savefig(written[-1], dpi=80)
    return written
