"""Several input files: the mask, beam centre and geometry they give must agree.

One build makes every map with one polar plan (one mask, one centre, one
geometry), so what each file says about its detector must be the same in
every file, or the maps would depend on which file came first. Each file's
details are read (:func:`read_details`) and compared with the first file's
(:func:`agreed`); a difference stops the build with one line naming both
files and what differs (docs/build.md, "Input"). A ``--mask`` given on the
command line replaces every file's mask, and ``--center X,Y`` (or
``--center auto``) every file's centre, so those are not compared. With
``--center per-frame`` each file keeps its own centre: a file giving one
centre gives it to each of its frames, and the frames of all files are
resampled at their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import h5py
import numpy as np

from .errors import InputError
from .lengths import metres_per_unit, plausible_metres
from .masks import _first_present, _mask_over_frames, _numbers, _object, _read_mask, _stacked

__all__ = ["CENTER_PATHS", "CENTER_USES", "FileDetails", "agreed", "read_details"]

#: Where a beam centre is looked for, in this order: ``(cx, cy)`` in pixels, x =
#: column first, either one pair or one pair per frame, (N, 2).
CENTER_PATHS = (
    "entry_1/instrument_1/detector_1/beam_center",
    "entry_1/instrument_1/detector_1/center",
    "entry_1/image_1/beam_center",
    "entry_1/data_1/beam_center",
    "entry_1/sample_1/beam_center",
)

#: What the files' beam centres are used for: they must agree (one centre,
#: or the mean of centres per frame), they are replaced (``--center X,Y``,
#: ``auto``, a geometry's origin), or each frame is resampled at its own.
CENTER_USES = ("agree", "ignore", "per-frame")

#: The wavelength, detector distance and pixel size the files give (metres),
#: with the words that name them in a refusal.
_DISTANCES = {
    "wavelength": ("entry_1/instrument_1/source_1/wavelength", "wavelength"),
    "distance": ("entry_1/instrument_1/detector_1/distance", "detector distance"),
    "pixel_size": ("entry_1/instrument_1/detector_1/x_pixel_size", "pixel size"),
}

#: Two beam centres closer than this (pixels) are the same centre.
SAME_CENTER_PX = 1e-6


@dataclass(frozen=True)
class FileDetails:
    """What one input file says about its detector.

    Attributes
    ----------
    name : str
        The file.
    mask : (H, W) or (n, H, W) bool ndarray or None
        Its mask at a CXI location (True = good), as stored; None without one.
    mask_origin : str
        Where and how the mask was read.
    centers : (k, 2) float64 ndarray or None
        Its beam centre(s) ``(cx, cy)``, pixels: one row, or one per frame.
    distances : dict of str to (k,) float64 ndarray or None
        ``wavelength``, ``distance``, ``pixel_size`` (metres) where given:
        one value, or one per frame.
    """

    name: str
    mask: np.ndarray | None
    mask_origin: str
    centers: np.ndarray | None
    distances: dict


def read_details(handle: h5py.File, name: str) -> FileDetails:
    """The mask, beam centre(s) and distances of one open input file.

    Raises
    ------
    InputError
        A mask that cannot be read as one; a beam centre that is not pairs.
    """
    mask, origin = _read_mask(handle, name)
    centers = _read_centers(handle, name)
    return FileDetails(name, mask, origin, centers, _read_distances(handle, name))


def _read_distances(handle: h5py.File, name: str) -> dict:
    """``wavelength``, ``distance``, ``pixel_size`` in metres: (k,) float64 (one or one per
    frame), or None.

    Each in the units of its data set's ``units`` attribute, metres without
    one (:mod:`ccfkit.io.lengths`).

    Raises
    ------
    InputError
        A unit that is no length; a value that cannot be a length of its kind.
    """
    values = {}
    for key, (path, words) in _DISTANCES.items():
        if path not in handle:
            values[key] = None
            continue
        stored = _object(handle, path, key)
        units = stored.attrs.get("units")
        where = f"{name}: /{path}"
        scale = 1.0 if units is None else metres_per_unit(units, where)
        values[key] = _numbers(stored, path).ravel() * scale
        plausible_metres(values[key], key, words, where, units)
    return values


def _read_centers(handle: h5py.File, name: str) -> np.ndarray | None:
    """The beam centre(s) at the first of :data:`CENTER_PATHS` present, as (k, 2) float64."""
    path = _first_present(handle, CENTER_PATHS)
    if path is None:
        return None
    stored = _numbers(_object(handle, path, "beam centre"), path)
    if stored.ndim == 0 or stored.shape[-1] != 2:
        raise InputError(
            f"{name}: /{path} has shape {stored.shape}; expected (2,) or (N, 2) pairs (cx, cy)"
        )
    return stored.reshape(-1, 2)


@dataclass(frozen=True)
class Agreed:
    """What all files agree on (see :func:`agreed`).

    Attributes
    ----------
    mask : (H, W) bool ndarray or None
        The files' mask (None: no file has one, or a mask was given).
    mask_origin : str
    center : (float, float) or None
        The beam centre, or the mean of the centres per frame.
    centers : (N, 2) float64 ndarray or None
        One centre per frame of all files, when the files give them so (or
        with ``--center per-frame``).
    distances : dict
        ``wavelength``, ``distance``, ``pixel_size`` (metres or None).
    per_frame : dict of str to (N,) float64 ndarray
        ``wavelength`` and ``distance`` (metres) of every frame of all files,
        for each that some file records per frame (a file's one value is
        repeated for its frames); empty when every file gives one value.
    """

    mask: np.ndarray | None
    mask_origin: str
    center: tuple[float, float] | None
    centers: np.ndarray | None
    distances: dict
    per_frame: dict = field(default_factory=dict)


def agreed(
    details: Sequence[FileDetails],
    counts: Sequence[int],
    *,
    stack_shape: tuple[int, int, int] | None = None,
    compare_masks: bool = True,
    center_use: str = "agree",
) -> Agreed:
    """The mask, centre and distances of all files, or an InputError naming what differs.

    Parameters
    ----------
    details : sequence of FileDetails
        One per file, in input order.
    counts : sequence of int
        Frames per file.
    stack_shape : (int, int, int), optional
        ``(modules, ss, fs)`` of a module stack (a mask per module is laid
        out as the stacked frame).
    compare_masks : bool
        False when a ``--mask`` replaces the files' masks.
    center_use : {"agree", "ignore", "per-frame"}
        See :data:`CENTER_USES`.

    Returns
    -------
    Agreed

    Raises
    ------
    InputError
        Two files with different masks (or one with a mask and one without),
        beam centres, single wavelength, detector distance or pixel size; a mask
        per frame of another length than its file; a file with another number
        of centres than one or its frames (where its centres are used); with
        ``per-frame``, a file without a centre.
    """
    if center_use not in CENTER_USES:
        raise ValueError(f"center_use must be one of {CENTER_USES}, got {center_use!r}")
    mask, origin = (_agreed_mask(details, counts, stack_shape) if compare_masks
                    else (None, ""))  # fmt: skip
    if center_use == "per-frame":
        centers = _own_centers(details, counts)
    elif center_use == "agree":
        centers = _agreed_centers(details, counts)
    else:
        centers = None
    center = None if centers is None else tuple(float(c) for c in centers.mean(axis=0))
    if centers is not None and len(centers) == 1:
        centers = None
    distances, per_frame = _agreed_distances(details, counts)
    return Agreed(mask, origin, center, centers, distances, per_frame)


def _agreed_mask(details, counts, stack_shape) -> tuple[np.ndarray | None, str]:
    """The first file's mask (good in every frame), refused unless every file has the same."""
    first, masks = details[0], []
    for item, count in zip(details, counts):
        if item.mask is None:
            masks.append(None)
            continue
        masks.append(_mask_over_frames(_stacked(item.mask, stack_shape), count, item.mask_origin))
    for item, mask in zip(details[1:], masks[1:]):
        if (mask is None) != (masks[0] is None):
            has, lacks = (first, item) if mask is None else (item, first)
            raise InputError(
                f"{has.name} has a mask and {lacks.name} none: the files disagree on the "
                "mask; give one for all with --mask FILE"
            )
        if mask is None:
            continue
        if mask.shape != masks[0].shape:
            raise InputError(
                f"{first.name} and {item.name} have masks of shapes {masks[0].shape} and "
                f"{mask.shape}; give one for all with --mask FILE"
            )
        differ = int(np.count_nonzero(mask != masks[0]))
        if differ:
            raise InputError(
                f"{first.name} and {item.name} have different masks ({differ} of {mask.size} "
                f"pixels differ; {int(masks[0].sum())} and {int(mask.sum())} good); give one "
                "for all with --mask FILE"
            )
    if masks[0] is None:
        return None, first.mask_origin
    suffix = f", the same in all {len(details)} files" if len(details) > 1 else ""
    return masks[0], first.mask_origin + suffix


def _agreed_centers(details, counts) -> np.ndarray | None:
    """The files' centres, refused unless all give one and the same, or all give one per frame.

    Centres per frame (a jittering beam) are concatenated in input order:
    the build uses their mean, over all frames, and says so. A file giving
    another number of centres than one or its frames is refused.
    """
    first = details[0]
    for item, count in zip(details, counts):
        _check_center_count(item, count, "give --center X,Y")
    for item in details[1:]:
        if (item.centers is None) != (first.centers is None):
            has, lacks = (first, item) if item.centers is None else (item, first)
            raise InputError(
                f"{has.name} gives a beam centre and {lacks.name} none: the files disagree on "
                "the centre; give --center X,Y"
            )
    if first.centers is None:
        return None
    per_frame = [len(item.centers) > 1 for item in details]
    if all(per_frame):
        return np.concatenate([item.centers for item in details])
    for item, many in zip(details[1:], per_frame[1:]):
        if many or per_frame[0]:
            one, other = (first, item) if many else (item, first)
            raise InputError(
                f"{one.name} gives one beam centre, {other.name} one per frame: the files "
                "disagree on the centre; give --center X,Y or --center per-frame"
            )
        if np.abs(item.centers[0] - first.centers[0]).max() > SAME_CENTER_PX:
            raise InputError(
                f"{first.name} and {item.name} give different beam centres "
                f"({_pair(first.centers[0])} and {_pair(item.centers[0])} px); give --center "
                "X,Y, or --center per-frame to resample each file's frames at its own"
            )
    return first.centers


def _own_centers(details, counts) -> np.ndarray:
    """Each frame's centre: its file's one centre, or the file's centre for that frame."""
    parts = []
    for item, count in zip(details, counts):
        if item.centers is None:
            raise InputError(
                f"--center per-frame: {item.name} gives no beam centre per frame, nor one for all"
            )
        _check_center_count(item, count, "give --center X,Y instead of --center per-frame")
        parts.append(np.broadcast_to(item.centers, (count, 2)))
    return np.concatenate(parts).astype(np.float64)


def _check_center_count(item: FileDetails, count: int, instead: str) -> None:
    """InputError unless the file gives one beam centre or one per frame (``count``), if any."""
    if item.centers is not None and len(item.centers) not in (1, count):
        raise InputError(
            f"{item.name} gives {len(item.centers)} beam centres for {count} frames; a beam "
            f"centre is one pair (cx, cy), or one per frame: fix the file, or {instead}"
        )


def _agreed_distances(details, counts) -> tuple[dict, dict]:
    """The wavelength, distance and pixel size of all files (metres or None), and per frame.

    One value in every file: they must be equal. Values per frame in some
    file (a photon energy drawn per shot): their mean over all frames (a
    file's one value counts once per frame), whatever the files' order, and
    the values of every frame (:attr:`Agreed.per_frame`), unless they are all
    equal (to 1e-9): then that one value, as if given once. Refused: one file
    with a value and another without, different single values, a value that
    is not a positive finite number, or a file giving another number of
    values than one or one per frame.
    """
    first, agreed_values, per_frame_values = details[0], {}, {}
    for key, (path, words) in _DISTANCES.items():
        values = [item.distances[key] for item in details]
        for item, value, count in zip(details, values, counts):
            if value is not None:
                _check_values(value, count, item.name, path, words)
        for item, value in zip(details[1:], values[1:]):
            if (value is None) != (values[0] is None):
                has, lacks = (first, item) if value is None else (item, first)
                raise InputError(
                    f"{has.name} gives a {words} and {lacks.name} none; the maps of one store "
                    "share one geometry"
                )
        if values[0] is None:
            agreed_values[key] = None
            continue
        if all(len(value) == 1 for value in values):
            for item, value in zip(details[1:], values[1:]):
                if not np.isclose(value[0], values[0][0], rtol=1e-9, atol=0.0):
                    raise InputError(
                        f"{first.name} and {item.name} give different {words}s "
                        f"({values[0][0]:g} m and {value[0]:g} m); the maps of one store share "
                        "one geometry"
                    )
            agreed_values[key] = float(values[0][0])
            continue
        every_frame = np.concatenate([np.broadcast_to(v, (n,)) for v, n in zip(values, counts)])
        if np.allclose(every_frame, every_frame[0], rtol=1e-9, atol=0.0):  # one value, per frame
            agreed_values[key] = float(every_frame[0])
            continue
        agreed_values[key] = float(every_frame.mean())
        if key != "pixel_size":  # a pixel pitch per frame: the mean (one detector)
            per_frame_values[key] = every_frame.astype(np.float64)
    return agreed_values, per_frame_values


def _check_values(value: np.ndarray, count: int, name: str, path: str, words: str) -> None:
    """InputError unless ``value`` is one or ``count`` positive finite numbers (metres)."""
    if len(value) not in (1, count):
        raise InputError(
            f"{name}: /{path} holds {len(value)} values for {count} frames; a {words} is "
            "one value, or one per frame"
        )
    bad = np.flatnonzero(~(np.isfinite(value) & (value > 0)))
    if len(bad):
        where = f"frame {bad[0]}" if len(value) > 1 else "its one value"
        raise InputError(
            f"{name}: /{path} holds {len(bad)} {words}(s) that are not positive numbers "
            f"({where}: {value[bad[0]]:g}); fix the file's {words}"
        )


def _pair(value) -> str:
    return f"({value[0]:g}, {value[1]:g})"
