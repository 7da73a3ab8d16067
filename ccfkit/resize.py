"""Resizing frames for the paper's "Diff. Imgs." arm (Table 6): 2-D linear interpolation."""

from __future__ import annotations

import numpy as np

from .polar import usable_pixels

__all__ = ["interpolation_matrix", "resize_images"]


def interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) matrix of 1-D linear interpolation between pixel grids.

    Output pixel ``i`` samples the input at ``(i + 0.5) n_in / n_out - 0.5``
    (pixel areas aligned, as in ``align_corners=False``), clamped to the edge.
    Rows sum to 1.
    """
    position = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    left = np.floor(position).astype(int)
    right = np.minimum(left + 1, n_in - 1)
    fraction = position - left
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), left), 1 - fraction)
    np.add.at(matrix, (np.arange(n_out), right), fraction)
    return matrix


def resize_images(images: np.ndarray, size: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Resize frames to ``size x size`` by separable linear interpolation.

    Parameters
    ----------
    images : (B, H, W) array
    size : int
        Output side ``S``.
    valid : (H, W) bool array, optional
        Good pixels; the others (and unusable ones: NaN, +-inf, huge,
        :func:`~ccfkit.polar.usable_pixels`) count as 0.

    Returns
    -------
    (B, S, S) float32 array
        ``Ry @ image @ Rx.T``: two small matrix products per frame.
    """
    images = np.asarray(images, dtype=np.float32)
    keep = usable_pixels(images)
    if valid is not None:
        keep &= np.asarray(valid, dtype=bool)
    clean = np.where(keep, images, np.float32(0))  # float32 in, float32 out: one new array
    rows = interpolation_matrix(images.shape[1], size).astype(np.float32)
    cols = interpolation_matrix(images.shape[2], size).astype(np.float32)
    return rows @ clean @ cols.T
