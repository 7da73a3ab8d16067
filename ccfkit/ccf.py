"""The two-point cross-correlation maps and their merge (SPEC §3–4).

* Order-n map (Eq. 14): ``Cn[i, j] = Re(conj(F[i, n]) F[j, n])``.
* Full map (Eq. 13) at angular separation ``delta``:
  ``C[i, j] = sum_p M[i,p] M[j,p+d] I[i,p] I[j,p+d] / sum_p M[i,p] M[j,p+d]``
  with ``d = round(delta P / 2 pi)`` and indices mod ``P``; 0 where no pair of
  samples is valid. Numerator and denominator are matrix products.
* Merged map (§5.3, Fig. 4): full map on and below the diagonal, order-n map
  above it, each triangle scaled on its own.

The ``*_reference`` functions are array-generic: ``xp`` is numpy or cupy.
"""

from __future__ import annotations

import enum
import math

import numpy as np

__all__ = [
    "Scale",
    "angular_shift",
    "full_map",
    "full_map_reference",
    "merge_maps",
    "merge_maps_reference",
    "order_map",
    "order_map_reference",
]


class Scale(str, enum.Enum):
    """How each triangle of the merged map is scaled."""

    #: Divide each triangle by its largest absolute value: both lie in [-1, 1].
    MAXABS = "maxabs"
    #: Keep the values of SPEC §3 (intensity squared units).
    NONE = "none"


def angular_shift(delta: float, phi_bins: int) -> int:
    """The sample shift ``d = round(delta P / 2 pi)`` for a separation in radians."""
    return round(delta * phi_bins / (2.0 * math.pi))


def full_map_reference(values, valid, delta: float = 0.0, xp=np):
    """Mask-corrected full CCF (Eq. 13) of a batch of polar images.

    Parameters
    ----------
    values : (B, Q, P) real array
        Polar images, 0 where invalid.
    valid : (B, Q, P) bool array
    delta : float
        Angular separation in radians.

    Returns
    -------
    (B, Q, Q) array
        ``C[b, i, j]``, symmetric when ``delta == 0``.
    """
    shift = angular_shift(delta, values.shape[-1])
    numerator = lag_product(values, shift, xp)
    pairs = lag_product(valid.astype(values.dtype), shift, xp)
    return divide_by_pairs(numerator, pairs, xp)


def lag_product(rows, shift: int, xp=np):
    """``rows @ roll(rows, -shift).T``: ``out[.., i, j] = sum_p rows[i, p] rows[j, p + shift]``."""
    shifted = xp.roll(rows, -shift, axis=-1) if shift else rows
    return rows @ xp.swapaxes(shifted, -1, -2)


def divide_by_pairs(numerator, pairs, xp=np):
    """``numerator / pairs`` where ``pairs > 0``, else 0 (Eq. 13's mask correction)."""
    return xp.where(pairs > 0, numerator / xp.where(pairs > 0, pairs, 1), 0)


def order_map_reference(coefficients, xp=np):
    """Order-n CCF (Eq. 14) from one order's Fourier coefficients.

    Parameters
    ----------
    coefficients : (B, Q) complex array
        ``F[b, k, n]`` for one ``n``.

    Returns
    -------
    (B, Q, Q) real array
        ``Re(conj(F_i) F_j) = Re_i Re_j + Im_i Im_j``, symmetric.
    """
    re, im = coefficients.real, coefficients.imag
    return re[..., :, None] * re[..., None, :] + im[..., :, None] * im[..., None, :]


def merge_maps_reference(full, order, scale: Scale | str = Scale.MAXABS, xp=np):
    """Merge the full map (lower triangle and diagonal) with the order map (upper).

    Parameters
    ----------
    full, order : (B, Q, Q) real arrays
    scale : Scale or str
        ``"maxabs"``: each triangle divided by its own largest absolute value
        (a triangle that is all zero stays zero); ``"none"``: unscaled.

    Returns
    -------
    (B, Q, Q) array
    """
    scale = Scale(scale)
    q = full.shape[-1]
    lower = xp.tril(xp.ones((q, q), dtype=bool))
    if scale is Scale.MAXABS:
        full = full / _triangle_maxabs(full, lower, xp)
        order = order / _triangle_maxabs(order, ~lower, xp)
    return xp.where(lower, full, order)


def _triangle_maxabs(maps, triangle, xp):
    """Per-map largest |value| inside ``triangle``, shaped (B, 1, 1); 1 where all zero."""
    largest = xp.max(xp.abs(xp.where(triangle, maps, 0)), axis=(-2, -1), keepdims=True)
    return xp.where(largest > 0, largest, 1)


def full_map(values, valid, delta: float = 0.0, *, backend="numpy"):
    """Full CCF (Eq. 13) of polar images; see :func:`full_map_reference`."""
    from .backends import get_backend

    return get_backend(backend).full_map(values, valid, delta)


def order_map(coefficients, *, backend="numpy"):
    """Order-n CCF (Eq. 14); see :func:`order_map_reference`."""
    from .backends import get_backend

    return get_backend(backend).order_map(coefficients)


def merge_maps(full, order, scale: Scale | str = Scale.MAXABS, *, backend="numpy"):
    """Merged triangle map (§5.3); see :func:`merge_maps_reference`."""
    from .backends import get_backend

    return get_backend(backend).merge_maps(full, order, scale)
