"""Figures: a diffraction image, its polar resampling and its merged CCF map."""

from __future__ import annotations

import numpy as np

__all__ = ["draw_image", "draw_merged_map", "draw_polar", "stages_figure"]


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

    limit = float(np.nanmax(np.abs(merged))) or 1.0
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
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    draw_image(axes[0], image, mask=mask)
    draw_polar(axes[1], polar_values, polar_valid, radius)
    colours = draw_merged_map(axes[2], merged, radius, order=order)
    fig.colorbar(colours, ax=axes[2], fraction=0.046)
    fig.tight_layout()
    return fig
