"""What a store holds: its schema version, shapes, chunking, dtypes and codecs (docs/store-layout.md).

Pure descriptions (no file is touched here): :class:`StoreLayout` and the
names and codecs of the arrays every ccfkit store has. Every array's codec
chain ends in a ``crc32c`` checksum, so a damaged chunk is an error
(:mod:`ccfkit.store.verify`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import xxhash
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from ..build_config import BuildOptions, OutputSettings

__all__ = [
    "COMPRESSORS",
    "DIGESTS",
    "FRAME_CHECKS",
    "SCHEMA_VERSION",
    "TASK_WRITTEN",
    "WHOLE_CHUNK_MAX",
    "StoreError",
    "StoreLayout",
    "chunk_digest",
    "codecs",
    "digest_scheme",
    "digested_arrays",
    "dimension_names",
    "layout_attributes",
    "layout_of",
    "records_digests",
]

#: Bumped whenever the layout changes in a way readers must know about.
#: 2: ``ring_used``; ``ccf`` is (N, C, Q, Q) for several orders (docs/store-layout.md).
#: 3: the chunk digests are XXH3-64 (BLAKE2b before: 27x the CPU, docs/performance.md).
SCHEMA_VERSION = 3

#: Compressors offered for the maps (chosen by measurement, docs/performance.md).
COMPRESSORS = {
    "none": None,
    "lz4": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "zstd": BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
}

#: Columns of ``frame_checks`` (N, 3) int32, written by each map task for its frames:
#: the frame's good pixels that are unusable (NaN, +-inf, huge: docs/ccf.md §1), 1 when
#: its maps are all 0 (no usable ring), 1 when its maps held NaN/inf and were stored as 0
#: (``--mask-bad-maps``).
FRAME_CHECKS = ("unusable_pixels", "empty_map", "masked_map")

#: Largest chunk (frames) of the per-frame arrays written once at creation (index, labels).
WHOLE_CHUNK_MAX = 1 << 20

#: The group of per-chunk digests of the arrays the map tasks write (docs/store-layout.md):
#: ``digests/<array>`` (n_chunks,) uint64, written with each chunk.
DIGESTS = "digests"

#: Arrays the map tasks (or the statistics pass) fill after the creation.
TASK_WRITTEN = ("ccf", "stats", "images", "done", "frame_checks", "input_digest")


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
    chunk_frames: int = BuildOptions.chunk_frames
    label_names: tuple[str, ...] = ()
    image_size: int | None = None
    map_dtype: str = OutputSettings.map_dtype
    compressor: str = BuildOptions.compressor
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


def layout_of(group: zarr.Group) -> StoreLayout:
    """The layout recorded in a store."""
    stored = dict(group.attrs["layout"])
    stored["label_names"] = tuple(stored["label_names"])
    return StoreLayout(**stored)


def layout_attributes(layout: StoreLayout) -> dict:
    """``layout`` as the JSON-ready ``layout`` root attribute."""
    attrs = dict(layout.__dict__)
    attrs["label_names"] = list(layout.label_names)
    return json.loads(json.dumps(attrs))


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
        "frame_geometry": ("frame", "geometry"),
        "stats": ("frame", "statistic"),
        "labels": ("frame", "label"),
        "label": ("label",),
        "radius": ("radius",),
        "q": ("radius",),
        "ring_used": ("radius",),
        "mask": ("y", "x"),
        "images": ("frame", "image_y", "image_x"),
        "done": ("chunk",),
        "frame_checks": ("frame", "check"),
        "input_digest": ("chunk",),
    }


def digested_arrays(layout: StoreLayout) -> tuple[str, ...]:
    """The arrays whose chunk digests a store of ``layout`` records in ``digests/``, one per map task.

    ``stats`` only when the map tasks write it (``stats_by_chunk``); written
    once by the statistics pass, its digests are in the root attribute
    ``chunk_digests`` with the arrays written whole.
    """
    return ("ccf", "frame_checks", *(("images",) if layout.image_size else ()),
            *(("stats",) if layout.stats_by_chunk else ()))  # fmt: skip


def digest_scheme(schema_version: int) -> str:
    """The chunk digest of a store of ``schema_version``: ``"blake2b-64"`` up to 2, then ``"xxh3-64"``."""
    return "blake2b-64" if schema_version < 3 else "xxh3-64"


def records_digests(group: zarr.Group) -> bool:
    """Whether the store records its chunks' digests (all but the first stores do).

    Schema 3 and later always; schema 2 when it has the root attribute
    ``chunk_digests``. Only a store that records none is checked without them.
    """
    return "chunk_digests" in group.attrs or group.attrs.get("schema_version", 1) >= 3


def chunk_digest(block: np.ndarray, scheme: str = digest_scheme(SCHEMA_VERSION)) -> int:
    """A 64-bit digest of one chunk's values, shape and dtype, as written and read.

    Recorded when the chunk is written and compared when it is verified: a
    chunk moved to another position, or taken from another store, differs
    (the crc32c of the codec chain only says that the bytes are intact).

    Parameters
    ----------
    block : ndarray
        The chunk as the array holds it (its dtype; strings as text).
    scheme : {"xxh3-64", "blake2b-64"}
        The hash (:func:`digest_scheme` of the store's schema): XXH3's 64-bit
        value, or the first 8 bytes (little-endian) of BLAKE2b.
    """
    block = np.asarray(block)
    if scheme not in ("xxh3-64", "blake2b-64"):
        raise ValueError(f"unknown chunk digest {scheme!r}")
    digest = xxhash.xxh3_64() if scheme == "xxh3-64" else hashlib.blake2b(digest_size=8)
    digest.update(f"{block.dtype.str if block.dtype.kind not in 'OTU' else 'str'}"
                  f"{block.shape}".encode())  # fmt: skip
    if block.dtype.kind in "OTU":
        digest.update("\x00".join(str(v) for v in block.ravel()).encode())
    else:
        digest.update(np.ascontiguousarray(block).reshape(-1).view(np.uint8))  # in place, no copy
    if scheme == "xxh3-64":
        return digest.intdigest()
    return int.from_bytes(digest.digest(), "little")


def codecs(compressor=None) -> tuple:
    """An array's bytes-to-bytes codecs: ``compressor`` (if any), then a crc32c checksum."""
    return (Crc32cCodec(),) if compressor is None else (compressor, Crc32cCodec())
