"""Whole Zarr chunks written straight to their files (``ChunkWriter``'s direct method).

zarr-python's general write path (an asynchronous codec pipeline and several
copies of each chunk) costs about as much per map as the file write itself. A
build writes only *whole* chunks, along the first axis, of arrays it created
itself in a local store, with one of two codec chains: raw little-endian
bytes, or bytes then Blosc, each optionally followed by a ``crc32c``
checksum (what ccfkit stores use: the 4-byte little-endian CRC-32C of the
encoded bytes appended, as zarr's ``Crc32cCodec`` does, with the same
``google_crc32c``). :class:`ChunkFiles` encodes such a chunk exactly
as zarr does (the same numcodecs Blosc; the files are byte-identical, which
the tests check) and writes the file with ``O_DIRECT`` where the file system
allows it: the data goes from the process to the disk without first being
copied into, and filling, the page cache. Like zarr's ``LocalStore``, each
file is written under a temporary name and renamed over the chunk
(``os.replace``): a reader never sees a torn chunk. Reading goes through zarr
as usual. Only :mod:`ccfkit.io.chunks` uses this module.

Where fresh page-cache pages are expensive (a virtual machine whose memory
the host hands out on first touch), ``O_DIRECT`` avoids their cost, and it
keeps a long build from pushing everything else out of the page cache; the
measurements are in docs/performance.md. Where ``O_DIRECT`` is refused
(tmpfs, some network file systems, other operating systems) the file is
written the ordinary way.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

__all__ = ["ChunkFiles"]

#: Bytes; O_DIRECT moves whole blocks from memory aligned to them (a page covers all common ones).
ALIGNMENT = 4096

#: Bytes of the crc32c checksum that ends a chunk (zarr's ``Crc32cCodec``).
CHECKSUM_BYTES = 4

#: Payloads from this size up are written with O_DIRECT (smaller ones are not worth it).
DIRECT_MIN_BYTES = 1 << 20


@dataclass(frozen=True)
class ChunkFiles:
    """How to encode and where to write the chunks of one array (small, picklable).

    Build it with :meth:`of`; chunks run along the first axis only.

    Attributes
    ----------
    directory : str
        The array's directory in the store.
    separator : str
        Chunk-key separator (``"/"``: chunk ``k`` is ``c/k/0/0``).
    chunk_shape : tuple of int
    dtype : str
        Little-endian dtype of the stored elements.
    fill_value : float
        Fills the part of the last chunk beyond the array's end.
    blosc : dict or None
        numcodecs Blosc configuration, None for raw bytes.
    checksum : bool
        A crc32c checksum ends the codec chain.
    """

    directory: str
    separator: str
    chunk_shape: tuple[int, ...]
    dtype: str
    fill_value: float
    blosc: dict | None
    checksum: bool = False

    @classmethod
    def of(cls, array: zarr.Array) -> ChunkFiles:
        """Describe ``array``; TypeError/ValueError unless it is a layout this module writes."""
        metadata = array.metadata
        if getattr(metadata, "zarr_format", None) != 3:
            raise ValueError("only Zarr v3 arrays")
        if not isinstance(array.store, zarr.storage.LocalStore):
            raise TypeError(f"not a local store: {type(array.store).__name__}")
        chunks = tuple(int(c) for c in array.chunks)
        if chunks[1:] != tuple(array.shape[1:]):
            raise ValueError("chunks must span every axis but the first")
        encoding = metadata.chunk_key_encoding.to_dict()
        if encoding.get("name") != "default":
            raise ValueError(f"unsupported chunk key encoding {encoding}")
        codecs = [codec.to_dict() for codec in metadata.codecs]
        names = [codec["name"] for codec in codecs]
        checksum = names[-1] == "crc32c"
        if checksum:
            names = names[:-1]
        if names not in (["bytes"], ["bytes", "blosc"]):
            raise ValueError(f"unsupported codecs {codecs}")
        blosc = dict(codecs[1]["configuration"]) if len(names) == 2 else None
        return cls(
            directory=str(Path(array.store.root).resolve() / array.path),
            separator=encoding.get("configuration", {}).get("separator", "/"),
            chunk_shape=chunks,
            dtype=np.dtype(array.dtype).newbyteorder("<").str,
            fill_value=float(metadata.fill_value),
            blosc=blosc,
            checksum=checksum,
        )

    def path(self, chunk: int) -> str:
        """The file of chunk ``chunk`` (along the first axis)."""
        key = self.separator.join(["c", str(chunk)] + ["0"] * (len(self.chunk_shape) - 1))
        return os.path.join(self.directory, key)

    def encode(self, data: np.ndarray) -> np.ndarray:
        """The chunk file's bytes for ``data`` (its first ``len(data)`` rows).

        Returns
        -------
        (nbytes,) uint8 ndarray
            Page-aligned, its allocation padded to whole pages (:func:`aligned_empty`).
        """
        data = np.asarray(data)
        if data.shape[1:] != self.chunk_shape[1:] or len(data) > self.chunk_shape[0]:
            raise ValueError(f"data of shape {data.shape} for chunks {self.chunk_shape}")
        dtype = np.dtype(self.dtype)
        extra = CHECKSUM_BYTES if self.checksum else 0
        if self.blosc is None:
            nbytes = int(np.prod(self.chunk_shape)) * dtype.itemsize
            payload = aligned_empty(nbytes + extra)
            chunk = payload[:nbytes].view(dtype).reshape(self.chunk_shape)
            chunk[: len(data)] = data
            chunk[len(data) :] = self.fill_value
        else:
            chunk = np.full(self.chunk_shape, self.fill_value, dtype=dtype)
            chunk[: len(data)] = data
            encoded = np.frombuffer(_blosc(self.blosc).encode(chunk), dtype=np.uint8)
            payload = aligned_empty(encoded.nbytes + extra)
            payload[: encoded.nbytes] = encoded
        if extra:
            payload[-extra:] = crc32c_bytes(payload[:-extra])
        return payload

    def write(self, chunk: int, data: np.ndarray) -> None:
        """Encode ``data`` as chunk ``chunk`` and replace its file, atomically."""
        write_file(self.path(chunk), self.encode(data))


def write_file(path: str, payload: np.ndarray) -> None:
    """Write the bytes ``payload`` as the file ``path``, whole or not at all.

    They go to ``PATH.<uuid>.partial`` (O_DIRECT when aligned and large),
    which then replaces ``path`` (``os.replace``, atomic on one file system);
    on any error the partial file is removed and ``path`` left as it was.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.{uuid.uuid4().hex}.partial"
    try:
        direct = payload.nbytes >= DIRECT_MIN_BYTES and _is_aligned(payload)
        if not (direct and _write_direct(partial, payload)):
            with open(partial, "wb") as handle:
                handle.write(payload)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def _write_direct(path: str, payload: np.ndarray) -> bool:
    """Write with O_DIRECT; False (nothing written) where that cannot be done.

    O_DIRECT moves whole blocks: a payload whose length is not a multiple of
    :data:`ALIGNMENT` is written with the padding that follows it in memory
    (:func:`aligned_empty` allocates it) and the file then cut
    to length.
    """
    blocks = _padded(payload)
    flag = getattr(os, "O_DIRECT", 0)
    if blocks is None or not flag:
        return False
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flag, 0o666)
    except OSError as error:
        if error.errno == errno.EINVAL:  # the file system does not do O_DIRECT
            return False
        raise
    try:
        view, written = memoryview(blocks), 0
        while written < len(view):
            written += os.write(descriptor, view[written:])
        os.ftruncate(descriptor, payload.nbytes)
    except OSError as error:
        os.close(descriptor)
        if error.errno != errno.EINVAL:
            raise
        os.unlink(path)
        return False
    os.close(descriptor)
    return True


def _padded(payload: np.ndarray) -> np.ndarray | None:
    """``payload`` extended to whole ALIGNMENT blocks within its allocation, or None."""
    padded = -(-payload.nbytes // ALIGNMENT) * ALIGNMENT
    if padded == payload.nbytes:
        return payload
    owner = payload.base
    if not isinstance(owner, np.ndarray) or not owner.flags.c_contiguous:
        return None
    memory = owner.reshape(-1).view(np.uint8)
    start = payload.ctypes.data - memory.ctypes.data
    blocks = memory[start : start + padded]
    return blocks if blocks.nbytes == padded else None


def aligned_empty(nbytes: int) -> np.ndarray:
    """An uninitialised ``(nbytes,)`` uint8 array starting on an :data:`ALIGNMENT` boundary.

    Its memory is followed by padding up to the next multiple of
    :data:`ALIGNMENT` bytes, part of the same allocation.
    """
    padded = -(-nbytes // ALIGNMENT) * ALIGNMENT
    raw = np.empty(padded + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes]


def _is_aligned(array: np.ndarray) -> bool:
    return array.flags.c_contiguous and array.ctypes.data % ALIGNMENT == 0


def crc32c_bytes(data: np.ndarray) -> np.ndarray:
    """The CRC-32C of ``data``'s bytes as 4 little-endian bytes (zarr's ``Crc32cCodec``)."""
    import google_crc32c

    return np.array([google_crc32c.value(data)], dtype="<u4").view(np.uint8)


def _blosc(config: dict):
    """numcodecs' Blosc with a zarr ``blosc`` codec configuration (what zarr encodes with)."""
    from numcodecs import Blosc

    return Blosc(
        cname=config["cname"],
        clevel=config["clevel"],
        shuffle={"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[config["shuffle"]],
        blocksize=config.get("blocksize", 0),
        typesize=config.get("typesize"),
    )
