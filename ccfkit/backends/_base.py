"""The interface every backend implements."""

from __future__ import annotations

import abc

import numpy as np

from .. import ccf
from ..ccf import MapSettings, Precision, Scale
from ..polar import PolarImages, PolarPlan
from ._bf16 import effective_precision, lag_product_bf16
from ._range import bring_into_range, unscale_maps


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run on this machine."""


def maps_output(xp, out, shape: tuple[int, int, int, int]):
    """The (B, C, Q, Q) float32 array that maps are written into.

    Parameters
    ----------
    xp : module
        The backend's array module (numpy or cupy).
    out : array or None
        ``None``: a new array. Otherwise the caller's C-contiguous float32
        array of ``xp``, (B, Q, Q) when ``C == 1`` or (B, C, Q, Q); the
        returned array is a view of it (writes land in ``out``).
    shape : (B, C, Q, Q)

    Returns
    -------
    (B, C, Q, Q) float32 array

    Raises
    ------
    ValueError
        When ``out`` is of another type, dtype, shape or not C-contiguous.
    """
    if out is None:
        return xp.empty(shape, dtype=np.float32)
    expected = shape if shape[1] > 1 else (shape[0], *shape[2:])
    if (
        not isinstance(out, xp.ndarray)
        or out.dtype != np.float32
        or tuple(out.shape) != expected
        or not out.flags.c_contiguous
    ):
        got = f"{type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}"
        raise ValueError(
            f"out must be a C-contiguous float32 {xp.__name__}.ndarray of shape {expected}, "
            f"got {got}"
        )
    return out.reshape(shape)


class Backend(abc.ABC):
    """Applies polar plans and computes CCF maps on one kind of array.

    Each stage takes and returns batch-first arrays of the backend's array
    type (see :meth:`asarray`).
    """

    #: Short name used by :func:`~ccfkit.backends.get_backend`.
    name: str = ""
    #: The array module of this backend's arrays (numpy or cupy).
    xp = np
    #: Where its arrays live: ``"cpu"`` or ``"cuda"``.
    device = "cpu"

    @abc.abstractmethod
    def asarray(self, array):
        """``array`` as this backend's array type and working float dtype."""

    def as_batch(self, images, shape: tuple[int, int]):
        """Validate images against a detector ``shape``; return a (B, H, W) array."""
        images = self.asarray(images)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or tuple(images.shape[1:]) != tuple(shape):
            raise ValueError(
                f"expected images of shape (B, {shape[0]}, {shape[1]}) or "
                f"({shape[0]}, {shape[1]}), got {tuple(images.shape)}"
            )
        return images

    @abc.abstractmethod
    def resample(self, images, plan: PolarPlan) -> PolarImages:
        """(B, H, W) images -> polar values and validity, (B, Q, P) each."""

    @abc.abstractmethod
    def fourier(self, values, valid, orders=None):
        """(B, Q, P) polar images -> (B, Q, N) complex Fourier coefficients."""

    @abc.abstractmethod
    def full_map(self, values, valid, delta: float = 0.0):
        """(B, Q, P) polar images -> (B, Q, Q) full maps (Eq. 13)."""

    @abc.abstractmethod
    def order_map(self, coefficients):
        """(B, Q) complex coefficients of one order -> (B, Q, Q) order maps (Eq. 14)."""

    @abc.abstractmethod
    def merge_maps(self, full, order, scale: Scale | str = Scale.MAXABS, means=None):
        """(B, Q, Q) full and order maps -> (B, Q, Q) merged maps (§5.3)."""

    def merged_maps(
        self, images, plan: PolarPlan, settings: MapSettings | None = None, *, out=None, **fields
    ):
        """(B, H, W) images -> float32 maps, all stages chained.

        Backends override this with a fused path; this chain is the definition.

        Parameters
        ----------
        images : (B, H, W) array
        plan : PolarPlan
        settings : MapSettings, optional
            Orders, separation, estimator and scale; or give its fields
            (``order=n`` for one order) as keywords.
        out : array, optional
            Where to write the maps (:func:`maps_output`): the caller's float32
            array of the returned shape, e.g. reused from batch to batch.

        Returns
        -------
        (B, Q, Q) float32 array for one order, (B, C, Q, Q) for ``C`` orders
        (a view of ``out`` when given).
        """
        settings = ccf.resolve_settings(settings, **fields)
        settings.check_phi_bins(plan.phi_bins)
        xp = self.xp
        polar = self.resample(images, plan)
        values, exponents = bring_into_range(polar.values, xp)  # float32: near 1 (._range)
        polar = polar._replace(values=values)
        coefficients = self.fourier(polar.values, polar.valid, [0, *settings.orders])
        means, coefficients = coefficients[..., 0].real, coefficients[..., 1:]
        if self.product_precision(settings.precision).rounds_to_bf16:
            full = ccf.full_map_reference(
                polar.values, polar.valid, settings.delta, xp, product=lag_product_bf16
            )
        else:
            full = self.full_map(polar.values, polar.valid, settings.delta)
        order_maps = ccf.ORDER_ESTIMATORS[settings.estimator](
            polar.values, polar.valid, coefficients, settings.orders, None, xp
        )
        maps = ccf.assemble_maps(full, order_maps, means, settings.scale, xp)
        maps = unscale_maps(maps, exponents, settings.scale, xp)
        written = maps_output(xp, out, (maps.shape[0], settings.channels, *maps.shape[2:]))
        written[...] = maps  # cast to float32 on assignment, as astype
        return written[:, 0] if settings.channels == 1 else written

    def product_precision(self, precision: Precision | str) -> Precision:
        """The precision this backend's map products run in when ``precision`` is asked.

        ``"bf16"`` steps down to ``"float32"`` (logged once) where the hardware
        has no bfloat16 matrix units (:mod:`._bf16`).
        """
        return effective_precision(precision, self.device)

    def to_numpy(self, array) -> np.ndarray:
        """A host NumPy copy of a backend array."""
        return np.asarray(array)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
