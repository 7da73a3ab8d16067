"""Pixel masks: how a stored mask is read (True = good pixel), wherever it comes from.

One rule for the input files' masks and ``--mask FILE[:PATH]``: boolean masks
mean True = good; an integer data set with a ``convention`` attribute is read
as it says (``"cxi"`` or ``"good"``); without one, an integer data set at a CXI
mask location is a CXI bit mask (0 = good; bad when any
:data:`PIXEL_IS_IN_MASK` bit is set) and any other mask must hold only 0 and 1
(1 = good). A mask per frame keeps the pixels good in every frame; a mask per
module of a module stack is laid out as the stacked frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from .errors import InputError

__all__ = ["MASK_PATHS", "PIXEL_IS_IN_MASK", "good_pixels", "read_mask_file"]

#: CXI pixel-mask bits that make a pixel unusable: invalid, saturated, hot,
#: dead, shadowed, in peak mask, to be ignored, bad, missing.
PIXEL_IS_IN_MASK = 1 | 2 | 4 | 8 | 16 | 32 | 64 | 128 | 512

#: Where CXI files keep a detector mask, in the order they are tried.
MASK_PATHS = (
    "entry_1/instrument_1/detector_1/mask",
    "entry_1/data_1/mask",
    "entry_1/image_1/mask",
)


def good_pixels(mask: np.ndarray, *, convention: str = "auto") -> tuple[np.ndarray, str]:
    """Convert a stored mask to a bool array, True = good pixel.

    Parameters
    ----------
    mask : (H, W) array
        Bool (True = good), or integer.
    convention : {"auto", "cxi", "good"}
        How to read an integer mask: ``"cxi"`` bit mask (0 = good, bad when a
        ``PIXEL_IS_IN_MASK`` bit is set), ``"good"`` (non-zero = good).
        ``"auto"``: bool arrays are ``good``, integer ones ``cxi``, others
        ``good``.

    Returns
    -------
    good : (H, W) bool array
        (Or (N, H, W) for a mask per frame.)
    convention : str
        The convention applied, for the provenance.

    Raises
    ------
    ValueError
        A ``good`` mask whose values are not 0/1; a ``cxi`` mask that is not
        non-negative integers.
    """
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return mask.copy(), "bool (True = good)"
    integer = np.issubdtype(mask.dtype, np.integer)
    if convention == "auto":
        convention = "cxi" if integer else "good"
    if convention == "cxi":
        if not integer:
            example = f" (e.g. {mask.flat[0].item()!r})" if mask.size else ""
            raise ValueError(
                f"a CXI bit mask holds non-negative integers, not {mask.dtype} values{example}; "
                "a 0/1 mask needs the attribute convention = 'good'"
            )
        if mask.size and mask.min() < 0:
            raise ValueError(f"a CXI bit mask holds non-negative integers, not {mask.min()}")
        return (mask.astype(np.int64) & PIXEL_IS_IN_MASK) == 0, "CXI bit mask (0 = good)"
    if convention == "good":
        values = np.unique(mask)
        if not np.isin(values, (0, 1)).all():
            raise ValueError(
                f"its values {values[:6].tolist()} are not 0/1 (a CXI bit mask needs the "
                "attribute convention = 'cxi')"
            )
        return mask == 1, "0/1 (1 = good)"
    raise ValueError(f"unknown mask convention {convention!r}")


def _stacked(mask: np.ndarray, stack_shape: tuple[int, int, int] | None) -> np.ndarray:
    """A mask per module, ``(..., modules, ss, fs)``, as the stacked frame's ``(..., modules * ss, fs)``."""
    mask = np.asarray(mask)
    if stack_shape is None or mask.shape[-3:] != tuple(stack_shape):
        return mask
    modules, ss, fs = stack_shape
    return mask.reshape(*mask.shape[:-3], modules * ss, fs)


def read_mask_file(spec: str) -> tuple[np.ndarray, str]:
    """Read ``FILE[:PATH]``: a .npy array or a data set in an HDF5 file.

    Without ``PATH``, an HDF5 file's mask is looked for at the CXI mask
    locations. The data set is read by :func:`_read_mask_dataset`, as a mask
    in the input files is; a .npy array is read as 0/1, 1 = good (bool: True
    = good). One of shape (N, H, W) is a mask per frame (see :func:`open_source`).
    """
    name, _, path = spec.partition(":")
    if not Path(name).is_file():
        raise InputError(f"mask file {name}: no such file")
    if name.endswith(".npy"):
        try:
            good, convention = good_pixels(np.load(name), convention="good")
        except ValueError as error:
            raise InputError(f"mask file {name}: {error}") from None
        return good, f"{name} ({convention})"
    if not h5py.is_hdf5(name):
        raise InputError(f"mask file {name}: neither .npy nor HDF5")
    with h5py.File(name, "r") as handle:
        path = path or _first_present(handle, MASK_PATHS)
        if not path or path not in handle:
            raise InputError(f"mask file {name}: no mask data set {path or ''}".rstrip())
        good, how = _read_mask_dataset(handle, path, name)
    return good, f"{name}:{path} ({how})"


def _read_mask_dataset(handle: h5py.File, path: str, name: str) -> tuple[np.ndarray, str]:
    """Data set ``path`` of file ``name`` as an (H, W) bool mask (True = good), and how read.

    The data set's ``convention`` attribute (``"cxi"`` or ``"good"``) says
    how to read integers; without it, a data set at a CXI mask location
    (:data:`MASK_PATHS`) holds a CXI bit mask and any other 0/1, 1 = good.
    Bool masks are True = good. A mask per frame, (N, H, W), keeps the pixels
    good in every frame.
    """
    dataset = _object(handle, path, "mask")
    where = "/" + path.strip("/")
    if not isinstance(dataset, h5py.Dataset):
        raise InputError(f"{name}: {where} is a group, not a mask data set")
    default = "cxi" if path.strip("/") in MASK_PATHS else "good"
    convention = dataset.attrs.get("convention", default)
    if isinstance(convention, bytes):
        convention = convention.decode()
    try:
        return good_pixels(dataset[()], convention=str(convention))
    except ValueError as error:
        raise InputError(f"{name}: mask {where}: {error}") from None


def _mask_over_frames(good: np.ndarray, n_frames: int, origin: str) -> np.ndarray:
    """An (H, W) mask as is; an (N, H, W) one (N = ``n_frames``): the pixels good in all."""
    if good.ndim != 3:
        return good
    if len(good) != n_frames:
        raise InputError(
            f"the mask per frame {origin} has {len(good)} frames, the input {n_frames}"
        )
    return good.all(axis=0)


def _first_present(handle: h5py.File, paths: Sequence[str]) -> str | None:
    return next((path for path in paths if path in handle), None)


def _numbers(dataset, path: str) -> np.ndarray:
    """A data set's values as float64; anything else (strings, a group) is an InputError."""
    try:
        return np.asarray(dataset[()], dtype=np.float64)
    except (TypeError, ValueError, AttributeError, OSError) as error:
        raise InputError(
            f"{dataset.file.filename}: /{path.lstrip('/')} holds no numbers "
            f"({' '.join(str(error).split())[:60]})"
        ) from None


def _object(handle: h5py.File, path: str, what: str):
    """``handle[path]``; a dangling link or broken object there is an InputError naming it."""
    try:
        return handle[path]
    except (KeyError, OSError) as error:
        raise InputError(
            f"{handle.filename}: cannot open the {what} at /{path.lstrip('/')} "
            f"({' '.join(str(error).split())}; a dangling link?)"
        ) from None


def _read_mask(handle: h5py.File, name: str) -> tuple[np.ndarray | None, str]:
    """The first mask at a CXI mask location of an input file (see :func:`_read_mask_dataset`)."""
    path = _first_present(handle, MASK_PATHS)
    if path is None:
        return None, "none (all pixels good)"
    good, how = _read_mask_dataset(handle, path, name)
    return good, f"{name}:/{path} ({how})"
