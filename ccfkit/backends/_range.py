"""Keeping an image's values within float32's range, by a power of two.

A map is a sum of products of polar values: in float32 their squares live
between 2^-149 (the smallest subnormal; 2^-126 the smallest normal) and
2^128. Frames of 1e-20 have squares below the normal range, and the scaled
maps of such frames used to be inf or wrong. The float32 engines therefore
multiply an image whose values lie far from 1 by a power of two before its
product (exact: only the exponent changes), so that its largest lies near 1.
The merged maps under ``maxabs`` and ``ring`` are ratios of intensities
squared (docs/ccf.md §4, "Backends and precision"): they come out the
same, and nothing is undone; a map in intensity squared units
(``scale="none"``) is multiplied back by the inverse power, in float64,
rounded once to float32.

The Numba kernels decide from the largest ring's sum of squares, which their
pass over the ring orders accumulates anyway (:mod:`.numba`, :mod:`._maps`);
the array backend from each image's largest ``|value|`` (:func:`bring_into_range`).
The float64 reference keeps its values as they are.
"""

from __future__ import annotations

import numpy as np

from ..ccf import Scale

__all__ = ["SAFE_SQUARES", "SAFE_VALUES", "SCALE_INVARIANT", "bring_into_range", "unscale_maps"]

#: Scalings whose maps do not change when an image's values are multiplied by a constant.
SCALE_INVARIANT = frozenset({Scale.MAXABS, Scale.RING})

#: The largest ring's sum of squares ``max_k sum_p v^2`` within which the Numba kernels
#: keep an image's values as they are: every entry of its product lies below it
#: (Cauchy-Schwarz), and 2^-64 to 2^64 leaves float32 (2^-126 to 2^128) room for the
#: pair counts (down to 2^-15), the scalings and the smallest entries that count.
SAFE_SQUARES = (2.0**-64, 2.0**64)

#: The largest ``|value|`` within which the array backend keeps an image's values.
SAFE_VALUES = (2.0**-32, 2.0**32)


def bring_into_range(values, xp=np):
    """Each image's polar values times ``2^e``, its largest ``|value|`` into [0.5, 1).

    Only where that largest lies outside :data:`SAFE_VALUES` (and is not 0);
    float64 values are returned as they are.

    Parameters
    ----------
    values : (B, Q, P) float array
        Polar values, 0 where invalid.
    xp : module
        ``numpy`` or ``cupy``.

    Returns
    -------
    values : (B, Q, P) array of the same dtype
        The scaled values (a new array), or ``values`` itself where no image is scaled.
    exponents : (B,) int32 array, or None
        ``e`` of each image (0 where kept); None when no image is scaled
        (every image within range, or float64 values).
    """
    if np.finfo(values.dtype).bits >= 64:
        return values, None
    axes = (-2, -1)  # the largest |value| without a temporary |values|
    largest = xp.maximum(values.max(axis=axes), -values.min(axis=axes))
    low, high = SAFE_VALUES
    outside = (largest > 0) & ((largest < low) | (largest > high))
    if not bool(outside.any()):  # the usual batch: nothing to scale, nothing to undo
        return values, None
    exponents = xp.where(outside, -xp.frexp(largest)[1], 0).astype(np.int32)
    return xp.ldexp(values, exponents[:, None, None]).astype(values.dtype, copy=False), exponents


def unscale_maps(maps, exponents, scale: Scale | str, xp=np):
    """(B, C, Q, Q) maps of values scaled by ``2^exponents`` (:func:`bring_into_range`) in
    the units of the images' own: multiplied by ``2^(-2 e)`` unless ``scale`` is in
    :data:`SCALE_INVARIANT` (or ``exponents`` is None), in float64."""
    if exponents is None or Scale(scale) in SCALE_INVARIANT:
        return maps
    factor = xp.ldexp(xp.ones(exponents.shape, dtype=np.float64), -2 * exponents)
    return maps * factor[:, None, None, None]
