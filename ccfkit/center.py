"""Beam-centre estimation from the centro-symmetry of diffraction patterns.

Far-field diffraction intensities obey Friedel's law, ``I(q) = I(-q)``: on the
detector a pattern is symmetric under a 180° rotation about the beam centre
``c``, i.e. ``f(x) = f(2c - x)`` (exactly in the small-angle limit, and
closely enough at the angles of interest here). With ``t = 2c`` the masked
mean squared asymmetry

``E(t) = 1 - corr_x(f(x), f(t - x))``,

one minus the Pearson correlation of the pattern with its rotation over the
pixels valid in both (weights ``w(x) w(t-x)``), is a combination of four
convolutions (``conv(w, w)``, ``conv(w f, w)``, ``conv(w f^2, w)``,
``conv(w f, w f)``), computed by FFT for every ``t`` at once. The minimum
over ``t`` (restricted to shifts whose overlap keeps at least a
quarter of the pixels) gives ``c = t / 2``; a parabola through the minimum and
its neighbours refines it below a pixel. ``f`` is ``log(1 + I)`` of the mean
of the frames (photon counts span decades: the log weighs the rings, not
just the brightest pixels); ``w`` is the mask, less every pixel that is
NaN/inf in any frame.

Accuracy on simulated data is reported in ``docs/build.md``.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

__all__ = ["estimate_center"]


def estimate_center(
    images: np.ndarray, mask: np.ndarray | None = None, *, min_overlap: float = 0.25
) -> tuple[float, float]:
    """Estimate the beam centre of diffraction frames by centro-symmetry.

    Parameters
    ----------
    images : (B, H, W) or (H, W) array
        Frames sharing one beam centre. A pixel that is NaN/inf in any frame
        is dropped from every frame (the estimate uses only pixels finite in
        all of them).
    mask : (H, W) bool array, optional
        True for good pixels.
    min_overlap : float
        Smallest fraction of the best overlap a candidate centre may have.

    Returns
    -------
    (cx, cy) : (float, float)
        The centre in pixels, ``cx`` along columns.

    Raises
    ------
    ValueError
        When no pixel is valid.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 2:
        images = images[None]
    finite = np.isfinite(images)
    weight = finite.all(axis=0)
    if mask is not None:
        weight &= np.asarray(mask, dtype=bool)
    if not weight.any():
        raise ValueError("no valid pixel to estimate the beam centre from")
    mean = np.where(finite, images, 0).mean(axis=0)
    if np.ptp(mean[weight]) == 0:
        raise ValueError("the frames are constant (or all zero): no pattern to find a centre in")
    f = np.log1p(np.clip(mean, 0, None)) * weight
    w = weight.astype(np.float64)

    overlap = fftconvolve(w, w)
    allowed = overlap >= min_overlap * overlap.max()
    count = overlap[allowed]
    mean = fftconvolve(f, w)[allowed] / count
    variance = fftconvolve(f * f, w)[allowed] / count - mean**2
    covariance = fftconvolve(f, f)[allowed] / count - mean**2
    asymmetry = np.full(overlap.shape, np.inf)
    # 1 - Pearson correlation of f(x) and f(t - x) over the overlap
    asymmetry[allowed] = 1 - covariance / np.maximum(variance, 1e-12)

    ty, tx = np.unravel_index(np.argmin(asymmetry), asymmetry.shape)
    ty_fine = ty + _parabola_offset(
        asymmetry[ty - 1 : ty + 2, tx] if 0 < ty < asymmetry.shape[0] - 1 else None
    )
    tx_fine = tx + _parabola_offset(
        asymmetry[ty, tx - 1 : tx + 2] if 0 < tx < asymmetry.shape[1] - 1 else None
    )
    return float(tx_fine / 2), float(ty_fine / 2)


def _parabola_offset(values: np.ndarray | None) -> float:
    """Vertex offset in (-0.5, 0.5) of the parabola through three samples."""
    if values is None or not np.isfinite(values).all():
        return 0.0
    left, middle, right = values
    curvature = left - 2 * middle + right
    if curvature <= 0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
