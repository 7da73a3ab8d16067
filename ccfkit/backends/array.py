"""The array-generic backend: the NumPy reference and, on a GPU, CuPy.

One class runs the reference functions of :mod:`ccfkit.polar`,
:mod:`ccfkit.fourier` and :mod:`ccfkit.ccf` on any array module with NumPy's
API, so the CuPy path is the tested NumPy path with another ``xp``.
"""

from __future__ import annotations

import threading

import numpy as np

from .. import ccf, fourier
from ..polar import PolarImages, PolarPlan, usable_pixels
from ._base import Backend, BackendUnavailableError, maps_output
from ._bf16 import lag_product_bf16
from ._range import bring_into_range, unscale_maps


class ArrayBackend(Backend):
    """Reference stages on an array module.

    Parameters
    ----------
    xp : module
        ``numpy`` or ``cupy``.
    dtype : numpy dtype
        Working float dtype of the polar values and the maps.
    batch_size : int
        Images processed at once by :meth:`merged_maps` (bounds memory).
    """

    #: Plans whose tables a backend keeps (on the device, for CuPy).
    _PLANS_KEPT = 4

    def __init__(self, xp, dtype=np.float64, batch_size: int = 16):
        self.xp = xp
        self.dtype = np.dtype(dtype)
        self.batch_size = int(batch_size)
        self._tables: dict[PolarPlan, _PlanTables] = {}  # oldest first
        self._tables_lock = threading.Lock()

    def asarray(self, array):
        return self.xp.asarray(array, dtype=self.dtype)

    def resample(self, images, plan: PolarPlan) -> PolarImages:
        xp = self.xp
        tables = self._tables_of(plan)
        images = self.asarray(images)
        flat = images.reshape(images.shape[0], -1)
        # NaN, +-inf and huge pixels invalidate the samples that need them (every index of a
        # valid sample is a pixel it needs: the plan repeats a needed one for zero weights)
        usable = usable_pixels(flat, xp)
        values = (tables.weight * xp.where(usable, flat, 0)[:, tables.index]).sum(axis=-1)
        valid = tables.valid & usable[:, tables.index].all(axis=-1)
        # rings that unusable pixels drop below the plan's fraction are unused too
        valid &= (valid.sum(axis=-1) >= plan.min_ring_count)[..., None]
        values = xp.where(valid, values, 0).astype(self.dtype, copy=False)
        return PolarImages(values, valid, plan.radius, plan.phi)

    def fourier(self, values, valid, orders=None):
        return fourier.fourier_reference(values, valid, orders, xp=self.xp)

    def full_map(self, values, valid, delta: float = 0.0):
        return ccf.full_map_reference(values, valid, delta, xp=self.xp)

    def order_map(self, coefficients):
        return ccf.order_map_reference(coefficients, xp=self.xp)

    def merge_maps(self, full, order, scale=ccf.Scale.MAXABS, means=None):
        return ccf.merge_maps_reference(full, order, scale, means, xp=self.xp)

    def merged_maps(self, images, plan, settings=None, *, out=None, **fields):
        """The chain of :meth:`Backend.merged_maps`, batch by batch, with two shortcuts.

        The full map's denominator (the pair counts, a second batched product)
        is the plan's own, computed once per plan and shift, for every image
        whose unusable pixels invalidate no sample; only the others get their
        own. Counts are exact integers either way, so the maps are identical.
        The mask-corrected order maps take Eq. 14 between complete rings and
        every lag only for the rows of partial rings
        (:func:`~ccfkit.ccf.order_maps_mask_corrected`). Below float64, each
        image's polar values are brought near 1 by a power of two first
        (:mod:`._range`): frames of 1e-20 have squares below float32's range.
        """
        xp = self.xp
        settings = ccf.resolve_settings(settings, **fields)
        settings.check_phi_bins(plan.phi_bins)
        shift = ccf.angular_shift(settings.delta, plan.phi_bins)
        tables = self._tables_of(plan)
        product = ccf.lag_product
        if self.product_precision(settings.precision).rounds_to_bf16:
            product = lag_product_bf16
        shape = (images.shape[0], settings.channels, plan.q_bins, plan.q_bins)
        out = maps_output(xp, out, shape)
        for start in range(0, images.shape[0], self.batch_size):
            polar = self.resample(images[start : start + self.batch_size], plan)
            values, exponents = bring_into_range(polar.values, xp)
            polar = polar._replace(values=values)
            coefficients = self.fourier(polar.values, polar.valid, [0, *settings.orders])
            means, coefficients = coefficients[..., 0].real, coefficients[..., 1:]
            numerator = product(polar.values, shift, xp)
            pairs = xp.broadcast_to(tables.pairs(shift), numerator.shape)
            changed = xp.any(polar.valid != tables.valid, axis=(-2, -1))
            own_validity = bool(changed.any())
            if own_validity:  # images with NaN/inf samples: their own pair counts
                changed = xp.flatnonzero(changed)
                pairs = pairs.copy()
                pairs[changed] = ccf.lag_product(
                    polar.valid[changed].astype(self.dtype), shift, xp
                )
            full = ccf.divide_by_pairs(numerator, pairs, xp)
            if own_validity:  # some image has rings of its own: its own lag counts
                partial = ccf.PartialRings.of_batch(polar.valid, xp)
            else:
                partial = ccf.PartialRings(tables.partial, tables.lag_weights)
            order_maps = ccf.ORDER_ESTIMATORS[settings.estimator](
                polar.values, polar.valid, coefficients, settings.orders, partial, xp
            )
            maps = ccf.assemble_maps(full, order_maps, means, settings.scale, xp)
            maps = unscale_maps(maps, exponents, settings.scale, xp)
            out[start : start + self.batch_size] = maps  # cast to float32 on assignment
        return out[:, 0] if settings.channels == 1 else out

    def _tables_of(self, plan: PolarPlan) -> _PlanTables:
        """The plan's tables as this backend's arrays, built once per plan.

        The last few plans are kept: on a GPU a batch then reuses the device
        copies instead of sending the tables (several MB) again.
        """
        with self._tables_lock:
            tables = self._tables.pop(plan, None)
            if tables is None:
                tables = _PlanTables(plan, self.xp, self.dtype)
                while len(self._tables) >= self._PLANS_KEPT:
                    del self._tables[next(iter(self._tables))]
            self._tables[plan] = tables  # now the newest
            return tables

    def to_numpy(self, array):
        return self.xp.asnumpy(array) if hasattr(self.xp, "asnumpy") else np.asarray(array)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dtype={self.dtype.name})"


class _PlanTables:
    """A plan's arrays on one array module and dtype, with its pair counts per shift."""

    def __init__(self, plan: PolarPlan, xp, dtype: np.dtype):
        self.xp = xp
        self.index = xp.asarray(plan.index)
        self.weight = xp.asarray(plan.weight, dtype=dtype)
        self.valid = xp.asarray(plan.valid)
        self._weights = self.valid.astype(dtype)
        self._pairs = {}
        counts = plan.valid.sum(axis=1)
        #: (R,) rings that are used but not complete: the mask-corrected rows
        self.partial = xp.asarray(np.flatnonzero((counts > 0) & (counts < plan.phi_bins)))
        self._lag_weights = {}

    def pairs(self, shift: int):
        """(Q, Q) ``sum_p M[i,p] M[j,p+shift]`` of the plan's validity (Eq. 13's denominator)."""
        pairs = self._pairs.get(shift)
        if pairs is None:
            pairs = self._pairs[shift] = ccf.lag_product(self._weights, shift, self.xp)
        return pairs

    def lag_weights(self, orders: tuple[int, ...]):
        """:func:`~ccfkit.ccf.mask_corrected_weights` of the partial rings, once per orders.

        (N, R, Q, P/2 + 1) complex128: 26 MB per order and 100 partial rings at
        Q = 224, P = 512. Only the last orders asked are kept.
        """
        weights = self._lag_weights.get(orders)
        if weights is None:
            self._lag_weights = {
                orders: ccf.mask_corrected_weights(self.valid, self.partial, orders, self.xp)
            }
            weights = self._lag_weights[orders]
        return weights


class NumpyBackend(ArrayBackend):
    """The reference: NumPy, float64 by default; always available."""

    name = "numpy"

    def __init__(self, dtype=np.float64, batch_size: int = 16):
        super().__init__(np, dtype, batch_size)


class CupyBackend(ArrayBackend):
    """The reference stages on a CUDA GPU through CuPy, float32 by default.

    Raises
    ------
    BackendUnavailableError
        When CuPy is not installed or no CUDA device is usable.
    """

    name = "cupy"
    device = "cuda"

    def __init__(self, dtype=np.float32, batch_size: int | None = None):
        cupy = _import_cupy()
        if batch_size is None:
            batch_size = _batch_from_free_memory(cupy)
        super().__init__(cupy, dtype, batch_size)


def _import_cupy():
    try:
        import cupy
    except ImportError as error:
        raise BackendUnavailableError(
            "CuPy is not installed (pip install 'ccfkit[gpu]')"
        ) from error
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise BackendUnavailableError("CuPy found no CUDA device")
    except cupy.cuda.runtime.CUDARuntimeError as error:
        raise BackendUnavailableError(f"CUDA is not usable: {error}") from error
    return cupy


def _batch_from_free_memory(cupy, bytes_per_image: int = 16 * 2**20) -> int:
    """Images per GPU batch: a quarter of the free memory, 16 MiB per image."""
    free, _total = cupy.cuda.Device().mem_info
    return int(max(8, min(1024, free // 4 // bytes_per_image)))
