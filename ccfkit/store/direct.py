"""A zarr local store whose large writes bypass the page cache (``--chunk-writer direct``).

:class:`DirectLocalStore` is zarr's own :class:`zarr.storage.LocalStore`
with one change: a value of :data:`DIRECT_MIN_BYTES` or more (a chunk of
maps) is written with ``O_DIRECT``, so the data goes from the process to the
disk without first being copied into, and filling, the page cache. zarr
still does everything else: the codecs (Blosc, the ``crc32c`` checksum),
the chunk keys, reading, listing, deleting; the files are the ones
``LocalStore`` writes (the tests compare them byte for byte and run zarr's
own store test suite on this class). Like ``LocalStore``, each value is
written under a temporary name and renamed over its key (``os.replace``):
a reader never sees a torn chunk, and an interrupted write leaves at most a
``*.partial`` file that no reader takes for a chunk.

Where fresh page-cache pages are expensive (a virtual machine whose memory
the host hands out on first touch), ``O_DIRECT`` avoids their cost, and it
keeps a long build from pushing everything else out of the page cache; the
measurements are in docs/performance.md. Where ``O_DIRECT`` is refused
(tmpfs, some network file systems, other operating systems) the value is
written the ordinary way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import uuid
from pathlib import Path

import numpy as np
import zarr
from zarr.core.buffer import Buffer

__all__ = [
    "DIRECT_MIN_BYTES",
    "DirectLocalStore",
    "aligned_empty",
    "replaced_whole",
    "write_blocks_direct",
    "write_direct",
    "write_file",
]

#: Bytes; O_DIRECT moves whole blocks from memory aligned to them (a page covers all common ones).
ALIGNMENT = 4096

#: Values from this size up are written with O_DIRECT (smaller ones are not worth it).
DIRECT_MIN_BYTES = 1 << 20


class DirectLocalStore(zarr.storage.LocalStore):
    """:class:`zarr.storage.LocalStore` writing values of :data:`DIRECT_MIN_BYTES` or more with O_DIRECT.

    Parameters
    ----------
    root : str or Path
        The store's directory.
    read_only : bool
        Whether the store is read-only.
    """

    async def set(self, key: str, value: Buffer) -> None:
        """Write ``value`` as ``key``, whole or not at all (O_DIRECT when it is large)."""
        if not _is_large(value):
            return await super().set(key, value)
        if not self._is_open:
            await self._open()
        self._check_writable()
        await asyncio.to_thread(write_file, self.root / key, value.as_numpy_array())

    def set_sync(self, key: str, value: Buffer) -> None:
        """:meth:`set`, synchronously."""
        if not _is_large(value):
            return super().set_sync(key, value)
        self._ensure_open_sync()
        self._check_writable()
        write_file(self.root / key, value.as_numpy_array())


def _is_large(value) -> bool:
    """Whether ``value`` is a Buffer worth an O_DIRECT write (others go zarr's way, or fail there)."""
    return isinstance(value, Buffer) and len(value) >= DIRECT_MIN_BYTES


def write_file(path: str | Path, data: np.ndarray) -> None:
    """Write the bytes of ``data`` as the file ``path``, whole or not at all.

    They go to ``PATH.<uuid>.partial`` (O_DIRECT where the file system takes
    it), which then replaces ``path`` (``os.replace``, atomic on one file
    system); on any error the partial file is removed and ``path`` left as it
    was.

    Parameters
    ----------
    path : str or Path
        The file; its directory is made when missing.
    data : ndarray
        Contiguous; its bytes are written as they lie in memory.
    """
    payload = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    with replaced_whole(path) as partial:
        if not write_direct(partial, payload):
            with open(partial, "wb") as handle:
                handle.write(payload)


@contextlib.contextmanager
def replaced_whole(path: str | Path):
    """Yield a temporary ``PATH.<uuid>.partial`` to write; rename it over ``path`` on success.

    As zarr's ``LocalStore`` writes a key: the directory is made when
    missing; on any error (KeyboardInterrupt too) the partial file is
    removed and ``path`` left as it was. The unique name lets two writers of
    one key never write into each other's file.
    """
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.{uuid.uuid4().hex}.partial"
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def write_direct(path: str, *pieces: np.ndarray) -> bool:
    """Write ``pieces`` (uint8, one after the other) with O_DIRECT; False (nothing written)
    where that cannot be done.

    O_DIRECT moves whole blocks from aligned memory: the bytes are copied into
    an aligned allocation padded to whole :data:`ALIGNMENT` blocks, written,
    and the file then cut to length.
    """
    nbytes = sum(piece.nbytes for piece in pieces)
    blocks = aligned_empty(-(-nbytes // ALIGNMENT) * ALIGNMENT)
    start = 0
    for piece in pieces:
        blocks[start : start + piece.nbytes] = piece
        start += piece.nbytes
    blocks[nbytes:] = 0
    return write_blocks_direct(path, blocks, nbytes)


def write_blocks_direct(path: str, blocks: np.ndarray, nbytes: int) -> bool:
    """Write the file ``path`` as the first ``nbytes`` of ``blocks`` with O_DIRECT.

    ``blocks`` (aligned, whole :data:`ALIGNMENT` blocks) is written whole, the
    file then cut to ``nbytes``. False (nothing written) where O_DIRECT cannot be done.
    """
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
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
        os.ftruncate(descriptor, nbytes)
    except OSError as error:
        os.close(descriptor)
        os.unlink(path)
        if error.errno != errno.EINVAL:
            raise
        return False
    os.close(descriptor)
    return True


def aligned_empty(nbytes: int) -> np.ndarray:
    """An uninitialised ``(nbytes,)`` uint8 array starting on an :data:`ALIGNMENT` boundary."""
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes]
