"""Reading frames from one or several CXI/HDF5 files, lazily and checked.

A :class:`FrameSource` opens every file once to check it (HDF5? the data set
there? the same detector shape everywhere? every source of a virtual data set
present?), reads the small things (mask, labels, geometry) and then serves
frames through :class:`FrameReader`, a small picklable object that reopens the
files wherever it runs (a Dask worker, a DataLoader process) instead of
shipping open HDF5 handles.

Compressed data sets read as any other: importing this module imports
``hdf5plugin``, which registers the HDF5 filters it bundles (bitshuffle with
LZ4, LZ4, Zstd, Blosc, Blosc2, ...); a data set whose filter is still
unavailable is refused when the input is opened, with the filter named.

Module stacks ``(frame, module, ss, fs)`` (AGIPD, JUNGFRAU, ...) need their
geometry (:mod:`ccfkit.io.geometry_file`); a frame is then served as the
``(module * ss, fs)`` array of its modules one under the other (a reshape,
no copy), which the polar plan of the geometry indexes
(:mod:`ccfkit.detector_geometry`).

CXI conventions (Maia 2012; cxidb.org): frames are ``(frame, y, x)`` at
``/entry_1/data_1/data``, ``/entry_1/image_1/data`` or
``/entry_1/instrument_1/detector_1/data``. Integer masks at a CXI mask
location are CXI *bit masks* (0 = good; a pixel is bad when any
``PIXEL_IS_IN_MASK`` bit is set), elsewhere 0/1 (1 = good), unless the data
set's ``convention`` attribute says otherwise; boolean masks mean True = good.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - registers bitshuffle, LZ4, Zstd, Blosc, ... with HDF5
import numpy as np

from .agreement import CENTER_PATHS, agreed, read_details  # noqa: F401 - CENTER_PATHS re-exported
from .bitshuffle_chunks import bitshuffle_layout, read_bitshuffle_frames
from .errors import InputError, MissingGeometry
from .hdf5_direct import frame_layout, map_frames, read_frames
from .masks import (  # noqa: F401 - MASK_PATHS, read_mask_file: re-exported here
    MASK_PATHS,
    PIXEL_IS_IN_MASK,
    _first_present,
    _mask_over_frames,
    _object,
    _stacked,
    good_pixels,
    read_mask_file,
)
from .virtual_sources import check_virtual_sources

logger = logging.getLogger(__name__)

__all__ = [
    "PIXEL_IS_IN_MASK",
    "FrameReader",
    "FrameSource",
    "InputError",
    "good_pixels",
    "input_fingerprint",
    "open_source",
]

#: Smallest frame side, pixels: below it a polar map has next to no rings.
MIN_FRAME_SIDE = 8

#: Where CXI files keep their frames, in the order they are tried.
DATA_PATHS = (
    "entry_1/data_1/data",
    "entry_1/image_1/data",
    "entry_1/instrument_1/detector_1/data",
)
#: Where labels are looked for, in this order (attribute ``names``: one per column;
#: optional ``display_names``, ``exclusive_groups``).
LABEL_PATHS = ("entry_1/labels", "entry_1/data_1/labels", "entry_1/sample_1/labels")


@dataclass(frozen=True)
class FrameReader:
    """Reads frames ``[start, stop)`` across files; picklable, opens files per call.

    Uncompressed data sets whose frames lie whole in the file are read with
    plain file reads (:mod:`ccfkit.io.hdf5_direct`), bitshuffle-LZ4 chunks of
    whole frames decoded outside HDF5 (:mod:`ccfkit.io.bitshuffle_chunks`);
    others through h5py.

    Attributes
    ----------
    files : tuple of str
    data_path : str
    counts : tuple of int
        Frames in each file.
    frame_shape : (int, int)
        ``(H, W)``, the same in every file (a module stack: ``(modules * ss, fs)``).
    dtype : numpy dtype
        The dtype frames are returned in.
    stack_shape : (int, int, int) or None
        ``(modules, ss, fs)`` of a module stack as stored, or None for images.
    """

    files: tuple[str, ...]
    data_path: str
    counts: tuple[int, ...]
    frame_shape: tuple[int, int]
    dtype: np.dtype = field(default=np.dtype(np.float32))
    stack_shape: tuple[int, int, int] | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(N, H, W)`` over all files."""
        return (int(sum(self.counts)), *self.frame_shape)

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frames ``[start, stop)`` as a ``(stop - start, H, W)`` array of :attr:`dtype`.

        Parameters
        ----------
        start, stop : int
            Frame range over all files, ``0 <= start <= stop <= N``.
        out : ndarray, optional
            C-contiguous destination of that shape and dtype (a reused buffer).
        """
        if not 0 <= start <= stop <= self.shape[0]:
            raise IndexError(f"frames [{start}, {stop}) outside [0, {self.shape[0]})")
        if out is None:
            out = np.empty((stop - start, *self.frame_shape), dtype=self.dtype)
        offset = 0
        for name, count in zip(self.files, self.counts):
            lo, hi = max(start - offset, 0), min(stop - offset, count)
            if lo < hi:
                part = out[offset + lo - start : offset + hi - start]
                try:
                    self._read_file(name, lo, hi, part)
                except (OSError, KeyError) as error:  # truncated, damaged, locked, replaced
                    reason = " ".join(str(error).split())
                    raise InputError(
                        f"{name}: cannot read frames {lo}..{hi - 1} ({reason})"
                    ) from None
            offset += count
        return out

    def _read_file(self, name: str, lo: int, hi: int, part: np.ndarray) -> None:
        """Frames ``[lo, hi)`` of file ``name`` into ``part``: plain reads, bitshuffle-LZ4, h5py."""
        layout = frame_layout(name, self.data_path)
        if layout is not None:
            read_frames(name, layout, lo, hi, part)
            return
        packed = bitshuffle_layout(name, self.data_path)
        if packed is not None and read_bitshuffle_frames(name, self.data_path, packed, lo, hi,
                                                         part):  # fmt: skip
            return
        stored = part.reshape(len(part), *(self.stack_shape or self.frame_shape))
        with h5py.File(name, "r") as handle:
            handle[self.data_path].read_direct(stored, np.s_[lo:hi])

    def pieces(self, start: int, stop: int) -> list[np.ndarray]:
        """Frames ``[start, stop)`` as consecutive ``(n_i, H, W)`` float32 arrays.

        Read-only views of the memory-mapped file, without a copy, when the
        frames lie in one uncompressed float32 data set
        (:func:`~ccfkit.io.hdf5_direct.map_frames`: one array per run of
        frames that lie back to back); else one array read into memory.
        """
        offset = 0
        for name, count in zip(self.files, self.counts):
            if offset <= start and stop <= offset + count:
                layout = frame_layout(name, self.data_path)
                if layout is not None:
                    mapped = map_frames(
                        name, layout, start - offset, stop - offset, self.frame_shape
                    )
                    if mapped is not None:
                        return mapped
                break
            offset += count
        return [self.read(start, stop).astype(np.float32, copy=False)]

    def describe(self) -> dict:
        """JSON-ready identity of the input: files, sizes, frame counts, data set, fingerprint."""
        return {
            "files": [str(Path(name).resolve()) for name in self.files],
            "file_sizes": [Path(name).stat().st_size for name in self.files],
            "frames_per_file": list(self.counts),
            "data_path": self.data_path,
            "frame_shape": list(self.frame_shape),
            "fingerprint": input_fingerprint(self),
        }

    def __getitem__(self, key) -> np.ndarray:
        """Frames for a slice (or a tuple whose first element is a slice)."""
        if isinstance(key, tuple):
            frames, rest = key[0], key[1:]
        else:
            frames, rest = key, ()
        if isinstance(frames, slice):
            start, stop, step = frames.indices(self.shape[0])
        else:
            start = int(frames) + (self.shape[0] if int(frames) < 0 else 0)
            stop, step = start + 1, 1
        if step != 1:
            raise IndexError("FrameReader reads contiguous frame ranges only")
        out = self.read(start, max(start, stop))
        if not isinstance(frames, slice):
            out = out[0]
        return out[rest] if rest else out


@dataclass(frozen=True)
class FrameSource:
    """One or several CXI/HDF5 files, checked and described.

    Attributes
    ----------
    reader : FrameReader
        Lazy access to the frames.
    mask : (H, W) bool ndarray
        True = good pixel (all True when no mask was found or given).
    mask_origin : str
        Where the mask came from and how it was read.
    labels : (N, C) uint8 ndarray or None
    label_names : tuple of str
    label_display_names : tuple of str
        Human-readable names (the ``display_names`` attribute), or ``()``.
    exclusive_groups : tuple of tuple of str
        Label groups that must not be predicted together.
    center : (float, float) or None
        Beam centre ``(cx, cy)`` in pixels found in the first file (x = column
        first; the mean when the file gives one per frame); with a geometry,
        its origin ``(0, 0)``.
    wavelength, distance, pixel_size : float or None
        Metres, when the files give them (for momentum transfer); the mean
        over the frames where a file gives one per frame.
    reader : FrameReader or another reader with the same methods
        (:class:`ccfkit.io.euxfel.RunReader`).
    pixels : DetectorGeometry or None
        Where the pixels of a module stack lie (None: a plain image).
    center_origin : str
        Where :attr:`center` came from.
    centers : (N, 2) float64 ndarray or None
        One beam centre ``(cx, cy)`` per frame, when the file gives them
        (:attr:`center` is then their mean).
    center_per_frame : bool
        Resample each frame at its own centre of :attr:`centers` (``--center
        per-frame``); otherwise the build uses their mean and says so.
    frame_ids : dict of str to (N,) ndarray
        Per-frame identifiers stored beside the maps (``train_id``,
        ``pulse_id`` of a European XFEL run), with their attributes.
    geometry_per_frame : dict of str to (N,) float64 ndarray
        ``wavelength`` and ``distance`` (metres) of every frame, for each that
        a file records per frame (``ccfkit simulate`` draws a photon energy
        per frame); empty when one value holds for all
        (:mod:`ccfkit.frame_geometry` places rings in q per frame with them).
    """

    reader: FrameReader
    mask: np.ndarray
    mask_origin: str
    labels: np.ndarray | None = None
    label_names: tuple[str, ...] = ()
    label_display_names: tuple[str, ...] = ()
    exclusive_groups: tuple[tuple[str, ...], ...] = ()
    center: tuple[float, float] | None = None
    wavelength: float | None = None
    distance: float | None = None
    pixel_size: float | None = None
    pixels: object | None = None
    center_origin: str = "file"
    centers: np.ndarray | None = None
    center_per_frame: bool = False
    frame_ids: dict = field(default_factory=dict)
    geometry_per_frame: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return self.reader.shape[0]

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.reader.frame_shape

    def describe(self) -> dict:
        """JSON-ready provenance: files, sizes, data-set path, mask origin, geometry."""
        described = {
            **self.reader.describe(),
            "mask": self.mask_origin,
            "masked_pixels": int((~self.mask).sum()),
            "wavelength_m": self.wavelength,
            "distance_m": self.distance,
            "pixel_size_m": self.pixel_size,
        }
        if self.pixels is not None:
            described["geometry"] = {
                "file": self.pixels.source,
                "detector": self.pixels.detector,
                "stack_shape": list(self.pixels.stack_shape),
                "text": self.pixels.text,
            }
        if self.centers is not None:
            described["center_per_frame"] = self.describe_centers()
        return described

    def describe_centers(self) -> dict:
        """The per-frame centres: each frame at its own or not, how many, their spread (px)."""
        distance = np.hypot(*(self.centers - np.asarray(self.center)).T)
        return {
            "resampled_per_frame": self.center_per_frame,
            "count": len(self.centers),
            "std_px": float(np.sqrt(np.mean(distance**2))),
            "max_px": float(distance.max()),
        }


def input_fingerprint(reader: FrameReader, samples: int = 16) -> str:
    """A hash that identifies the input by content, not by name, size or date.

    SHA-256 over each file's data set shape and stored dtype and the bytes of
    up to ``samples`` frames spread evenly over the input (the first and the
    last among them). A file replaced by another of the same size and frame
    count gets another fingerprint unless the sampled frames are identical.

    Returns
    -------
    str
        ``"sha256:"`` and 64 hex digits.
    """
    digest = hashlib.sha256()
    for name in reader.files:
        with h5py.File(name, "r") as handle:
            dataset = handle[reader.data_path]
            digest.update(f"{dataset.shape}{dataset.dtype.str};".encode())
    n_frames = reader.shape[0]
    for index in np.unique(np.linspace(0, n_frames - 1, min(samples, n_frames)).astype(int)):
        digest.update(np.ascontiguousarray(reader[int(index)]).tobytes())
    return "sha256:" + digest.hexdigest()


def expand_inputs(inputs: Sequence[str | Path]) -> list[str]:
    """Files named by paths and glob patterns, sorted within each pattern.

    Raises
    ------
    InputError
        No file, a pattern matching none, a directory, a missing or non-HDF5
        file, or one file named twice (two paths, a path and a pattern, a
        link): its frames would be read twice, into two splits when labelled.
    """
    files: list[str] = []
    for item in inputs:
        item = str(item)
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise InputError(f"no file matches {item!r}")
        files.extend(matches)
    if not files:
        raise InputError("no input file given")
    seen: dict[tuple[int, int], str] = {}  # the file itself, whatever path or link names it
    for name in files:
        if Path(name).is_dir():
            raise InputError(f"{name} is a directory; give the CXI/HDF5 files in it (or a glob)")
        if not Path(name).is_file():
            raise InputError(f"{name}: no such file")
        if not h5py.is_hdf5(name):
            raise InputError(f"{name}: not an HDF5 file")
        stat = Path(name).stat()
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            again = f" (as {seen[key]} and {name})" if seen[key] != name else ""
            raise InputError(
                f"{Path(name).resolve()} is named twice in the inputs{again}; give each file once"
            )
        seen[key] = name
    return files


def open_source(
    inputs: Sequence[str | Path],
    *,
    data_path: str | None = None,
    mask: np.ndarray | None = None,
    mask_origin: str = "given",
    labels_path: str | None = None,
    geometry: str | Path | None = None,
    center_use: str = "agree",
) -> FrameSource:
    """Open and check CXI/HDF5 input files.

    Parameters
    ----------
    inputs : sequence of str or Path
        Files or glob patterns, in order.
    data_path : str, optional
        The frames' data set; default: the first CXI location present.
    mask : (H, W) or (N, H, W) bool array, optional
        True = good; overrides the files'. Per frame: good in every frame.
    mask_origin : str
        How ``mask`` was obtained, for the provenance.
    labels_path : str, optional
        The labels' data set; default: the CXI-like locations in LABEL_PATHS.
    geometry : str or Path, optional
        A CrystFEL geometry file placing module stacks ``(frame, module, ss,
        fs)`` (:func:`ccfkit.io.geometry_file.load_geometry`); the beam at its
        origin; a mask may be per module.
    center_use : {"agree", "ignore", "per-frame"}
        The files' beam centres: they must agree (one and the same, or one
        per frame in every file: their mean), they are replaced (a centre
        given, a geometry's origin), or each frame keeps its file's own
        (:func:`ccfkit.io.agreement.agreed`).

    Returns
    -------
    FrameSource

    Raises
    ------
    InputError
        Not HDF5, missing data set, not 3-D, shapes that differ between files,
        complex numbers, frames smaller than :data:`MIN_FRAME_SIDE`, a dangling
        link, a missing or unreadable source of a virtual data set, a mask of
        another shape or per-frame mask of another length, labels that are
        not 0/1 or do not match the frames, no frames at all, an unavailable
        filter, a module stack without geometry or disagreeing with it;
        several files that disagree on the mask, the beam centre, the
        wavelength, detector distance or pixel size (:mod:`ccfkit.io.agreement`).
    """
    files = expand_inputs(inputs)
    with _open_hdf5(files[0]) as first:
        data_path = data_path or _first_present(first, DATA_PATHS)
        if data_path is None:
            raise InputError(
                f"{files[0]}: no frames found at {', '.join('/' + p for p in DATA_PATHS)}; "
                "name the data set with --data-path"
            )
    frame_shape, counts, labels, names, display, groups, details = _scan_files(
        files, data_path, labels_path, stacked=geometry is not None
    )
    stack_shape = None
    if geometry is not None:
        stack_shape = frame_shape if len(frame_shape) == 3 else (1, *frame_shape)
        center_use = "ignore"  # the beam is at the geometry's origin
    files_agree = agreed(
        details, counts, stack_shape=stack_shape, compare_masks=mask is None, center_use=center_use
    )
    distances, center, centers = files_agree.distances, files_agree.center, files_agree.centers
    pixels, center_origin = None, "file"
    if geometry is not None:
        pixels, distances = _module_stack(geometry, stack_shape, distances)
        frame_shape, center = pixels.shape, pixels.default_center()
        center_origin = f"geometry origin ({pixels.detector})"
    if mask is not None:
        mask = _mask_over_frames(_stacked(mask, stack_shape), sum(counts), mask_origin)
    elif files_agree.mask is not None:
        mask, mask_origin = files_agree.mask, files_agree.mask_origin
    else:
        mask = np.ones(frame_shape, dtype=bool)
    if mask.shape != frame_shape:
        raise InputError(f"mask has shape {mask.shape}, but frames are {frame_shape}")
    reader = FrameReader(
        tuple(files), data_path, tuple(counts), frame_shape, np.dtype(np.float32), stack_shape
    )
    logger.info("input: %d frames of %s from %d file(s), mask: %s",
                sum(counts), frame_shape, len(files), mask_origin)  # fmt: skip
    return FrameSource(
        reader=reader,
        mask=mask.astype(bool),
        mask_origin=mask_origin,
        labels=labels,
        label_names=names,
        label_display_names=display,
        exclusive_groups=groups,
        center=center,
        pixels=pixels,
        center_origin=center_origin,
        centers=centers,
        geometry_per_frame=files_agree.per_frame,
        **distances,
    )


def _module_stack(geometry, stack_shape, distances: dict):
    """The stack's :class:`~ccfkit.detector_geometry.DetectorGeometry`, and the distances.

    The pixel size is the geometry's; wavelength and distance the files' own,
    else the geometry file's.
    """
    from .geometry_file import load_geometry

    pixels = load_geometry(geometry, stack_shape)
    distances = {**distances, "pixel_size": pixels.pixel_size}
    for key in ("wavelength", "distance"):
        distances[key] = distances[key] or getattr(pixels, key)
    return pixels, distances


def _scan_files(files, data_path, labels_path, *, stacked: bool):
    """Check every file's frames; their shape, counts, and the labels with their names.

    Returns ``(frame_shape, counts, labels, names, display_names, groups,
    details)``: the stored shape of one frame (``(module, ss, fs)`` for a
    module stack), frames per file, the (N, C) labels of all files (None
    unless every file has labels of the same names) and their names, display
    names and groups, and each file's mask, centre and distances
    (:class:`~ccfkit.io.agreement.FileDetails`).
    """
    counts, label_parts, names, display, groups, details = [], [], (), (), (), []
    frame_shape = None
    for name in files:
        with _open_hdf5(name) as handle:
            dataset = _frames_dataset(handle, data_path, name, stacked=stacked)
            if frame_shape is None:
                frame_shape = tuple(dataset.shape[1:])
            elif tuple(dataset.shape[1:]) != frame_shape:
                raise InputError(
                    f"{name}: frames are {dataset.shape[1:]}, but {files[0]} has {frame_shape}"
                )
            counts.append(int(dataset.shape[0]))
            labels, part = _read_labels(handle, labels_path, name)
            details.append(read_details(handle, name))
        if labels is not None and labels.shape[0] != counts[-1]:
            raise InputError(f"{name}: {labels.shape[0]} labels for {counts[-1]} frames")
        if labels is not None and (not label_parts or part["names"] == names):
            label_parts.append(labels)
            names, display, groups = part["names"], part["display_names"], part["groups"]
    if sum(counts) == 0:
        raise InputError("the input holds no frames")
    if len(label_parts) != len(files):
        if label_parts:
            logger.warning("labels are missing or differ between files: none are used")
        return frame_shape, counts, None, (), (), (), details
    labels = np.concatenate(label_parts)
    return frame_shape, counts, labels, names, display, groups, details


def _open_hdf5(name: str) -> h5py.File:
    """``h5py.File(name, "r")``; a file HDF5 cannot open (truncated, locked) is an InputError."""
    try:
        return h5py.File(name, "r")
    except OSError as error:
        raise InputError(f"{name}: cannot open ({' '.join(str(error).split())})") from None


def _frames_dataset(
    handle: h5py.File, data_path: str, name: str, *, stacked: bool = False
) -> h5py.Dataset:
    """The frames' data set, checked: present, a data set, 3-D, numeric, decodable, sources present.

    ``stacked`` (a geometry is given): 4-D module stacks ``(frame, module,
    ss, fs)`` are accepted too.
    """
    where = "/" + data_path.lstrip("/")
    if data_path not in handle:
        raise InputError(f"{name}: no data set {where}")
    try:
        dataset = handle[data_path]
    except (KeyError, OSError) as error:  # a dangling external link, a broken object
        raise InputError(f"{name}: cannot open {where} ({error}; a dangling link?)") from None
    if not isinstance(dataset, h5py.Dataset):
        raise InputError(f"{name}: {where} is a group, not a data set")
    if dataset.ndim == 4 and not stacked:
        raise MissingGeometry(
            f"{name}: {where} has shape {dataset.shape}, a module stack (frame, module, ss, fs): "
            "give its geometry with --geometry FILE"
        )
    if dataset.ndim not in ((3, 4) if stacked else (3,)):
        raise InputError(
            f"{name}: {where} has shape {dataset.shape}; expected 3 dimensions (frame, y, x)"
            + (" or 4 (frame, module, ss, fs)" if stacked else "")
        )
    if not np.issubdtype(dataset.dtype, np.number) or np.issubdtype(
        dataset.dtype, np.complexfloating
    ):
        raise InputError(f"{name}: {where} holds {dataset.dtype}, not real numbers")
    if min(dataset.shape[-2:]) < MIN_FRAME_SIDE:
        raise InputError(
            f"{name}: frames of {dataset.shape[-2]} x {dataset.shape[-1]} pixels are too small "
            f"(at least {MIN_FRAME_SIDE} x {MIN_FRAME_SIDE})"
        )
    _check_filters(dataset, f"{name}: {where}")
    check_virtual_sources(dataset, name)
    return dataset


def _check_filters(dataset: h5py.Dataset, where: str) -> None:
    """Refuse a data set stored through an HDF5 filter that neither HDF5 nor hdf5plugin provides.

    Reading it would fail chunk by chunk in the middle of the build; the
    filter is named (its registered id and the name stored with it).
    """
    plist = dataset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _flags, _values, label = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            label = label.decode(errors="replace") if isinstance(label, bytes) else str(label)
            raise InputError(
                f"{where} is stored with HDF5 filter {code} ({label or 'unnamed'}), which "
                "neither HDF5 nor hdf5plugin can decode here; install its HDF5 plugin "
                "(HDF5_PLUGIN_PATH) or store the frames without it"
            )


def _read_labels(handle, labels_path, name) -> tuple[np.ndarray | None, dict]:
    """Labels (N, C) uint8 of one file and their ``names``, ``display_names``, ``groups``.

    A 1-D data set is one label column. Names default to ``class_<i>``;
    display names are kept only when there is one per column.
    """
    path = labels_path or _first_present(handle, LABEL_PATHS)
    if path is None:
        return None, {}
    if path not in handle:
        raise InputError(f"{name}: no labels at /{path.lstrip('/')}")
    dataset = _object(handle, path, "labels")
    if not isinstance(dataset, h5py.Dataset):
        raise InputError(f"{name}: /{path.lstrip('/')} is a group, not a labels data set")
    labels = _checked_labels(np.asarray(dataset[()]), f"{name}:/{path.lstrip('/')}")
    names = _strings(dataset.attrs.get("names", [f"class_{i}" for i in range(labels.shape[1])]))
    if len(names) != labels.shape[1]:
        raise InputError(f"{name}: {len(names)} label names for {labels.shape[1]} columns")
    display = _strings(dataset.attrs.get("display_names", []))
    groups = _exclusive_groups(dataset.attrs.get("exclusive_groups", "[]"), names, name)
    return labels.astype(np.uint8), {
        "names": names,
        "display_names": display if len(display) == len(names) else (),
        "groups": groups,
    }


def _exclusive_groups(stored, names: tuple[str, ...], name: str) -> tuple[tuple[str, ...], ...]:
    """The labels' ``exclusive_groups`` attribute: JSON, a list of lists of label names."""
    text = stored.decode() if isinstance(stored, bytes) else str(stored)
    try:
        groups = json.loads(text)
        if not isinstance(groups, list) or not all(
            isinstance(g, list) and all(isinstance(n, str) for n in g) for g in groups
        ):
            raise ValueError("not a list of lists of label names")
    except ValueError as error:  # json.JSONDecodeError is one
        raise InputError(
            f"{name}: the labels' exclusive_groups attribute {text[:40]!r} is not JSON lists "
            f"of label names ({error})"
        ) from None
    unknown = sorted({n for g in groups for n in g} - set(names))
    if unknown:
        raise InputError(f"{name}: exclusive_groups names unknown labels {unknown}")
    return tuple(tuple(g) for g in groups)


def _strings(values) -> tuple[str, ...]:
    """An HDF5 string attribute (one string, or an array of bytes or str) as a tuple of str."""
    if isinstance(values, (str, bytes)):
        values = [values]
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


def _checked_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """(N,) or (N, C) 0/1 integer (or bool) labels as (N, C); anything else is an InputError."""
    if labels.ndim not in (1, 2):
        raise InputError(f"{where}: labels of shape {labels.shape}; expected (N,) or (N, C)")
    if labels.dtype != bool and not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{where}: labels are {labels.dtype}; expected 0/1 integers")
    values = np.unique(labels)
    if not np.isin(values, (0, 1)).all():
        raise InputError(f"{where}: labels take the values {values[:8].tolist()}; expected 0/1")
    return labels if labels.ndim == 2 else labels[:, None]
