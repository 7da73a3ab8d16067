"""The CPU backend: fused Numba kernels around one BLAS call per image.

Per image, inside one GIL-free kernel per thread: a copy of the image with
NaN/inf pixels as 0, which also tells whether any of them matter; the
bilinear samples from that copy (or, when NaN/inf pixels invalidate samples,
the exact gather that finds which); a vectorised pass per ring for its mean
and the angular orders the maps need (a complex dot product per ring,
float64 accumulators); one BLAS call (SciPy's ``ssyrk``, called directly, see
:mod:`._blas`) forms the lower triangle of ``polar @ polar.T`` (``sgemm`` of
the rolled rows when ``delta`` rounds to a non-zero shift,
``round(delta P / 2 pi) % P != 0``); one pass merges the two triangles and
finds their largest entries, one scales them. The mask's own correlation
(the denominator of Eq. 13) is computed once per plan and reused for every
image whose NaN/inf pixels add no invalid samples. Where the time goes:
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

from ..ccf import Estimator, Scale, angular_shift, resolve_settings
from ..polar import PolarImages, PolarPlan
from ..provenance import usable_cpus
from ._base import BackendUnavailableError
from ._bf16 import lag_product_bf16
from .array import ArrayBackend

try:
    import numba
    from threadpoolctl import ThreadpoolController

    from ._blas import KERNEL, correlate_rows
except ImportError as error:  # pragma: no cover - numba is a dependency
    raise BackendUnavailableError(f"Numba or SciPy's BLAS is not importable: {error}") from error

__all__ = ["NumbaBackend"]

#: Reductions may be reassociated (vectorised); their inputs are finite by construction.
_REDUCTION = {**KERNEL, "fastmath": {"reassoc", "contract", "nnan", "ninf", "nsz"}}
#: The interpolation may fuse its multiply-adds; nothing else is relaxed.
_FUSED = {**KERNEL, "fastmath": {"contract"}}


class _Tables(NamedTuple):
    """A plan's arrays in the kernels' dtypes and layouts, built once per plan.

    Two descriptions of the same bilinear samples (``S = Q * P``, ring-major):

    * the *exact* one, for images whose NaN/inf pixels invalidate samples:
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
        index = plan.index.reshape(-1, 4)
        weight = plan.weight.reshape(-1, 4)
        valid = np.ascontiguousarray(plan.valid).ravel()
        height, width = plan.shape
        used = np.zeros(height * width, dtype=bool)
        used[index[weight > 0]] = True
        zero = height * width + width + 1  # taps zero .. zero + W + 1 all lie in the padding
        return cls(
            index=index.astype(np.int32),
            weight=weight.astype(np.float32),
            valid=valid,
            counts=plan.valid.sum(axis=1),
            corner=np.where(valid, index[:, 0], zero).astype(np.uint32),
            fx=(weight[:, 1] + weight[:, 3]).astype(np.float32),
            fy=(weight[:, 2] + weight[:, 3]).astype(np.float32),
            used=used,
            width=np.uint32(width),
        )


@numba.njit(**KERNEL)
def _padded_scratch(tables):
    """Scratch for :func:`_sanitize`: H * W pixels and 2 W + 4 of zero padding."""
    return np.zeros(tables.used.shape[0] + 2 * np.int64(tables.width) + 4, dtype=np.float32)


#: Pixels at least this large in magnitude (2^126) could overflow float32 in
#: :func:`_interpolate`'s differences; below it every lerp stays finite.
_LERP_SAFE = np.float32(2.0**126)


@numba.njit(**KERNEL)
def _sanitize(image, used, padded):
    """Copy ``image`` into ``padded``, pixels the lerp cannot take as 0; count those that matter.

    A pixel the fast formula cannot take is NaN, +-inf, or at least
    ``_LERP_SAFE`` in magnitude (its difference from a neighbour could
    overflow float32).

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
    bad = 0
    for i in range(pixels):
        value = image[i]
        fits = abs(value) < _LERP_SAFE  # False for NaN, +-inf and huge values
        padded[i] = value if fits else np.float32(0)
        bad += used[i] & ~fits
    for i in range(pixels, padded.shape[0]):
        padded[i] = 0
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
    """Bilinear samples of one image with NaN/inf pixels: the exact path.

    Parameters
    ----------
    image : (H * W,) float32
    index : (S, 4) int32; weight : (S, 4) float32; plan_valid : (S,) bool
        The plan's table flattened over ``S = Q * P`` samples (see
        :class:`~ccfkit.polar.PolarPlan`); invalid samples have zero weights.
    values : (S,) float32, out
        0 where invalid.
    valid : (S,) bool, out
        The plan's validity, less the samples whose value is NaN/inf.

    Returns
    -------
    int
        Number of samples that the plan allows but NaN/inf pixels invalidate.
    """
    extra_invalid = 0
    for s in range(index.shape[0]):
        value = (
            weight[s, 0] * image[index[s, 0]]
            + weight[s, 1] * image[index[s, 1]]
            + weight[s, 2] * image[index[s, 2]]
            + weight[s, 3] * image[index[s, 3]]
        )
        finite = value - value == 0  # False for NaN and +-inf
        values[s] = value if finite else 0
        extra_invalid += plan_valid[s] & ~finite
        valid[s] = plan_valid[s] & finite
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
        Always written when NaN/inf pixels invalidate samples; otherwise
        (the plan's validity) only when ``write_valid``.

    Returns
    -------
    int
        Number of samples that the plan allows but NaN/inf pixels invalidate.
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
    """
    q_bins, phi_bins = values.shape
    for k in range(q_bins):
        if counts[k] == 0:
            means[k] = 0.0
            re[:, k] = 0.0
            im[:, k] = 0.0
            continue
        for c in range(cos_n.shape[0]):
            total = 0.0  # the mean rides along the first order's pass
            sum_re = 0.0
            sum_im = 0.0
            for p in range(phi_bins):
                value = np.float64(values[k, p])
                total += value
                sum_re += value * cos_n[c, p]
                sum_im += value * sin_n[c, p]
            if c == 0:
                means[k] = total / counts[k]
            re[c, k] = sum_re / counts[k]
            im[c, k] = -sum_im / counts[k]


#: ``scale_mode`` codes of the kernels (:class:`~ccfkit.ccf.Scale`).
_SCALE_CODES = {Scale.NONE: 0, Scale.MAXABS: 1, Scale.RING: 2}


@numba.njit(**_REDUCTION)
def _fill_merged(gram, inverse_pairs, re, im, out):
    """Unscaled merged map of one image: ``gram / pairs`` below, order map above.

    Parameters
    ----------
    gram : (Q, Q) float32
        ``polar @ shifted_polar.T``; only ``i >= j`` is read.
    inverse_pairs : (Q, Q) float32
        ``1 / (number of valid sample pairs)``, 0 where there is none.
    re, im : (Q,) float64
        The first order's Fourier coefficients.
    out : (Q, Q) float32, out

    Returns
    -------
    (float32, float32)
        The largest ``|out|`` on and below the diagonal, and above it.
    """
    q_bins = gram.shape[0]
    lower = np.float32(0)
    upper = np.float32(0)
    for i in range(q_bins):
        for j in range(i + 1):
            value = gram[i, j] * inverse_pairs[i, j]
            out[i, j] = value
            lower = max(lower, abs(value))
        for j in range(i + 1, q_bins):
            value = np.float32(re[i] * re[j] + im[i] * im[j])
            out[i, j] = value
            upper = max(upper, abs(value))
    return lower, upper


@numba.njit(**_REDUCTION)
def _fill_order(re, im, out):
    """The order map ``Re(conj(F_i) F_j)`` of one order into (Q, Q) ``out``; its max ``|out|``."""
    q_bins = re.shape[0]
    largest = np.float32(0)
    for i in range(q_bins):
        for j in range(q_bins):
            value = np.float32(re[i] * re[j] + im[i] * im[j])
            out[i, j] = value
            largest = max(largest, abs(value))
    return largest


@numba.njit(**_REDUCTION)
def _scale_map(out, means, scale_mode, lower_largest, upper_largest, lower_offset):
    """Scale a filled (Q, Q) float32 map in place, in one pass (:class:`~ccfkit.ccf.Scale`).

    ``scale_mode`` 0 (none) leaves it; 1 (maxabs) divides the part on and below
    the diagonal by ``lower_largest`` and the part above by ``upper_largest``
    (a part whose largest is 0 stays); 2 (ring) divides by ``means[i] means[j]``,
    subtracts ``lower_offset`` on and below the diagonal, clips to [-1, 1],
    and gives 0 where that product is 0.
    """
    q_bins = out.shape[0]
    if scale_mode == 1:
        lower = 1 / np.float64(lower_largest) if lower_largest > 0 else 1.0
        upper = 1 / np.float64(upper_largest) if upper_largest > 0 else 1.0
        for i in range(q_bins):
            for j in range(i + 1):
                out[i, j] = out[i, j] * lower
            for j in range(i + 1, q_bins):
                out[i, j] = out[i, j] * upper
    elif scale_mode == 2:
        for i in range(q_bins):
            for j in range(q_bins):
                product = means[i] * means[j]
                offset = lower_offset if j <= i else 0.0
                value = out[i, j] / product - offset if product != 0 else 0.0
                out[i, j] = min(1.0, max(-1.0, value))


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
    ``means``.

    Returns
    -------
    bool
        True when the image has its own pair counts (``own_inverse_pairs``),
        False when it shares the plan's.
    """
    q_bins, phi_bins = values.shape
    own = _polar_image(image, tables, padded, values.reshape(-1), valid.reshape(-1), False) > 0
    counts = tables.counts
    if own:  # NaN/inf pixels invalidate samples: the image's own validity
        for k in range(q_bins):
            own_counts[k] = 0
            for p in range(phi_bins):
                own_counts[k] += valid[k, p]
                weights[k, p] = valid[k, p]
        _drop_thin_rings(valid, values, weights, own_counts, min_count)
        correlate_rows(weights, shift, own_inverse_pairs, scratch)
        _invert_pair_counts(own_inverse_pairs, own_inverse_pairs)
        counts = own_counts
    _project_rings(values, counts, cos_n, sin_n, re, im, means)
    return own


@numba.njit(**KERNEL)
def _finish_image(gram, inverse_pairs, re, im, means, scale_mode, out):
    """One image's (C, Q, Q) map from its product ``gram`` and ring orders: fill, then scale."""
    lower, upper = _fill_merged(gram, inverse_pairs, re[0], im[0], out[0])
    _scale_map(out[0], means, scale_mode, lower, upper, 1.0)  # the full map's ring scale is - 1
    for c in range(1, out.shape[0]):
        largest = _fill_order(re[c], im[c], out[c])
        _scale_map(out[c], means, scale_mode, largest, largest, 0.0)


@numba.njit(**KERNEL)
def _merged_maps_part(
    images, lo, hi, tables, plan_inverse_pairs, cos_n, sin_n, shift, min_count, scale_mode, out,
):  # fmt: skip
    """Maps of ``images[lo:hi]`` into ``out[lo:hi]``: the per-thread loop, GIL-free.

    Per image: :func:`_prepare_image`, one float32 BLAS product,
    :func:`_finish_image`. ``out`` is (B, C, Q, Q): channel 0 the merged map of
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
        own = _prepare_image(
            images[b].reshape(-1), tables, cos_n, sin_n, shift, min_count, padded, values, valid,
            weights, scratch, own_inverse_pairs, own_counts, re, im, means,
        )  # fmt: skip
        correlate_rows(values, shift, gram, scratch)
        inverse_pairs = own_inverse_pairs if own else plan_inverse_pairs
        _finish_image(gram, inverse_pairs, re, im, means, scale_mode, out[b])


@numba.njit(**KERNEL)
def _prepare_part(
    images, lo, hi, tables, cos_n, sin_n, shift, min_count, values, own, own_inverse_pairs, re,
    im, means,
):  # fmt: skip
    """:func:`_prepare_image` of ``images[lo:hi]`` into batch arrays (the product comes after).

    ``values`` (B, Q, P); ``own`` (B,) bool; ``own_inverse_pairs`` (B, Q, Q),
    written only where ``own``; ``re``, ``im`` (B, C, Q); ``means`` (B, Q).
    """
    q_bins, phi_bins = values.shape[1:]
    padded = _padded_scratch(tables)
    valid = np.empty((q_bins, phi_bins), dtype=np.bool_)
    scratch = np.empty((q_bins, phi_bins), dtype=np.float32)
    weights = np.empty((q_bins, phi_bins), dtype=np.float32)
    own_counts = np.empty(q_bins, dtype=np.int64)
    for b in range(lo, hi):
        own[b] = _prepare_image(
            images[b].reshape(-1), tables, cos_n, sin_n, shift, min_count, padded, values[b],
            valid, weights, scratch, own_inverse_pairs[b], own_counts, re[b], im[b], means[b],
        )  # fmt: skip


@numba.njit(**KERNEL)
def _resample_part(images, lo, hi, tables, values, valid, invalidated):
    """:func:`_polar_image` of ``images[lo:hi]`` into (B, Q, P) ``values`` and ``valid``.

    ``invalidated`` (B,) int64, out: the samples each image's NaN/inf pixels invalidate.
    """
    padded = _padded_scratch(tables)
    for b in range(lo, hi):
        flat_values, flat_valid = values[b].reshape(-1), valid[b].reshape(-1)
        invalidated[b] = _polar_image(
            images[b].reshape(-1), tables, padded, flat_values, flat_valid, True
        )


@numba.njit(**KERNEL)
def _finish_part(gram, lo, hi, own, own_inverse_pairs, plan_inverse_pairs, re, im, means,
                 scale_mode, out):  # fmt: skip
    """:func:`_finish_image` of images ``lo:hi`` from their batched products ``gram`` (B, Q, Q)."""
    for b in range(lo, hi):
        inverse_pairs = own_inverse_pairs[b] if own[b] else plan_inverse_pairs
        _finish_image(gram[b], inverse_pairs, re[b], im[b], means[b], scale_mode, out[b])


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
        for b in np.flatnonzero(invalidated):  # rings NaN/inf pixels leave unused
            thin = valid[b].sum(axis=-1) < plan.min_ring_count
            valid[b, thin] = False
            values[b, thin] = 0
        return PolarImages(values, valid, plan.radius, plan.phi)

    def merged_maps(self, images, plan, settings=None, **fields):
        """The fused kernel; the mask-corrected estimator takes the array path.

        The mask-corrected order maps need every angular lag between partial
        rings (FFTs): :meth:`ArrayBackend.merged_maps` computes them in float32
        from this backend's gather. Precision ``bf16`` splits the fused loop
        around one batched bfloat16 product (:mod:`._bf16`).
        """
        settings = resolve_settings(settings, **fields)
        settings.check_phi_bins(plan.phi_bins)
        if settings.estimator is Estimator.MASK_CORRECTED:
            return super().merged_maps(images, plan, settings)
        images = self.asarray(images)
        tables = _tables_for(plan)
        shift = angular_shift(settings.delta, plan.phi_bins)
        cos_n, sin_n = _order_tables(plan, settings.orders)
        inverse_pairs = _inverse_pairs_for(plan, shift)
        scale_mode = _SCALE_CODES[settings.scale]
        shape = (images.shape[0], settings.channels, plan.q_bins, plan.q_bins)
        out = np.empty(shape, dtype=np.float32)
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
        """Maps with the product in bfloat16: prepare in parallel, one batched product, finish."""
        cos_n, sin_n = orders
        batch, channels = images.shape[0], cos_n.shape[0]
        values = np.empty((batch, plan.q_bins, plan.phi_bins), dtype=np.float32)
        own = np.zeros(batch, dtype=np.bool_)
        own_inverse_pairs = np.empty((batch, plan.q_bins, plan.q_bins), dtype=np.float32)
        re = np.empty((batch, channels, plan.q_bins))
        im = np.empty((batch, channels, plan.q_bins))
        means = np.empty((batch, plan.q_bins))

        def prepare(part: range) -> None:
            _prepare_part(
                images, part.start, part.stop, tables, cos_n, sin_n, shift,
                plan.min_ring_count, values, own, own_inverse_pairs, re, im, means,
            )  # fmt: skip

        self._in_parallel(batch, prepare)
        with self._thread_pools.limit(limits=self.threads, user_api="openmp"):
            gram = lag_product_bf16(values, shift, np)  # PyTorch's pool, as many threads as ours

        def finish(part: range) -> None:
            _finish_part(gram, part.start, part.stop, own, own_inverse_pairs, inverse_pairs,
                         re, im, means, scale_mode, out)  # fmt: skip

        self._in_parallel(batch, finish)

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
