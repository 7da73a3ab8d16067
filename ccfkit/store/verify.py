"""Checking what a store holds: every chunk's crc32c, and no chunk missing (docs/store-layout.md).

Every array's codec chain ends in a ``crc32c`` checksum, so a damaged chunk
is an error, named by store, array and key (:func:`verify_store`,
:func:`read_checked`); a chunk a finished map task should have written but
that is not there is one too (zarr would read it as zeros).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from .layout import StoreError, layout_of

__all__ = ["ALWAYS_WRITTEN", "MAP_TASK_ARRAYS", "chunk_key", "read_checked", "verify_store"]

#: Arrays whose chunk ``k`` is written by map task ``k`` (present once ``done[k]`` is 1).
MAP_TASK_ARRAYS = ("ccf", "images", "stats")
#: Arrays whose every chunk has a file once the task wrote it, zeros too
#: (:class:`~ccfkit.store.chunks.ChunkWriter` writes empty chunks).
ALWAYS_WRITTEN = ("ccf", "images")


def chunk_key(array: zarr.Array, coords: Sequence[int]) -> str:
    """The key of the chunk at grid position ``coords`` (e.g. ``c/3/0/0``)."""
    return array.metadata.encode_chunk_key(tuple(int(c) for c in coords))


def read_checked(array: zarr.Array, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of ``array``; a damaged or missing chunk is a StoreError naming it.

    Parameters
    ----------
    array : zarr.Array
        An array of a ccfkit store (chunked along the first axis).
    start, stop : int
        Rows.
    """
    length, rest = array.chunks[0], (0,) * (array.ndim - 1)
    if array.basename in ALWAYS_WRITTEN:  # zarr would read a missing chunk as zeros
        for chunk in range(start // length, -(-stop // length)):
            if not _chunk_exists(array, (chunk, *rest)):
                if _not_computed_yet(array, chunk):
                    store = getattr(array.store, "root", array.store)
                    raise StoreError(
                        f"{store}: chunk {chunk} of {array.basename!r} is not computed yet; "
                        "finish the store with `ccfkit build ... --resume`"
                    )
                raise _damaged(array, (chunk, *rest), FileNotFoundError("missing"))
    try:
        return array[start:stop]
    except (ValueError, RuntimeError) as error:  # crc32c mismatch, a codec's decode error
        for chunk in range(start // length, -(-stop // length)):  # which one is it?
            try:
                array[chunk * length : (chunk + 1) * length]
            except (ValueError, RuntimeError) as damage:
                raise _damaged(array, (chunk, *rest), damage) from None
        raise _damaged(array, (start // length, *rest), error) from None


def _not_computed_yet(array: zarr.Array, chunk: int) -> bool:
    """Whether the store's ``done`` says the map task of ``chunk`` has not run yet."""
    group = zarr.open_group(array.store, mode="r")
    return "done" in group and chunk < group["done"].shape[0] and not group["done"][chunk]


def _damaged(array: zarr.Array, coords, error: Exception) -> StoreError:
    reason = " ".join(str(error).split())[:80]
    store = getattr(array.store, "root", array.store)  # the directory of a local store
    return StoreError(
        f"{store}: array {array.basename!r}, chunk {chunk_key(array, coords)} is damaged "
        f"({reason}); rebuild the store (`ccfkit build --overwrite`)"
    )


def verify_store(group: zarr.Group) -> int:
    """Read every chunk of every array of a store, checking its crc32c; return the count.

    A map task's chunk (:data:`MAP_TASK_ARRAYS`) marked done must also exist
    (zarr would read a missing one as zeros).

    Raises
    ------
    StoreError
        The first damaged or missing chunk, named by store, array and key.
    """
    try:
        done = group["done"][:].astype(bool) if "done" in group else None
    except (ValueError, RuntimeError):  # damaged: reported below, with the others
        done = None
    by_chunk = layout_of(group).stats_by_chunk if "layout" in group.attrs else True
    count = 0
    for name, array in sorted(group.arrays()):
        task_written = name in MAP_TASK_ARRAYS and (name != "stats" or by_chunk)
        for coords in itertools.product(*(range(n) for n in array.cdata_shape)):
            expected = task_written and done is not None and done[coords[0]]
            if expected and not _chunk_exists(array, coords):
                raise _damaged(array, coords, FileNotFoundError("missing"))
            try:
                array.get_block_selection(coords)
            except (ValueError, RuntimeError) as error:
                raise _damaged(array, coords, error) from None
            count += 1
    return count


def _chunk_exists(array: zarr.Array, coords) -> bool:
    """Whether the chunk's file is there (local stores; True where that cannot be told)."""
    root = getattr(array.store, "root", None)
    if root is None:
        return True
    return (Path(root) / array.path / chunk_key(array, coords)).is_file()
