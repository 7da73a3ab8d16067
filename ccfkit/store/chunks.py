"""Whole chunks of a store's arrays, each written in one step, never torn.

A build writes only *whole* chunks, along the first axis, of arrays it
created itself; each map task writes the chunks of its own frames, so no two
writers ever share a chunk. :class:`ChunkWriter` is the one way the store
layer writes them. An array in a local directory whose codecs are ``bytes``
and ``crc32c`` (every ccfkit array without a compressor) has its chunks
written as the files the Zarr v3 specification defines, from the calling
thread (:mod:`~ccfkit.store.chunk_files`: byte for byte zarr's own). Any
other goes through zarr-python's public API (``array[start:stop] = block``
on exactly one chunk's rows), so the array's own codec chain (the ``crc32c``
checksum that ends every ccfkit array's included) encodes the chunk, and
the store puts it. Either way the chunk's
digest (:func:`~ccfkit.store.layout.chunk_digest`) is written as its
element of ``digests/<array>``, so that verifying the store can tell a
chunk in the wrong place from the right one. zarr's ``LocalStore``
writes each chunk to a temporary ``<key>.<uuid>.partial`` file and renames
it over the key (``zarr/storage/_local.py``, ``_atomic_write``:
``tmp_path.replace(path)``): a reader sees the old chunk or the new one,
never a torn one, and an interrupted write leaves at most a ``.partial``
file that no reader takes for a chunk. Other stores put a key as they do
(object stores: one PUT).

``method="direct"`` (:class:`WriteMethod`) writes the same way through
:class:`~ccfkit.store.direct.DirectLocalStore`, zarr's local store whose
large writes use ``O_DIRECT`` (also to a temporary file renamed over the
chunk); docs/build.md says where it helps.

:class:`ChunkWriters` holds the writers a map task needs for its chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from ..settings import WriteMethod
from .chunk_files import chunk_file_path, plain_chunk_shape, write_chunk_file
from .direct import DirectLocalStore
from .layout import DIGESTS, SCHEMA_VERSION, chunk_digest, digest_scheme

__all__ = ["ChunkWriter", "ChunkWriters", "WriteMethod", "chunk_writer"]


@dataclass(frozen=True)
class ChunkWriter:
    """Writes whole chunks, along the first axis, of one array of a store (picklable).

    Attributes
    ----------
    store : zarr.abc.store.Store
        The store written through: the array's, or a
        :class:`~ccfkit.store.direct.DirectLocalStore` on its directory.
    path : str
        The array's path in the store.
    chunk_length : int
        Rows per chunk (the first axis).
    n_rows : int
        Rows of the array (the last chunk may be shorter).
    digest : ChunkWriter or None
        The writer of the array's per-chunk digests (``digests/<array>``,
        :func:`~ccfkit.store.layout.chunk_digest`): each chunk's is written
        right after it. None: the store records none (written before them).
    scheme : str
        The digest's hash, :func:`~ccfkit.store.layout.digest_scheme` of the
        store's schema version.
    """

    store: object
    path: str
    chunk_length: int
    n_rows: int
    digest: ChunkWriter | None = None
    scheme: str = digest_scheme(SCHEMA_VERSION)

    def rows(self, chunk: int) -> slice:
        """The rows of chunk ``chunk``."""
        start = chunk * self.chunk_length
        return slice(start, min(start + self.chunk_length, self.n_rows))

    def write(self, chunk: int, data: np.ndarray) -> None:
        """Write ``data`` as chunk ``chunk``, whole, in one step.

        Parameters
        ----------
        chunk : int
            Chunk index along the first axis.
        data : (n, ...) ndarray
            All ``n`` rows of the chunk (fewer only for the array's last chunk),
            the array's other axes whole.

        Raises
        ------
        ValueError
            ``data`` is not the chunk's rows, or its rows are not the array's.
        """
        rows = self.rows(chunk)
        if len(data) != rows.stop - rows.start or rows.start >= self.n_rows:
            raise ValueError(
                f"{len(data)} rows for chunk {chunk} of {self.path!r} (rows {rows.start}.."
                f"{rows.stop - 1}): only whole chunks are written"
            )
        array = self._opened()
        values = np.asarray(data, dtype=array.dtype)  # as stored
        if values.shape[1:] != tuple(array.shape[1:]):
            raise ValueError(f"rows of shape {values.shape[1:]} for {self.path!r}, whose rows "
                             f"are {tuple(array.shape[1:])}")  # fmt: skip
        chunk_shape = self.__dict__["_chunk_shape"]
        if chunk_shape is None:
            array[rows] = values
        else:  # the specification's file, written here (ccfkit.store.chunk_files)
            coordinates = (chunk,) + (0,) * (values.ndim - 1)
            write_chunk_file(chunk_file_path(array, coordinates), values, chunk_shape,
                             array.fill_value,
                             direct=isinstance(array.store, DirectLocalStore))  # fmt: skip
        if self.digest is not None:
            value = chunk_digest(values, self.scheme)
            self.digest.write(chunk, np.array([value], dtype=np.uint64))

    def _opened(self) -> zarr.Array:
        """The array, opened once per process (its metadata read once, not per chunk)."""
        array = self.__dict__.get("_array")
        if array is None:
            # every chunk written, zeros too: a missing chunk of a done task means damage
            array = zarr.open_array(store=self.store, path=self.path, mode="r+")
            array = array.with_config({"write_empty_chunks": True})
            # not fields: not compared, not pickled
            object.__setattr__(self, "_chunk_shape", plain_chunk_shape(array))
            object.__setattr__(self, "_array", array)
        return array

    def __getstate__(self) -> dict:
        """The fields only: a copy in another process opens the array there."""
        return {name: value for name, value in self.__dict__.items()
                if name not in ("_array", "_chunk_shape")}  # fmt: skip


def chunk_writer(array: zarr.Array, method: WriteMethod | str = WriteMethod.ZARR,
                 digests: zarr.Array | None = None,
                 scheme: str = digest_scheme(SCHEMA_VERSION)) -> ChunkWriter:  # fmt: skip
    """The writer of whole first-axis chunks of ``array``.

    Parameters
    ----------
    array : zarr.Array
        Chunked along the first axis only (its other axes in one chunk).
    method : WriteMethod or str
        ``"direct"`` writes through a :class:`~ccfkit.store.direct.DirectLocalStore`
        on the directory of a local store; other stores are written as they are.
    digests : zarr.Array, optional
        The array's per-chunk digests (``digests/<name>``, one per chunk), written with each chunk.
    scheme : str
        Their hash (:func:`~ccfkit.store.layout.digest_scheme` of the store's schema).
    """
    if tuple(array.chunks[1:]) != tuple(array.shape[1:]):
        raise ValueError(f"{array.path}: chunks {array.chunks} split more than the first axis")
    store = array.store
    if WriteMethod(method) is WriteMethod.DIRECT and isinstance(store, zarr.storage.LocalStore):
        store = DirectLocalStore(store.root)
    digest = None if digests is None else chunk_writer(digests)
    return ChunkWriter(store, array.path, int(array.chunks[0]), int(array.shape[0]), digest, scheme)


@dataclass(frozen=True)
class ChunkWriters:
    """Writers of whole chunks of a store's per-frame arrays (small, picklable).

    What a map task needs to fill its chunk: one :class:`ChunkWriter` per
    array, each chunk written whole and atomically.
    """

    ccf: ChunkWriter
    stats: ChunkWriter
    done: ChunkWriter
    images: ChunkWriter | None = None
    frame_checks: ChunkWriter | None = None  # None in stores made before it
    input_digest: ChunkWriter | None = None

    @classmethod
    def of(cls, group: zarr.Group, method: WriteMethod | str = WriteMethod.ZARR) -> ChunkWriters:
        """The writers of ``group``'s arrays; ``method``: :class:`~ccfkit.settings.WriteMethod`."""
        names = ("ccf", "stats", "done", "images", "frame_checks", "input_digest")
        digests = group.get(DIGESTS, {})
        scheme = digest_scheme(group.attrs.get("schema_version", 1))
        return cls(*(chunk_writer(group[n], method, digests.get(n), scheme)
                     if n in group else None for n in names))  # fmt: skip

    def mark_done(self, chunk: int) -> None:
        """Record that every array's chunk ``chunk`` is written (call after writing)."""
        self.done.write(chunk, np.ones(1, dtype=np.uint8))
