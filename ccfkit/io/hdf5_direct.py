"""Frames of uncompressed HDF5 data sets read where they lie in the file.

HDF5 stores an uncompressed data set either contiguously or in chunks, each
chunk a plain C-order block of bytes at some offset in the file. When every
frame lies whole inside one chunk (chunks of shape ``(c, H, W)``, the layout
of detector files written frame by frame) or the data set is contiguous, the
byte offset of each frame can be found once (:func:`frame_layout`, from
HDF5's chunk index). Afterwards no HDF5 call is needed (and h5py's global
lock does not serialise the threads):

- :func:`map_frames` maps a range of frames read-only, without a copy, as
  plain ``(n, H, W)`` arrays, one per run of frames that lie back to back
  (native float32 data sets): the kernels read the page cache directly;
- :func:`read_frames` reads them with plain file reads into the caller's
  array, converting other dtypes.

Both are faster than ``h5py`` for 259 x 259 frames (measured: the per-step
table of docs/performance.md). Anything else (compression or other filters,
partial-frame chunks, chunks never written, external or virtual storage)
gets ``None`` from :func:`frame_layout`, and the caller reads through h5py.
"""

from __future__ import annotations

import functools
import mmap
import os

import h5py
import numpy as np

__all__ = ["FrameLayout", "frame_layout", "map_frames", "read_frames"]


class FrameLayout:
    """Where the frames of one data set lie in its file.

    Attributes
    ----------
    offsets : (N,) int64 ndarray
        Byte offset of each frame in the file.
    dtype : numpy dtype
        The stored element type, with its byte order.
    frame_bytes : int
        Bytes per frame.
    """

    __slots__ = ("dtype", "frame_bytes", "offsets")

    def __init__(self, offsets: np.ndarray, dtype: np.dtype, frame_bytes: int):
        self.offsets = offsets
        self.dtype = dtype
        self.frame_bytes = frame_bytes


def per_file_version(layout):
    """Run ``layout(name, data_path)`` once per process and file version.

    A file's version is its real path, size and modification time: a file
    rewritten in place is looked at again.
    """

    @functools.lru_cache(maxsize=64)
    def cached(name: str, data_path: str, size: int, mtime_ns: int):
        return layout(name, data_path)

    @functools.wraps(layout)
    def by_version(name: str, data_path: str):
        stat = os.stat(name)
        return cached(os.path.realpath(name), data_path, stat.st_size, stat.st_mtime_ns)

    return by_version


@per_file_version
def frame_layout(name: str, data_path: str) -> FrameLayout | None:
    """The frame offsets of ``name``'s data set ``data_path``, or None if not plain.

    Found once per process and file version (:func:`per_file_version`).

    Parameters
    ----------
    name : str
        HDF5 file.
    data_path : str
        A 3-D ``(frame, y, x)`` data set in it, or a 4-D module stack
        ``(frame, module, ss, fs)`` (each frame one block of bytes all the same).
    """
    with h5py.File(name, "r") as handle:
        dataset = handle[data_path]
        if not _is_plain(dataset):
            return None
        frames, frame_shape = dataset.shape[0], dataset.shape[1:]
        frame_bytes = int(np.prod(frame_shape)) * dataset.dtype.itemsize
        if dataset.chunks is None:
            start = dataset.id.get_offset()
            if start is None:  # never written
                return None
            offsets = start + frame_bytes * np.arange(frames, dtype=np.int64)
            return FrameLayout(offsets, dataset.dtype, frame_bytes)
        per_chunk, chunk_frame = dataset.chunks[0], dataset.chunks[1:]
        if chunk_frame != frame_shape:
            return None  # a frame spans several chunks
        offsets = np.full(frames, -1, dtype=np.int64)
        within = frame_bytes * np.arange(per_chunk, dtype=np.int64)

        def place(chunk: h5py.h5d.StoreInfo) -> None:
            first = chunk.chunk_offset[0]
            count = min(per_chunk, frames - first)
            offsets[first : first + count] = chunk.byte_offset + within[:count]

        dataset.id.chunk_iter(place)
        if (offsets < 0).any():  # chunks never written: HDF5 supplies fill values
            return None
        return FrameLayout(offsets, dataset.dtype, frame_bytes)


def _is_plain(dataset: h5py.Dataset) -> bool:
    """Uncompressed, unfiltered, in this file, fixed-size numbers, 3-D or 4-D (module stacks)."""
    return (
        dataset.ndim in (3, 4)
        and not dataset.is_virtual
        and dataset.external is None
        and dataset.id.get_create_plist().get_nfilters() == 0
        and dataset.dtype.kind in "iuf"
        and (dataset.chunks is None or hasattr(dataset.id, "chunk_iter"))  # HDF5 >= 1.12.3
    )


def read_frames(name: str, layout: FrameLayout, lo: int, hi: int, out: np.ndarray) -> None:
    """Read frames ``[lo, hi)`` of a data set into ``out``, converting to its dtype.

    Consecutive frames that lie back to back in the file are read in one call.

    Parameters
    ----------
    name : str
        The HDF5 file.
    layout : FrameLayout
        From :func:`frame_layout`.
    lo, hi : int
        Frame range in the data set.
    out : (hi - lo, H, W) C-contiguous ndarray
        Destination; when its dtype differs from the stored one the frames
        are read into a temporary and converted.
    """
    if hi <= lo:
        return
    stored = out if out.dtype == layout.dtype else np.empty(out.shape, layout.dtype)
    view = memoryview(stored.reshape(-1).view(np.uint8))
    offsets, size = layout.offsets[lo:hi], layout.frame_bytes
    breaks = np.flatnonzero(np.diff(offsets) != size) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [len(offsets)]))
    with open(name, "rb", buffering=0) as handle:
        for first, last in zip(starts.tolist(), stops.tolist()):
            handle.seek(int(offsets[first]))
            _read_exactly(handle, view[first * size : last * size])
    if stored is not out:
        np.copyto(out, stored, casting="unsafe")


def _read_exactly(handle, buffer: memoryview) -> None:
    """Fill ``buffer`` from the file's position (unbuffered reads may return less)."""
    while buffer.nbytes:
        count = handle.readinto(buffer)
        if not count:
            raise OSError(f"{handle.name}: unexpected end of file")
        buffer = buffer[count:]


def map_frames(
    name: str, layout: FrameLayout, lo: int, hi: int, frame_shape: tuple[int, int]
) -> list[np.ndarray] | None:
    """Frames ``[lo, hi)`` as read-only views of a memory map of the file, or None.

    No copy: the kernels read the page cache directly. The mapping covers
    just these frames and is released with the last of the arrays. None when
    the data set is not native float32 or its frames do not lie on a common
    4-byte grid.

    Returns
    -------
    list of (n_i, H, W) float32 ndarray
        C-contiguous, read-only; one per run of frames that lie back to back
        in the file (HDF5 puts its index blocks between some chunks), in
        order: together frames ``lo .. hi - 1``.
    """
    if layout.dtype != np.dtype(np.float32) or hi <= lo or not hasattr(mmap, "MAP_SHARED"):
        return None
    offsets = layout.offsets[lo:hi]
    first, end = int(offsets.min()), int(offsets.max()) + layout.frame_bytes
    base = first - first % mmap.ALLOCATIONGRANULARITY
    skew = (first - base) % 4
    if np.any((offsets - base) % 4 != skew):
        return None
    with open(name, "rb") as handle:  # MAP_POPULATE: the page table in one go, not per fault
        mapping = mmap.mmap(
            handle.fileno(),
            end - base,
            flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
            prot=mmap.PROT_READ,
            offset=base,
        )
    pixels = np.frombuffer(mapping, np.float32, count=(end - base - skew) // 4, offset=skew)
    starts = (offsets - base - skew) // 4
    frame_pixels = frame_shape[0] * frame_shape[1]
    breaks = np.flatnonzero(np.diff(offsets) != layout.frame_bytes) + 1
    return [
        pixels[starts[a] : starts[a] + (b - a) * frame_pixels].reshape(b - a, *frame_shape)
        for a, b in zip([0, *breaks.tolist()], [*breaks.tolist(), len(offsets)])
    ]
