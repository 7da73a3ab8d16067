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

from ..buffers import aligned_empty
from ..ccf import Scale, angular_shift
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
def _project_rings(values, counts, cos_n, sin_n, re, im):
    """One angular order of each ring, ``F[k, n] = sum_p v e^{-i n phi_p} / count``.

    Parameters
    ----------
    values : (Q, P) float32
        Polar values, 0 where invalid.
    counts : (Q,) int64
        Valid samples per ring.
    cos_n, sin_n : (P,) float64
        ``cos(n phi_p)``, ``sin(n phi_p)``.
    re, im : (Q,) float64, out
        Accumulated in float64.
    """
    q_bins, phi_bins = values.shape
    for k in range(q_bins):
        sum_re = 0.0
        sum_im = 0.0
        for p in range(phi_bins):
            value = np.float64(values[k, p])
            sum_re += value * cos_n[p]
            sum_im += value * sin_n[p]
        if counts[k] > 0:
            re[k] = sum_re / counts[k]
            im[k] = -sum_im / counts[k]
        else:
            re[k] = 0.0
            im[k] = 0.0


@numba.njit(**_REDUCTION)
def _merge_triangles(gram, inverse_pairs, re, im, maxabs, out):
    """Merged map of one image: ``gram / pairs`` below, order map above.

    Parameters
    ----------
    gram : (Q, Q) float32
        ``polar @ shifted_polar.T``; only ``i >= j`` is read.
    inverse_pairs : (Q, Q) float32
        ``1 / (number of valid sample pairs)``, 0 where there is none.
    re, im : (Q,) float64
        The order-n Fourier coefficients.
    maxabs : bool
        Scale each triangle by its largest absolute value.
    out : (Q, Q) float32, out
    """
    q_bins = gram.shape[0]
    full_max = np.float32(0)
    order_max = 0.0
    for i in range(q_bins):
        for j in range(i + 1):
            value = gram[i, j] * inverse_pairs[i, j]
            out[i, j] = value
            full_max = max(full_max, abs(value))
        for j in range(i + 1, q_bins):
            value = re[i] * re[j] + im[i] * im[j]
            out[i, j] = value
            order_max = max(order_max, abs(value))
    if not maxabs:
        return
    full_scale = np.float32(1 / full_max if full_max > 0 else 1)
    order_scale = np.float32(1 / order_max if order_max > 0 else 1)
    for i in range(q_bins):
        for j in range(i + 1):
            out[i, j] *= full_scale
        for j in range(i + 1, q_bins):
            out[i, j] *= order_scale


@numba.njit(**KERNEL)
def _invert_pair_counts(pairs, out):
    """``out = 1 / pairs`` where ``pairs > 0``, else 0 (lower triangle only)."""
    for i in range(pairs.shape[0]):
        for j in range(i + 1):
            out[i, j] = 1 / pairs[i, j] if pairs[i, j] > 0 else 0


@numba.njit(**KERNEL)
def _merged_maps_part(
    images, lo, hi, index, weight, plan_valid, plan_counts, plan_inverse_pairs, cos_n, sin_n,
    shift, maxabs, out,
):  # fmt: skip
    """Merged maps of ``images[lo:hi]`` into ``out[lo:hi]``: the per-thread loop, GIL-free.

    Per image: gather (with NaN/inf check), one order per ring, one BLAS
    product, merge. An image whose NaN/inf pixels invalidate samples gets its
    own ring counts and pair counts (one more BLAS product); the others share
    the plan's.
    """
    q_bins, phi_bins = plan_valid.shape[0] // cos_n.shape[0], cos_n.shape[0]
    values = np.empty((q_bins, phi_bins), dtype=np.float32)
    valid = np.empty((q_bins, phi_bins), dtype=np.bool_)
    scratch = np.empty((q_bins, phi_bins), dtype=np.float32)
    weights = np.empty((q_bins, phi_bins), dtype=np.float32)
    gram = np.empty((q_bins, q_bins), dtype=np.float32)
    own_inverse_pairs = np.empty((q_bins, q_bins), dtype=np.float32)
    own_counts = np.empty(q_bins, dtype=np.int64)
    re = np.empty(q_bins)
    im = np.empty(q_bins)
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
            correlate_rows(weights, shift, gram, scratch)
            _invert_pair_counts(gram, own_inverse_pairs)
            counts, inverse_pairs = own_counts, own_inverse_pairs
        _project_rings(values, counts, cos_n, sin_n, re, im)
        correlate_rows(values, shift, gram, scratch)
        _merge_triangles(gram, inverse_pairs, re, im, maxabs, out[b])


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
def _order_tables(plan: PolarPlan, order: int) -> tuple[np.ndarray, np.ndarray]:
    """``cos(n phi_p)`` and ``sin(n phi_p)`` (float64) of one order, built once per (plan, n)."""
    return np.cos(order * plan.phi), np.sin(order * plan.phi)


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
        return PolarImages(values, valid, plan.radius, plan.phi)

    def merged_maps(self, images, plan, *, order=8, delta=0.0, scale=Scale.MAXABS):
        images = self.asarray(images)
        tables = _tables_for(plan)
        shift = angular_shift(delta, plan.phi_bins)
        cos_n, sin_n = _order_tables(plan, order)
        inverse_pairs = _inverse_pairs_for(plan, shift)
        maxabs = Scale(scale) is Scale.MAXABS
        # page-aligned: a store chunk of maps can then be written with O_DIRECT, uncopied
        out = aligned_empty((images.shape[0], plan.q_bins, plan.q_bins), np.float32)

        def run(part: range) -> None:
            _merged_maps_part(
                images, part.start, part.stop, tables.index, tables.weight, tables.valid,
                tables.counts, inverse_pairs, cos_n, sin_n, shift, maxabs, out,
            )  # fmt: skip

        self._in_parallel(images.shape[0], run)
        return out

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
