"""The sources of an HDF5 virtual data set, checked by HDF5 itself before any frame is read.

A virtual data set reads fill values, silently, wherever HDF5 cannot open a
source file or finds no source data set in it. Where HDF5 looks for a source
file is its own rule (HDF5_VDS_PREFIX, then the directory of the virtual
file, then the name as given relative to the working directory; an absolute
name first as given, then by its base name in those places), so the check
asks HDF5: for each source data set it builds, in memory, two virtual data sets of
one element of that source, with fill values 0 and 1, in a file image that
HDF5 opens read-only under a name in the virtual file's directory (nothing
is written there, nor anywhere). Where the two read alike, HDF5 read the
source; where they differ, it read fill values, and the input is refused
(docs/build.md, "Input"). Mappings to printf-style source names (``%b``,
one file per block of an unlimited data set) are left to HDF5: a missing
block there ends the data set, it does not fill it.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import h5py
import numpy as np

from .errors import InputError

__all__ = ["check_virtual_sources"]


def check_virtual_sources(dataset: h5py.Dataset, name: str) -> None:
    """InputError unless HDF5 reads every source of ``dataset`` (a virtual data set of ``name``).

    Parameters
    ----------
    dataset : h5py.Dataset
        Open, in file ``name``; anything but a virtual data set passes.
    name : str
        The file as the build opens it (its directory is where HDF5 looks).

    Raises
    ------
    InputError
        A source file HDF5 does not find, cannot open, or that lacks the
        source data set; a source data set in the same file that is missing.
    """
    if not dataset.is_virtual:
        return
    distinct = {}  # a source that many mappings read (one per frame, say) is checked once
    for s in dataset.virtual_sources():
        if 0 not in s.src_space.shape and "%b" not in s.file_name + s.dset_name:
            distinct.setdefault((s.file_name, s.dset_name), s)
    mappings = list(distinct.values())
    for source in mappings:
        if source.file_name == "." and not isinstance(dataset.file.get(source.dset_name),
                                                      h5py.Dataset):  # fmt: skip
            raise InputError(f"{name}: virtual data set source has no data set {source.dset_name}")
    elsewhere = [s for s in mappings if s.file_name != "."]
    if not elsewhere:
        return
    for source, read in zip(elsewhere, _hdf5_reads(elsewhere, dataset.dtype, name)):
        if not read:
            raise InputError(_unread(source, name))


def _hdf5_reads(mappings, dtype: np.dtype, name: str) -> list[bool]:
    """Whether HDF5 reads each mapping's source, opened as it would be from file ``name``."""
    image = io.BytesIO()
    with h5py.File(image, "w") as check:
        for i, source in enumerate(mappings):
            shape = source.src_space.shape
            for fill in (0, 1):
                layout = h5py.VirtualLayout(shape=(1,), dtype=dtype)
                layout[0] = h5py.VirtualSource(source.file_name, source.dset_name,
                                               shape=shape)[(0,) * len(shape)]  # fmt: skip
                check.create_virtual_dataset(f"{i}/{fill}", layout, fillvalue=fill)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fapl_core(backing_store=False)
    fapl.set_file_image(image.getvalue())
    beside = Path(os.path.abspath(name)).parent / f".ccfkit-vds-check-{uuid.uuid4().hex}.h5"
    with h5py.File(h5py.h5f.open(os.fsencode(beside), h5py.h5f.ACC_RDONLY, fapl)) as check:
        return [check[f"{i}/0"][0].tobytes() == check[f"{i}/1"][0].tobytes()
                for i in range(len(mappings))]  # fmt: skip


def _unread(source, name: str) -> str:
    """Why HDF5 did not read ``source``: no such file where it looks, or no data set in it."""
    target, data_set = source.file_name, source.dset_name
    found = next((p for p in _where_hdf5_looks(target, name) if p.is_file()), None)
    if found is None:
        return f"{name}: virtual data set source {target} is missing"
    return (f"{name}: virtual data set source {found} has no data set {data_set}, or HDF5 "
            "cannot open it")  # fmt: skip


def _where_hdf5_looks(target: str, name: str) -> list[Path]:
    """The places HDF5 tries for source file ``target`` of a virtual data set in ``name``."""
    base = Path(os.path.abspath(name)).parent
    places, relative = [], Path(target)
    if relative.is_absolute():
        places.append(relative)
        relative = Path(relative.name)
    for prefix in os.environ.get("HDF5_VDS_PREFIX", "").split(os.pathsep):
        if prefix:
            places.append(Path(prefix.replace("${ORIGIN}", str(base))) / relative)
    return [*places, base / relative, relative]
