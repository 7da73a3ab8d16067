"""The array-generic backend: the NumPy reference and, on a GPU, CuPy.

One class runs the reference functions of :mod:`ccfkit.polar`,
:mod:`ccfkit.fourier` and :mod:`ccfkit.ccf` on any array module with NumPy's
API, so the CuPy path is the tested NumPy path with another ``xp``.
"""

from __future__ import annotations

import numpy as np

from .. import ccf, fourier
from ..polar import PolarImages, PolarPlan
from ._base import Backend, BackendUnavailableError


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

    def __init__(self, xp, dtype=np.float64, batch_size: int = 16):
        self.xp = xp
        self.dtype = np.dtype(dtype)
        self.batch_size = int(batch_size)

    def asarray(self, array):
        return self.xp.asarray(array, dtype=self.dtype)

    def resample(self, images, plan: PolarPlan) -> PolarImages:
        xp = self.xp
        images = self.asarray(images)
        flat = images.reshape(images.shape[0], -1)
        weight = xp.asarray(plan.weight, dtype=self.dtype)
        with np.errstate(invalid="ignore", over="ignore"):  # 0 * inf: the sample is invalid anyway
            values = (weight * flat[:, xp.asarray(plan.index)]).sum(axis=-1)
        valid = xp.asarray(plan.valid) & xp.isfinite(values)
        values = xp.where(valid, values, 0).astype(self.dtype, copy=False)
        return PolarImages(values, valid, plan.radius, plan.phi)

    def fourier(self, values, valid, orders=None):
        return fourier.fourier_reference(values, valid, orders, xp=self.xp)

    def full_map(self, values, valid, delta: float = 0.0):
        return ccf.full_map_reference(values, valid, delta, xp=self.xp)

    def order_map(self, coefficients):
        return ccf.order_map_reference(coefficients, xp=self.xp)

    def merge_maps(self, full, order, scale=ccf.Scale.MAXABS):
        return ccf.merge_maps_reference(full, order, scale, xp=self.xp)

    def merged_maps(self, images, plan, *, order=8, delta=0.0, scale=ccf.Scale.MAXABS):
        out = self.xp.empty((images.shape[0], plan.q_bins, plan.q_bins), dtype=np.float32)
        for start in range(0, images.shape[0], self.batch_size):
            stop = start + self.batch_size
            out[start:stop] = super().merged_maps(
                images[start:stop], plan, order=order, delta=delta, scale=scale
            )
        return out

    def to_numpy(self, array):
        return self.xp.asnumpy(array) if hasattr(self.xp, "asnumpy") else np.asarray(array)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dtype={self.dtype.name})"


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

    def __init__(self, dtype=np.float32, batch_size: int | None = None):
        cupy = _import_cupy()
        super().__init__(cupy, dtype, batch_size or 256)
        if batch_size is None:
            self.batch_size = _batch_from_free_memory(cupy)


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
