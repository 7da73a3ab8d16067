"""The CPU backend: fused Numba kernels around one BLAS call per image.

Per image, inside one GIL-free kernel per thread: a copy of the image with
unusable pixels (NaN, +-inf, at least :data:`~ccfkit.polar.HUGE_PIXEL` in
magnitude) as 0, which also tells whether any of them matter; the bilinear
samples from that copy (or, when unusable pixels invalidate samples, the
exact gather that finds which); a vectorised pass per ring for its mean
and the angular orders the maps need (a complex dot product per ring,
float64 accumulators); one BLAS call (SciPy's ``ssyrk``, called directly, see
:mod:`._blas`) forms the lower triangle of ``polar @ polar.T`` (``sgemm`` of
the rolled rows when ``delta`` rounds to a non-zero shift,
``round(delta P / 2 pi) % P != 0``); the map from it (:mod:`._maps`: each
triangle's largest entry found, then every entry written once, scaled). With
``precision="bf16"`` the product is PyTorch's bfloat16 one, on blocks of
images whose polar values are rounded to bfloat16 as they are written
(:meth:`NumbaBackend._bf16_maps`). The mask's own correlation
(the denominator of Eq. 13) is computed once per plan and reused for every
image whose unusable pixels add no invalid samples. Where the time goes:
``benchmarks/engine_stages.py`` (docs/performance.md).

Parallelism has one level on purpose: the batch is split into contiguous
parts, one per thread; kernels release the GIL and BLAS is held to one thread
while they run (two BLAS pools spinning beside the kernels slow both down).
"""

from __future__ import annotations

import functools
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from ..ccf import Estimator, angular_shift, resolve_settings
from ..polar import HUGE_PIXEL, PolarImages, PolarPlan
from ..provenance import usable_cpus
from ._base import BackendUnavailableError, maps_output
from ._bf16 import aligned_empty, product_of_bits, torch_threads_here
from ._maps import (
    INVARIANT_CODES,
    REDUCTION,
    SCALE_CODES,
    finish_image,
    range_exponent,
    scale_image,
    unscale_map,
)
from .array import ArrayBackend

try:
    import numba
    from threadpoolctl import ThreadpoolController

    from ._blas import KERNEL, correlate_rows
except ImportError as error:  # pragma: no cover - numba is a dependency
    raise BackendUnavailableError(f"Numba or SciPy's BLAS is not importable: {error}") from error

__all__ = ["NumbaBackend"]

#: Reductions may be reassociated (vectorised); their inputs are finite by construction.
_REDUCTION = REDUCTION  # (defined beside the map kernels, :mod:`._maps`)
#: The interpolation may fuse its multiply-adds; nothing else is relaxed.
_FUSED = {**KERNEL, "fastmath": {"contract"}}


class _Tables(NamedTuple):
    """A plan's arrays in the kernels' dtypes and layouts, built once per plan.

    Two descriptions of the same bilinear samples (``S = Q * P``, ring-major):

    * the *exact* one, for images whose unusable pixels invalidate samples:
      ``index`` (S, 4) int32 and ``weight`` (S, 4) float32 of
      :class:`~ccfkit.polar.PolarPlan`;
    * the *fast* one, on a sanitised copy of the image (:func:`_sanitize`):
      ``corner`` (S,) uint32, the flat index of each sample's upper-left
      pixel, and its fractional offsets ``fx``, ``fy`` (S,) float32. Invalid
      samples point into the copy's zero padding, with offsets 0.

    ``valid`` (S,) bool and ``counts`` (Q,) int64 are the plan's validity and
    valid samples per ring; ``used`` (H * W,) bool marks the pixels that valid
    samples weigh (a NaN/inf there invalidates samples); ``width`` is W.
    """

    index: np.ndarray
    weight: np.ndarray
    valid: np.ndarray
    counts: np.ndarray
    corner: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    used: np.ndarray
    width: np.uint32

    @classmethod
    def of(cls, plan: PolarPlan) -> _Tables:
        samples = plan.valid.size
        height, width = plan.shape
        tables = cls(
            index=np.empty((samples, 4), dtype=np.int32),
            weight=np.empty((samples, 4), dtype=np.float32),
            valid=np.ascontiguousarray(plan.valid).ravel(),
            counts=plan.valid.sum(axis=1),
            corner=np.empty(samples, dtype=np.uint32),
            fx=np.empty(samples, dtype=np.float32),
            fy=np.empty(samples, dtype=np.float32),
            used=np.zeros(height * width, dtype=bool),
            width=np.uint32(width),
        )
        _fill_tables(np.ascontiguousarray(plan.index).reshape(-1, 4),
                     np.ascontiguousarray(plan.weight).reshape(-1, 4), tables)  # fmt: skip
        return tables


@numba.njit(**KERNEL)
def _fill_tables(index, weight, tables):
    """The arrays of :class:`_Tables` from a plan's ``index`` (S, 4) int64 and ``weight`` (S, 4)
    float64, in one pass (the same values as the NumPy casts: float32 of the float64 sums)."""
    zero = tables.used.shape[0] + tables.width + 1  # taps zero .. zero + W + 1: the padding
    for s in range(index.shape[0]):
        for c in range(4):
            tables.index[s, c] = index[s, c]
            tables.weight[s, c] = weight[s, c]
            if weight[s, c] > 0:
                tables.used[index[s, c]] = True
        tables.corner[s] = index[s, 0] if tables.valid[s] else zero
        tables.fx[s] = weight[s, 1] + weight[s, 3]
        tables.fy[s] = weight[s, 2] + weight[s, 3]


@numba.njit(**KERNEL)
def _padded_scratch(tables):
    """Scratch for :func:`_sanitize`: H * W pixels and 2 W + 4 of zero padding."""
    return np.zeros(tables.used.shape[0] + 2 * np.int64(tables.width) + 4, dtype=np.float32)


#: Pixels at least this large in magnitude are unusable (:data:`~ccfkit.polar.HUGE_PIXEL`,
#: 2^56: a map's sums of their products could overflow float32); below it every lerp of
#: :func:`_interpolate` and every product stays finite.
_LERP_SAFE = np.float32(HUGE_PIXEL)


@numba.njit(**KERNEL)
def _sanitize(image, used, padded):
    """Copy ``image`` into ``padded``, pixels the lerp cannot take as 0; count those that matter.

    A pixel the fast formula cannot take is unusable: NaN, +-inf, or at least
    ``_LERP_SAFE`` in magnitude (:func:`~ccfkit.polar.usable_pixels`).

    Parameters
    ----------
    image : (H * W,) float32
    used : (H * W,) bool
        Pixels that valid samples weigh (:class:`_Tables`).
    padded : (H * W + 2 W + 4,) float32, out
        The copy; its padding is set to 0.

    Returns
    -------
    int
        Number of such pixels where ``used``: 0 means the fast interpolation
        gives every valid sample (the others carry zero weight or feed only
        invalid samples); otherwise the image takes the exact gather.
    """
    pixels = image.shape[0]
    any_bad = np.uint8(0)  # an or-reduction over bytes vectorises; the count is for the rare image
    used_bytes = used.view(np.uint8)
    for i in range(pixels):
        value = image[i]
        fits = abs(value) < _LERP_SAFE  # False for NaN, +-inf and huge values
        padded[i] = value if fits else np.float32(0)
        any_bad |= used_bytes[i] & np.uint8(not fits)
    padded[pixels:] = 0
    if any_bad == 0:
        return 0
    bad = 0
    for i in range(pixels):
        bad += used[i] and not abs(image[i]) < _LERP_SAFE
    return bad


@numba.njit(**_FUSED)
def _interpolate(padded, corner, fx, fy, width, values):
    """Bilinear samples from a sanitised image: along x on two rows, then along y.

    ``padded`` from :func:`_sanitize`; ``corner``, ``fx``, ``fy`` and ``width``
    from :class:`_Tables` (unsigned indices: no negative-index wrap-around, so
    the loop compiles to plain loads); ``values`` (S,) float32, out, exactly 0
    for invalid samples.
    """
    for s in range(corner.shape[0]):
        i = corner[s]
        upper = padded[i] + fx[s] * (padded[i + 1] - padded[i])
        lower = padded[i + width] + fx[s] * (padded[i + width + 1] - padded[i + width])
        values[s] = upper + fy[s] * (lower - upper)


@numba.njit(**KERNEL)
def _gather(image, index, weight, plan_valid, values, valid):
    """Bilinear samples of one image with unusable pixels: the exact path.

    A sample is invalid when any of its four pixels (every one is a pixel it
    needs, :class:`~ccfkit.polar.PolarPlan`) is NaN, +-inf or at least
    ``_LERP_SAFE`` in magnitude.

    Parameters
    ----------
    image : (H * W,) float32
    index : (S, 4) int32; weight : (S, 4) float32; plan_valid : (S,) bool
        The plan's table flattened over ``S = Q * P`` samples (see
        :class:`~ccfkit.polar.PolarPlan`); invalid samples have zero weights.
    values : (S,) float32, out
        0 where invalid.
    valid : (S,) bool, out
        The plan's validity, less the samples that need an unusable pixel.

    Returns
    -------
    int
        Number of samples that the plan allows but unusable pixels invalidate.
    """
    extra_invalid = 0
    for s in range(index.shape[0]):
        usable = True
        for t in range(4):
            usable &= abs(image[index[s, t]]) < _LERP_SAFE  # False for NaN
        value = (
            weight[s, 0] * image[index[s, 0]]
            + weight[s, 1] * image[index[s, 1]]
            + weight[s, 2] * image[index[s, 2]]
            + weight[s, 3] * image[index[s, 3]]
        )
        values[s] = value if usable else 0
        extra_invalid += plan_valid[s] & ~usable
        valid[s] = plan_valid[s] & usable
    return extra_invalid


@numba.njit(**KERNEL)
def _polar_image(image, tables, padded, values, valid, write_valid):
    """Resample one image: the fast interpolation, or the exact gather if :func:`_sanitize` says.

    Parameters
    ----------
    image : (H * W,) float32
    tables : _Tables
    padded : float32, scratch from :func:`_padded_scratch`
    values : (S,) float32, out
    valid : (S,) bool, out
        Always written when unusable pixels invalidate samples; otherwise
        (the plan's validity) only when ``write_valid``.

    Returns
    -------
    int
        Number of samples that the plan allows but unusable pixels invalidate.
    """
    if _sanitize(image, tables.used, padded) == 0:
        _interpolate(padded, tables.corner, tables.fx, tables.fy, tables.width, values)
        if write_valid:
            valid[:] = tables.valid
        return 0
    return _gather(image, tables.index, tables.weight, tables.valid, values, valid)


@numba.njit(**_REDUCTION)
def _project_rings(values, counts, cos_n, sin_n, re, im, means):
    """Ring means and chosen angular orders, ``F[k, n] = sum_p v e^{-i n phi_p} / count``.

    Parameters
    ----------
    values : (Q, P) float32
        Polar values, 0 where invalid.
    counts : (Q,) int64
        Valid samples per ring (0 for an unused ring).
    cos_n, sin_n : (N, P) float64, N >= 1
        ``cos(n phi_p)``, ``sin(n phi_p)`` of each order.
    re, im : (N, Q) float64, out
        Accumulated in float64.
    means : (Q,) float64, out
        ``F[k, 0]``, the mean over the valid samples.

    Returns
    -------
    float
        The largest ring's sum of squares ``max_k sum_p v^2`` (float64): it
        bounds every entry of the image's product (Cauchy-Schwarz), which
        :func:`._maps.range_exponent` keeps within float32's range.
    """
    q_bins, phi_bins = values.shape
    largest_squares = 0.0
    for k in range(q_bins):
        if counts[k] == 0:
            means[k] = 0.0
            re[:, k] = 0.0
            im[:, k] = 0.0
            continue
        total = 0.0  # the mean and the squares ride along the first order's pass
        squares = 0.0
        sum_re = 0.0
        sum_im = 0.0
        for p in range(phi_bins):
            value = np.float64(values[k, p])
            total += value
            squares += value * value
            sum_re += value * cos_n[0, p]
            sum_im += value * sin_n[0, p]
        means[k] = total / counts[k]
        largest_squares = max(largest_squares, squares)
        re[0, k] = sum_re / counts[k]
        im[0, k] = -sum_im / counts[k]
        for c in range(1, cos_n.shape[0]):
            sum_re = 0.0
            sum_im = 0.0
            for p in range(phi_bins):
                value = np.float64(values[k, p])
                sum_re += value * cos_n[c, p]
                sum_im += value * sin_n[c, p]
            re[c, k] = sum_re / counts[k]
            im[c, k] = -sum_im / counts[k]
    return largest_squares


#: Images per bfloat16 product: a block's bfloat16 values and sums (2.6 MB at Q = 224,
#: P = 512) stay in cache from the resampling to the maps.
_BF16_BLOCK = 8

#: Estimators the kernels compute; the others take the array path
#: (:data:`~ccfkit.ccf.ORDER_ESTIMATORS`).
_KERNEL_ESTIMATORS = frozenset({Estimator.RING})


@numba.njit(**KERNEL)
def _invert_pair_counts(pairs, out):
    """``out = 1 / pairs`` where ``pairs > 0``, else 0 (lower triangle only)."""
    for i in range(pairs.shape[0]):
        for j in range(i + 1):
            out[i, j] = 1 / pairs[i, j] if pairs[i, j] > 0 else 0


@numba.njit(**KERNEL)
def _drop_thin_rings(valid, values, weights, counts, min_count):
    """Make rings with fewer than ``min_count`` valid samples unused (in place)."""
    for k in range(counts.shape[0]):
        if counts[k] < min_count:
            counts[k] = 0
            valid[k, :] = False
            values[k, :] = 0
            weights[k, :] = 0


@numba.njit(**KERNEL)
def _prepare_image(
    image, tables, cos_n, sin_n, shift, min_count, padded, values, valid, weights, scratch,
    own_inverse_pairs, own_counts, re, im, means,
):  # fmt: skip
    """Polar values and ring orders of one image: everything before its map's product.

    Resamples into ``values`` (:func:`_polar_image`); an image whose NaN/inf
    pixels invalidate samples gets its own ring counts and pair counts (one
    BLAS product, into ``own_inverse_pairs``) and loses the rings they leave
    below ``min_count``. Then the ring means and orders into ``re``, ``im``,
    ``means``; an image whose values lie far from 1 (:data:`._range.SAFE_SQUARES`) has
    them all scaled by a power of two (:func:`._maps.scale_image`).

    Returns
    -------
    own : bool
        True when the image has its own pair counts (``own_inverse_pairs``),
        False when it shares the plan's.
    exponent : int
        The image's values were multiplied by ``2^exponent`` (0: as they were).
    """
    q_bins, phi_bins = values.shape
    own = _polar_image(image, tables, padded, values.reshape(-1), valid.reshape(-1), False) > 0
    counts = tables.counts
    if own:  # unusable pixels invalidate samples: the image's own validity
        for k in range(q_bins):
            own_counts[k] = 0
            for p in range(phi_bins):
                own_counts[k] += valid[k, p]
                weights[k, p] = valid[k, p]
        _drop_thin_rings(valid, values, weights, own_counts, min_count)
        correlate_rows(weights, shift, own_inverse_pairs, scratch)
        _invert_pair_counts(own_inverse_pairs, own_inverse_pairs)
        counts = own_counts
    exponent = range_exponent(_project_rings(values, counts, cos_n, sin_n, re, im, means))
    if exponent != 0:
        scale_image(values, re, im, means, exponent)
    return own, exponent


@numba.njit(**KERNEL)
def _merged_maps_part(
    images, lo, hi, tables, plan_inverse_pairs, cos_n, sin_n, shift, min_count, scale_mode, out,
):  # fmt: skip
    """Maps of ``images[lo:hi]`` into ``out[lo:hi]``: the per-thread loop, GIL-free.

    Per image: :func:`_prepare_image`, one float32 BLAS product,
    :func:`._maps.finish_image` (unscaled maps of scaled values multiplied back,
    :func:`._maps.unscale_map`). ``out`` is (B, C, Q, Q): channel 0 the merged map of
    the first order, channel ``c`` the order map of order ``c``.
    """
    q_bins, phi_bins = tables.counts.shape[0], cos_n.shape[1]
    channels = cos_n.shape[0]
    padded = _padded_scratch(tables)
    values = np.empty((q_bins, phi_bins), dtype=np.float32)
    valid = np.empty((q_bins, phi_bins), dtype=np.bool_)
    scratch = np.empty((q_bins, phi_bins), dtype=np.float32)
    weights = np.empty((q_bins, phi_bins), dtype=np.float32)
    gram = np.empty((q_bins, q_bins), dtype=np.float32)
    own_inverse_pairs = np.empty((q_bins, q_bins), dtype=np.float32)
    own_counts = np.empty(q_bins, dtype=np.int64)
    re = np.empty((channels, q_bins))
    im = np.empty((channels, q_bins))
    means = np.empty(q_bins)
    for b in range(lo, hi):
        own, exponent = _prepare_image(
            images[b].reshape(-1), tables, cos_n, sin_n, shift, min_count, padded, values, valid,
            weights, scratch, own_inverse_pairs, own_counts, re, im, means,
        )  # fmt: skip
        correlate_rows(values, shift, gram, scratch)
        inverse_pairs = own_inverse_pairs if own else plan_inverse_pairs
        finish_image(gram, inverse_pairs, re, im, means, scale_mode, out[b])
        if exponent != 0 and scale_mode not in INVARIANT_CODES:
            unscale_map(out[b], exponent)


@numba.njit(**_REDUCTION)
def _round_to_bf16(values, shift, left, right):
    """(Q, P) float32 ``values`` as bfloat16 bits (uint16), rounded to nearest even.

    bfloat16 is the upper half of a float32: ``(bits + 0x7FFF + lowest kept bit) >> 16``
    rounds to nearest, ties to even, as PyTorch's conversion does (the values are finite).
    ``left`` (Q, P) uint16, out; ``right`` (Q, P) uint16, out: the rows rolled by
    ``-shift`` (``right[k, p] = left[k, (p + shift) % P]``), written only when
    ``shift % P != 0`` (otherwise the product's right operand is ``left``).
    """
    bits, flat = values.reshape(-1).view(np.uint32), left.reshape(-1)
    for s in range(bits.shape[0]):
        word = bits[s]
        flat[s] = (
            word + ((word >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF)
        ) >> np.uint32(16)
    phi_bins = values.shape[1]
    if shift % phi_bins != 0:
        for k in range(values.shape[0]):
            for p in range(phi_bins):
                right[k, p] = left[k, (p + shift) % phi_bins]


@numba.njit(**KERNEL)
def _prepare_bf16_part(
    images, lo, hi, tables, cos_n, sin_n, shift, min_count, left, right, own, own_inverse_pairs,
    re, im, means, exponents,
):  # fmt: skip
    """:func:`_prepare_image` of ``images[lo:hi]``, its polar values kept as bfloat16 bits.

    Image ``b`` goes to row ``b - lo`` of the block arrays: ``left``, ``right`` (n, Q, P)
    uint16 (:func:`_round_to_bf16`); ``own`` (n,) bool; ``own_inverse_pairs`` (n, Q, Q),
    written only where ``own``; ``re``, ``im`` (n, C, Q); ``means`` (n, Q); ``exponents``
    (n,) int64, the power of two of :func:`._maps.scale_image`. The float32 values live only in
    a per-thread scratch, which the ring orders read.
    """
    q_bins, phi_bins = left.shape[1:]
    padded = _padded_scratch(tables)
    values = np.empty((q_bins, phi_bins), dtype=np.float32)
    valid = np.empty((q_bins, phi_bins), dtype=np.bool_)
    scratch = np.empty((q_bins, phi_bins), dtype=np.float32)
    weights = np.empty((q_bins, phi_bins), dtype=np.float32)
    own_counts = np.empty(q_bins, dtype=np.int64)
    for b in range(lo, hi):
        k = b - lo
        own[k], exponents[k] = _prepare_image(
            images[b].reshape(-1), tables, cos_n, sin_n, shift, min_count, padded, values,
            valid, weights, scratch, own_inverse_pairs[k], own_counts, re[k], im[k], means[k],
        )  # fmt: skip
        _round_to_bf16(values, shift, left[k], right[k])


@numba.njit(**KERNEL)
def _resample_part(images, lo, hi, tables, values, valid, invalidated):
    """:func:`_polar_image` of ``images[lo:hi]`` into (B, Q, P) ``values`` and ``valid``.

    ``invalidated`` (B,) int64, out: the samples each image's unusable pixels invalidate.
    """
    padded = _padded_scratch(tables)
    for b in range(lo, hi):
        flat_values, flat_valid = values[b].reshape(-1), valid[b].reshape(-1)
        invalidated[b] = _polar_image(
            images[b].reshape(-1), tables, padded, flat_values, flat_valid, True
        )


@numba.njit(**KERNEL)
def _finish_part(gram, lo, hi, own, own_inverse_pairs, plan_inverse_pairs, re, im, means,
                 exponents, scale_mode, out):  # fmt: skip
    """:func:`._maps.finish_image` of images ``lo:hi`` from their batched products ``gram``
    (B, Q, Q); unscaled maps of scaled values multiplied back (``exponents`` (B,) int64,
    :func:`._maps.unscale_map`)."""
    for b in range(lo, hi):
        inverse_pairs = own_inverse_pairs[b] if own[b] else plan_inverse_pairs
        finish_image(gram[b], inverse_pairs, re[b], im[b], means[b], scale_mode, out[b])
        if exponents[b] != 0 and scale_mode not in INVARIANT_CODES:
            unscale_map(out[b], exponents[b])


@functools.lru_cache(maxsize=4)
def _tables_for(plan: PolarPlan) -> _Tables:
    """The kernel tables of a plan, built once per plan."""
    return _Tables.of(plan)


@functools.lru_cache(maxsize=16)
def _order_tables(plan: PolarPlan, orders: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(N, P) float64 ``cos(n phi_p)`` and ``sin(n phi_p)`` of the orders, built once per plan."""
    angle = np.outer(np.asarray(orders, dtype=np.float64), plan.phi)
    return np.cos(angle), np.sin(angle)


@functools.lru_cache(maxsize=16)
def _inverse_pairs_for(plan: PolarPlan, shift: int) -> np.ndarray:
    """:func:`_inverse_pair_counts` of the plan's validity, built once per (plan, shift)."""
    return _inverse_pair_counts(plan.valid, shift)


def _inverse_pair_counts(valid: np.ndarray, shift: int) -> np.ndarray:
    """(Q, Q) float32 ``1 / sum_p M[i,p] M[j,p+shift]`` (lower triangle), 0 where no pair."""
    weights = np.ascontiguousarray(valid, dtype=np.float32)
    pairs = np.zeros((valid.shape[0], valid.shape[0]), dtype=np.float32)
    correlate_rows(weights, shift, pairs, np.empty_like(weights))
    inverse = np.zeros_like(pairs)
    _invert_pair_counts(pairs, inverse)
    return inverse


class NumbaBackend(ArrayBackend):
    """Fused Numba kernels + BLAS on the CPU; float32 with float64 accumulators.

    Parameters
    ----------
    threads : int, optional
        Threads splitting each batch (default: the CPUs this process may use).
        Use 1 when an outer layer (Dask) already runs one task per core.
    """

    name = "numba"

    def __init__(self, threads: int | None = None):
        super().__init__(np, np.float32)
        self.threads = int(threads or usable_cpus())
        # the loaded BLAS libraries, found once (looking them up costs a millisecond)
        self._thread_pools = ThreadpoolController()

    def asarray(self, array):
        return np.ascontiguousarray(array, dtype=np.float32)

    def resample(self, images, plan: PolarPlan) -> PolarImages:
        images = self.asarray(images)
        tables = _tables_for(plan)
        values = np.empty((images.shape[0], plan.q_bins, plan.phi_bins), dtype=np.float32)
        valid = np.empty(values.shape, dtype=bool)
        invalidated = np.zeros(images.shape[0], dtype=np.int64)

        def run(part: range) -> None:
            _resample_part(images, part.start, part.stop, tables, values, valid, invalidated)

        self._in_parallel(images.shape[0], run)
        for b in np.flatnonzero(invalidated):  # rings unusable pixels leave unused
            thin = valid[b].sum(axis=-1) < plan.min_ring_count
            valid[b, thin] = False
            values[b, thin] = 0
        return PolarImages(values, valid, plan.radius, plan.phi)

    def merged_maps(self, images, plan, settings=None, *, out=None, **fields):
        """The fused kernel; a mode it has no code for takes the array path.

        Estimators other than ``ring`` (the mask-corrected one needs every
        angular lag between partial rings: FFTs) and scalings without a kernel
        code run :meth:`ArrayBackend.merged_maps` in float32 on this backend's
        resampling, with the array functions of :data:`~ccfkit.ccf.ORDER_ESTIMATORS`
        and :data:`~ccfkit.ccf.SCALINGS`. Precision ``bf16`` splits the fused
        loop around batched bfloat16 products (:mod:`._bf16`).
        """
        settings = resolve_settings(settings, **fields)
        settings.check_phi_bins(plan.phi_bins)
        if settings.estimator not in _KERNEL_ESTIMATORS or settings.scale not in SCALE_CODES:
            return super().merged_maps(images, plan, settings, out=out)
        images = self.asarray(images)
        tables = _tables_for(plan)
        shift = angular_shift(settings.delta, plan.phi_bins)
        cos_n, sin_n = _order_tables(plan, settings.orders)
        inverse_pairs = _inverse_pairs_for(plan, shift)
        scale_mode = SCALE_CODES[settings.scale]
        shape = (images.shape[0], settings.channels, plan.q_bins, plan.q_bins)
        out = maps_output(np, out, shape)  # written in place, image by image
        if self.product_precision(settings.precision).rounds_to_bf16:
            self._bf16_maps(images, plan, tables, inverse_pairs, (cos_n, sin_n), shift,
                            scale_mode, out)  # fmt: skip
        else:

            def run(part: range) -> None:
                _merged_maps_part(
                    images, part.start, part.stop, tables, inverse_pairs, cos_n, sin_n, shift,
                    plan.min_ring_count, scale_mode, out,
                )  # fmt: skip

            self._in_parallel(images.shape[0], run)
        return out[:, 0] if settings.channels == 1 else out

    def _bf16_maps(self, images, plan, tables, inverse_pairs, orders, shift, scale_mode, out):
        """Maps with the product in bfloat16, in blocks of images on each thread.

        Per block: the polar values, rounded to bfloat16 as they are written
        (:func:`_prepare_bf16_part`); one batched product on this thread
        (:func:`._bf16.product_of_bits`: AMX or AVX512-BF16 through PyTorch);
        the maps, read from its bfloat16 sums (:func:`._maps.finish_image`).
        A block's arrays stay in cache between the three.
        """
        cos_n, sin_n = orders
        q_bins, phi_bins = plan.q_bins, plan.phi_bins

        def run(part: range) -> None:
            size = max(1, min(_BF16_BLOCK, len(part)))
            left = aligned_empty((size, q_bins, phi_bins), np.uint16)
            right = left if shift % phi_bins == 0 else aligned_empty(left.shape, np.uint16)
            gram = aligned_empty((size, q_bins, q_bins), np.uint16)
            own = np.zeros(size, dtype=np.bool_)
            own_inverse_pairs = np.empty((size, q_bins, q_bins), dtype=np.float32)
            re, im = (np.empty((size, cos_n.shape[0], q_bins)) for _ in range(2))
            means = np.empty((size, q_bins))
            exponents = np.zeros(size, dtype=np.int64)
            with torch_threads_here(1):
                for start in range(part.start, part.stop, size):
                    stop = min(start + size, part.stop)
                    count = stop - start
                    _prepare_bf16_part(
                        images, start, stop, tables, cos_n, sin_n, shift, plan.min_ring_count,
                        left, right, own, own_inverse_pairs, re, im, means, exponents,
                    )  # fmt: skip
                    product_of_bits(left[:count], right[:count], gram[:count])
                    _finish_part(gram, 0, count, own, own_inverse_pairs, inverse_pairs, re, im,
                                 means, exponents, scale_mode, out[start:stop])  # fmt: skip

        self._in_parallel(images.shape[0], run)

    def _in_parallel(self, batch: int, run) -> None:
        """Call ``run(part)`` on contiguous parts of ``range(batch)``, one per thread."""
        threads = max(1, min(self.threads, batch))
        bounds = np.linspace(0, batch, threads + 1).astype(int)
        parts = [range(lo, hi) for lo, hi in itertools.pairwise(bounds)]
        # BLAS threads would compete with ours (and spin badly on a busy machine).
        with self._thread_pools.limit(limits=1, user_api="blas"):
            if threads == 1:
                run(parts[0])
                return
            with ThreadPoolExecutor(threads) as pool:
                for future in [pool.submit(run, part) for part in parts]:
                    future.result()

    def __repr__(self) -> str:
        return f"NumbaBackend(threads={self.threads})"
