"""A store's life: created whole, filled chunk by chunk, marked complete (docs/store-layout.md).

A store is created whole — every array, with the per-store ones (index,
radius, mask, q, labels) already written — before any map is computed. Its
root ``zarr.json`` is written first, saying ``status = "creating"``, and at
the end of the creation rewritten once, whole (one atomic file replacement:
zarr's local store writes a temporary file and renames it), with every
attribute and ``status = "incomplete"``. A store killed while being created
is therefore recognisable as such: ``--resume`` and ``--overwrite`` create
it again. Map chunks are then filled independently (each Dask task writes
whole Zarr chunks of its own, :mod:`ccfkit.store.chunks`) and each marks
itself in ``done``. Only when every chunk is done does the store say
``status = "complete"``.

Nothing that is not a ccfkit store is ever removed: ``--overwrite`` replaces
a ccfkit store (complete, incomplete or interrupted while being created) or
an empty directory, and refuses anything else (:func:`output_state`), a
store holding anything the build did not write included
(:func:`~ccfkit.store.own_files.foreign_entries`). A
store is written under an exclusive lock on its directory
(:func:`locked_store`): a second process that wants to write it gets one
line.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import itertools
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import zarr

from .._version import __version__
from .layout import (
    COMPRESSORS,
    DIGESTS,
    FRAME_CHECKS,
    SCHEMA_VERSION,
    TASK_WRITTEN,
    WHOLE_CHUNK_MAX,
    StoreError,
    StoreLayout,
    chunk_digest,
    codecs,
    digest_scheme,
    digested_arrays,
    dimension_names,
    layout_attributes,
    records_digests,
)
from .own_files import foreign_entries, root_attributes

__all__ = [
    "CREATING",
    "OutputState",
    "check_not_input",
    "create_store",
    "foreign_entries",
    "locked_store",
    "mark_complete",
    "open_store",
    "output_state",
    "pending_chunks",
    "per_store_digests",
    "write_recorded",
]

#: ``status`` of a store whose creation has begun but not finished.
CREATING = "creating"
#: zarr's configuration that writes every chunk, fill values too: a missing chunk is damage.
EVERY_CHUNK = {"write_empty_chunks": True}


class OutputState(enum.Enum):
    """What a build's output path holds (:func:`output_state`)."""

    MISSING = "missing"
    EMPTY = "an empty directory"
    CREATING = "a ccfkit store whose creation was interrupted (or is under way)"
    INCOMPLETE = "an incomplete ccfkit store"
    COMPLETE = "a complete ccfkit store"
    FOREIGN = "a directory that is not a ccfkit store"
    FILE = "not a directory"

    @property
    def replaceable(self) -> bool:
        """A ccfkit store, or a directory its creation left (both replaceable)."""
        return self in (OutputState.EMPTY, OutputState.CREATING, OutputState.INCOMPLETE,
                        OutputState.COMPLETE)  # fmt: skip


def output_state(path: str | Path) -> OutputState:
    """Classify ``path`` without changing anything.

    An empty directory may be what a creation killed before its first
    ``zarr.json`` left; a store is recognised by its root attributes (``tool =
    "ccfkit"`` and a ``status``).
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        return OutputState.FILE
    if not path.exists():
        return OutputState.MISSING
    if not any(path.iterdir()):
        return OutputState.EMPTY
    attributes = root_attributes(path)
    if attributes.get("tool") != "ccfkit":
        return OutputState.FOREIGN
    return {
        CREATING: OutputState.CREATING,
        "incomplete": OutputState.INCOMPLETE,
        "complete": OutputState.COMPLETE,
    }.get(attributes.get("status"), OutputState.FOREIGN)


def check_not_input(out: str | Path, inputs: Sequence[str | Path]) -> None:
    """Refuse an output that is, or is a directory above, one of the ``inputs`` (resolved)."""
    out = Path(out).resolve()
    for name in inputs:
        given = Path(name).resolve()
        if given == out or out in given.parents:
            raise StoreError(f"{out} is or contains the input {name}: choose another output")


@contextlib.contextmanager
def locked_store(path: str | Path, *, overwrite: bool = False, resume: bool = False
                 ) -> Iterator[OutputState]:  # fmt: skip
    """Hold the exclusive lock of the store at ``path`` for a build; yield what it holds.

    The directory is made when missing; the lock is an ``flock`` on the
    directory itself (which a build never removes, so the lock holds while an
    overwritten store is emptied), released when the block ends or the
    process dies; no file is added to the store. What ``path`` holds is
    checked before and again under the lock, against what the build was
    asked to do:

    - neither flag: ``path`` must not exist;
    - ``overwrite``: it may hold a ccfkit store or be an empty directory;
    - ``resume``: it must hold a ccfkit store (or what its creation left).

    Raises
    ------
    StoreError
        Anything else (a file, a directory of other files, an existing store
        without a flag), or another process holds the lock.
    """
    path = Path(path)
    _check_state(path, output_state(path), overwrite=overwrite, resume=resume)
    path.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"{path} is being written by another ccfkit process (it holds the lock); "
                "wait for it to finish"
            ) from None
        state = output_state(path)  # again: another process may have written it meanwhile
        if overwrite or resume:
            state = _check_state(path, state, overwrite=overwrite, resume=resume)
        elif state is not OutputState.EMPTY:
            raise StoreError(f"{path} was just written by another process")
        yield state
    finally:
        os.close(descriptor)


def _check_state(path: Path, state: OutputState, *, overwrite: bool, resume: bool
                 ) -> OutputState:  # fmt: skip
    """``state`` if a build with these flags may write ``path``; else a one-line StoreError."""
    if state in (OutputState.FILE, OutputState.FOREIGN):
        raise StoreError(f"{path} is {state.value}: refusing to write a store there")
    if resume and state is OutputState.MISSING:
        raise StoreError(f"{path}: no such store to resume")
    if not (overwrite or resume) and state is not OutputState.MISSING:
        raise StoreError(f"{path} exists; use --overwrite to replace it or --resume to finish it")
    if overwrite and state.replaceable:
        _refuse_foreign(path)
    return state


def _refuse_foreign(path: Path) -> None:
    """A StoreError listing what ``path`` holds that a build did not write, if anything."""
    foreign = foreign_entries(path) if path.is_dir() else []
    if foreign:
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10
                                           else "")  # fmt: skip
        raise StoreError(
            f"{path} holds files a build did not write: {shown}; --overwrite removes only "
            "what ccfkit wrote: move those away first"
        )


def create_store(
    path: str | Path,
    layout: StoreLayout,
    attributes: dict,
    contents: Mapping[str, tuple[np.ndarray, dict]],
) -> zarr.Group:
    """Create an incomplete store at a locked ``path``: every array, then the provenance.

    Call inside :func:`locked_store`. Whatever a ccfkit store held at
    ``path`` is replaced: its root attributes first become ``status =
    "creating"``, then its other entries are removed. The per-frame arrays the
    map tasks fill (``ccf``, ``stats``, ``images``, ``done``) are created empty;
    ``index`` (``0 .. N-1``) and ``contents`` are written whole. The root
    attributes are then written in one step, with ``status = "incomplete"``.

    Parameters
    ----------
    path : str or Path
        The ``.zarr`` directory (empty, or a ccfkit store; locked).
    layout : StoreLayout
    attributes : dict
        JSON-ready provenance and parameters (docs/store-layout.md), stored at the root.
    contents : mapping of str to (ndarray, dict)
        The per-store arrays and their attributes, by name: ``radius``,
        ``mask``, optionally ``q``, and ``labels`` (N, C) when
        ``layout.label_names`` names its columns.

    Returns
    -------
    zarr.Group
    """
    path = Path(path)
    state = output_state(path)
    if not state.replaceable:
        raise StoreError(f"{path} is {state.value}: refusing to replace it")
    _refuse_foreign(path)
    group = _empty_group(path)
    _create_task_arrays(group, layout, coordinates="q" in contents)
    _write_per_store_arrays(group, layout, contents)
    group.attrs.put(  # one write of the whole zarr.json
        {
            **_creating_attributes(),
            "status": "incomplete",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_id": uuid.uuid4().hex,  # tells two builds of one second apart
            "layout": layout_attributes(layout),
            "chunk_digests": per_store_digests(group),
            **attributes,
        }
    )
    return group


def _create_task_arrays(group: zarr.Group, layout: StoreLayout, *, coordinates: bool) -> None:
    """Create, empty, the per-frame arrays the map tasks fill: ccf, stats, images, done.

    ``coordinates``: the store has a ``q`` array, which labels ``ccf``'s radial axis too.
    """
    per_frame = layout.chunk_frames
    maps_codecs = codecs(COMPRESSORS[layout.compressor])
    dims = dimension_names(layout)
    ccf = group.create_array(
        "ccf",
        shape=(layout.n_frames, *layout.map_shape),
        chunks=(per_frame, *layout.map_shape),
        dtype=layout.map_dtype,
        compressors=maps_codecs,
        fill_value=0,
        dimension_names=dims["ccf"],
    )
    if coordinates:
        ccf.attrs["coordinates"] = "q"  # xarray: q labels the radius axis too
    # raw (no codec but the checksum): map tasks write their chunk's file directly
    whole = min(layout.n_frames, WHOLE_CHUNK_MAX)
    group.create_array(
        "stats", shape=(layout.n_frames, 3), dtype="float32", compressors=codecs(None),
        chunks=(per_frame if layout.stats_by_chunk else whole, 3),
        dimension_names=dims["stats"],
    )  # fmt: skip
    if layout.image_size:
        s = layout.image_size
        group.create_array(
            "images",
            shape=(layout.n_frames, s, s),
            chunks=(per_frame, s, s),
            dtype="float32",
            compressors=maps_codecs,
            fill_value=0,
            dimension_names=dims["images"],
        )
    group.create_array(
        "done", shape=(layout.n_chunks,), chunks=(1,), dtype="uint8", fill_value=0,
        compressors=codecs(None), dimension_names=dims["done"],
    )  # fmt: skip
    checks = group.create_array(  # per frame: unusable pixels, empty map, masked map
        "frame_checks", shape=(layout.n_frames, len(FRAME_CHECKS)), dtype="int32",
        chunks=(per_frame, len(FRAME_CHECKS)), fill_value=0, compressors=codecs(None),
        dimension_names=dims["frame_checks"],
    )  # fmt: skip
    checks.attrs["columns"] = list(FRAME_CHECKS)
    group.create_array(  # per chunk: the digest of its input frames (ccfkit.digest)
        "input_digest", shape=(layout.n_chunks,), chunks=(1,), dtype="uint64", fill_value=0,
        compressors=codecs(None), dimension_names=dims["input_digest"],
    )  # fmt: skip
    digests = group.create_group(DIGESTS)  # one per chunk the map tasks write
    for name in digested_arrays(layout):
        digests.create_array(
            name, shape=(layout.n_chunks,), chunks=(1,), dtype="uint64", fill_value=0,
            compressors=codecs(None), dimension_names=("chunk",),
        )  # fmt: skip


def _write_per_store_arrays(group: zarr.Group, layout: StoreLayout,
                            contents: Mapping[str, tuple[np.ndarray, dict]]) -> None:  # fmt: skip
    """Write the arrays known at creation, whole: ``index``, ``labels``, ``label`` and ``contents``."""
    dims = dimension_names(layout)
    # written once, whole, at creation: one chunk (up to a million frames)
    whole = (min(layout.n_frames, WHOLE_CHUNK_MAX),)
    index = group.create_array(
        "index", shape=(layout.n_frames,), chunks=whole, dtype="int64", compressors=codecs(),
        dimension_names=dims["index"],
    )  # fmt: skip
    index.with_config(EVERY_CHUNK)[:] = np.arange(layout.n_frames, dtype=np.int64)
    if layout.label_names:
        labels = group.create_array(
            "labels",
            shape=(layout.n_frames, len(layout.label_names)),
            chunks=(*whole, len(layout.label_names)),
            dtype="uint8",
            compressors=codecs(),
            dimension_names=dims["labels"],
        )
        labels.attrs["names"] = list(layout.label_names)
        # the names as a coordinate array (xarray labels the label axis with it)
        names = group.create_array(
            "label", shape=(len(layout.label_names),), dtype=str, compressors=codecs(),
            dimension_names=dims["label"],
        )  # fmt: skip
        names.with_config(EVERY_CHUNK)[:] = np.array(layout.label_names, dtype=object)
    for name, (data, attrs) in contents.items():
        data = np.asarray(data)
        if name not in group:  # labels are made above, chunked like index
            group.create_array(
                name, shape=data.shape, dtype=data.dtype, compressors=codecs(),
                dimension_names=dims.get(name),
            )  # fmt: skip
        group[name].with_config(EVERY_CHUNK)[:] = data
        group[name].attrs.update(attrs)


def per_store_digests(group: zarr.Group) -> dict[str, list[str]]:
    """The digest of every chunk of the arrays written at creation (root attribute ``chunk_digests``).

    Hex strings of :func:`~ccfkit.store.layout.chunk_digest`, in the order of
    the chunk grid (C order), by array name: the arrays the map tasks fill
    record theirs in ``digests/`` as they are written.
    """
    scheme = digest_scheme(SCHEMA_VERSION)
    return {name: _chunk_digests(array, scheme)
            for name, array in sorted(group.arrays()) if name not in TASK_WRITTEN}  # fmt: skip


def write_recorded(group: zarr.Group, name: str, data: np.ndarray, **attributes) -> None:
    """Write array ``name`` whole, every chunk a file, and record its chunks' digests.

    For an array written once after the creation (``stats`` after the
    statistics pass): a chunk file missing afterwards is damage, never a run
    of zeros, and a chunk moved or changed fails :func:`~ccfkit.store.verify_store`.
    The digests join the root attribute ``chunk_digests``, written in one
    step with ``attributes`` (e.g. the ``noise`` that says the pass is done).
    A store that records no digests (:func:`~ccfkit.store.layout.records_digests`:
    one made before them, resumed) gets the array and ``attributes`` only.

    Parameters
    ----------
    group : zarr.Group
        The store's root (writable).
    name : str
        An array of ``group``.
    data : ndarray
        Its values, of its shape.
    **attributes
        Root attributes written with the digests.
    """
    array = group[name]
    array.with_config(EVERY_CHUNK)[:] = data
    if not records_digests(group):  # a store from before digests: it stays one
        group.attrs.update(attributes)
        return
    scheme = digest_scheme(group.attrs.get("schema_version", SCHEMA_VERSION))
    recorded = {**group.attrs.get("chunk_digests", {}), name: _chunk_digests(array, scheme)}
    group.attrs.update({"chunk_digests": recorded, **attributes})  # one write


def _chunk_digests(array: zarr.Array, scheme: str) -> list[str]:
    """Hex :func:`~ccfkit.store.layout.chunk_digest` of every chunk of ``array``, as written."""
    grid = itertools.product(*(range(n) for n in array.cdata_shape))
    return [f"{chunk_digest(array.get_block_selection(c), scheme):016x}" for c in grid]


def _creating_attributes() -> dict:
    """The root attributes of a store being created (enough to recognise it)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "ccfkit",
        "tool_version": __version__,
        "status": CREATING,
    }


def _empty_group(path: Path) -> zarr.Group:
    """The root group of ``path`` saying ``status = "creating"``, and nothing else.

    An existing store's ``zarr.json`` is rewritten first (one write), so that a
    kill while its arrays are being removed leaves a store that says it is
    being created.
    """
    if not (path / "zarr.json").exists():
        return zarr.create_group(store=str(path), attributes=_creating_attributes())
    group = zarr.open_group(str(path), mode="r+")
    group.attrs.put(_creating_attributes())
    for entry in path.iterdir():
        if entry.name == "zarr.json":
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    return zarr.open_group(str(path), mode="r+")


def open_store(path: str | Path, *, mode: str = "r") -> zarr.Group:
    """Open an existing store, checking that it is a ccfkit store of a known schema."""
    path = Path(path)
    # a link to a store reads as the store; only writing refuses links
    state = output_state(path.resolve())
    if state is OutputState.MISSING:
        raise StoreError(f"{path}: no such store")
    if state in (OutputState.EMPTY, OutputState.CREATING):
        raise StoreError(
            f"{path}: the creation of this store was interrupted (or is under way); "
            "`ccfkit build --resume` or `--overwrite` creates it again"
        )
    if not state.replaceable:
        raise StoreError(f"{path} is {state.value}")
    try:
        group = zarr.open_group(str(path), mode=mode)
    except (OSError, ValueError, KeyError, TypeError) as error:  # zarr's types for a broken one
        raise StoreError(f"{path}: not a readable Zarr store ({error})") from error
    version = group.attrs.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema {version} is not one this ccfkit ({SCHEMA_VERSION}) reads"
        )
    return group


def pending_chunks(group: zarr.Group) -> np.ndarray:
    """Indices of the chunks whose maps are not written yet."""
    return np.flatnonzero(group["done"][:] == 0)


def mark_complete(group: zarr.Group) -> None:
    """Say the store is complete; refuses while a chunk is pending."""
    missing = pending_chunks(group)
    if missing.size:
        raise StoreError(f"{missing.size} chunk(s) not written yet")
    completed = datetime.now(UTC).isoformat(timespec="seconds")
    group.attrs.update({"status": "complete", "completed": completed})  # one write
