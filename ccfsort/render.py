"""Frames and maps as small PNG pictures (bytes, or ``data:`` URIs for a page).

Colours as in ccfkit's figures (:mod:`ccfkit.plotting`): images on a log
scale in ``magma`` (masked, non-positive and missing pixels black), merged
CCF maps on a symmetric-log scale in ``RdBu_r`` (full map below the
diagonal, order-n map above, each triangle scaled to [-1, 1] by the build).
Drawn with :func:`matplotlib.image.imsave` (one pixel per value, no figure):
the page scales them up without smoothing.
"""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np

__all__ = ["data_uri", "image_png", "map_png"]

#: Largest side of a picture, pixels: bigger frames are averaged down in blocks.
MAX_SIDE = 256


def _shrink(values: np.ndarray, max_side: int) -> np.ndarray:
    """Block means (NaN-aware) so that neither side exceeds ``max_side``."""
    factor = -(-max(values.shape) // max_side)
    if factor <= 1:
        return values
    h, w = (values.shape[0] // factor) * factor, (values.shape[1] // factor) * factor
    blocks = values[:h, :w].reshape(h // factor, factor, w // factor, factor)
    with warnings.catch_warnings():  # an all-NaN block stays NaN (drawn black)
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(1, 3))


def _png(rgba: np.ndarray) -> bytes:
    from matplotlib.image import imsave

    buffer = io.BytesIO()
    imsave(buffer, rgba, format="png")
    return buffer.getvalue()


def image_png(image: np.ndarray, *, max_side: int = MAX_SIDE) -> bytes:
    """A diffraction image as PNG bytes, log10 of the intensity in ``magma``.

    Parameters
    ----------
    image : (H, W) array
        Intensities (photons, or the store's resized frames), row 0 on top.
    max_side : int
        Frames larger than this are averaged down in blocks.

    Returns
    -------
    bytes
        An RGBA PNG; pixels without a positive value are black.
    """
    from matplotlib import colormaps

    shown = np.array(image, dtype=np.float64)
    shown[~np.isfinite(shown) | (shown <= 0)] = np.nan
    shown = np.log10(_shrink(shown, max_side))
    finite = np.isfinite(shown)
    rgba = np.zeros(shown.shape + (4,), dtype=np.uint8)
    rgba[..., 3] = 255
    if finite.any():
        low, high = np.percentile(shown[finite], [1.0, 99.9])
        scaled = np.clip((shown - low) / max(high - low, 1e-12), 0.0, 1.0)
        colours = colormaps["magma"](np.where(finite, scaled, 0.0), bytes=True)
        rgba[finite] = colours[finite]
    return _png(rgba)


def map_png(merged: np.ndarray, *, linthresh: float = 1e-5) -> bytes:
    """A merged CCF map as PNG bytes on a symmetric-log scale in ``RdBu_r``.

    Parameters
    ----------
    merged : (Q, Q) array
        Full map in the lower triangle, order-n map above.
    linthresh : float
        Fraction of the largest |value| below which the scale is linear (as
        :func:`ccfkit.plotting.draw_merged_map`: maps fall by decades with radius).

    Returns
    -------
    bytes
        An RGBA PNG, one pixel per map entry (0 is white).
    """
    from matplotlib import colormaps
    from matplotlib.colors import SymLogNorm

    values = np.nan_to_num(np.asarray(merged, dtype=np.float64))
    limit = float(np.abs(values).max()) or 1.0
    norm = SymLogNorm(linthresh=linthresh * limit, vmin=-limit, vmax=limit)
    return _png(colormaps["RdBu_r"](np.asarray(norm(values)), bytes=True))


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``: a picture a page holds itself."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
