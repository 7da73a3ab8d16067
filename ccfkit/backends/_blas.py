"""BLAS products callable from Numba kernels, without the GIL.

SciPy exports its BLAS (LP64, 32-bit integers) as function pointers in
``scipy.linalg.cython_blas``. Registering them as LLVM symbols lets a
``@numba.njit(nogil=True, cache=True)`` kernel call ``ssyrk``/``sgemm``
directly: one call per image from inside the kernel, no Python in between,
and cached machine code that links to the symbol by name in every process.

Layout: a C-contiguous ``(Q, P)`` float32 array is, to Fortran, a ``(P, Q)``
matrix ``A`` with leading dimension ``P``; ``A^T A`` is the ``(Q, Q)`` product
``values @ values.T``. Fortran writes the result column-major, so a
C-contiguous ``(Q, Q)`` output receives its transpose: the Fortran upper
triangle lands in the C lower triangle.
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types
from scipy.linalg import cython_blas

__all__ = ["KERNEL", "correlate_rows"]


def _address(name: str) -> int:
    """The address of a BLAS routine exported by ``scipy.linalg.cython_blas``."""
    capsule = cython_blas.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


llvm.add_symbol("ccfkit_ssyrk", _address("ssyrk"))
llvm.add_symbol("ccfkit_sgemm", _address("sgemm"))
# ssyrk(uplo, trans, n, k, alpha, a, lda, beta, c, ldc): every argument by reference
_ssyrk = types.ExternalFunction("ccfkit_ssyrk", types.void(*([types.voidptr] * 10)))
# sgemm(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
_sgemm = types.ExternalFunction("ccfkit_sgemm", types.void(*([types.voidptr] * 13)))

#: Options of every Numba kernel of the CPU backend: GIL-free, cached on disk.
KERNEL = {"nogil": True, "cache": True, "error_model": "numpy", "boundscheck": False}


@numba.njit(**KERNEL)
def _pointer(array):
    return array.ctypes.data


@numba.njit(**KERNEL)
def correlate_rows(rows, shift, out, scratch):
    """``out[i, j] = sum_p rows[i, p] rows[j, (p + shift) mod P]`` for ``i >= j``.

    Parameters
    ----------
    rows : (Q, P) float32, C-contiguous
    shift : int
        Angular shift ``d`` in samples.
    out : (Q, Q) float32, C-contiguous, out
        The lower triangle (``i >= j``) always holds the result. When
        ``shift % P == 0`` only it is written (``ssyrk``); otherwise ``sgemm``
        writes all of ``out``, the formula holding for every ``i, j``.
    scratch : (Q, P) float32, C-contiguous
        Work space for the shifted rows (unused when ``shift % P == 0``).

    Notes
    -----
    ``shift % P == 0``: one ``ssyrk`` (half the flops of a product). Otherwise the
    rows are rolled into ``scratch`` and one ``sgemm`` forms the product.
    """
    q_bins, phi_bins = rows.shape
    chars = np.empty(2, dtype=np.uint8)
    sizes = np.empty(4, dtype=np.int32)
    scalars = np.empty(2, dtype=np.float32)
    scalars[0] = 1.0
    scalars[1] = 0.0
    sizes[0] = q_bins
    sizes[1] = phi_bins
    if shift % phi_bins == 0:
        chars[0] = ord("U")
        chars[1] = ord("T")
        _ssyrk(
            _pointer(chars[0:]), _pointer(chars[1:]), _pointer(sizes[0:]), _pointer(sizes[1:]),
            _pointer(scalars[0:]), _pointer(rows), _pointer(sizes[1:]),
            _pointer(scalars[1:]), _pointer(out), _pointer(sizes[0:]),
        )  # fmt: skip
        return
    for k in range(q_bins):
        for p in range(phi_bins):
            scratch[k, p] = rows[k, (p + shift) % phi_bins]
    chars[0] = ord("T")
    chars[1] = ord("N")
    # Fortran C[i, j] = sum_p scratch[i, p] rows[j, p]; the C view reads it transposed.
    _sgemm(
        _pointer(chars[0:]), _pointer(chars[1:]), _pointer(sizes[0:]), _pointer(sizes[0:]),
        _pointer(sizes[1:]), _pointer(scalars[0:]), _pointer(scratch), _pointer(sizes[1:]),
        _pointer(rows), _pointer(sizes[1:]), _pointer(scalars[1:]), _pointer(out),
        _pointer(sizes[0:]),
    )  # fmt: skip
