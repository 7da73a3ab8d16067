"""Whole chunks of a store's arrays, each written in one step, never torn.

A build writes only *whole* chunks, along the first axis, of arrays it
created itself; each map task writes the chunks of its own frames, so no two
writers ever share a chunk. :class:`ChunkWriter` is the one way the store
layer writes them. By default it goes through zarr-python's public API
(``array[start:stop] = block`` on exactly one chunk's rows), so the array's
own codec chain (the ``crc32c`` checksum that ends every ccfkit array's
included) encodes the chunk, and the store puts it. zarr's ``LocalStore``
writes each chunk to a temporary ``<key>.<uuid>.partial`` file and renames
it over the key (``zarr/storage/_local.py``, ``_atomic_write``:
``tmp_path.replace(path)``): a reader sees the old chunk or the new one,
never a torn one, and an interrupted write leaves at most a ``.partial``
file that no reader takes for a chunk. Other stores put a key as they do
(object stores: one PUT).

``method="direct"`` (:class:`WriteMethod`) writes local chunks with
``O_DIRECT`` instead (:mod:`ccfkit.io.zarr_direct`), also to a temporary
file renamed over the chunk; docs/build.md says where it helps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from ..settings import WriteMethod

__all__ = ["ChunkWriter", "WriteMethod", "chunk_writer"]


@dataclass(frozen=True)
class ChunkWriter:
    """Writes whole chunks, along the first axis, of one array of a store (picklable).

    Attributes
    ----------
    store : zarr.abc.store.Store
        The array's store.
    path : str
        The array's path in the store.
    chunk_length : int
        Rows per chunk (the first axis).
    n_rows : int
        Rows of the array (the last chunk may be shorter).
    direct : object or None
        The O_DIRECT writer of this array's chunk files
        (:class:`ccfkit.io.zarr_direct.ChunkFiles`), None to write through zarr.
    """

    store: object
    path: str
    chunk_length: int
    n_rows: int
    direct: object = None

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
            ``data`` is not the chunk's rows.
        """
        rows = self.rows(chunk)
        if len(data) != rows.stop - rows.start or rows.start >= self.n_rows:
            raise ValueError(
                f"{len(data)} rows for chunk {chunk} of {self.path!r} (rows {rows.start}.."
                f"{rows.stop - 1}): only whole chunks are written"
            )
        if self.direct is not None:
            self.direct.write(chunk, data)
            return
        # every chunk written, zeros too: a missing chunk of a done task means damage
        array = zarr.open_array(store=self.store, path=self.path, mode="r+")
        array.with_config({"write_empty_chunks": True})[rows] = data


def chunk_writer(array: zarr.Array, method: WriteMethod | str = WriteMethod.ZARR) -> ChunkWriter:
    """The writer of whole first-axis chunks of ``array``.

    Parameters
    ----------
    array : zarr.Array
        Chunked along the first axis only (its other axes in one chunk).
    method : WriteMethod or str
        ``"direct"`` falls back to zarr for a layout the direct writer does
        not handle (another store, other codecs).
    """
    if tuple(array.chunks[1:]) != tuple(array.shape[1:]):
        raise ValueError(f"{array.path}: chunks {array.chunks} split more than the first axis")
    direct = None
    if WriteMethod(method) is WriteMethod.DIRECT:
        from .zarr_direct import ChunkFiles

        try:
            direct = ChunkFiles.of(array)
        except (TypeError, ValueError):
            direct = None
    return ChunkWriter(array.store, array.path, int(array.chunks[0]), int(array.shape[0]), direct)
