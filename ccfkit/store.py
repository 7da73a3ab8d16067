"""The Zarr v3 store of a build (SPEC §7; ``docs/store-layout.md``).

A store is created whole — every array, with the per-store ones (index,
radius, mask, q, labels) already written, then the provenance — before any
map is computed, with ``status = "incomplete"`` in its attributes. The root
attributes come last: a store killed while being created is no ccfkit store
yet, so it cannot be resumed, only overwritten. Map chunks
are then filled independently (each Dask task writes whole Zarr chunks of its
own, so no locks are needed), and each marks itself in ``done``. Only when
every chunk is done does the store say ``status = "complete"``. An
interrupted build therefore leaves a store that says it is incomplete, and
``resume`` finishes exactly the chunks that are not done.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from ._version import __version__
from .io.zarr_direct import ChunkFiles, ZarrChunks, chunk_writer

__all__ = [
    "COMPRESSORS",
    "SCHEMA_VERSION",
    "ChunkWriters",
    "StoreError",
    "StoreLayout",
    "create_store",
    "mark_complete",
    "open_store",
    "pending_chunks",
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


def create_store(
    path: str | Path,
    layout: StoreLayout,
    attributes: dict,
    contents: Mapping[str, tuple[np.ndarray, dict]],
    *,
    overwrite: bool = False,
) -> zarr.Group:
    """Create an incomplete store: every array, the per-store ones written, then the provenance.

    The per-frame arrays the map tasks fill (``ccf``, ``stats``, ``images``,
    ``done``) are created empty; ``index`` (``0 .. N-1``) and ``contents``
    are written whole. The root attributes are written last, so that only a
    store created to the end opens as a ccfkit store (and can be resumed).

    Parameters
    ----------
    path : str or Path
        The ``.zarr`` directory.
    layout : StoreLayout
    attributes : dict
        JSON-ready provenance and parameters (SPEC §7), stored at the root.
    contents : mapping of str to (ndarray, dict)
        The per-store arrays and their attributes, by name: ``radius``,
        ``mask``, optionally ``q``, and ``labels`` (N, C) when
        ``layout.label_names`` names its columns.
    overwrite : bool
        Replace an existing store; without it an existing path is an error.

    Returns
    -------
    zarr.Group
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise StoreError(
                f"{path} exists; use --overwrite to replace it or --resume to finish it"
            )
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    group = zarr.open_group(str(path), mode="w-")
    per_frame = layout.chunk_frames
    compressor = COMPRESSORS[layout.compressor]
    group.create_array(
        "ccf",
        shape=(layout.n_frames, *layout.map_shape),
        chunks=(per_frame, *layout.map_shape),
        dtype=layout.map_dtype,
        compressors=compressor,
        fill_value=0,
    )
    # written once, whole, at creation: one chunk (up to a million frames)
    whole = (min(layout.n_frames, WHOLE_CHUNK_MAX),)
    index = group.create_array("index", shape=(layout.n_frames,), chunks=whole, dtype="int64")
    index[:] = np.arange(layout.n_frames, dtype=np.int64)
    # raw (no codec): map tasks write their chunk's file directly
    group.create_array(
        "stats", shape=(layout.n_frames, 3), dtype="float32", compressors=None,
        chunks=(per_frame if layout.stats_by_chunk else whole[0], 3),
    )  # fmt: skip
    if layout.label_names:
        labels = group.create_array(
            "labels",
            shape=(layout.n_frames, len(layout.label_names)),
            chunks=(*whole, len(layout.label_names)),
            dtype="uint8",
        )
        labels.attrs["names"] = list(layout.label_names)
    for name, (data, attrs) in contents.items():
        data = np.asarray(data)
        if name not in group:  # labels are made above, chunked like index
            group.create_array(name, shape=data.shape, dtype=data.dtype)
        group[name][:] = data
        group[name].attrs.update(attrs)
    if layout.image_size:
        s = layout.image_size
        group.create_array(
            "images",
            shape=(layout.n_frames, s, s),
            chunks=(per_frame, s, s),
            dtype="float32",
            compressors=compressor,
            fill_value=0,
        )
    group.create_array(
        "done", shape=(layout.n_chunks,), chunks=(1,), dtype="uint8", fill_value=0,
        compressors=None,
    )  # fmt: skip
    group.attrs.update(
        {
            "schema_version": SCHEMA_VERSION,
            "tool": "ccfkit",
            "tool_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "status": "incomplete",
            "layout": _layout_attrs(layout),
            **attributes,
        }
    )
    return group


def open_store(path: str | Path, *, mode: str = "r") -> zarr.Group:
    """Open an existing store, checking that it is a ccfkit store of a known schema."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    try:
        group = zarr.open_group(str(path), mode=mode)
    except Exception as error:  # zarr raises several types for a non-store
        raise StoreError(f"{path}: not a Zarr store ({error})") from error
    version = group.attrs.get("schema_version")
    if group.attrs.get("tool") != "ccfkit" or version is None:
        raise StoreError(f"{path}: not a ccfkit store (or one whose creation was interrupted)")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path}: schema {version} is newer than this ccfkit ({SCHEMA_VERSION})")
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

    What a map task needs to fill its chunk: see :mod:`ccfkit.io.zarr_direct`.
    """

    ccf: ChunkFiles | ZarrChunks
    stats: ChunkFiles | ZarrChunks
    done: ChunkFiles | ZarrChunks
    images: ChunkFiles | ZarrChunks | None = None

    @classmethod
    def of(cls, group: zarr.Group) -> ChunkWriters:
        images = chunk_writer(group["images"]) if "images" in group else None
        return cls(*(chunk_writer(group[name]) for name in ("ccf", "stats", "done")), images)

    def mark_done(self, chunk: int) -> None:
        """Record that every array's chunk ``chunk`` is written (call after writing)."""
        self.done.write(chunk, np.ones(1, dtype=np.uint8))


def mark_complete(group: zarr.Group) -> None:
    """Say the store is complete; refuses while a chunk is pending."""
    missing = pending_chunks(group)
    if missing.size:
        raise StoreError(f"{missing.size} chunk(s) not written yet")
    group.attrs["status"] = "complete"
    group.attrs["completed"] = datetime.now(timezone.utc).isoformat(timespec="seconds")


def _layout_attrs(layout: StoreLayout) -> dict:
    attrs = dict(layout.__dict__)
    attrs["label_names"] = list(layout.label_names)
    return json.loads(json.dumps(attrs))
