"""The bilinear table of a plain image's polar samples, in one compiled pass.

:func:`ccfkit.polar.make_polar_plan` needs, for every sample ``(r_k, phi_j)``
around the beam centre, the four neighbouring pixels, their weights and
whether the sample is valid. The NumPy version (``ccfkit.polar``,
``_bilinear_table``) is the reference; it makes a dozen temporaries of the
``(Q, P)`` grid and costs ~10 ms for 224 x 512 samples, more than ten maps.
A build that places each frame's rings at its own geometry
(:mod:`ccfkit.frame_geometry`) or centre (:mod:`ccfkit.frame_centers`) builds
a plan per frame, so here is the same table in one pass, with the same
float64 operations in the same order: the results are equal, bit for bit
(``tests/test_polar.py``).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["bilinear_table"]


def bilinear_table(radius, phi, center, good, snap: float):
    """Bilinear neighbours, weights and validity of the samples ``radius x phi``.

    Parameters
    ----------
    radius : (Q,) float64
        Ring radii, pixels.
    phi : (P,) float64
        Angles, radians.
    center : (float, float)
        ``(cx, cy)`` in pixels, ``cx`` along columns.
    good : (H, W) bool
        Good pixels.
    snap : float
        Offsets within ``snap`` of a whole pixel are taken as on it.

    Returns
    -------
    index, weight, valid : ndarray
        (Q, P, 4) int64, (Q, P, 4) float64 and (Q, P) bool, the arrays of the
        NumPy reference (``ccfkit.polar._bilinear_table``), equal to them.
    """
    radius = np.ascontiguousarray(radius, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    good = np.ascontiguousarray(good, dtype=np.bool_)
    shape = (radius.shape[0], phi.shape[0])
    index = np.empty((*shape, 4), dtype=np.int64)
    weight = np.empty((*shape, 4), dtype=np.float64)
    valid = np.empty(shape, dtype=np.bool_)
    # NumPy's cos and sin, as the reference takes them (Numba's libm may differ in the last bit)
    _fill(radius, np.cos(phi), np.sin(phi), float(center[0]), float(center[1]), good,
          float(snap), index, weight, valid)  # fmt: skip
    return index, weight, valid


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _split(coordinate, snap):
    """Whole pixel and offset of one coordinate (within ``snap`` of a pixel: on it)."""
    nearest = np.rint(coordinate)
    if abs(coordinate - nearest) < snap:
        coordinate = nearest
    whole = np.floor(coordinate)
    return np.int64(whole), coordinate - whole


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fill(radius, cos_phi, sin_phi, cx, cy, good, snap, index, weight, valid):
    """The table of :func:`bilinear_table`, one sample at a time (no fast-math: exact)."""
    height, width = good.shape
    for k in range(radius.shape[0]):
        for j in range(cos_phi.shape[0]):
            x0, fx = _split(cx + radius[k] * cos_phi[j], snap)
            y0, fy = _split(cy + radius[k] * sin_phi[j], snap)
            x1 = x0 + (1 if fx > 0 else 0)
            y1 = y0 + (1 if fy > 0 else 0)
            on_detector = x0 >= 0 and y0 >= 0 and x1 <= width - 1 and y1 <= height - 1
            x0 = min(max(x0, 0), width - 1)
            x1 = min(max(x1, 0), width - 1)
            y0 = min(max(y0, 0), height - 1)
            y1 = min(max(y1, 0), height - 1)
            valid[k, j] = on_detector and (good[y0, x0] and good[y0, x1]
                                           and good[y1, x0] and good[y1, x1])  # fmt: skip
            index[k, j, 0] = y0 * width + x0
            index[k, j, 1] = y0 * width + x1
            index[k, j, 2] = y1 * width + x0
            index[k, j, 3] = y1 * width + x1
            weight[k, j, 0] = (1 - fx) * (1 - fy)
            weight[k, j, 1] = fx * (1 - fy)
            weight[k, j, 2] = (1 - fx) * fy
            weight[k, j, 3] = fx * fy
