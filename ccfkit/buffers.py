"""Page-aligned arrays.

A file opened with ``O_DIRECT`` takes data only from memory aligned to the
device's block size; :func:`aligned_empty` gives arrays that start on a page
boundary (which covers every common block size) and whose allocation extends
to the next page, so that they can be written without a copy
(:mod:`ccfkit.io.zarr_direct`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ALIGNMENT", "aligned_empty", "is_aligned"]

#: Bytes; a page covers every common block size.
ALIGNMENT = 4096


def aligned_empty(shape, dtype=np.uint8) -> np.ndarray:
    """An uninitialised C-contiguous array starting on an :data:`ALIGNMENT` boundary.

    Parameters
    ----------
    shape : int or tuple of int
    dtype : numpy dtype

    Returns
    -------
    ndarray
        Its memory is followed by padding up to the next multiple of
        :data:`ALIGNMENT` bytes, part of the same allocation.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    padded = -(-nbytes // ALIGNMENT) * ALIGNMENT
    raw = np.empty(padded + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def is_aligned(array: np.ndarray) -> bool:
    """True when ``array`` starts on an :data:`ALIGNMENT` boundary and is C-contiguous."""
    return array.flags.c_contiguous and array.ctypes.data % ALIGNMENT == 0
