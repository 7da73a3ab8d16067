"""The Zarr v3 store of a build (docs/store-layout.md; ``docs/store-layout.md``).

A store is created whole — every array, with the per-store ones (index,
radius, mask, q, labels) already written — before any map is computed. Its
root ``zarr.json`` is written first, saying ``status = "creating"``, and at
the end of the creation rewritten once, whole (one atomic file replacement:
zarr's local store writes a temporary file and renames it), with every
attribute and ``status = "incomplete"``. A store killed while being created
is therefore recognisable as such: ``--resume`` and ``--overwrite`` create
it again. Map chunks are then filled independently (each Dask task writes
whole Zarr chunks of its own) and each marks itself in ``done``. Only when
every chunk is done does the store say ``status = "complete"``.

Nothing that is not a ccfkit store is ever removed: ``--overwrite`` replaces
a ccfkit store (complete, incomplete or interrupted while being created) or
an empty directory, and refuses anything else (:func:`output_state`). A
store is written under an exclusive lock on its directory
(:func:`locked_store`): a second process that wants to write it gets one
line. Every array's codec chain ends
in a ``crc32c`` checksum, so a damaged chunk is an error
(:func:`verify_store`, :func:`read_checked`).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import itertools
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from ._version import __version__
from .io.chunks import ChunkWriter, WriteMethod, chunk_writer

__all__ = [
    "COMPRESSORS",
    "SCHEMA_VERSION",
    "ChunkWriters",
    "OutputState",
    "StoreError",
    "StoreLayout",
    "WriteMethod",
    "check_not_input",
    "create_store",
    "dimension_names",
    "locked_store",
    "mark_complete",
    "open_store",
    "output_state",
    "pending_chunks",
    "read_checked",
    "verify_store",
]

#: Bumped whenever the layout changes in a way readers must know about.
#: 2: ``ring_used``; ``ccf`` is (N, C, Q, Q) for several orders (docs/store-layout.md).
SCHEMA_VERSION = 2

#: Compressors offered for the maps (chosen by measurement, docs/performance.md).
COMPRESSORS = {
    "none": None,
    "lz4": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "zstd": BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
}

#: Largest chunk (frames) of the per-frame arrays written once at creation (index, labels).
WHOLE_CHUNK_MAX = 1 << 20

#: ``status`` of a store whose creation has begun but not finished.
CREATING = "creating"


class StoreError(RuntimeError):
    """A store cannot be created, resumed or read as asked."""


@dataclass(frozen=True)
class StoreLayout:
    """Shapes, chunking and dtypes of a store.

    Attributes
    ----------
    n_frames : int
        ``N``.
    q_bins : int
        ``Q``: maps are Q x Q.
    channels : int
        ``C``: one per angular order; ``ccf`` is (N, Q, Q) for 1, else (N, C, Q, Q).
    chunk_frames : int
        Frames per chunk of every per-frame array (one Dask task each).
    label_names : tuple of str
        Empty when the input has no labels.
    image_size : int or None
        ``S`` for the optional (N, S, S) resized noisy images.
    map_dtype : str
        ``"float32"`` or ``"float16"``.
    compressor : str
        A key of :data:`COMPRESSORS`.
    stats_by_chunk : bool
        ``stats`` chunked like the maps, because the map tasks write it (no
        statistics pass: ``--noise none``); otherwise one chunk, written once
        after the statistics pass.
    """

    n_frames: int
    q_bins: int
    channels: int = 1
    chunk_frames: int = 64
    label_names: tuple[str, ...] = ()
    image_size: int | None = None
    map_dtype: str = "float32"
    compressor: str = "none"
    stats_by_chunk: bool = True

    def __post_init__(self):
        for name in ("n_frames", "q_bins", "channels", "chunk_frames"):
            if getattr(self, name) < 1:
                raise StoreError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size is not None and self.image_size < 1:
            raise StoreError(f"the image size must be >= 1, got {self.image_size}")

    @property
    def map_shape(self) -> tuple[int, ...]:
        """Shape of one frame's maps: (Q, Q), or (C, Q, Q) for several orders."""
        q = self.q_bins
        return (q, q) if self.channels == 1 else (self.channels, q, q)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_frames // self.chunk_frames)

    def chunk_slice(self, chunk: int) -> slice:
        """Frames of chunk ``chunk``."""
        start = chunk * self.chunk_frames
        return slice(start, min(start + self.chunk_frames, self.n_frames))


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
    attributes = _root_attributes(path)
    if attributes.get("tool") != "ccfkit":
        return OutputState.FOREIGN
    return {
        CREATING: OutputState.CREATING,
        "incomplete": OutputState.INCOMPLETE,
        "complete": OutputState.COMPLETE,
    }.get(attributes.get("status"), OutputState.FOREIGN)


def _root_attributes(path: Path) -> dict:
    """The root group's attributes read from ``zarr.json`` ({} when there is none to read)."""
    try:
        metadata = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(metadata, dict) or metadata.get("node_type") != "group":
        return {}
    attributes = metadata.get("attributes")
    return attributes if isinstance(attributes, dict) else {}


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
    return state


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
    group = _empty_group(path)
    per_frame = layout.chunk_frames
    maps_codecs = _codecs(COMPRESSORS[layout.compressor])
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
    if "q" in contents:
        ccf.attrs["coordinates"] = "q"  # xarray: q labels the radius axis too
    # written once, whole, at creation: one chunk (up to a million frames)
    whole = (min(layout.n_frames, WHOLE_CHUNK_MAX),)
    index = group.create_array(
        "index", shape=(layout.n_frames,), chunks=whole, dtype="int64", compressors=_codecs(),
        dimension_names=dims["index"],
    )  # fmt: skip
    index[:] = np.arange(layout.n_frames, dtype=np.int64)
    # raw (no codec but the checksum): map tasks write their chunk's file directly
    group.create_array(
        "stats", shape=(layout.n_frames, 3), dtype="float32", compressors=_codecs(None),
        chunks=(per_frame if layout.stats_by_chunk else whole[0], 3),
        dimension_names=dims["stats"],
    )  # fmt: skip
    if layout.label_names:
        labels = group.create_array(
            "labels",
            shape=(layout.n_frames, len(layout.label_names)),
            chunks=(*whole, len(layout.label_names)),
            dtype="uint8",
            compressors=_codecs(),
            dimension_names=dims["labels"],
        )
        labels.attrs["names"] = list(layout.label_names)
        # the names as a coordinate array (xarray labels the label axis with it)
        names = group.create_array(
            "label", shape=(len(layout.label_names),), dtype=str, compressors=_codecs(),
            dimension_names=dims["label"],
        )  # fmt: skip
        names[:] = np.array(layout.label_names, dtype=object)
    for name, (data, attrs) in contents.items():
        data = np.asarray(data)
        if name not in group:  # labels are made above, chunked like index
            group.create_array(
                name, shape=data.shape, dtype=data.dtype, compressors=_codecs(),
                dimension_names=dims.get(name),
            )  # fmt: skip
        group[name][:] = data
        group[name].attrs.update(attrs)
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
        compressors=_codecs(None), dimension_names=dims["done"],
    )  # fmt: skip
    group.attrs.put(  # one write of the whole zarr.json
        {
            **_creating_attributes(),
            "status": "incomplete",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "layout": _layout_attrs(layout),
            **attributes,
        }
    )
    return group


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


def dimension_names(layout: StoreLayout) -> dict[str, tuple[str, ...]]:
    """The ``dimension_names`` of every array a store of ``layout`` holds.

    Shared names tie the arrays together for xarray: ``radius`` (and ``q``)
    label the first radial axis of ``ccf``, ``label`` (the label names) the
    columns of ``labels``; ``frame`` runs over every per-frame array.
    """
    radial = ("radius", "radius_j")
    return {
        "ccf": ("frame", *(() if layout.channels == 1 else ("order",)), *radial),
        "index": ("frame",),
        "train_id": ("frame",),
        "pulse_id": ("frame",),
        "frame_center": ("frame", "xy"),
        "stats": ("frame", "statistic"),
        "labels": ("frame", "label"),
        "label": ("label",),
        "radius": ("radius",),
        "q": ("radius",),
        "ring_used": ("radius",),
        "mask": ("y", "x"),
        "images": ("frame", "image_y", "image_x"),
        "done": ("chunk",),
    }


def _codecs(compressor=None) -> tuple:
    """An array's bytes-to-bytes codecs: ``compressor`` (if any), then a crc32c checksum."""
    return (Crc32cCodec(),) if compressor is None else (compressor, Crc32cCodec())


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


def layout_of(group: zarr.Group) -> StoreLayout:
    """The layout recorded in a store."""
    stored = dict(group.attrs["layout"])
    stored["label_names"] = tuple(stored["label_names"])
    return StoreLayout(**stored)


def pending_chunks(group: zarr.Group) -> np.ndarray:
    """Indices of the chunks whose maps are not written yet."""
    return np.flatnonzero(group["done"][:] == 0)


@dataclass(frozen=True)
class ChunkWriters:
    """Writers of whole chunks of a store's per-frame arrays (small, picklable).

    What a map task needs to fill its chunk: one :class:`~ccfkit.io.chunks.ChunkWriter`
    per array, each chunk written whole and atomically.
    """

    ccf: ChunkWriter
    stats: ChunkWriter
    done: ChunkWriter
    images: ChunkWriter | None = None

    @classmethod
    def of(cls, group: zarr.Group, method: WriteMethod | str = WriteMethod.ZARR) -> ChunkWriters:
        """The writers of ``group``'s arrays; ``method``: :class:`~ccfkit.io.chunks.WriteMethod`."""
        names = ("ccf", "stats", "done", "images")
        return cls(*(chunk_writer(group[n], method) if n in group else None for n in names))

    def mark_done(self, chunk: int) -> None:
        """Record that every array's chunk ``chunk`` is written (call after writing)."""
        self.done.write(chunk, np.ones(1, dtype=np.uint8))


def mark_complete(group: zarr.Group) -> None:
    """Say the store is complete; refuses while a chunk is pending."""
    missing = pending_chunks(group)
    if missing.size:
        raise StoreError(f"{missing.size} chunk(s) not written yet")
    completed = datetime.now(UTC).isoformat(timespec="seconds")
    group.attrs.update({"status": "complete", "completed": completed})  # one write


def _layout_attrs(layout: StoreLayout) -> dict:
    attrs = dict(layout.__dict__)
    attrs["label_names"] = list(layout.label_names)
    return json.loads(json.dumps(attrs))


#: Arrays whose chunk ``k`` is written by map task ``k`` (present once ``done[k]`` is 1).
MAP_TASK_ARRAYS = ("ccf", "images", "stats")
#: Arrays whose every chunk has a file once the task wrote it, zeros too
#: (:class:`~ccfkit.io.chunks.ChunkWriter` writes empty chunks).
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
