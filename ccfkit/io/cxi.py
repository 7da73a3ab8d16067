"""Writing CXI files of frames: atomically, with equal bytes for equal content.

:func:`write_frames` writes ``/entry_1/data_1/data`` (float32 ``(N, H, W)``,
one frame per HDF5 chunk, soft-linked from the detector group) from blocks of
frames, after a caller's ``header`` function has written everything else
(geometry, mask, labels, provenance) with :func:`group` and :func:`dataset`.
The labelled file of ``ccfkit simulate`` is written this way
(:mod:`ccfkit.simulate.cxi_file`); its full layout is in ``docs/simulate.md``.

Everything is written to ``OUT.partial`` and renamed to ``OUT`` only when
complete; on any error (or Ctrl-C) the partial file is removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import h5py
import numpy as np

from ..atomic import atomic_output

__all__ = [
    "CENTER_PATH",
    "DATA_PATH",
    "DETECTOR",
    "LABELS_PATH",
    "MASK_PATH",
    "PIXEL_IS_MISSING",
    "SOURCE",
    "dataset",
    "group",
    "write_frames",
]

DATA_PATH = "/entry_1/data_1/data"
DETECTOR = "/entry_1/instrument_1/detector_1"
SOURCE = "/entry_1/instrument_1/source_1"
MASK_PATH = f"{DETECTOR}/mask"
CENTER_PATH = f"{DETECTOR}/beam_center"
LABELS_PATH = "/entry_1/labels"

#: CXI bit for a pixel with no detector behind it (the MCP's central hole).
PIXEL_IS_MISSING = 512


def group(parent: h5py.Group, name: str, nx_class: str | None = None) -> h5py.Group:
    """A group that records no creation time, so equal content gives equal bytes.

    Parameters
    ----------
    parent : h5py.Group
    name : str
    nx_class : str, optional
        The NeXus class (``NX_class`` attribute), e.g. ``"NXentry"``.
    """
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    new = h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))
    if nx_class:
        new.attrs["NX_class"] = nx_class
    return new


def dataset(parent: h5py.Group, name: str, data, units: str | None = None, **attrs):
    """A dataset without a creation time, with a ``units`` attribute and ``attrs``.

    Parameters
    ----------
    parent : h5py.Group
    name : str
    data : array_like
    units : str, optional
    **attrs
        Further attributes, written as given.
    """
    created = parent.create_dataset(name, data=data, track_times=False)
    if units:
        created.attrs["units"] = units
    for key, value in attrs.items():
        created.attrs[key] = value
    return created


def write_frames(
    path,
    frame_shape: tuple[int, int],
    n_frames: int,
    blocks: Iterable[tuple[int, np.ndarray]],
    *,
    header: Callable[[h5py.File], None],
    units: str,
    description: str,
    overwrite: bool = False,
) -> None:
    """Write a CXI file: ``header(handle)``, then the frames block by block.

    Parameters
    ----------
    path : str or Path
        The output file (written as ``path.partial``, then renamed).
    frame_shape : (H, W) tuple of int
    n_frames : int
        N, the frames the blocks fill.
    blocks : iterable of (int, (B, H, W) ndarray)
        ``(first row, frames)`` pairs, in any order; together they fill rows
        ``0 .. N-1``. Consumed one at a time (a generator may render the next
        block while this one is written).
    header : callable
        Writes everything but the frames into the open file; it must create
        ``/entry_1`` (the data group is created inside it).
    units, description : str
        Attributes of the frames dataset.
    overwrite : bool
        Replace an existing file.
    """
    height, width = frame_shape
    # h5py closes the file before atomic_output renames it (exits run in reverse).
    with (
        atomic_output(path, overwrite=overwrite) as partial,
        h5py.File(partial, "w", track_order=False) as handle,
    ):
        header(handle)
        data = group(handle["entry_1"], "data_1", "NXdata").create_dataset(
            "data",
            shape=(n_frames, height, width),
            dtype=np.float32,
            chunks=(1, height, width),
            track_times=False,
        )
        data.attrs["axes"] = "experiment_identifier:y:x"
        data.attrs["units"] = units
        data.attrs["description"] = description
        handle[f"{DETECTOR}/data"] = h5py.SoftLink(DATA_PATH)
        for lo, frames in blocks:
            _write_block(data, lo, frames)


def _write_block(data: h5py.Dataset, lo: int, frames: np.ndarray) -> None:
    """Frames ``lo, lo + 1, ...`` as raw chunks of one frame each.

    ``data`` is unfiltered with chunks ``(1, H, W)``, so a frame's bytes are its
    chunk: ``write_direct_chunk`` skips HDF5's selection and chunk cache (the
    file's bytes are those of ``data[lo:hi] = frames``).
    """
    for offset, frame in enumerate(frames):
        data.id.write_direct_chunk((lo + offset, 0, 0), np.ascontiguousarray(frame, np.float32))
