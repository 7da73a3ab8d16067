"""The two-point cross-correlation maps and their merge (docs/ccf.md §3–4).

* Order-n map (Eq. 14): ``Cn[i, j] = Re(conj(F[i, n]) F[j, n])``.
* Full map (Eq. 13) at angular separation ``delta``:
  ``C[i, j] = sum_p M[i,p] M[j,p+d] I[i,p] I[j,p+d] / sum_p M[i,p] M[j,p+d]``
  with ``d = round(delta P / 2 pi)`` and indices mod ``P``; 0 where no pair of
  samples is valid. Numerator and denominator are matrix products.
* Order-n map, estimator ``"mask-corrected"`` (J. Appl. Cryst. 57, 324
  (2024), Eq. 16): ``Cn[i, j] = Re (1/P) sum_d exp(-i n 2 pi d / P) C_d[i, j]``
  with ``C_d`` the full map at shift ``d``, over all lags. For two fully
  valid rings it equals Eq. 14; a pure radial profile under any mask gives 0.
* Merged map (§5.3, Fig. 4): full map on and below the diagonal, order-n map
  above it, each triangle scaled on its own (:class:`Scale`). Several orders
  add one channel per further order (both triangles that order's map).

docs/ccf.md states every formula. The ``*_reference`` functions are
array-generic: ``xp`` is numpy or cupy.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ORDER_ESTIMATORS",
    "SCALINGS",
    "Estimator",
    "MapSettings",
    "PartialRings",
    "Precision",
    "Scale",
    "angular_shift",
    "assemble_maps",
    "full_map_reference",
    "lag_pair_counts",
    "mask_corrected_weights",
    "merge_maps_reference",
    "order_map_reference",
    "order_maps_mask_corrected",
    "order_maps_mask_corrected_reference",
    "order_maps_of_lags",
    "order_maps_ring",
    "resolve_settings",
    "scale_maps",
    "scale_maxabs",
    "scale_none",
    "scale_ring",
]


class Scale(str, enum.Enum):
    """How each triangle of the merged map is scaled."""

    #: Divide each triangle by its largest absolute value: both lie in [-1, 1].
    MAXABS = "maxabs"
    #: Keep the values of docs/ccf.md (intensity squared units).
    NONE = "none"
    #: Divide each entry by the product of its two rings' mean intensities,
    #: minus 1 on the full triangle (the normalised CCF), clipped to [-1, 1].
    RING = "ring"


class Estimator(str, enum.Enum):
    """How the order-n map is estimated from masked rings."""

    #: Eq. 14 from each ring's Fourier coefficient (Eq. 15): the paper's.
    RING = "ring"
    #: The angular Fourier component of the mask-corrected full CCF over all
    #: lags (J. Appl. Cryst. 57, 324 (2024), Eq. 16): no leakage of the mask.
    MASK_CORRECTED = "mask-corrected"


class Precision(str, enum.Enum):
    """The arithmetic of the full map's numerator, the one matrix product of a map."""

    #: float32 inputs, float32 accumulation.
    FLOAT32 = "float32"
    #: bfloat16 inputs (8 significant bits), float32 accumulation, on hardware
    #: that has it (docs/ccf.md, "Precision"); elsewhere float32, with a log line.
    BF16 = "bf16"
    #: The roundings of ``BF16`` on any hardware, emulated where there are no
    #: bf16 units (slower than float32): to study their effect anywhere.
    BF16_EMULATED = "bf16-emulated"

    @property
    def rounds_to_bf16(self) -> bool:
        """Whether the product's inputs are rounded to bfloat16."""
        return self is not Precision.FLOAT32


@dataclass(frozen=True)
class MapSettings:
    """What maps to compute from polar images: orders, separation, estimator, scale.

    Parameters
    ----------
    orders : tuple of int
        Angular orders ``n``: the first is the merged map's upper triangle,
        each further one an extra channel (the order-n map, both triangles).
    delta : float
        Angular separation of the full map, radians.
    estimator : Estimator or str
        The order-n estimator.
    scale : Scale or str
        The scaling of each triangle (and each extra channel).
    precision : Precision or str
        The arithmetic of the full map's product ``polar @ polar.T``; the pair
        counts, Fourier orders and scaling stay float32 or better.
    """

    orders: tuple[int, ...] = (8,)
    delta: float = 0.0
    estimator: Estimator = Estimator.RING
    scale: Scale = Scale.MAXABS
    precision: Precision = Precision.FLOAT32

    def __post_init__(self):
        orders = (self.orders,) if isinstance(self.orders, int) else tuple(self.orders)
        if not orders:
            raise ValueError("orders must name at least one angular order")
        if any(int(n) != n or n < 0 for n in orders):
            raise ValueError(f"orders must be non-negative integers, got {orders}")
        if len(set(orders)) != len(orders):
            raise ValueError(f"orders must not repeat, got {orders}")
        object.__setattr__(self, "orders", tuple(int(n) for n in orders))
        object.__setattr__(self, "delta", float(self.delta))
        object.__setattr__(self, "estimator", Estimator(self.estimator))
        object.__setattr__(self, "scale", Scale(self.scale))
        object.__setattr__(self, "precision", Precision(self.precision))

    @property
    def channels(self) -> int:
        """Channels ``C`` of a map: one per order."""
        return len(self.orders)

    def check_phi_bins(self, phi_bins: int) -> None:
        """Raise ValueError when an order exceeds ``P / 2``."""
        if max(self.orders) > phi_bins // 2:
            raise ValueError(
                f"orders must lie in 0..phi_bins/2 = 0..{phi_bins // 2}, got {self.orders}"
            )


def resolve_settings(settings: MapSettings | None = None, **fields) -> MapSettings:
    """``settings``, or a :class:`MapSettings` of ``fields`` (``order=n`` means ``orders=(n,)``)."""
    if settings is not None:
        if fields:
            raise TypeError(f"give either settings or {', '.join(fields)}, not both")
        return settings
    if "order" in fields:
        if "orders" in fields:
            raise TypeError("give either order or orders, not both")
        fields["orders"] = (fields.pop("order"),)
    return MapSettings(**fields)


def angular_shift(delta: float, phi_bins: int) -> int:
    """The sample shift ``d = round(delta P / 2 pi)`` for a separation in radians."""
    return round(delta * phi_bins / (2.0 * math.pi))


def full_map_reference(values, valid, delta: float = 0.0, xp=np, product=None):
    """Mask-corrected full CCF (Eq. 13) of a batch of polar images.

    Parameters
    ----------
    values : (B, Q, P) real array
        Polar images, 0 where invalid.
    valid : (B, Q, P) bool array
    delta : float
        Angular separation in radians.
    product : callable, optional
        ``product(rows, shift, xp)`` for the numerator, :func:`lag_product` by
        default (the pair counts always use it: they are exact integers).

    Returns
    -------
    (B, Q, Q) array
        ``C[b, i, j]``, symmetric when ``delta == 0``.
    """
    shift = angular_shift(delta, values.shape[-1])
    numerator = (product or lag_product)(values, shift, xp)
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


def order_maps_mask_corrected_reference(values, valid, orders: Sequence[int], xp=np):
    """Mask-corrected order-n maps (Eq. 16 of J. Appl. Cryst. 57, 324), every pair by FFT.

    ``Cn[i, j] = Re (1/P) sum_d exp(-2 pi i n d / P) C_d[i, j]`` with ``C_d``
    the full map (Eq. 13) at shift ``d``, for all ``P`` shifts; a lag without
    any valid pair takes the mean of the pair's measured lags (not 0, which
    would be angular structure of the mask's making). Numerator and
    pair counts of every lag come from one FFT per ring (cross-correlation
    theorem). This is the definition; :func:`order_maps_mask_corrected` is the
    same number with Eq. 14 where both rings are complete.

    Parameters
    ----------
    values : (B, Q, P) real array
        Polar images, 0 where invalid.
    valid : (B, Q, P) bool array
    orders : sequence of int

    Returns
    -------
    (B, N, Q, Q) real array
        One symmetric map per order.
    """
    rows = xp.arange(values.shape[-2])
    return _mask_corrected_rows(values, valid, orders, rows, xp)


def order_maps_mask_corrected(values, valid, coefficients, orders, partial, weights=None,
                              xp=np):  # fmt: skip
    """Mask-corrected order-n maps, by Eq. 14 between complete rings.

    For two complete rings ``C_d`` is ``(1/P) sum_p I_i(p) I_j(p + d)`` and the
    sum over lags factorises into ``Re(conj(F_i) F_j)`` (Eq. 14); only the
    rows and columns of ``partial`` rings need every lag. When every image
    shares the plan's validity, those rows come from the plan's lag weights
    in frequency (:func:`mask_corrected_weights`): one product per pair and
    frequency, no FFT per pair.

    Parameters
    ----------
    values : (B, Q, P) real array; valid : (B, Q, P) bool array
    coefficients : (B, Q, N) complex array
        ``F[b, k, n]`` of ``orders`` (Eq. 15).
    orders : sequence of int
    partial : (R,) int array
        Rings that are used but not complete (in any image of the batch).
    weights : (N, R, Q, P/2 + 1) complex array, optional
        :func:`mask_corrected_weights` of ``partial``, when all images share
        the validity they were made from; without it every lag is computed
        per image (:func:`order_maps_mask_corrected_reference`'s way).

    Returns
    -------
    (B, N, Q, Q) real array
    """
    out = order_map_reference(xp.moveaxis(coefficients, -1, -2), xp)  # (B, N, Q, Q)
    if partial.shape[0]:
        if weights is None:
            rows = _mask_corrected_rows(values, valid, orders, partial, xp)[:, :, partial]
        else:
            rows = _weighted_rows(values, weights, partial, xp)
        out[:, :, partial, :] = rows
        out[:, :, :, partial] = xp.swapaxes(rows, -1, -2)
    return out


@dataclass(frozen=True)
class PartialRings:
    """The rings of a batch that are used but not complete: the mask-corrected estimator's rows.

    Parameters
    ----------
    rows : (R,) int array
    lag_weights : callable, optional
        ``lag_weights(orders)``: :func:`mask_corrected_weights` of ``rows``, given when
        every image of the batch shares the validity they were made from.
    """

    rows: Any
    lag_weights: Callable[[tuple[int, ...]], Any] | None = None

    @classmethod
    def of_batch(cls, valid, xp=np) -> PartialRings:
        """The rings partial in any image of a (B, Q, P) validity, without lag weights."""
        counts = valid.sum(axis=-1)
        return cls(xp.flatnonzero(xp.any((counts > 0) & (counts < valid.shape[-1]), axis=0)))


def order_maps_ring(values, valid, coefficients, orders, partial=None, xp=np):
    """``Estimator.RING``: Eq. 14 of each order, (B, N, Q, Q) (arguments of :data:`ORDER_ESTIMATORS`)."""
    return order_map_reference(xp.moveaxis(coefficients, -1, -2), xp)


def order_maps_of_lags(values, valid, coefficients, orders, partial=None, xp=np):
    """``Estimator.MASK_CORRECTED``, (B, N, Q, Q) (arguments of :data:`ORDER_ESTIMATORS`).

    Without ``partial`` the definition (:func:`order_maps_mask_corrected_reference`,
    every row by lags); with it, Eq. 14 between complete rings and lags for
    ``partial.rows`` only (:func:`order_maps_mask_corrected`).
    """
    if partial is None:
        return order_maps_mask_corrected_reference(values, valid, orders, xp)
    weights = None if partial.lag_weights is None else partial.lag_weights(tuple(orders))
    return order_maps_mask_corrected(values, valid, coefficients, orders, partial.rows, weights,
                                     xp)  # fmt: skip


#: The array function of each :class:`Estimator`, ``f(values, valid, coefficients, orders,
#: partial, xp)`` -> (B, N, Q, Q) order maps: ``values`` (B, Q, P) polar values, 0 where
#: invalid; ``valid`` (B, Q, P) bool; ``coefficients`` (B, Q, N) of ``orders`` (Eq. 15);
#: ``partial`` a :class:`PartialRings`, or None for the definition. Every backend computes a
#: mode from this table; the Numba kernels have their own code for some (the others take
#: the array path).
ORDER_ESTIMATORS = {Estimator.RING: order_maps_ring, Estimator.MASK_CORRECTED: order_maps_of_lags}


def mask_corrected_weights(valid, rows, orders, xp=np):
    """The lag weights of the mask-corrected estimator, in frequency, for rows ``rows``.

    With ``N_d[i, j] = sum_p a_i(p) a_j(p + d)`` (``a`` the masked values) the
    estimator is linear in ``N_d``: ``Cn[i, j] = (1/P) sum_d w_d[i, j] N_d[i, j]``
    with ``w_d = [D_d > 0] (cos(n phi_d) + S / L) / D_d`` (``D_d`` the pair
    counts, ``L`` the number of measured lags, ``S`` the sum of ``cos(n phi_d)``
    over the unmeasured ones: the fill by the mean). By the
    cross-correlation theorem ``sum_d w_d N_d = (1/P) sum_k h_k
    Re(conj(A_i[k]) A_j[k] conj(W[k]))`` over the rfft bins ``k``, with ``A``
    and ``W`` the rffts of ``a`` and ``w`` and ``h = 1, 2, ..., 2, 1``.

    Parameters
    ----------
    valid : (Q, P) bool array
        The validity shared by the images.
    rows : (R,) int array
    orders : sequence of int

    Returns
    -------
    (N, R, Q, P/2 + 1) complex128 array
        ``conj(W) h / P^2``, ready to multiply ``conj(A_i) A_j`` with.
    """
    phi_bins = valid.shape[-1]
    angle = 2 * np.pi * np.outer(np.asarray(orders, dtype=np.float64), np.arange(phi_bins))
    cosine = xp.asarray(np.cos(angle / phi_bins))  # (N, P)
    bins = phi_bins // 2 + 1
    h = np.full(bins, 2.0)
    h[0] = h[-1] = 1.0
    h = xp.asarray(h / phi_bins**2)
    out = xp.empty((len(orders), rows.shape[0], valid.shape[0], bins), dtype=np.complex128)
    for start in range(0, rows.shape[0], _ROW_BLOCK):
        block = rows[start : start + _ROW_BLOCK]
        counts = lag_pair_counts(valid[block], valid, xp)  # (r, Q, P)
        measured = counts > 0
        lags = xp.maximum(measured.sum(axis=-1, keepdims=True), 1)
        inverse = xp.where(measured, 1 / xp.where(measured, counts, 1), 0)
        for c in range(len(orders)):
            unmeasured = xp.where(measured, 0, cosine[c]).sum(axis=-1, keepdims=True)
            lag_weights = inverse * (cosine[c] + unmeasured / lags)
            out[c, start : start + _ROW_BLOCK] = xp.conj(xp.fft.rfft(lag_weights, axis=-1)) * h
    return out


def _weighted_rows(values, weights, rows, xp):
    """(B, N, R, Q) mask-corrected rows from :func:`mask_corrected_weights`."""
    spectra = xp.fft.rfft(values.astype(np.float64), axis=-1)  # (B, Q, K)
    batch, q_bins = values.shape[:2]
    out = xp.empty((batch, weights.shape[0], rows.shape[0], q_bins), dtype=np.float64)
    for b in range(batch):
        for start in range(0, rows.shape[0], _ROW_BLOCK):
            block = rows[start : start + _ROW_BLOCK]
            products = xp.conj(spectra[b, block])[:, None, :] * spectra[b][None]  # (r, Q, K)
            out[b, :, start : start + _ROW_BLOCK] = xp.einsum(
                "rjk,nrjk->nrj", products, weights[:, start : start + _ROW_BLOCK]
            ).real
    return out


def lag_pair_counts(valid_rows, valid, xp=np):
    """``counts[r, j, d] = sum_p valid_rows[r, p] valid[j, p + d]`` for every lag ``d``.

    Parameters
    ----------
    valid_rows : (R, P) bool array; valid : (Q, P) bool array

    Returns
    -------
    (R, Q, P) float array of exact integer counts
    """
    phi_bins = valid.shape[-1]
    rows = xp.fft.rfft(valid_rows.astype(np.float64), axis=-1)
    cols = xp.fft.rfft(valid.astype(np.float64), axis=-1)
    counts = xp.fft.irfft(xp.conj(rows)[:, None, :] * cols[None], n=phi_bins, axis=-1)
    return xp.rint(counts)


#: Rows of the lag cube (R, Q, P) computed at once: bounds memory to ~30 MB.
_ROW_BLOCK = 32


def _mask_corrected_rows(values, valid, orders, rows, xp):
    """(B, N, Q, Q) maps whose rows ``rows`` hold the mask-corrected estimate (others 0)."""
    batch, q_bins, phi_bins = values.shape
    # float64 whatever the input: C_d carries the rings' mean intensities, the
    # order-n component can be far smaller, and float32 sums would cancel.
    # Re sum_d e^{-i n phi_d} C_d / P: C_d is real, so only the cosine part counts.
    angle = 2 * np.pi * np.outer(np.arange(phi_bins), np.asarray(orders, dtype=np.float64))
    cosine = xp.asarray(np.cos(angle / phi_bins) / phi_bins)  # (P, N) float64
    out = xp.zeros((batch, len(orders), q_bins, q_bins), dtype=np.float64)
    spectra = xp.fft.rfft(values.astype(np.float64), axis=-1)
    for b in range(batch):
        for start in range(0, rows.shape[0], _ROW_BLOCK):
            block = rows[start : start + _ROW_BLOCK]
            numerator = xp.fft.irfft(
                xp.conj(spectra[b, block])[:, None, :] * spectra[b][None], n=phi_bins, axis=-1
            )
            counts = lag_pair_counts(valid[b, block], valid[b], xp)
            correlation = _fill_lags_without_pairs(
                divide_by_pairs(numerator, counts, xp), counts, xp
            )
            out[b][:, block, :] = xp.moveaxis(correlation @ cosine, -1, 0)
    return out


def _fill_lags_without_pairs(correlation, counts, xp):
    """``C_d`` where lag ``d`` has valid pairs, else the pair's mean over the lags that have.

    A lag without a valid pair has no measured correlation; 0 there would add
    angular structure of its own (a half-valid ring has no pair at lag P/2).
    The mean over the measured lags adds none: a pure radial profile still
    gives ``Cn = 0`` for every ``n > 0``.
    """
    measured = counts > 0
    lags = measured.sum(axis=-1, keepdims=True)
    mean = correlation.sum(axis=-1, keepdims=True) / xp.where(lags > 0, lags, 1)
    return xp.where(measured, correlation, mean)


def scale_maps(maps, triangle, scale: Scale | str, means=None, subtract_one=False, xp=np):
    """Scale the entries of ``maps`` inside ``triangle`` as :class:`Scale` says (:data:`SCALINGS`).

    Parameters
    ----------
    maps : (B, Q, Q) real array
    triangle : (Q, Q) bool array
        The entries scaled together (one triangle, or the whole map).
    scale : Scale or str
    means : (B, Q) real array
        Ring means, for ``"ring"``.
    subtract_one : bool
        ``"ring"`` on the full triangle: the normalised CCF ``C / (m_i m_j) - 1``.

    Returns
    -------
    (B, Q, Q) array; entries outside ``triangle`` are unspecified.
    """
    return SCALINGS[Scale(scale)](maps, triangle, means, subtract_one, xp)


def scale_none(maps, triangle, means, subtract_one, xp=np):
    """``Scale.NONE``: the maps as they are (intensity squared units)."""
    return maps


def scale_maxabs(maps, triangle, means, subtract_one, xp=np):
    """``Scale.MAXABS``: divided by the largest ``|value|`` inside ``triangle`` (kept if all 0)."""
    return maps / _triangle_maxabs(maps, triangle, xp)


def scale_ring(maps, triangle, means, subtract_one, xp=np):
    """``Scale.RING``: ``maps / (m_i m_j)``, minus 1 if ``subtract_one``, clipped to [-1, 1].

    An entry whose rings' mean product is 0 (an unused ring) is 0.
    """
    if means is None:
        raise ValueError("scale='ring' needs the ring means (F[:, :, 0])")
    product = means[..., :, None] * means[..., None, :]
    normalised = maps / xp.where(product != 0, product, 1) - (1 if subtract_one else 0)
    return xp.clip(xp.where(product != 0, normalised, 0), -1, 1)


#: The array function of each :class:`Scale`: ``f(maps, triangle, means, subtract_one, xp)``
#: (the arguments of :func:`scale_maps`). Every backend computes a mode from this table;
#: the Numba kernels have their own code for some (the others take the array path).
SCALINGS = {Scale.MAXABS: scale_maxabs, Scale.NONE: scale_none, Scale.RING: scale_ring}


def assemble_maps(full, order_maps, means, scale: Scale | str, xp=np):
    """The maps of one image batch: merged map of the first order, order maps after.

    Parameters
    ----------
    full : (B, Q, Q) real array
        Full maps (Eq. 13).
    order_maps : (B, N, Q, Q) real array
        Order-n maps, one per order.
    means : (B, Q) real array
        Ring means (used by ``scale="ring"``).
    scale : Scale or str

    Returns
    -------
    (B, N, Q, Q) array
        Channel 0: full map on and below the diagonal, the first order's map
        above, each triangle scaled on its own; channel ``c``: the order map
        of ``orders[c]``, scaled as a whole.
    """
    q = full.shape[-1]
    lower = xp.tril(xp.ones((q, q), dtype=bool))
    everything = xp.ones((q, q), dtype=bool)
    merged = xp.where(
        lower,
        scale_maps(full, lower, scale, means, subtract_one=True, xp=xp),
        scale_maps(order_maps[:, 0], ~lower, scale, means, xp=xp),
    )
    channels = [merged] + [
        scale_maps(order_maps[:, c], everything, scale, means, xp=xp)
        for c in range(1, order_maps.shape[1])
    ]
    return xp.stack(channels, axis=1)


def merge_maps_reference(full, order, scale: Scale | str = Scale.MAXABS, means=None, xp=np):
    """Merge the full map (lower triangle and diagonal) with the order map (upper).

    Parameters
    ----------
    full, order : (B, Q, Q) real arrays
    scale : Scale or str
        ``"maxabs"``: each triangle divided by its own largest absolute value
        (a triangle that is all zero stays zero); ``"none"``: unscaled;
        ``"ring"``: divided by the ring means' product (minus 1 below the
        diagonal), clipped to [-1, 1].
    means : (B, Q) real array, optional
        Ring means; needed for ``"ring"``.

    Returns
    -------
    (B, Q, Q) array
    """
    return assemble_maps(full, order[:, None], means, scale, xp)[:, 0]


def _triangle_maxabs(maps, triangle, xp):
    """Per-map largest |value| inside ``triangle``, shaped (B, 1, 1); 1 where all zero."""
    largest = xp.max(xp.abs(xp.where(triangle, maps, 0)), axis=(-2, -1), keepdims=True)
    return xp.where(largest > 0, largest, 1)
