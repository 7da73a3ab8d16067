"""Module-stacked detectors: where each pixel of a ``(module, ss, fs)`` stack lies.

Detectors such as AGIPD, JUNGFRAU, DSSC, LPD, ePix and pnCCD record frames as
stacks of modules, ``(frames, modules, ss, fs)``; a geometry (a CrystFEL
``.geom`` file, read by extra-geom: :mod:`ccfkit.io.geometry_file`) places
every pixel in the detector plane. Each module is made of *tiles* (AGIPD: 8
ASICs of 64 x 128 pixels), each a regular grid with its own corner and step
vectors; between tiles lie gaps. DSSC's hexagonal pixels are a regular
grid whose rows of odd index lie half a pixel aside along fs (a tile's
``row_shift``): a sample between two rows is interpolated along fs within
each row at that row's own columns, then between the rows.

:class:`DetectorGeometry` keeps that placement as a few numbers per tile and
is a :class:`~ccfkit.polar.PixelLayout`: the polar plan samples the true
pixel positions. For every polar sample it finds the tile that contains it
and the fractional ``(ss, fs)`` there (the inverse of the tile's affine
placement), and interpolates bilinearly between the four pixels of that tile
around it. The frames stay stacked (a frame is read as the ``(modules * ss,
fs)`` array of its modules one under the other, a free reshape): no
assembled copy is made, and the four neighbours of a sample are pixels ``i,
i + 1, i + fs, i + fs + 1`` of that array, as in a plain image (in a tile of
shifted rows, the lower two may be one column aside). A sample that
falls in a gap, or between a tile's edge pixel and the gap, has no four
neighbours in one tile: it is invalid, as a masked pixel makes it.

Coordinates are the geometry's own, in pixels (metres divided by the pixel
size), ``x`` and ``y`` of the detector plane (``z`` is ignored: the modules
are taken as flat and normal to the beam); the beam passes through the
origin ``(0, 0)`` unless a centre is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .polar import _SNAP, _split

__all__ = ["DetectorGeometry", "Tile", "tiles_from_positions"]

#: Two neighbouring rows (or columns) of pixels belong to one tile when their
#: step differs from the module's regular step by less than this, pixels.
_SAME_TILE = 1e-3


class Tile(NamedTuple):
    """One regular grid of pixels of a module, and where it lies.

    Attributes
    ----------
    module : int
    ss_start, ss_stop, fs_start, fs_stop : int
        The tile's pixels ``[ss_start, ss_stop) x [fs_start, fs_stop)`` of the module.
    origin : (float, float)
        ``(x, y)`` of pixel ``(ss_start, fs_start)``'s centre, pixels.
    ss_step, fs_step : (float, float)
        ``(x, y)`` step from one pixel to the next along ss and along fs, pixels.
    row_shift : (float, float)
        ``(x, y)`` by which the rows of odd index in the module lie aside
        along fs (DSSC's hexagonal pixels: half a pixel); ``(0, 0)`` for a
        regular grid. Pixel ``(ss, fs)`` of the tile lies at ``origin + (ss
        - ss_start) ss_step + (fs - fs_start) fs_step + (ss % 2) row_shift``.
    """

    module: int
    ss_start: int
    ss_stop: int
    fs_start: int
    fs_stop: int
    origin: tuple[float, float]
    ss_step: tuple[float, float]
    fs_step: tuple[float, float]
    row_shift: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class DetectorGeometry:
    """The pixel placement of a module stack: a :class:`~ccfkit.polar.PixelLayout`.

    Small, hashable and picklable (a few numbers per tile): it travels in a
    :class:`~ccfkit.polar.PlanSpec` to every worker, which needs no
    extra-geom.

    Attributes
    ----------
    stack_shape : (int, int, int)
        ``(modules, ss, fs)`` of one frame.
    tiles : tuple of Tile
    detector : str
        The extra-geom class that read the geometry (provenance).
    source : str
        The geometry file (provenance).
    pixel_size, wavelength, distance : float or None
        Metres (for momentum transfer), as far as the geometry file gives them.
    text : str
        The geometry file's text (recorded in the store; not part of equality).
    """

    stack_shape: tuple[int, int, int]
    tiles: tuple[Tile, ...]
    detector: str = ""
    source: str = ""
    pixel_size: float | None = None
    wavelength: float | None = None
    distance: float | None = None
    text: str = field(default="", compare=False, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """``(modules * ss, fs)``: the frame array the plan indexes."""
        modules, ss, fs = self.stack_shape
        return (modules * ss, fs)

    def corners(self) -> np.ndarray:
        """(4 * tiles, 2) float64: ``(x, y)`` of every tile's four corner pixel centres."""
        points = []
        for tile in self.tiles:
            origin, ss_step, fs_step, shift = (np.asarray(v) for v in tile[5:])
            for ss in (0, tile.ss_stop - tile.ss_start - 1):
                aside = shift * ((tile.ss_start + ss) % 2)
                for fs in (0, tile.fs_stop - tile.fs_start - 1):
                    points.append(origin + ss * ss_step + fs * fs_step + aside)
        return np.array(points)

    def default_center(self) -> tuple[float, float]:
        """The geometry's origin, ``(0, 0)``: where the beam passes."""
        return (0.0, 0.0)

    def check_center(self, center: tuple[float, float]) -> None:
        """ValueError for a centre outside the box that holds every pixel."""
        low, high = self.corners().min(axis=0), self.corners().max(axis=0)
        if not (low <= np.asarray(center)).all() or not (np.asarray(center) <= high).all():
            raise ValueError(
                f"beam centre (x, y) = ({center[0]}, {center[1]}) px lies outside the detector "
                f"(x in [{low[0]:.1f}, {high[0]:.1f}], y in [{low[1]:.1f}, {high[1]:.1f}] px "
                "in the geometry's frame)"
            )

    def default_r_max(self, center: tuple[float, float]) -> float:
        """Distance from ``center`` to the nearest side of the box that holds every pixel."""
        low, high = self.corners().min(axis=0), self.corners().max(axis=0)
        cx, cy = center
        return float(min(cx - low[0], high[0] - cx, cy - low[1], high[1] - cy))

    def farthest(self, center: tuple[float, float]) -> float:
        """Distance from ``center`` to the farthest pixel centre, pixels."""
        return float(np.hypot(*(self.corners() - np.asarray(center)).T).max())

    def bilinear_table(self, radius, phi, center, good):
        """Bilinear neighbours, weights and validity of the samples ``radius x phi``.

        Parameters
        ----------
        radius : (Q,) float64; phi : (P,) float64
        center : (float, float)
            ``(cx, cy)``, pixels, in the geometry's frame.
        good : (modules * ss, fs) bool
            Good pixels of the stacked frame.

        Returns
        -------
        index : (Q, P, 4) int64
            Flat indices ``(module * ss + row) * fs + column`` of the four
            neighbours: upper-left, upper-right, lower-left, lower-right (rows
            along ss, columns along fs), all in the sample's tile.
        weight : (Q, P, 4) float64
        valid : (Q, P) bool
            The sample lies in a tile and every neighbour it needs is good.
        """
        x = center[0] + radius[:, None] * np.cos(phi)[None, :]
        y = center[1] + radius[:, None] * np.sin(phi)[None, :]
        row, column, aside, inside = self._tile_coordinates(x.ravel(), y.ravel())
        row0, fy = _split(row)
        row1 = row0 + (fy > 0)
        # each row's own columns: a row of odd index in its module lies ``aside`` along fs
        ss_per_module = self.stack_shape[1]  # the row's index in its module, odd or even
        upper, fx_upper = _split(column - aside * (row0 % ss_per_module % 2))
        lower, fx_lower = _split(column - aside * (row1 % ss_per_module % 2))
        width = self.shape[1]
        corners = [
            (row0, upper), (row0, upper + (fx_upper > 0)),
            (row1, lower), (row1, lower + (fx_lower > 0)),
        ]  # fmt: skip
        index = np.stack([r * width + c for r, c in corners], axis=-1)
        flat_good = np.ascontiguousarray(good).ravel()
        valid = inside & flat_good[index].all(axis=-1)
        weight = np.stack(
            [(1 - fx_upper) * (1 - fy), fx_upper * (1 - fy), (1 - fx_lower) * fy, fx_lower * fy],
            axis=-1,
        )
        shape = (len(radius), len(phi))
        return index.reshape(*shape, 4), weight.reshape(*shape, 4), valid.reshape(shape)

    def _tile_coordinates(self, x: np.ndarray, y: np.ndarray):
        """Stacked-frame ``(row, column)`` (float64) of points ``(x, y)``, and which lie in a tile.

        ``column`` is that of the tile's regular grid; a row of odd index in
        its module has its pixels at ``column - aside`` (fs pixels, 0 for a
        regular tile). A point outside every tile gets row and column 0 (a
        safe index). The first tile that contains a point takes it (tiles
        do not overlap in a sound geometry); in a tile of shifted rows, the
        point's columns must lie in both rows around it.
        """
        row, column, aside = np.zeros(x.shape), np.zeros(x.shape), np.zeros(x.shape)
        inside = np.zeros(x.shape, dtype=bool)
        ss_per_module = self.stack_shape[1]
        for tile in self.tiles:
            # solve origin + a ss_step + b fs_step = (x, y) for (a, b)
            inverse = np.linalg.inv(np.array([tile.ss_step, tile.fs_step]).T)
            dx, dy = x - tile.origin[0], y - tile.origin[1]
            a = inverse[0, 0] * dx + inverse[0, 1] * dy
            b = inverse[1, 0] * dx + inverse[1, 1] * dy
            shift = float((inverse @ np.asarray(tile.row_shift))[1])  # along fs, pixels
            low, high = max(0.0, shift), tile.fs_stop - tile.fs_start - 1 + min(0.0, shift)
            height = tile.ss_stop - tile.ss_start
            here = (
                ~inside
                & (a >= -_SNAP) & (a <= height - 1 + _SNAP)
                & (b >= low - _SNAP) & (b <= high + _SNAP)
            )  # fmt: skip
            start = tile.module * ss_per_module + tile.ss_start
            row[here] = start + np.clip(a[here], 0, height - 1)
            column[here] = tile.fs_start + np.clip(b[here], low, high)
            aside[here] = shift
            inside |= here
        return row, column, aside, inside


def tiles_from_positions(positions: np.ndarray) -> tuple[Tile, ...]:
    """The tiles of a module stack from its pixel centres.

    Parameters
    ----------
    positions : (modules, ss, fs, 2) float64
        ``(x, y)`` of every pixel centre, pixels (extra-geom's
        ``get_pixel_positions()``, divided by the pixel size).

    Returns
    -------
    tuple of Tile
        Per module, the regular grids it is made of: a new tile starts where
        the step from one row (column) to the next leaves the module's
        regular step (a gap, or another orientation). Rows of odd index that
        all lie aside along fs by one vector (:func:`_row_shift`: DSSC's
        hexagonal pixels) are put back on the grid, and the tile keeps that
        vector (``row_shift``).
    """
    tiles = []
    modules, ss, fs = positions.shape[:3]
    for module in range(modules):
        shift = _row_shift(positions[module])
        pixels = positions[module].copy()
        pixels[1::2] -= shift
        ss_bounds = _segments(pixels, axis=0)
        fs_bounds = _segments(pixels, axis=1)
        ss_regular = np.median(np.diff(pixels, axis=0).reshape(-1, 2), axis=0) if ss > 1 else None
        fs_regular = np.median(np.diff(pixels, axis=1).reshape(-1, 2), axis=0) if fs > 1 else None
        for s0, s1 in ss_bounds:
            for f0, f1 in fs_bounds:
                part = pixels[s0:s1, f0:f1]
                ss_step = _mean_step(part, 0, ss_regular)
                fs_step = _mean_step(part, 1, fs_regular)
                steps = (_pair(part[0, 0]), _pair(ss_step), _pair(fs_step), _pair(shift))
                tiles.append(Tile(module, s0, s1, f0, f1, *steps))
    return tuple(tiles)


def _row_shift(pixels: np.ndarray) -> np.ndarray:
    """``(x, y)`` by which a module's rows of odd index lie aside along fs, else ``(0, 0)``.

    Parameters
    ----------
    pixels : (ss, fs, 2) float64
        A module's pixel centres, pixels.

    Returns
    -------
    (2,) float64
        Half the difference of the typical step into an odd row and into an
        even row, where it exceeds :data:`_SAME_TILE` and lies along the fs
        step (the rows of hexagonal pixels); zero otherwise.
    """
    if pixels.shape[0] < 3 or pixels.shape[1] < 2:
        return np.zeros(2)
    steps = np.diff(pixels, axis=0)
    shift = (np.median(steps[0::2].reshape(-1, 2), axis=0)
             - np.median(steps[1::2].reshape(-1, 2), axis=0)) / 2  # fmt: skip
    fs_step = np.median(np.diff(pixels, axis=1).reshape(-1, 2), axis=0)
    along_fs = fs_step * (shift @ fs_step) / (fs_step @ fs_step)
    if np.abs(shift).max() < _SAME_TILE or np.abs(shift - along_fs).max() > _SAME_TILE:
        return np.zeros(2)
    return shift


def _segments(pixels: np.ndarray, axis: int) -> list[tuple[int, int]]:
    """``[start, stop)`` runs along ``axis`` whose steps are the regular one (a tile's rows)."""
    count = pixels.shape[axis]
    if count < 2:
        return [(0, count)]
    steps = np.diff(pixels, axis=axis)  # (count - 1, other, 2) for axis 0
    steps = np.moveaxis(steps, axis, 0)
    regular = np.median(steps, axis=0)  # per row/column of the other axis
    deviation = np.abs(steps - regular).max(axis=(1, 2))
    breaks = (np.flatnonzero(deviation > _SAME_TILE) + 1).tolist()
    return list(zip([0, *breaks], [*breaks, count]))


def _mean_step(part: np.ndarray, axis: int, fallback) -> np.ndarray:
    """The pixel step of a regular grid along ``axis`` (its end-to-end span over its length)."""
    count = part.shape[axis]
    if count < 2:
        if fallback is None:
            raise ValueError("a module of one pixel along an axis has no step")
        return fallback
    last = part[-1, 0] if axis == 0 else part[0, -1]
    return (last - part[0, 0]) / (count - 1)


def _pair(values) -> tuple[float, float]:
    return (float(values[0]), float(values[1]))
