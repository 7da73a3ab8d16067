"""Checking what a store holds, whole (docs/store-layout.md, "Verifying a store").

Three levels, each including the one before:

1. :func:`check_layout`: every array the store's layout requires is there,
   with the shape, dtype, chunking and dimension names the layout gives
   (and the label names of ``labels`` match its columns);
2. :func:`check_store`: 1, and every chunk that should hold data has its
   file (zarr would read a missing one as fill values: zeros): the chunks
   of the map tasks marked done, and every chunk whose digest was recorded.
   Cheap (no chunk is read): the trainer runs it before reading a store;
3. :func:`verify_store`: 2, and every chunk is read, its crc32c checked
   (every array's codec chain ends in one) and, where the build recorded
   one, its digest compared (:func:`~ccfkit.store.layout.chunk_digest`): a
   chunk swapped with another or taken from another store fails.

Each raises a :class:`~ccfkit.store.StoreError` naming the store, the
array and the first problem. :func:`read_checked` reads rows the same way.
Stores written before per-chunk digests were recorded (schema 2 without
``chunk_digests``, schema 1) are checked without them; in any other store a
missing ``digests/<array>`` is an error, never a reason to skip the check.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from .layout import (
    DIGESTS,
    StoreError,
    StoreLayout,
    chunk_digest,
    digest_scheme,
    digested_arrays,
    dimension_names,
    layout_of,
    records_digests,
)

__all__ = [
    "ALWAYS_WRITTEN",
    "MAP_TASK_ARRAYS",
    "check_layout",
    "check_store",
    "chunk_key",
    "read_checked",
    "verify_store",
]

#: Arrays whose chunk ``k`` is written by map task ``k`` (present once ``done[k]`` is 1).
MAP_TASK_ARRAYS = ("ccf", "images", "stats", "frame_checks", "input_digest")
#: Arrays whose every chunk has a file once the task wrote it, zeros too
#: (:class:`~ccfkit.store.chunks.ChunkWriter` writes empty chunks).
ALWAYS_WRITTEN = ("ccf", "images", "frame_checks", "input_digest")


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
        f"{store}: array {array.path!r}, chunk {chunk_key(array, coords)} is damaged "
        f"({reason}); rebuild the store (`ccfkit build --overwrite`)"
    )


def _where(group: zarr.Group) -> str:
    return str(getattr(group.store, "root", group.store))


def _expected_arrays(group: zarr.Group, layout: StoreLayout) -> dict[str, tuple]:
    """``{name: (shape, dtype or None, chunks or None)}`` of every array the layout requires."""
    n, per_chunk = layout.n_frames, layout.chunk_frames
    expected = {
        "ccf": ((n, *layout.map_shape), layout.map_dtype, (per_chunk, *layout.map_shape)),
        "index": ((n,), "int64", None),
        "stats": ((n, 3), "float32", (per_chunk, 3) if layout.stats_by_chunk else None),
        "done": ((layout.n_chunks,), "uint8", (1,)),
        "radius": ((layout.q_bins,), None, None),
        "mask": (tuple(group.attrs.get("input", {}).get("frame_shape") or ()) or None, None, None),
    }
    if group.attrs.get("schema_version", 1) >= 2:
        expected["ring_used"] = ((layout.q_bins,), None, None)
    if layout.label_names:
        columns = len(layout.label_names)
        expected["labels"] = ((n, columns), "uint8", None)
        expected["label"] = ((columns,), None, None)
    if layout.image_size:
        s = layout.image_size
        expected["images"] = ((n, s, s), "float32", (per_chunk, s, s))
    return expected


def check_layout(group: zarr.Group) -> None:
    """Every array the store's layout requires, with its shape, dtype, chunking and dimensions.

    A store that records no ``layout`` (one written by hand) is checked for
    its ``ccf`` array only.

    Raises
    ------
    StoreError
        The first array missing or not as the layout says, named.
    """
    where, arrays = _where(group), dict(group.arrays())
    if "layout" not in group.attrs:
        if "ccf" not in arrays:
            raise StoreError(f"{where}: the store has no 'ccf' array")
        return
    layout = layout_of(group)
    dims = dimension_names(layout)
    for name, (shape, dtype, chunks) in _expected_arrays(group, layout).items():
        if name not in arrays:
            raise StoreError(f"{where}: array {name!r} is missing (the store's layout needs it); "
                             "rebuild the store (`ccfkit build --overwrite`)")  # fmt: skip
        array = arrays[name]
        found = (tuple(array.shape), str(array.dtype), tuple(array.chunks))
        wanted = (shape or found[0], dtype or found[1], chunks or found[2])
        if found != wanted:
            raise StoreError(
                f"{where}: array {name!r} is {found[0]} {found[1]} in chunks {found[2]}, the "
                f"store's layout says {wanted[0]} {wanted[1]} in chunks {wanted[2]}; rebuild "
                "the store (`ccfkit build --overwrite`)"
            )
    for name, array in arrays.items():
        stored = tuple(array.metadata.dimension_names or ())
        if name in dims and stored != dims[name]:
            raise StoreError(f"{where}: array {name!r} has the dimensions {stored}, the layout "
                             f"says {dims[name]}")  # fmt: skip
    _check_digests_arrays(group, layout)
    if "labels" in arrays:
        names = list(arrays["labels"].attrs.get("names", []))
        if names != list(layout.label_names):
            raise StoreError(f"{where}: the label names of 'labels' {names} are not the store's "
                             f"{list(layout.label_names)} (one per column)")  # fmt: skip


def _check_digests_arrays(group: zarr.Group, layout: StoreLayout) -> None:
    """A store that records digests has ``chunk_digests`` and ``digests/<array>``, one per chunk."""
    if not records_digests(group):
        return
    where = _where(group)
    if not isinstance(group.attrs.get("chunk_digests"), dict):
        raise StoreError(f"{where}: the root attribute 'chunk_digests' is missing (this store's "
                         "schema records them); rebuild the store (`ccfkit build --overwrite`)")  # fmt: skip
    digests = group.get(DIGESTS)
    for name in digested_arrays(layout):
        if name not in group:  # frame_checks: not in the stores made before it
            continue
        array = digests.get(name) if isinstance(digests, zarr.Group) else None
        if not isinstance(array, zarr.Array):
            raise StoreError(f"{where}: array '{DIGESTS}/{name}' is missing (the store records "
                             "its chunks' digests there); rebuild the store "
                             "(`ccfkit build --overwrite`)")  # fmt: skip
        if tuple(array.shape) != (layout.n_chunks,):
            raise StoreError(f"{where}: array '{DIGESTS}/{name}' is {tuple(array.shape)}, the "
                             f"store's layout says ({layout.n_chunks},), one per chunk")  # fmt: skip


def _done(group: zarr.Group) -> np.ndarray | None:
    """The ``done`` marks as bools (None when there is no readable ``done``)."""
    try:
        return group["done"][:].astype(bool) if "done" in group else None
    except (ValueError, RuntimeError):  # damaged: reported with the others
        return None


def _required_chunks(group: zarr.Group):
    """``(array, coords, digest or None)`` of every chunk that must have a file.

    The map tasks' chunks marked done (and their digests' elements), every
    chunk of an array written at creation whose digest was recorded, and
    every chunk of ``stats`` once the statistics pass is done.
    """
    done = _done(group)
    by_chunk = layout_of(group).stats_by_chunk if "layout" in group.attrs else True
    recorded = group.attrs.get("chunk_digests", {})
    digests = group.get(DIGESTS, {})
    for name, array in sorted(group.arrays()):
        grid = list(itertools.product(*(range(n) for n in array.cdata_shape)))
        if name in recorded:
            for coords, digest in zip(grid, recorded[name]):
                yield array, coords, int(digest, 16)
            continue
        if name == "stats" and not by_chunk:  # written once, by the statistics pass: its
            continue  # chunks are required above, where the pass recorded their digests
        if name not in MAP_TASK_ARRAYS or done is None:
            continue
        own = digests.get(name)
        for coords in grid:
            if done[coords[0]]:
                yield array, coords, None
                if own is not None:
                    yield own, (coords[0],), None


def check_store(group: zarr.Group) -> None:
    """The cheap checks (no chunk read): :func:`check_layout`, then every chunk's file there.

    A store that says it is complete must have every chunk marked done.

    Raises
    ------
    StoreError
        The first problem, named by store, array and chunk key.
    """
    check_layout(group)
    done = _done(group)
    if group.attrs.get("status") == "complete" and done is not None and not done.all():
        chunk = int(np.flatnonzero(~done)[0])
        raise StoreError(f"{_where(group)}: the store says it is complete but chunk {chunk} is "
                         "not marked done (its 'done' chunk is missing or was changed); rebuild "
                         "the store (`ccfkit build --overwrite`)")  # fmt: skip
    for array, coords, _ in _required_chunks(group):
        if not _chunk_exists(array, coords):
            raise _damaged(array, coords, FileNotFoundError("missing"))


def verify_store(group: zarr.Group) -> int:
    """Check a store whole: :func:`check_store`, then read every chunk; return the count.

    Every chunk's crc32c is checked as it is decoded; the digest recorded
    for it at write time (``digests/<array>`` for the map tasks' chunks, the
    root attribute ``chunk_digests`` for the arrays written at creation) must
    match its values.

    Raises
    ------
    StoreError
        The first missing, damaged or misplaced chunk, named by store, array and key.
    """
    check_store(group)
    expected = _recorded_digests(group)
    scheme = digest_scheme(group.attrs.get("schema_version", 1))
    count = 0
    arrays = sorted(group.arrays())
    if DIGESTS in group:
        arrays += [(f"{DIGESTS}/{n}", a) for n, a in sorted(group[DIGESTS].arrays())]
    for name, array in arrays:
        for coords in itertools.product(*(range(n) for n in array.cdata_shape)):
            try:
                block = array.get_block_selection(coords)
            except (ValueError, RuntimeError) as error:
                raise _damaged(array, coords, error) from None
            digest = expected.get((name, coords))
            if digest and chunk_digest(block, scheme) != digest:
                raise _damaged(array, coords, ValueError(
                    "its values are not the ones written there: a chunk moved or from another "
                    "store"))  # fmt: skip
            count += 1
    return count


def _recorded_digests(group: zarr.Group) -> dict[tuple[str, tuple], int]:
    """``{(array name, chunk coords): digest}`` of every digest the build recorded (0: none)."""
    recorded = {}
    for name, hexes in group.attrs.get("chunk_digests", {}).items():
        if name in group:
            grid = itertools.product(*(range(n) for n in group[name].cdata_shape))
            recorded.update({(name, c): int(h, 16) for c, h in zip(grid, hexes)})
    if DIGESTS in group:
        for name, digests in group[DIGESTS].arrays():
            try:
                values = digests[:]
            except (ValueError, RuntimeError) as error:
                raise _damaged(digests, (0,), error) from None
            if name in group:
                rest = (0,) * (group[name].ndim - 1)
                recorded.update({(name, (k, *rest)): int(v) for k, v in enumerate(values)})
    return recorded


def _chunk_exists(array: zarr.Array, coords) -> bool:
    """Whether the chunk's file is there (local stores; True where that cannot be told)."""
    root = getattr(array.store, "root", None)
    if root is None:
        return True
    return (Path(root) / array.path / chunk_key(array, coords)).is_file()
