"""Bitshuffle-LZ4 frames decoded outside HDF5, on the reading thread, without the GIL.

Through h5py, a compressed chunk is decompressed inside HDF5, under h5py's
global lock: the build's workers then read one at a time, and decompression
(6 to 13 ms per 1.4 Mpx frame) is not shared between cores. For the
commonest compressed layout of detector files, bitshuffle with LZ4 (HDF5
filter 32008, as written by ``hdf5plugin.Bitshuffle(cname="lz4")`` and the
European XFEL and Dectris writers) with whole frames per chunk, this module
instead

1. reads each chunk's stored bytes with ``read_direct_chunk`` (under the
   lock, but only a file read), then
2. decodes them with the bitshuffle library's own
   ``bshuf_decompress_lz4`` (its public C function, in the library that
   hdf5plugin ships for the HDF5 filter: ``hdf5plugin.get_config()``'s
   ``registered_filters["bshuf"]``), called through ``ctypes``, which
   releases the GIL for the call: the workers decode side by side, and the
   frames are decoded straight into the caller's array (HDF5 decodes into
   its chunk cache and copies).

The chunk format is the filter's: a 12-byte header (uint64 big-endian
uncompressed size in bytes, uint32 big-endian block size in bytes), then
the LZ4-compressed, bit-shuffled blocks. The decoded bytes are those HDF5
would return (the same maps, bit for bit: tested). Anything else (another
filter or several, partial-frame chunks, a chunk the filter skipped or never
written, no usable library) gets ``None`` from :func:`bitshuffle_layout`, and
the caller reads through h5py.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass

import h5py
import numpy as np

from .hdf5_direct import per_file_version

__all__ = ["BitshuffleLayout", "bitshuffle_layout", "read_bitshuffle_frames"]

#: The bitshuffle HDF5 filter's registered id, and its LZ4 setting (5th filter value).
BITSHUFFLE_FILTER = 32008
BITSHUFFLE_LZ4 = 2
#: Bytes of the filter's chunk header: uncompressed size (uint64 BE), block size (uint32 BE).
HEADER_BYTES = 12


@dataclass(frozen=True)
class BitshuffleLayout:
    """A data set of bitshuffle-LZ4 chunks that each hold whole frames.

    Attributes
    ----------
    per_chunk : int
        Frames per chunk.
    frame_shape : tuple of int
        One stored frame, ``(H, W)`` or ``(modules, ss, fs)``.
    dtype : numpy dtype
        The stored element type, with its byte order.
    frames : int
        Frames in the data set.
    """

    per_chunk: int
    frame_shape: tuple[int, ...]
    dtype: np.dtype
    frames: int


def bitshuffle_layout(name: str, data_path: str) -> BitshuffleLayout | None:
    """The layout of ``name``'s data set if it can be decoded here, else None.

    Found once per process and file version (path, size, modification time).
    """
    return None if _decompress() is None else _layout(name, data_path)


@per_file_version
def _layout(name: str, data_path: str) -> BitshuffleLayout | None:
    with h5py.File(name, "r") as handle:
        dataset = handle[data_path]
        if dataset.chunks is None or dataset.is_virtual or dataset.dtype.kind not in "iuf":
            return None
        if tuple(dataset.chunks[1:]) != tuple(dataset.shape[1:]):
            return None  # a frame spans several chunks
        plist = dataset.id.get_create_plist()
        if plist.get_nfilters() != 1:
            return None
        code, _flags, values, _label = plist.get_filter(0)
        if code != BITSHUFFLE_FILTER or len(values) < 5 or values[4] != BITSHUFFLE_LZ4:
            return None
        return BitshuffleLayout(
            int(dataset.chunks[0]), tuple(dataset.shape[1:]), dataset.dtype, int(dataset.shape[0])
        )


@functools.lru_cache(maxsize=1)
def _decompress():
    """``bshuf_decompress_lz4`` of the bitshuffle library hdf5plugin ships, or None."""
    try:
        import hdf5plugin

        path = hdf5plugin.get_config().registered_filters.get("bshuf")
        function = ctypes.CDLL(str(path)).bshuf_decompress_lz4  # CDLL: the GIL is released
    except (ImportError, OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_size_t] * 3
    function.restype = ctypes.c_int64
    return function


def read_bitshuffle_frames(
    name: str, data_path: str, layout: BitshuffleLayout, lo: int, hi: int, out: np.ndarray
) -> bool:
    """Read frames ``[lo, hi)`` into ``out`` (converting to its dtype); False to fall back.

    Parameters
    ----------
    name, data_path : str
        The HDF5 file and the data set.
    layout : BitshuffleLayout
        From :func:`bitshuffle_layout`.
    lo, hi : int
        Frame range in the data set.
    out : (hi - lo, ...) C-contiguous ndarray
        Destination, any shape of ``hi - lo`` frames of the stored size.

    Returns
    -------
    bool
        False (nothing read) when a chunk was stored without the filter (the
        filter mask says so) or was never written: h5py reads those.

    Raises
    ------
    OSError
        A chunk that does not decode (damaged).
    """
    if hi <= lo:
        return True
    per = layout.per_chunk
    first, last = lo // per, (hi - 1) // per
    zeros = (0,) * len(layout.frame_shape)
    with h5py.File(name, "r") as handle:
        dataset_id = handle[data_path].id
        chunks = []
        for chunk in range(first, last + 1):
            try:
                mask, raw = dataset_id.read_direct_chunk((chunk * per, *zeros))
            except (OSError, KeyError, ValueError):  # a chunk never written
                return False
            if mask:  # the filter was skipped for this chunk
                return False
            chunks.append(raw)
    frames = out.reshape(hi - lo, -1)
    for chunk, raw in zip(range(first, last + 1), chunks):
        where = f"{name}: /{data_path.lstrip('/')} chunk {chunk}"
        start, stop = max(lo, chunk * per), min(hi, (chunk + 1) * per)
        whole = (start, stop) == (chunk * per, (chunk + 1) * per)
        if whole and out.dtype == layout.dtype:  # decoded straight into place: no copy
            _decode(raw, layout, frames[start - lo : stop - lo], where)
            continue
        decoded = np.empty((per, frames.shape[1]), dtype=layout.dtype)
        _decode(raw, layout, decoded, where)
        part = decoded[start - chunk * per : stop - chunk * per]
        np.copyto(frames[start - lo : stop - lo], part, casting="unsafe")
    return True


def _decode(raw: bytes, layout: BitshuffleLayout, into: np.ndarray, where: str) -> None:
    """Decode one chunk's bytes into ``into``, a C-contiguous array of its frames' size."""
    itemsize = layout.dtype.itemsize
    expected = layout.per_chunk * int(np.prod(layout.frame_shape)) * itemsize
    if into.nbytes != expected or not into.flags.c_contiguous:
        raise ValueError(f"a chunk of {expected} bytes decodes into {into.nbytes}")
    source = np.frombuffer(raw, dtype=np.uint8)
    total = int.from_bytes(raw[:8], "big") if len(raw) >= HEADER_BYTES else -1
    block = int.from_bytes(raw[8:12], "big") // itemsize if len(raw) >= HEADER_BYTES else 0
    if total != expected or block <= 0:
        raise OSError(f"{where}: not a bitshuffle-LZ4 chunk of {expected} bytes")
    used = _decompress()(
        source[HEADER_BYTES:].ctypes.data, into.ctypes.data, expected // itemsize, itemsize,
        block,
    )  # fmt: skip
    if used < 0 or used > len(raw) - HEADER_BYTES:
        raise OSError(f"{where}: bitshuffle-LZ4 decoding failed (error {used})")
