"""Figures: a diffraction image, its polar resampling and its merged CCF map.

Figures are :class:`matplotlib.figure.Figure` objects, drawn without pyplot:
nothing here touches matplotlib's global backend or figure registry.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .polar import RingGrid

__all__ = ["draw_image", "draw_merged_map", "draw_polar", "estimators_figure", "stages_figure"]


def draw_image(ax, image: np.ndarray, *, mask: np.ndarray | None = None, title: str = ""):
    """Draw a detector image on a log scale (masked and non-positive pixels blank).

    Parameters
    ----------
    ax : matplotlib Axes
    image : (H, W) array
        Intensities, row 0 at the top.
    mask : (H, W) bool array, optional
        True for good pixels.
    """
    shown = np.array(image, dtype=np.float64)
    shown[~np.isfinite(shown) | (shown <= 0)] = np.nan
    if mask is not None:
        shown[~np.asarray(mask, dtype=bool)] = np.nan
    ax.imshow(np.log10(shown), cmap="magma", interpolation="nearest")
    ax.set_title(title or "image (log10)")
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")


def draw_polar(ax, values: np.ndarray, valid: np.ndarray, radius: np.ndarray, *, title: str = ""):
    """Draw a polar image (radius down, angle across) on a log scale.

    Parameters
    ----------
    values, valid : (Q, P) arrays
    radius : (Q,) array
        Radial bin centres in pixels.
    """
    shown = np.where(valid & (values > 0), values, np.nan)
    extent = (0.0, 360.0, float(radius[-1]), float(radius[0]))
    ax.imshow(np.log10(shown), cmap="magma", aspect="auto", extent=extent, interpolation="nearest")
    ax.set_title(title or "polar image (log10)")
    ax.set_xlabel("phi (deg, from +x towards +y)")
    ax.set_ylabel("r (px)")


def draw_merged_map(
    ax, merged: np.ndarray, radius: np.ndarray, *, order: int = 8, title: str = "", linthresh=1e-5
):
    """Draw a merged map: full CCF below the diagonal, order-n CCF above.

    The colour scale is symmetric-logarithmic (linear within ``linthresh`` of
    0): diffraction intensities fall by decades with radius, and so do maps.

    Parameters
    ----------
    merged : (Q, Q) array
        Each triangle scaled to [-1, 1].
    radius : (Q,) array
        Radial bin centres in pixels, for the axes.
    """
    extent = (float(radius[0]), float(radius[-1]), float(radius[-1]), float(radius[0]))
    from matplotlib.colors import SymLogNorm

    finite = np.abs(merged[np.isfinite(merged)])  # a map with NaN/inf (old stores) still draws
    limit = float(finite.max()) if finite.size else 1.0
    limit = limit or 1.0
    norm = SymLogNorm(linthresh=linthresh * limit, vmin=-limit, vmax=limit)
    image = ax.imshow(merged, cmap="RdBu_r", norm=norm, extent=extent)
    ax.set_title(title or f"merged map: full (lower), order {order} (upper)")
    ax.set_xlabel("r_j (px)")
    ax.set_ylabel("r_i (px)")
    return image


def stages_figure(image, polar_values, polar_valid, merged, radius, *, mask=None, order=8):
    """One row: the image, its polar resampling and its merged map.

    Parameters
    ----------
    image : (H, W) array
    polar_values, polar_valid : (Q, P) arrays
    merged : (Q, Q) array
    radius : (Q,) array

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.6))
    axes = fig.subplots(1, 3)
    draw_image(axes[0], image, mask=mask)
    draw_polar(axes[1], polar_values, polar_valid, radius)
    colours = draw_merged_map(axes[2], merged, radius, order=order)
    fig.colorbar(colours, ax=axes[2], fraction=0.046)
    fig.tight_layout()
    return fig


def estimators_figure(image, mask, center, *, q_bins=RingGrid.q_bins, phi_bins=RingGrid.phi_bins,
                      backend="auto"):  # fmt: skip
    """The paper's map and the library's usable rings (``r_min="auto"``) side by side, and the leakage.

    Parameters
    ----------
    image : (H, W) array
        A detector frame.
    mask : (H, W) bool array
        True for good pixels.
    center : (float, float)
        Beam centre ``(cx, cy)``, pixels.
    q_bins, phi_bins : int
        The polar grid of every panel.

    Returns
    -------
    matplotlib Figure
        Top: the frame, its merged map as the paper makes it
        (:data:`~ccfkit.build_config.PAPER_RECIPE`) and with the library's
        usable rings from ``r_min = "auto"`` (:class:`~ccfkit.polar.RingGrid`'s
        ``min_ring_fraction``, 0.5), the mask-corrected estimator and the
        ``ring`` scale. Bottom: the order-8
        triangle of a pure radial profile under the same mask (the library's
        grid), ring and mask-corrected estimators, in units of the real
        frame's largest order-8 entry.
    """
    from matplotlib.figure import Figure

    from .build_config import PAPER_RECIPE
    from .ccf import Estimator, Scale
    from .engine import compute_maps
    from .polar import make_polar_plan

    size = {"q_bins": q_bins, "phi_bins": phi_bins}
    kw = {"center": center, "mask": mask, "backend": backend}
    paper = (replace(PAPER_RECIPE.grid, **size), PAPER_RECIPE.maps)
    usable = (RingGrid(r_min="auto", **size),
              replace(PAPER_RECIPE.maps, estimator=Estimator.MASK_CORRECTED, scale=Scale.RING))  # fmt: skip
    fig = Figure(figsize=(15, 9.4))
    axes = fig.subplots(2, 3)
    draw_image(axes[0, 0], image, mask=mask, title="frame (log10), mask blank")
    for ax, (grid, settings), title in (
        (axes[0, 1], paper, "the paper's: r_min 0, every ring,\nring estimator, maxabs"),
        (axes[0, 2], usable, "usable rings from r_min auto,\nmask-corrected, ring scale"),
    ):
        radius = make_polar_plan(image.shape, center=center, mask=mask, grid=grid).radius
        maps = compute_maps(image, grid=grid, settings=settings, **kw)
        colours = draw_merged_map(ax, maps, radius, title=title)
        fig.colorbar(colours, ax=ax, fraction=0.046)
    radial = _radial_profile_like(image, mask, center)
    draw_image(axes[1, 0], radial, mask=mask, title="its radial profile, same mask (log10)")
    upper = np.triu(np.ones((q_bins, q_bins), bool), 1)
    plan = make_polar_plan(image.shape, center=center, mask=mask, **size)
    for ax, estimator in ((axes[1, 1], Estimator.RING), (axes[1, 2], Estimator.MASK_CORRECTED)):
        common = {**kw, **size, "estimator": estimator, "scale": Scale.NONE}
        real = np.abs(compute_maps(image, **common)[upper]).max()
        leak = compute_maps(radial, **common) / (real or 1.0)
        shown = np.where(upper, leak, np.nan)
        largest = float(np.nanmax(np.abs(shown)))
        extent = (plan.radius[0], plan.radius[-1], plan.radius[-1], plan.radius[0])
        colours = ax.imshow(shown, cmap="RdBu_r", vmin=-largest or -1, vmax=largest or 1,
                            extent=extent)  # fmt: skip
        ax.set_title(
            f"radial profile, order 8, {estimator.value}:\nmax {largest:.1e} of the frame's"
        )
        ax.set_xlabel("r_j (px)")
        ax.set_ylabel("r_i (px)")
        fig.colorbar(colours, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def _radial_profile_like(image, mask, center) -> np.ndarray:
    """A pure radial profile with the frame's azimuthal mean (over good pixels) at each radius."""
    y, x = np.indices(image.shape)
    r = np.hypot(x - center[0], y - center[1])
    good = np.asarray(mask, bool) & np.isfinite(image)
    bins = np.arange(0, r.max() + 1.5)
    sums, _ = np.histogram(r[good], bins, weights=image[good])
    counts, _ = np.histogram(r[good], bins)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    centres = 0.5 * (bins[1:] + bins[:-1])
    return np.interp(r, centres[counts > 0], means[counts > 0])
