"""What a build checks and records of each frame: unusable pixels, empty and bad maps.

A pixel that is NaN, +-inf or at least :data:`~ccfkit.polar.HUGE_PIXEL` in
magnitude is masked in its frame by every backend (docs/ccf.md §1); the build
counts such pixels, names the frames whose maps are all 0 (no usable ring),
and never stores a map with NaN/inf values as a result: it stops at that
frame, or (``--mask-bad-maps``) stores it as 0 and records it. The counts go
into the store's ``frame_checks`` array (:data:`ccfkit.store.FRAME_CHECKS`)
and, summed up, its ``frame_checks`` attribute and the build's log
(docs/build.md, "Unusable pixels").
"""

from __future__ import annotations

import logging

import numba
import numpy as np

from .io.source import InputError
from .noise import unusable_pixel_counts
from .polar import HUGE_PIXEL
from .store import FRAME_CHECKS

__all__ = ["frame_checks", "report_frame_checks"]

logger = logging.getLogger(__name__)


def frame_checks(noisy: np.ndarray, maps: np.ndarray, indices: np.ndarray, mask: np.ndarray,
                 *, mask_bad_maps: bool = False) -> np.ndarray:  # fmt: skip
    """What the store records of each frame (:data:`ccfkit.store.FRAME_CHECKS`).

    Parameters
    ----------
    noisy : (n, H, W) float32
        The frames the maps were made from.
    maps : (n, ...) float32
        Their maps; with ``mask_bad_maps``, a map with NaN/inf values is set
        to 0 here (in place).
    indices : (n,) int
        The frames' indices in the input, for the messages.
    mask : (H, W) bool
        Good pixels.

    Returns
    -------
    (n, 3) int32
        Unusable good pixels (NaN, +-inf, at least :data:`~ccfkit.polar.HUGE_PIXEL`),
        map all 0, map held NaN/inf and was stored as 0.

    Raises
    ------
    InputError
        A map holds NaN/inf values and ``mask_bad_maps`` is False: a map that is
        not a number is never stored as a result.
    """
    finite, nonzero = map_checks(maps)
    checks = np.zeros((len(maps), len(FRAME_CHECKS)), dtype=np.int32)
    checks[:, 0] = unusable_pixel_counts(noisy, mask)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        if not mask_bad_maps:
            raise InputError(
                f"frame {int(indices[bad[0]])}: its map has NaN/inf values "
                f"({checks[bad[0], 0]} unusable pixels); nothing of frames {int(indices[0])}.."
                f"{int(indices[-1])} was written: finish the store with --resume "
                "--mask-bad-maps to store such maps as 0 and record them"
            )
        maps[bad] = 0
        checks[bad, 2] = 1
    checks[:, 1] = ~nonzero & finite
    return checks


def map_checks(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each map is finite everywhere, and whether it has a value other than 0.

    One pass over the maps (``np.isfinite(m).all()`` and ``m.any()`` per map,
    without their temporary arrays).

    Parameters
    ----------
    maps : (n, ...) float array
        The maps (any shape after the first axis).

    Returns
    -------
    finite, nonzero : (n,) bool arrays
    """
    flat = np.ascontiguousarray(maps).reshape(len(maps), -1)
    finite = np.empty(len(flat), dtype=bool)
    nonzero = np.empty(len(flat), dtype=bool)
    _map_checks(flat, finite, nonzero)
    return finite, nonzero


@numba.njit(nogil=True, cache=True)
def _map_checks(flat, finite, nonzero):
    """``finite[b]``, ``nonzero[b]`` of row ``b`` of ``flat`` (exact IEEE comparisons)."""
    for b in range(flat.shape[0]):
        row = flat[b]
        not_finite = False
        some = False
        for i in range(row.shape[0]):
            not_finite |= row[i] - row[i] != 0  # NaN for NaN and +-inf, 0 for every number
            some |= row[i] != 0
        finite[b] = not not_finite
        nonzero[b] = some


def report_frame_checks(checks: np.ndarray, named: int = 10) -> dict:
    """Log what the frames' checks found; return the store's ``frame_checks`` attribute.

    Raises
    ------
    InputError
        Every map is 0 (no frame has a usable ring): the store is left incomplete.
    """
    unusable, empty, masked = (np.flatnonzero(checks[:, k]) for k in range(len(FRAME_CHECKS)))
    if len(checks) and len(empty) == len(checks):
        raise InputError(
            f"every frame's map is 0 ({len(checks)} frames; {len(unusable)} with unusable "
            "pixels: NaN, inf or huge): no frame leaves a usable ring; check the input"
        )

    def listed(frames: np.ndarray) -> str:
        more = f" and {len(frames) - named} more" if len(frames) > named else ""
        return ", ".join(str(int(i)) for i in frames[:named]) + more

    if len(unusable):
        logger.warning(
            "%d frames have unusable pixels (NaN, +-inf or |I| >= %.2g: %d in all), masked in "
            "their frame: %s", len(unusable), HUGE_PIXEL, int(checks[:, 0].sum()),
            listed(unusable),
        )  # fmt: skip
    if len(empty):
        logger.warning("%d frames have all-zero maps (no usable ring): %s", len(empty),
                       listed(empty))  # fmt: skip
    if len(masked):
        logger.warning("%d maps held NaN/inf values and are stored as 0: %s", len(masked),
                       listed(masked))  # fmt: skip
    return {  # the first frames of each kind; the array has them all
        "unusable_pixel_limit": HUGE_PIXEL,
        "frames_with_unusable_pixels": len(unusable),
        "unusable_pixels": int(checks[:, 0].sum()),
        "empty_maps": len(empty),
        "masked_maps": len(masked),
        "first_frames": {
            "unusable_pixels": unusable[:named].tolist(),
            "empty_map": empty[:named].tolist(),
            "masked_map": masked[:named].tolist(),
        },
    }
