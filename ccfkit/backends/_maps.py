"""Numba kernels that turn one image's product and ring orders into its scaled map.

The merged map (docs/ccf.md §4) of one image, from ``gram = polar @
shifted_polar.T`` (only ``i >= j`` read), the inverse pair counts and the
first order's Fourier coefficients; further orders as extra channels. Every
entry of the map is written once, already scaled by ``maxabs`` (each
triangle's largest entry is found first, in a read-only pass); ``ring``
divides by the ring means in a second pass over the map. The
loops are shaped for LLVM's vectoriser: rows as slices indexed from 0 (no
negative-index wrap-around), and the largest entries kept per column
(an element-wise maximum vectorises, a loop-carried float maximum does not).

``gram`` may be float32, or bfloat16 stored as uint16 (its upper 16 bits of
float32, :mod:`._bf16`): :func:`_gram_value` reads either.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ..ccf import Scale
from ._blas import KERNEL
from ._range import SAFE_SQUARES, SCALE_INVARIANT

__all__ = [
    "INVARIANT_CODES", "SCALE_CODES", "finish_image", "range_exponent", "scale_image",
    "unscale_map",
]  # fmt: skip

#: Reductions may be reassociated (vectorised); their inputs are finite by construction.
REDUCTION = {**KERNEL, "fastmath": {"reassoc", "contract", "nnan", "ninf", "nsz"}}

#: ``scale_mode`` codes of the kernels (:class:`~ccfkit.ccf.Scale`); a mode without one
#: takes the array path (:data:`~ccfkit.ccf.SCALINGS`).
SCALE_CODES = {Scale.NONE: 0, Scale.MAXABS: 1, Scale.RING: 2}
#: The codes of :data:`._range.SCALE_INVARIANT`: their maps need no :func:`unscale_map`.
INVARIANT_CODES = tuple(sorted(SCALE_CODES[scale] for scale in SCALE_INVARIANT))


@intrinsic
def _float32_of_bits(typingctx, bits):
    """The float32 whose bit pattern is the uint32 ``bits`` (a register move, no memory)."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.uint32), codegen


def _gram_value(gram_row, j):
    """Entry ``j`` of a row of float32, or of bfloat16 bits (uint16), as float32."""
    return np.float32(gram_row[j])  # the Python meaning; kernels use the overload below


@overload(_gram_value)
def _gram_value_kernel(gram_row, j):
    if gram_row.dtype == types.uint16:  # bfloat16: the upper 16 bits of a float32
        return lambda gram_row, j: _float32_of_bits(np.uint32(gram_row[j]) << np.uint32(16))
    return lambda gram_row, j: gram_row[j]


@numba.njit(**REDUCTION)
def _lower_largest(gram, inverse_pairs, largest):
    """Largest ``|gram * inverse_pairs|`` on and below the diagonal; ``largest`` (Q,) float32 scratch."""
    largest[:] = 0
    for i in range(gram.shape[0]):
        row, weights = gram[i, : i + 1], inverse_pairs[i, : i + 1]
        for j in range(i + 1):
            largest[j] = max(largest[j], abs(_gram_value(row, j) * weights[j]))
    return largest.max()


@numba.njit(**REDUCTION)
def _order_largest(re, im, largest, first):
    """Largest ``|re_i re_j + im_i im_j|`` over ``j >= i + first`` (0: the whole symmetric map)."""
    largest[:] = 0
    for i in range(re.shape[0]):
        re_i, im_i = re[i], im[i]
        re_j, im_j, column = re[i + first :], im[i + first :], largest[i + first :]
        for j in range(column.shape[0]):
            column[j] = max(column[j], abs(np.float32(re_i * re_j[j] + im_i * im_j[j])))
    return largest.max()


@numba.njit(**REDUCTION)
def _write_lower(gram, inverse_pairs, factor, out):
    """``out[i, j] = gram[i, j] * inverse_pairs[i, j] * factor`` for ``j <= i``."""
    for i in range(gram.shape[0]):
        row, weights, target = gram[i, : i + 1], inverse_pairs[i, : i + 1], out[i, : i + 1]
        for j in range(i + 1):
            target[j] = _gram_value(row, j) * (weights[j] * factor)


@numba.njit(**REDUCTION)
def _write_order(re, im, factor, out, whole):
    """``out[i, j] = (re_i re_j + im_i im_j) * factor`` above the diagonal, or everywhere if ``whole``."""
    for i in range(re.shape[0]):
        start = 0 if whole else i + 1
        re_i, im_i = re[i] * factor, im[i] * factor
        re_j, im_j, target = re[start:], im[start:], out[i, start:]
        for j in range(target.shape[0]):
            target[j] = np.float32(re_i * re_j[j] + im_i * im_j[j])


@numba.njit(**REDUCTION)
def _ring_scale(out, inverse_means, offset):
    """``out * inverse_means_i * inverse_means_j``, less ``offset`` on and below the
    diagonal, clipped to [-1, 1]; 0 where either ring's inverse mean is 0."""
    for i in range(out.shape[0]):
        for start, stop, shift in ((0, i + 1, offset), (i + 1, out.shape[0], 0.0)):
            row, inverse_j = out[i, start:stop], inverse_means[start:stop]
            for j in range(row.shape[0]):
                factor = inverse_means[i] * inverse_j[j]
                value = min(1.0, max(-1.0, row[j] * factor - shift))
                row[j] = value if factor != 0 else 0.0


@numba.njit(**KERNEL)
def finish_image(gram, inverse_pairs, re, im, means, scale_mode, out):
    """One image's (C, Q, Q) map from its product ``gram`` and ring orders, each entry written once.

    Parameters
    ----------
    gram : (Q, Q) float32, or uint16 (bfloat16 bits)
        ``polar @ shifted_polar.T``; only ``i >= j`` is read.
    inverse_pairs : (Q, Q) float32
        ``1 / (number of valid sample pairs)``, 0 where there is none.
    re, im : (C, Q) float64
        Fourier coefficients of each order (Eq. 15).
    means : (Q,) float64
        Ring means, ``F[k, 0]`` (0 for an unused ring).
    scale_mode : int
        :data:`SCALE_CODES`: 0 none, 1 maxabs (each triangle, and each extra channel,
        by its largest ``|value|``; one that is all 0 stays), 2 ring (divided by
        ``means[i] means[j]``, minus 1 on the full triangle, clipped to [-1, 1]; 0
        where that product is 0).
    out : (C, Q, Q) float32, out
        Channel 0 the merged map (full map on and below the diagonal, the first
        order above), channel ``c`` the order map of order ``c``.
    """
    q_bins = gram.shape[0]
    largest = np.empty(q_bins, dtype=np.float32)
    lower_factor, upper_factor = np.float32(1), 1.0
    if scale_mode == 1:
        lower_largest = _lower_largest(gram, inverse_pairs, largest)
        upper_largest = _order_largest(re[0], im[0], largest, 1)
        lower_factor = np.float32(1 / lower_largest) if lower_largest > 0 else np.float32(1)
        upper_factor = 1 / np.float64(upper_largest) if upper_largest > 0 else 1.0
    _write_lower(gram, inverse_pairs, lower_factor, out[0])
    _write_order(re[0], im[0], upper_factor, out[0], False)
    inverse_means = np.where(means != 0, 1 / np.where(means != 0, means, 1.0), 0.0)
    if scale_mode == 2:
        _ring_scale(out[0], inverse_means, 1.0)
    for c in range(1, out.shape[0]):
        factor = 1.0
        if scale_mode == 1:
            channel_largest = _order_largest(re[c], im[c], largest, 0)
            factor = 1 / np.float64(channel_largest) if channel_largest > 0 else 1.0
        _write_order(re[c], im[c], factor, out[c], True)
        if scale_mode == 2:
            _ring_scale(out[c], inverse_means, 0.0)


@numba.njit(**KERNEL)
def range_exponent(largest_squares):
    """``e`` such that ``2^e`` times an image's values have their largest ring's sum of
    squares in [0.5, 2); 0 when it lies in :data:`._range.SAFE_SQUARES` already (or is 0)."""
    low, high = SAFE_SQUARES
    if largest_squares == 0 or low <= largest_squares <= high:
        return 0
    exponent = math.frexp(largest_squares)[1]  # largest_squares = m 2^exponent, 0.5 <= m < 1
    return -(exponent // 2)


@numba.njit(**KERNEL)
def scale_image(values, re, im, means, exponent):
    """Multiply one image's polar values, ring orders and means by ``2^exponent`` (exact).

    ``values`` (Q, P) float32, in place (the product in float64, rounded once: exact
    unless a value falls below float32's normal range, where it is negligible next to
    the image's largest); ``re``, ``im`` (N, Q) and ``means`` (Q,) float64, in place.
    The merged map under ``maxabs`` and ``ring`` stays as it is (:mod:`._range`);
    an unscaled map is multiplied back (:func:`unscale_map`).
    """
    factor = math.ldexp(1.0, exponent)
    for k in range(values.shape[0]):
        for p in range(values.shape[1]):
            values[k, p] = np.float32(np.float64(values[k, p]) * factor)
    re *= factor
    im *= factor
    means *= factor


@numba.njit(**KERNEL)
def unscale_map(out, exponent):
    """``out * 2^(-2 exponent)`` in float64, rounded once to float32, in place: the (C, Q, Q)
    map of values scaled by ``2^exponent`` (:func:`scale_image`) in the image's own units."""
    factor = math.ldexp(1.0, -2 * exponent)
    flat = out.reshape(-1)
    for s in range(flat.shape[0]):
        flat[s] = np.float32(np.float64(flat[s]) * factor)
