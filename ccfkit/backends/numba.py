"""The CPU backend: fused Numba kernels around one BLAS call per image.

Per image, inside one GIL-free kernel per thread: a pass over the polar grid
gathers the bilinear samples and checks them for NaN/inf; a vectorised pass
takes the single angular order that the order-n map needs (a complex dot
product per ring, float64 accumulators); one BLAS call (SciPy's ``ssyrk``,
called directly, see :mod:`._blas`) forms the lower triangle of
``polar @ polar.T`` (``sgemm`` of the rolled rows when ``delta`` rounds to a
non-zero shift, ``round(delta P / 2 pi) % P != 0``); one pass merges and scales
the two triangles. The mask's own correlation (the denominator of Eq. 13) is
computed once per plan and reused for every image whose NaN/inf pixels add no
invalid samples.

Parallelism has one level on purpose: the batch is split into contiguous
parts, one per thread; kernels release the GIL and BLAS is held to one thread
while they run (two BLAS pools spinning beside the kernels slow both down).
"""

from __future__ import annotations

import functools
import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..ccf import Estimator, Scale, angular_shift, resolve_settings
from ..polar import PolarImages, PolarPlan
from ._base import BackendUnavailableError, usable_cpus
from .array import ArrayBackend

try:
    import numba
    from threadpoolctl import ThreadpoolController

    from ._blas import KERNEL, correlate_rows
except ImportError as error:  # pragma: no cover - numba is a dependency
    raise BackendUnavailableError(f"Numba or SciPy's BLAS is not importable: {error}") from error

__all__ = ["NumbaBackend"]

#: A sum of pixel bits the cache-warming read of :func:`_gather` compares against.
_UNLIKELY_SUM = -0x5DEECE66D3A1B2C

#: Reductions may be reassociated (vectorised); their inputs are finite by construction.
_REDUCTION = {**KERNEL, "fastmath": {"reassoc", "contract", "nnan", "ninf", "nsz"}}


@numba.njit(**KERNEL)
def _gather(image, index, weight, plan_valid, values, valid, write_valid):
    """Bilinear samples of one image.

    Parameters
    ----------
    image : (H * W,) float32
    index : (S, 4) int32; weight : (S, 4) float32; plan_valid : (S,) bool
        The plan's table flattened over ``S = Q * P`` samples (see
        :class:`~ccfkit.polar.PolarPlan`); invalid samples have zero weights.
    values : (S,) float32, out
        0 where invalid.
    valid : (S,) bool, out
        Written only when ``write_valid``: the maps need it only for images
        whose NaN/inf pixels invalidate samples (the return value says so).
    write_valid : bool

    Returns
    -------
    int
        Number of samples that the plan allows but NaN/inf pixels invalidate
        (NaN/inf in pixels no valid sample uses do not count).
    """
    # One sequential read pulls the image into cache: the gather below reads it
    # in an order that hardware prefetchers cannot follow. Summed as integers:
    # masked pixels may hold NaN, and a NaN here must not count as invalid.
    touched = 0
    bits = image.view(np.int32)
    for i in range(0, image.shape[0], 16):
        touched += bits[i]
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
        if write_valid:
            valid[s] = plan_valid[s] & finite
    # the comparison keeps the read; it is true for ~2^-64 of images, which then
    # take the exact (slower) path of images with NaN/inf samples
    return extra_invalid + (touched == _UNLIKELY_SUM)


@numba.njit(**_REDUCTION)
def _project_rings(values, counts, cos_n, sin_n, re, im, means):
    """Ring means and chosen angular orders, ``F[k, n] = sum_p v e^{-i n phi_p} / count``.

    Parameters
    ----------
    values : (Q, P) float32
        Polar values, 0 where invalid.
    counts : (Q,) int64
        Valid samples per ring (0 for an unused ring).
    cos_n, sin_n : (N, P) float64
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
        total = 0.0
        for p in range(phi_bins):
            total += np.float64(values[k, p])
        means[k] = total / counts[k]
        for c in range(cos_n.shape[0]):
            sum_re = 0.0
            sum_im = 0.0
            for p in range(phi_bins):
                value = np.float64(values[k, p])
                sum_re += value * cos_n[c, p]
                sum_im += value * sin_n[c, p]
            re[c, k] = sum_re / counts[k]
            im[c, k] = -sum_im / counts[k]


#: ``scale_mode`` codes of the kernels (:class:`~ccfkit.ccf.Scale`).
_SCALE_CODES = {Scale.NONE: 0, Scale.MAXABS: 1, Scale.RING: 2}
#: Parts of a map that :func:`_scale_part` scales together.
_LOWER, _UPPER, _WHOLE = 0, 1, 2


@numba.njit(**_REDUCTION)
def _merge_triangles(gram, inverse_pairs, re, im, out):
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
    """
    q_bins = gram.shape[0]
    for i in range(q_bins):
        for j in range(i + 1):
            out[i, j] = gram[i, j] * inverse_pairs[i, j]
        for j in range(i + 1, q_bins):
            out[i, j] = re[i] * re[j] + im[i] * im[j]


@numba.njit(**_REDUCTION)
def _order_channel(re, im, out):
    """The order map ``Re(conj(F_i) F_j)`` of one order, both triangles, into (Q, Q) ``out``."""
    q_bins = re.shape[0]
    for i in range(q_bins):
        for j in range(q_bins):
            out[i, j] = re[i] * re[j] + im[i] * im[j]


@numba.njit(**_REDUCTION)
def _scale_part(out, means, scale_mode, part):
    """Scale one part of a (Q, Q) float32 map in place (:class:`~ccfkit.ccf.Scale`).

    ``part``: ``_LOWER`` (on and below the diagonal: the full map, ``- 1``
    under ``"ring"``), ``_UPPER`` (above it) or ``_WHOLE``. ``scale_mode``:
    0 none, 1 maxabs, 2 ring (divided by ``means[i] means[j]``, clipped to
    [-1, 1], 0 where that product is 0).
    """
    q_bins = out.shape[0]
    if scale_mode == 0:
        return
    largest = 0.0
    if scale_mode == 1:
        for i in range(q_bins):
            lo = i + 1 if part == _UPPER else 0
            hi = i + 1 if part == _LOWER else q_bins
            for j in range(lo, hi):
                largest = max(largest, abs(np.float64(out[i, j])))
    factor = 1 / largest if largest > 0 else 1.0
    offset = 1.0 if part == _LOWER else 0.0
    for i in range(q_bins):
        lo = i + 1 if part == _UPPER else 0
        hi = i + 1 if part == _LOWER else q_bins
        for j in range(lo, hi):
            if scale_mode == 1:
                out[i, j] = out[i, j] * factor
            else:
                product = means[i] * means[j]
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
def _merged_maps_part(
    images, lo, hi, index, weight, plan_valid, plan_counts, plan_inverse_pairs, cos_n, sin_n,
    shift, min_count, scale_mode, out,
):  # fmt: skip
    """Maps of ``images[lo:hi]`` into ``out[lo:hi]``: the per-thread loop, GIL-free.

    Per image: gather (with NaN/inf check), the orders of each ring, one BLAS
    product, merge, extra order channels, scale. An image whose NaN/inf pixels
    invalidate samples gets its own ring counts and pair counts (one more BLAS
    product), and loses the rings they leave below ``min_count``; the others
    share the plan's. ``out`` is (B, C, Q, Q): channel 0 the merged map of the
    first order, channel ``c`` the order map of order ``c``.
    """
    q_bins, phi_bins = plan_valid.shape[0] // cos_n.shape[1], cos_n.shape[1]
    channels = cos_n.shape[0]
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
        image = images[b].reshape(-1)
        flat_values, flat_valid = values.reshape(-1), valid.reshape(-1)
        counts, inverse_pairs = plan_counts, plan_inverse_pairs
        if _gather(image, index, weight, plan_valid, flat_values, flat_valid, False):
            # NaN/inf pixels: gather again, keeping the validity this time
            _gather(image, index, weight, plan_valid, flat_values, flat_valid, True)
            for k in range(q_bins):
                own_counts[k] = 0
                for p in range(phi_bins):
                    own_counts[k] += valid[k, p]
                    weights[k, p] = valid[k, p]
            _drop_thin_rings(valid, values, weights, own_counts, min_count)
            correlate_rows(weights, shift, gram, scratch)
            _invert_pair_counts(gram, own_inverse_pairs)
            counts, inverse_pairs = own_counts, own_inverse_pairs
        _project_rings(values, counts, cos_n, sin_n, re, im, means)
        correlate_rows(values, shift, gram, scratch)
        _merge_triangles(gram, inverse_pairs, re[0], im[0], out[b, 0])
        _scale_part(out[b, 0], means, scale_mode, _LOWER)
        _scale_part(out[b, 0], means, scale_mode, _UPPER)
        for c in range(1, channels):
            _order_channel(re[c], im[c], out[b, c])
            _scale_part(out[b, c], means, scale_mode, _WHOLE)


class _PlanTables:
    """A plan's arrays in the kernels' dtypes and layouts (what every call needs)."""

    def __init__(self, plan: PolarPlan):
        self.index = plan.index.astype(np.int32).reshape(-1, 4)
        self.weight = plan.weight.astype(np.float32).reshape(-1, 4)
        self.valid = np.ascontiguousarray(plan.valid).ravel()
        self.counts = plan.valid.sum(axis=1)

    def gather(self, image, values, valid) -> int:
        """Resample one (H, W) float32 image into (Q, P) ``values`` and ``valid``."""
        return _gather(
            image.reshape(-1),
            self.index,
            self.weight,
            self.valid,
            values.reshape(-1),
            valid.reshape(-1),
            True,
        )


@functools.lru_cache(maxsize=4)
def _tables_for(plan: PolarPlan) -> _PlanTables:
    """The kernel tables of a plan, built once per plan."""
    return _PlanTables(plan)


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

        def run(part: range) -> None:
            for b in part:
                tables.gather(images[b], values[b], valid[b])

        self._in_parallel(images.shape[0], run)
        thin = valid.sum(axis=-1) < plan.min_ring_count  # rings NaN/inf pixels leave unused
        valid[thin] = False
        values[thin] = 0
        return PolarImages(values, valid, plan.radius, plan.phi)

    def merged_maps(self, images, plan, settings=None, **fields):
        """The fused kernel; the mask-corrected estimator takes the array path.

        The mask-corrected order maps need every angular lag between partial
        rings (FFTs): :meth:`ArrayBackend.merged_maps` computes them in float32
        from this backend's gather.
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
        out = np.empty(
            (images.shape[0], settings.channels, plan.q_bins, plan.q_bins), dtype=np.float32
        )

        def run(part: range) -> None:
            _merged_maps_part(
                images, part.start, part.stop, tables.index, tables.weight, tables.valid,
                tables.counts, inverse_pairs, cos_n, sin_n, shift, plan.min_ring_count,
                scale_mode, out,
            )  # fmt: skip

        self._in_parallel(images.shape[0], run)
        return out[:, 0] if settings.channels == 1 else out

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
