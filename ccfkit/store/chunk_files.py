"""A chunk of a plain Zarr v3 array on a local disk, written as the file the specification defines.

The Zarr v3 specification fixes every byte of a chunk of an array whose codec
chain is ``bytes`` then ``crc32c`` (every ccfkit array without a compressor,
docs/store-layout.md): the chunk's elements, edge chunks padded to the full
chunk shape with the fill value, in C order and little-endian, then the
CRC-32C (Castagnoli) of those bytes as 4 little-endian bytes; under the
default chunk key encoding the file of chunk ``(i, j, k)`` is
``<array>/c/i/j/k``. zarr-python's own write path goes through its asyncio
loop, copies the chunk to append the checksum and hands it to another
thread: for a build's maps that costs more than the write itself
(docs/performance.md, "The build on 2026-12-05, late evening").
:func:`plain_chunk_shape` recognises such an array in a local directory,
:func:`chunk_file_path` names the file of a chunk; :func:`write_chunk_file` writes it from the calling
thread, the data and its checksum gathered by one ``writev`` (no copy),
whole or not at all: to a temporary ``<key>.<uuid>.partial`` file renamed
over the key, as zarr's ``LocalStore`` does. In a
:class:`~ccfkit.store.direct.DirectLocalStore` (``--chunk-writer direct``)
a large chunk goes to the temporary file with ``O_DIRECT`` instead (copied
once into aligned memory). Any other array (a compressor, another store,
another layout) is written by zarr.

The tests compare the files with zarr's byte for byte, and read them back
through zarr (its checksum verified).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec

from .direct import DIRECT_MIN_BYTES, DirectLocalStore, replaced_whole, write_direct

__all__ = ["chunk_file_path", "plain_chunk_shape", "write_chunk_file"]

#: The stores whose chunk files this module writes (other subclasses write their own way).
LOCAL_STORES = (zarr.storage.LocalStore, DirectLocalStore)


def plain_chunk_shape(array: zarr.Array) -> tuple[int, ...] | None:
    """The chunk shape of ``array`` if its chunks are plain files this module writes, else None.

    Plain: Zarr format 3 in a directory (:data:`LOCAL_STORES`), regular
    chunks, the default chunk key encoding with ``/``, codecs exactly
    ``bytes`` (little-endian) then ``crc32c``, a little-endian dtype on a
    little-endian machine.
    """
    metadata = array.metadata
    if metadata.zarr_format != 3 or type(array.store) not in LOCAL_STORES:
        return None
    codecs = tuple(metadata.codecs)
    if len(codecs) != 2 or not isinstance(codecs[0], BytesCodec):
        return None
    if not isinstance(codecs[1], Crc32cCodec):
        return None
    dtype = np.dtype(array.dtype)
    if sys.byteorder != "little" or dtype.byteorder == ">" or dtype.hasobject:
        return None
    endian = codecs[0].endian  # an Endian (zarr 3.1) or its name (zarr 3.4), or None
    if getattr(endian, "value", endian) not in (None, "little"):
        return None
    encoding = metadata.chunk_key_encoding
    if getattr(encoding, "name", None) != "default" or getattr(encoding, "separator", None) != "/":
        return None
    return tuple(int(n) for n in array.chunks)


def chunk_file_path(array: zarr.Array, coordinates: tuple[int, ...]) -> Path:
    """The file of chunk ``coordinates`` of a plain array (:func:`plain_chunk_shape`)."""
    key = "/".join(["c", *(str(int(i)) for i in coordinates)])
    return Path(array.store.root, *array.path.split("/"), *key.split("/"))


def write_chunk_file(path: str | Path, block: np.ndarray, chunk_shape: tuple[int, ...],
                     fill_value, *, direct: bool = False) -> None:  # fmt: skip
    """Write ``block`` as the chunk file ``path``: whole chunk, then its CRC-32C; atomically.

    Parameters
    ----------
    path : str or Path
        The chunk's file (:func:`chunk_file_path`); its directory is made when missing.
    block : ndarray
        The chunk's values in the array's dtype; at the array's edge, fewer
        rows along the first axis than ``chunk_shape`` (padded with ``fill_value``).
    chunk_shape : tuple of int
        The array's chunk shape.
    fill_value : scalar
        The array's fill value.
    direct : bool
        Write a file of :data:`~ccfkit.store.direct.DIRECT_MIN_BYTES` or more
        with ``O_DIRECT`` where the file system takes it.
    """
    block = np.ascontiguousarray(block)
    if block.shape != chunk_shape:  # an edge chunk is stored whole, padded with the fill value
        padded = np.full(chunk_shape, fill_value, dtype=block.dtype)
        padded[tuple(slice(0, n) for n in block.shape)] = block
        block = padded
    data = block.reshape(-1).view(np.uint8)
    checksum = np.array([google_crc32c.value(data)], dtype="<u4").view(np.uint8)
    with replaced_whole(path) as partial:
        large = data.nbytes + checksum.nbytes >= DIRECT_MIN_BYTES
        if not (direct and large and write_direct(partial, data, checksum)):
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                _write_all(descriptor, [memoryview(data), memoryview(checksum)])
            finally:
                os.close(descriptor)


def _write_all(descriptor: int, buffers: list[memoryview]) -> None:
    """Write every byte of ``buffers`` in order (``writev``, again after a short write)."""
    while buffers:
        written = os.writev(descriptor, buffers)
        if written == 0 and any(len(buffer) for buffer in buffers):
            raise OSError(f"no byte written to file descriptor {descriptor}")
        while buffers and written >= len(buffers[0]):
            written -= len(buffers[0])
            buffers.pop(0)
        if buffers and written:
            buffers[0] = buffers[0][written:]
