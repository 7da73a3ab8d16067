"""Rings in momentum transfer placed at each frame's own wavelength and distance.

A file may record one wavelength or detector distance per frame (``ccfkit
simulate`` draws a photon energy per frame, and with ``--randomize`` also a
distance). Rings placed in q (``--q-range``) with the input's mean would be
off by the frame's own deviation from it (up to 30 % in q for the
simulator's 19-35 eV), so each frame's rings are placed with its own
geometry (docs/ccf.md, "A geometry per frame"), the way ``--center
per-frame`` resamples each frame around its own centre.

A plan costs far more than a map (docs/performance.md), and continuous
energies make every frame's geometry distinct, so frames are grouped: ring
``k`` of a frame sits at the radius ``r_k`` its own geometry gives, and two
frames share a group when the logarithms of the radii of five rings (the
innermost to the outermost) span at most ``tolerance`` over the group
(taken in the order of the outermost radius, :func:`group_geometries`).
Each group's plan is placed with the wavelength and distance of its frame
whose radii lie nearest the middle of the group's; how far each frame's
rings then lie from their nominal q is measured, frame by frame and ring by
ring, and recorded (``max_q_error``, relative, at most about the tolerance:
9.2e-4 for 3,000 frames of ``ccfkit simulate``, their median 2.3e-4).
Within a chunk of the store, frames of one group (and one centre) share one
plan (:func:`maps_of_own_plans`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np

from .geometry import (
    ScatteringGeometry,
    momentum_transfer,
    radius_of_momentum_transfer,
    ring_momentum_transfer,
)
from .io.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "GEOMETRY_TOLERANCE",
    "Q_PLACEMENTS",
    "GeometryGroups",
    "QPlacement",
    "group_geometries",
    "maps_of_own_plans",
    "place_rings",
    "ring_momentum_transfer",
    "scattering_geometry",
]

#: The most that the logarithm of a ring's radius may span over the frames of
#: one geometry group: they see their rings' q within about this fraction of
#: the nominal q (measured: :attr:`GeometryGroups.max_q_error`).
GEOMETRY_TOLERANCE = 1e-3

#: How rings in q are placed when the input's wavelength or distance varies:
#: at each frame's own (in groups), or at their mean for every frame.
Q_PLACEMENTS = ("per-frame", "mean")

#: Where the input records the values, for the refusal that names them.
_CXI_PATHS = ("CXI: entry_1/instrument_1/detector_1/distance, x_pixel_size, "
              "source_1/wavelength")  # fmt: skip


@dataclass(frozen=True)
class GeometryGroups:
    """The frames of an input grouped by geometry: one plan per group (and chunk).

    Attributes
    ----------
    geometries : tuple of ScatteringGeometry
        One per group: that of its frame whose radii lie nearest the middle of the group's.
    group : (N,) int64 ndarray
        Each frame's group.
    wavelength_nm, distance : (N,) float64 ndarray
        Each frame's own wavelength (nm) and distance (m).
    tolerance : float
        What the groups were made with (:data:`GEOMETRY_TOLERANCE`).
    max_q_error : float
        The largest ``|q - q_k| / q_k`` over every frame and ring, where
        ``q`` is what the frame's own geometry sees at the radius its group
        places ring ``k`` at.
    """

    geometries: tuple[ScatteringGeometry, ...]
    group: np.ndarray
    wavelength_nm: np.ndarray
    distance: np.ndarray
    tolerance: float
    max_q_error: float

    def plans(self, chunk_frames: int) -> int:
        """The plans a build makes: the distinct groups of each chunk of ``chunk_frames``."""
        starts = range(0, len(self.group), chunk_frames)
        return sum(len(np.unique(self.group[s : s + chunk_frames])) for s in starts)

    def describe(self, chunk_frames: int) -> dict:
        """JSON-ready provenance: placement, tolerance, groups, plans, the measured q error."""
        return {
            "placement": "per-frame",
            "tolerance": self.tolerance,
            "groups": len(self.geometries),
            "plans": self.plans(chunk_frames),
            "max_q_error": self.max_q_error,
        }


@dataclass(frozen=True)
class QPlacement:
    """Where a build's rings in q come from.

    Attributes
    ----------
    scattering : ScatteringGeometry or None
        The input's (mean) geometry: the store's radii and ``q``; None when
        the input lacks one (then rings in q are refused).
    groups : GeometryGroups or None
        Each frame's own geometry, grouped; None: every frame at ``scattering``.
    placement : str
        A value of :data:`Q_PLACEMENTS`, or ``"one geometry"``, ``"pixels"``.
    """

    scattering: ScatteringGeometry | None
    groups: GeometryGroups | None = None
    placement: str = "pixels"

    def describe(self, chunk_frames: int) -> dict:
        """JSON-ready provenance (``q_placement``)."""
        if self.groups is not None:
            return self.groups.describe(chunk_frames)
        return {"placement": self.placement}


def scattering_geometry(source, q_range=None) -> ScatteringGeometry | None:
    """The input's pixel size, distance and wavelength (their means); None where it lacks one.

    InputError naming what is missing when ``q_range`` (rings placed in
    momentum transfer) needs them.
    """
    known = {"detector distance": source.distance, "pixel size": source.pixel_size,
             "wavelength": source.wavelength}  # fmt: skip
    missing = [name for name, value in known.items() if value is None]
    if missing and q_range is not None:
        raise InputError(
            f"--q-range places the rings in momentum transfer, but the input gives no "
            f"{' and no '.join(missing)} ({_CXI_PATHS})"
        )
    if missing:
        return None
    return ScatteringGeometry(source.pixel_size, source.distance, source.wavelength * 1e9)


def place_rings(source, grid, placement: str = "per-frame",
                tolerance: float = GEOMETRY_TOLERANCE) -> QPlacement:  # fmt: skip
    """How the rings of ``grid`` are placed for the frames of ``source``.

    Parameters
    ----------
    source : FrameSource
        Its ``geometry_per_frame`` says whether the wavelength or distance varies.
    grid : RingGrid
        Rings in q when ``grid.q_range`` is set; otherwise in pixels.
    placement : {"per-frame", "mean"}
        Where the geometry varies: each frame at its own (grouped to
        ``tolerance``, one visible line says so), or every frame at the
        mean (one visible line says how far off in q that is).
    tolerance : float
        See :data:`GEOMETRY_TOLERANCE`.

    Raises
    ------
    InputError
        Rings in q without the geometry; a frame whose rings would lie at
        ``2 theta >= 90`` degrees.
    """
    if placement not in Q_PLACEMENTS:
        raise InputError(f"q placement must be one of {Q_PLACEMENTS}, got {placement!r}")
    scattering = scattering_geometry(source, grid.q_range)
    varies = source.geometry_per_frame
    if grid.q_range is None:
        return QPlacement(scattering)
    if not varies:
        return QPlacement(scattering, placement="one geometry")
    wavelength_nm = varies.get("wavelength", np.full(source.n_frames, source.wavelength)) * 1e9
    distance = varies.get("distance", np.full(source.n_frames, source.distance))
    if placement == "mean":
        _say_mean(wavelength_nm, distance, scattering)
        return QPlacement(scattering, placement="mean")
    q = ring_momentum_transfer(grid.q_range, grid.q_bins)
    groups = group_geometries(source.pixel_size, wavelength_nm, distance, q, tolerance)
    logger.warning(
        "--q-range: the input's %s over its frames: each frame's rings are placed at its "
        "own, %d frames in %d geometry groups (tolerance %g in log radius; rings within %.2g of "
        "their q; --q-placement mean places all at the mean)",
        " and ".join(varies) + (" vary" if len(varies) > 1 else " varies"), len(groups.group),
        len(groups.geometries), tolerance, groups.max_q_error,
    )  # fmt: skip
    return QPlacement(scattering, groups, "per-frame")


def _say_mean(wavelength_nm: np.ndarray, distance: np.ndarray, mean: ScatteringGeometry) -> None:
    """One warning line: every frame's rings at the mean geometry, and how far off that is."""
    off = max(np.abs(wavelength_nm / mean.wavelength_nm - 1).max(),
              np.abs(distance / mean.distance - 1).max())  # fmt: skip
    logger.warning(
        "--q-placement mean: every frame's rings are placed with the mean wavelength %.4g nm "
        "and distance %.4g m; frames whose own differ are off in q by up to about %.1f %%",
        mean.wavelength_nm, mean.distance, 100 * off,
    )  # fmt: skip


def _ring_radii(q: np.ndarray, pixel_size: float, wavelength_nm, distance) -> np.ndarray:
    """(N, Q) float64 pixel radii of the rings ``q`` (1/nm) for each frame's geometry.

    InputError naming the first frame that would see a ring at ``2 theta >= 90``.
    """
    sin_theta = np.outer(wavelength_nm, q) / (4 * np.pi)
    beyond = np.flatnonzero((sin_theta >= math.sin(math.pi / 4)).any(axis=1))
    if len(beyond):
        frame = int(beyond[0])
        raise InputError(
            f"--q-range: q = {q.max():g} 1/nm scatters at 2 theta >= 90 degrees in {len(beyond)} "
            f"frame(s) (frame {frame}: wavelength {wavelength_nm[frame]:g} nm); lower QMAX"
        )
    return radius_of_momentum_transfer(q[None, :], pixel_size=pixel_size,
                                       distance=np.asarray(distance)[:, None],
                                       wavelength_nm=np.asarray(wavelength_nm)[:, None])  # fmt: skip


def group_geometries(pixel_size: float, wavelength_nm: np.ndarray, distance: np.ndarray,
                     q: np.ndarray, tolerance: float = GEOMETRY_TOLERANCE) -> GeometryGroups:  # fmt: skip
    """Group frames whose rings ``q`` lie at nearly the same radii (see the module's docstring).

    Parameters
    ----------
    pixel_size : float
        Metres.
    wavelength_nm, distance : (N,) float64 ndarray
        Each frame's wavelength (nm) and distance (m).
    q : (Q,) float64 ndarray
        The rings, 1/nm (:func:`ring_momentum_transfer`).
    tolerance : float
        The most that ``log(radius)`` of five rings (the innermost to the
        outermost) may span over a group.

    Returns
    -------
    GeometryGroups
        Groups numbered in the order of their first frame's outermost radius.
    """
    wavelength_nm = np.asarray(wavelength_nm, dtype=np.float64)
    distance = np.asarray(distance, dtype=np.float64)
    rings = np.rint(np.linspace(0, len(q) - 1, 5)).astype(int)  # the last: the outermost
    keys = np.log(_ring_radii(q[rings], pixel_size, wavelength_nm, distance))
    group = _leader_groups(keys, tolerance)
    middle = _middle_members(keys, group)
    geometries = tuple(ScatteringGeometry(pixel_size, float(distance[k]), float(wavelength_nm[k]))
                       for k in middle)  # fmt: skip
    placed_of_group = _ring_radii(q, pixel_size, wavelength_nm[middle], distance[middle])  # (G, Q)
    error = 0.0
    for start in range(0, len(group), 4096):  # blocks of frames: (block, Q) at a time
        rows = slice(start, start + 4096)
        placed = placed_of_group[group[rows]]
        seen = momentum_transfer(placed, pixel_size=pixel_size, distance=distance[rows, None],
                                 wavelength_nm=wavelength_nm[rows, None])  # fmt: skip
        error = max(error, float(np.max(np.abs(seen / q - 1))))
    return GeometryGroups(geometries, group, wavelength_nm, distance, float(tolerance), error)


def _leader_groups(keys: np.ndarray, tolerance: float) -> np.ndarray:
    """(N,) int64 groups of the rows of ``keys`` (N, K), each column spanning at most ``tolerance``.

    Rows are taken in the order of their last column; the first row not yet
    grouped leads a new group of every row not yet grouped whose last column
    lies within ``tolerance`` after its own and whose other columns lie
    within ``tolerance`` of its own, or within ``tolerance / 2`` where
    those would span more.
    """
    order = np.argsort(keys[:, -1], kind="stable")
    last = keys[order, -1]
    group = np.full(len(keys), -1, dtype=np.int64)
    start, count = 0, 0
    while start < len(order):
        leader = order[start]
        window = order[start : np.searchsorted(last, last[start] + tolerance, side="right")]
        window = window[group[window] < 0]
        off = keys[window, :-1] - keys[leader, :-1]
        close = np.abs(off).max(axis=1) <= tolerance
        if np.any(np.ptp(off[close], axis=0) > tolerance):  # on both sides: half as far
            close = np.abs(off).max(axis=1) <= tolerance / 2
        window = window[close]
        group[window], count = count, count + 1
        while start < len(order) and group[order[start]] >= 0:
            start += 1
    return group


def _middle_members(keys: np.ndarray, group: np.ndarray) -> np.ndarray:
    """(G,) the row of each group whose ``keys`` lie closest to the middle of the group's range."""
    order = np.argsort(group, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(group[order]) > 0])
    ordered = keys[order]
    middle = (np.minimum.reduceat(ordered, starts) + np.maximum.reduceat(ordered, starts)) / 2
    off = np.abs(keys - middle[group]).max(axis=1)
    best = np.lexsort((off, group))  # by group, then by distance from the middle
    return best[np.r_[0, np.flatnonzero(np.diff(group[best]) > 0) + 1]]


def maps_of_own_plans(engine, frames, spec, settings, *, centers=None, groups=None):
    """Maps of ``frames``, each resampled with its own plan: its centre, its geometry's rings.

    Frames with the same centre and geometry group share one plan.

    Parameters
    ----------
    engine : Backend
    frames : (n, H, W) float32 ndarray
    spec : PlanSpec
        The build's plan (its radial range fixed where frames have their own
        centres: :func:`ccfkit.frame_centers.fixed_range`).
    settings : MapSettings
    centers : (n, 2) float64 ndarray, optional
        ``(cx, cy)`` of each frame, pixels; default the spec's.
    groups : tuple of (tuple of ScatteringGeometry, (n,) int ndarray), optional
        The geometries and each frame's index into them; default the spec's.

    Returns
    -------
    ndarray
        float32 maps, ``(n, Q, Q)`` or ``(n, C, Q, Q)``, as ``engine.merged_maps``.
    """
    keys = np.zeros((len(frames), 3))
    if centers is not None:
        keys[:, :2] = centers
    if groups is not None:
        keys[:, 2] = groups[1]
    unique, which = np.unique(keys, axis=0, return_inverse=True)
    which = which.ravel()
    out = None
    for k, key in enumerate(unique):
        rows = np.flatnonzero(which == k)
        own = spec
        if centers is not None:
            own = replace(own, center=(float(key[0]), float(key[1])))
        if groups is not None:
            own = replace(own, scattering=groups[0][int(key[2])])
        plan = own.plan()
        maps = engine.to_numpy(engine.merged_maps(engine.as_batch(frames[rows], plan.shape),
                                                  plan, settings))  # fmt: skip
        if out is None:
            out = np.empty((len(frames), *maps.shape[1:]), dtype=maps.dtype)
        out[rows] = maps
    return out
