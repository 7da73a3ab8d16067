"""Angular Fourier decomposition of polar images (docs/ccf.md §2, Eq. 15).

``F[k, n] = sum_p M[k, p] I[k, p] exp(-i n phi_p) / sum_p M[k, p]``: the mean
over the *valid* samples of ring ``k``, so masked samples neither enter the sum
nor dilute it. A ring without valid samples has ``F = 0``.

The functions here are array-generic: ``xp`` is ``numpy`` or ``cupy``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["fourier_basis", "fourier_reference"]


def fourier_basis(phi_bins: int, orders: Sequence[int], xp=np, dtype=np.complex128):
    """The matrix ``exp(-i n phi_p)`` that projects rings onto chosen orders.

    Parameters
    ----------
    phi_bins : int
        Number of angular samples ``P``.
    orders : sequence of int
        Angular orders ``n``.

    Returns
    -------
    (P, N) complex array
    """
    phi = 2.0 * np.pi * np.arange(phi_bins) / phi_bins
    basis = np.exp(-1j * np.outer(phi, np.asarray(orders, dtype=np.float64)))
    return xp.asarray(basis.astype(dtype))


def fourier_reference(values, valid, orders: Sequence[int] | None = None, xp=np):
    """Angular Fourier coefficients, normalised by the valid count of each ring.

    Parameters
    ----------
    values : (B, Q, P) real array
        Polar images, 0 where invalid.
    valid : (B, Q, P) bool array
        Validity mask.
    orders : sequence of int, optional
        The orders to compute, by two real products per ring (``cos`` and
        ``sin`` parts of the basis). ``None``: all orders ``0 .. P/2`` by an
        rfft along ``phi``.
    xp : module
        ``numpy`` or ``cupy``.

    Returns
    -------
    (B, Q, N) complex array
        ``N = P/2 + 1`` for all orders, else ``len(orders)``; complex128 for
        float64 input, complex64 for float32.
    """
    complex_dtype = xp.result_type(values.dtype, xp.complex64)
    if orders is None:
        sums = xp.fft.rfft(values, axis=-1).astype(complex_dtype, copy=False)
    else:
        # values are real: exp(-i n phi) splits into two real products, and
        # values never need a complex copy
        basis = fourier_basis(values.shape[-1], orders)
        real_dtype = np.finfo(complex_dtype).dtype
        values = values.astype(real_dtype, copy=False)
        sums = values @ xp.asarray(basis.real, dtype=real_dtype) + 1j * (
            values @ xp.asarray(basis.imag, dtype=real_dtype)
        )
        sums = sums.astype(complex_dtype, copy=False)
    count = valid.sum(axis=-1, dtype=values.dtype)[..., None]
    return xp.where(count > 0, sums / xp.where(count > 0, count, 1), 0)
