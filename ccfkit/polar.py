"""Polar resampling of detector images (docs/ccf.md §1).

The geometry work is done once, in float64, by :func:`make_polar_plan`: it
turns a detector shape, a beam centre and a pixel mask into a bilinear
interpolation table (a :class:`PolarPlan`). Backends only *apply* a plan to
batches of images (:func:`resample`), so every backend samples exactly the same
points and a test compares kernels, not geometry.

Conventions
-----------
* An image is ``I[y, x]`` (row ``y``, column ``x``); pixel centres sit at
  integer coordinates. The beam centre is ``(cx, cy)`` in the same units.
* Radial bin centres ``r_k = r_min + (k + 0.5) (r_max - r_min) / Q``; or,
  with ``q_range``, at equal steps in momentum transfer,
  ``q_k = q_min + (k + 0.5) (q_max - q_min) / Q``, each at the pixel radius
  that sees it (:mod:`ccfkit.geometry`; docs/ccf.md, "Rings in momentum
  transfer").
* Angles ``phi_p = 2 pi p / P``; the sample sits at
  ``x = cx + r cos(phi)``, ``y = cy + r sin(phi)``. So ``phi = 0`` points along
  +x (to the right) and ``phi`` turns towards +y, i.e. *clockwise* on an image
  drawn with row 0 at the top (``imshow``'s default).
* A sample is *valid* when every pixel it needs (bilinear weight > 0) lies on
  the detector and is good in the mask; images may add invalid samples of
  their own through unusable pixels: NaN, +-inf, or at least
  :data:`HUGE_PIXEL` in magnitude (:func:`usable_pixels`).
* A ring is *used* when at least ``min_ring_fraction`` of its samples are
  valid (docs/ccf.md, "Usable rings"). An unused ring has no valid sample in
  the plan: it is 0 in every map and enters no normalisation. Images whose
  unusable pixels drop a ring below the fraction lose that ring too.
* ``r_min="auto"`` starts the radial range where every ring is usable under
  the mask, on a 0.05 px grid.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

import numpy as np

from .geometry import ScatteringGeometry, ring_momentum_transfer

__all__ = [
    "HUGE_PIXEL",
    "MAX_PHI_BINS",
    "PixelLayout",
    "PlanSpec",
    "PolarImages",
    "PolarPlan",
    "RegularGrid",
    "RingGrid",
    "default_r_max",
    "make_polar_plan",
    "min_ring_count",
    "usable_pixels",
]

#: Pixels of this magnitude or more (2^56, about 7.2e16) are unusable, as NaN and
#: +-inf are: their samples are invalid. Below it, a ring's sum of products over
#: at most :data:`MAX_PHI_BINS` samples stays under 2^127, within float32
#: (docs/ccf.md §1, "Validity"); a float32-max sentinel (3.4e38) for a dead pixel
#: is masked in its frame instead of making every map of it NaN.
HUGE_PIXEL = 2.0**56

#: The most angular samples ``P`` a plan takes (see :data:`HUGE_PIXEL`): 2^15, more
#: samples than pixels on any circle of radius up to 5200 px.
MAX_PHI_BINS = 2**15


def usable_pixels(images, xp=np):
    """True where a pixel may enter a map: finite and below :data:`HUGE_PIXEL` in magnitude.

    Parameters
    ----------
    images : array of any shape
        Pixel values (NaN compares False, so NaN pixels are unusable).
    xp : module
        The array module of ``images`` (NumPy or CuPy).

    Returns
    -------
    bool array of the same shape
    """
    return xp.abs(images) < HUGE_PIXEL


#: Fractional positions closer than this to a pixel centre snap onto it, so
#: that rounding noise in ``cos``/``sin`` (e.g. ``cos(pi/2) = 6e-17``) does not
#: make a sample depend on a neighbour with a weight of 1e-17.
_SNAP = 1e-9

#: Radial step (pixels) of the fine grid on which ``r_min="auto"`` is searched.
_AUTO_STEP = 0.05
#: Radii of that grid looked at together (the search goes outwards block by block).
_AUTO_BLOCK = 256  # 12.8 px: the plan of a 259 x 259 frame 0.11 s of CPU with 1024, 0.03 with 256


@dataclass(frozen=True, eq=False)
class PolarPlan:
    """A bilinear polar-resampling table for one detector geometry and mask.

    Build it with :func:`make_polar_plan`; apply it with :func:`resample`.

    Attributes
    ----------
    shape : (int, int)
        Detector shape ``(H, W)`` in pixels.
    center : (float, float)
        Beam centre ``(cx, cy)`` in pixels (``cx`` is the column).
    radius : (Q,) float64 ndarray
        Radial bin centres ``r_k`` in pixels.
    phi : (P,) float64 ndarray
        Angles ``phi_p`` in radians, from +x towards +y.
    index : (Q, P, 4) int64 ndarray
        Flat pixel indices ``y * W + x`` of the four bilinear neighbours of
        each sample: upper-left, upper-right, lower-left, lower-right. A
        neighbour that is not needed (zero weight) and every neighbour of an
        invalid sample repeat a safe index, so reading them never fails.
    weight : (Q, P, 4) float64 ndarray
        The bilinear weights, summing to 1 (all 0 for invalid samples).
    valid : (Q, P) bool ndarray
        True where the sample lies on the detector, needs no masked pixel and
        belongs to a used ring.
    r_min, r_max : float
        The radial range in pixels (``r_min`` resolved when "auto" was asked).
    min_ring_fraction : float
        The valid fraction from which a ring is used.
    ring_used : (Q,) bool ndarray
        The rings that are used (at least ``min_ring_count`` valid samples).
    ring_axis : str
        What the rings were placed on: ``"radius"`` (equal steps in pixels)
        or ``"q"`` (equal steps in momentum transfer, :attr:`RingGrid.q_range`).
    """

    shape: tuple[int, int]
    center: tuple[float, float]
    radius: np.ndarray
    phi: np.ndarray
    index: np.ndarray
    weight: np.ndarray
    valid: np.ndarray
    r_min: float
    r_max: float
    min_ring_fraction: float
    ring_used: np.ndarray
    ring_axis: str = "radius"

    @property
    def q_bins(self) -> int:
        """Number of radial bins ``Q``."""
        return self.radius.shape[0]

    @property
    def phi_bins(self) -> int:
        """Number of angular samples ``P``."""
        return self.phi.shape[0]

    @property
    def min_ring_count(self) -> int:
        """Valid samples a ring needs to be used: :func:`min_ring_count` of the plan."""
        return min_ring_count(self.min_ring_fraction, self.phi_bins)


def min_ring_count(min_ring_fraction: float, phi_bins: int) -> int:
    """The number of valid samples (of ``phi_bins``) from which a ring is used.

    ``ceil(min_ring_fraction * P)``, and at least 1: a ring without a valid
    sample is never used.
    """
    return max(1, math.ceil(min_ring_fraction * phi_bins - 1e-9))


class PolarImages(NamedTuple):
    """A batch of images resampled onto a polar grid.

    Attributes
    ----------
    values : (B, Q, P) array
        Interpolated intensities; exactly 0 where ``valid`` is False.
    valid : (B, Q, P) bool array
        The validity mask ``M[k, p]`` of docs/ccf.md §1.
    radius : (Q,) float64 ndarray
        Radial bin centres in pixels.
    phi : (P,) float64 ndarray
        Angles in radians.
    """

    values: Any
    valid: Any
    radius: np.ndarray
    phi: np.ndarray


def default_r_max(shape: tuple[int, int], center: tuple[float, float]) -> float:
    """The largest radius whose whole circle lies on the detector.

    Parameters
    ----------
    shape : (int, int)
        Detector shape ``(H, W)``.
    center : (float, float)
        Beam centre ``(cx, cy)`` in pixels.

    Returns
    -------
    float
        ``min(cx, cy, W - 1 - cx, H - 1 - cy)`` in pixels.
    """
    height, width = shape
    cx, cy = center
    return float(min(cx, cy, width - 1 - cx, height - 1 - cy))


@dataclass(frozen=True)
class RingGrid:
    """The polar grid: the settings of :func:`make_polar_plan` besides the geometry.

    One object that travels from the build's recipe (or :func:`compute_maps`'s
    keywords) to the plan; its defaults are the library's (docs/ccf.md). The
    command-line options are made from its fields (:mod:`ccfkit.cli_options`).

    Attributes
    ----------
    q_bins : int
        Number of radial bins ``Q`` (maps are Q x Q).
    phi_bins : int
        Number of angular samples ``P`` (even, so that ``P / 2`` orders exist).
    r_min : float or "auto"
        Inner radius in pixels (the paper's: 0); ``"auto"``: the smallest
        radius at which rings become usable under the mask; rings further out
        that the mask leaves unusable stay, unused.
    r_max : float or None
        Outer radius in pixels; none: the largest full circle
        (:func:`default_r_max`).
    min_ring_fraction : float in [0, 1]
        A ring with a smaller fraction of valid samples is unused: all its
        samples are invalid (docs/ccf.md, "Usable rings"). 0 keeps every ring
        with at least one valid sample.
    q_range : (float, float) or None
        Rings placed in momentum transfer instead of pixel radius: the Q ring
        centres at equal steps in ``|q| = 4 pi sin(theta) / lambda`` (1/nm)
        over [QMIN, QMAX], each at the pixel radius that sees it through the
        detector's distance, pixel size and the wavelength (docs/ccf.md,
        "Rings in momentum transfer"), so that detectors of other geometries
        give the same rings. Excludes r_min and r_max.

    Raises
    ------
    ValueError
        Non-positive bin counts, an odd ``phi_bins``, a fraction outside
        [0, 1], an ``r_min`` that is neither a number nor "auto", a
        ``q_range`` that is not ``0 <= QMIN < QMAX``, or a ``q_range`` with
        an ``r_max`` or an ``r_min`` other than the defaults (0, "auto").
    """

    q_bins: int = 224
    phi_bins: int = 512
    r_min: float | str = field(
        default=0.0, metadata={"metavar": "PIXELS|auto", "words": ("auto",)}
    )
    r_max: float | None = None
    min_ring_fraction: float = field(default=0.5, metadata={"range": {"min": 0, "max": 1}})
    q_range: tuple[float, float] | None = field(default=None, metadata={"metavar": "QMIN QMAX"})

    def __post_init__(self):
        set_field = functools.partial(object.__setattr__, self)
        set_field("q_bins", int(self.q_bins))
        set_field("phi_bins", int(self.phi_bins))
        if self.q_bins < 1 or self.phi_bins < 2 or self.phi_bins % 2:
            raise ValueError(
                f"need q_bins >= 1 and an even phi_bins >= 2, got q_bins={self.q_bins}, "
                f"phi_bins={self.phi_bins}"
            )
        if self.phi_bins > MAX_PHI_BINS:  # beyond it float32 sums could overflow (HUGE_PIXEL)
            raise ValueError(f"phi_bins must be at most {MAX_PHI_BINS}, got {self.phi_bins}")
        if isinstance(self.r_min, str):
            if self.r_min != "auto":
                raise ValueError(f"r_min must be a number of pixels or 'auto', got {self.r_min!r}")
        else:
            set_field("r_min", float(self.r_min))
        if self.r_max is not None:
            set_field("r_max", float(self.r_max))
        set_field("min_ring_fraction", float(self.min_ring_fraction))
        for name in ("r_min", "r_max"):
            radius = getattr(self, name)
            if isinstance(radius, float) and not (math.isfinite(radius) and radius >= 0):
                raise ValueError(f"{name} must be a finite radius >= 0 in pixels, got {radius}")
        if not 0.0 <= self.min_ring_fraction <= 1.0:
            raise ValueError(f"min_ring_fraction must lie in [0, 1], got {self.min_ring_fraction}")
        if self.q_range is not None:
            set_field("q_range", _checked_q_range(self.q_range))
            if self.r_max is not None or self.r_min not in (0.0, "auto"):
                raise ValueError(
                    "give q_range (rings in momentum transfer) or r_min/r_max (in pixels), "
                    f"not both; got q_range={self.q_range}, r_min={self.r_min}, r_max={self.r_max}"
                )
            set_field("r_min", 0.0)  # the radii follow from q_range (the defaults give way)

    @property
    def ring_axis(self) -> str:
        """What the rings are placed on: ``"q"`` (momentum transfer) or ``"radius"`` (pixels)."""
        return "radius" if self.q_range is None else "q"

    @classmethod
    def resolve(cls, grid: RingGrid | None = None, **fields) -> RingGrid:
        """``grid``, or a :class:`RingGrid` of ``fields`` (giving both is a TypeError)."""
        if grid is None:
            return cls(**fields)
        if fields:
            raise TypeError(f"give either grid or {', '.join(fields)}, not both")
        return grid


def _checked_q_range(q_range) -> tuple[float, float]:
    """``(QMIN, QMAX)`` as floats; ValueError unless ``0 <= QMIN < QMAX``, both finite."""
    try:
        q_min, q_max = (float(value) for value in q_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"q_range must be two numbers QMIN QMAX (1/nm), got {q_range!r}"
        ) from None
    if not (0.0 <= q_min < q_max < math.inf):
        raise ValueError(f"q_range needs 0 <= QMIN < QMAX (1/nm), got {q_min}, {q_max}")
    return q_min, q_max


class PixelLayout(Protocol):
    """Where the pixels of a frame array lie: what a polar plan needs besides its grid.

    :class:`RegularGrid` is the plain ``(H, W)`` image; a detector made of
    modules (:class:`ccfkit.detector_geometry.DetectorGeometry`) is another.
    Implementations are hashable and picklable (they travel in a
    :class:`PlanSpec`).

    Attributes
    ----------
    shape : (int, int)
        ``(H, W)`` of the frame arrays the plan indexes (flat index ``y * W + x``).
    """

    shape: tuple[int, int]

    def default_center(self) -> tuple[float, float]:
        """The beam centre ``(cx, cy)`` when none is given, pixels."""

    def check_center(self, center: tuple[float, float]) -> None:
        """Raise ValueError for a centre the plan cannot be built around."""

    def default_r_max(self, center: tuple[float, float]) -> float:
        """The largest radius whose whole circle lies on the detector, pixels."""

    def bilinear_table(self, radius, phi, center, good):
        """``(index, weight, valid)`` of the samples ``radius x phi``, as :func:`_bilinear_table`."""


@dataclass(frozen=True)
class RegularGrid:
    """The pixels of a plain ``(H, W)`` image: pixel ``[y, x]`` at ``(x, y)``."""

    shape: tuple[int, int]

    def default_center(self) -> tuple[float, float]:
        height, width = self.shape
        return ((width - 1) / 2.0, (height - 1) / 2.0)

    def check_center(self, center: tuple[float, float]) -> None:
        height, width = self.shape
        cx, cy = center
        if not (0.0 <= cx <= width - 1 and 0.0 <= cy <= height - 1):
            raise ValueError(
                f"beam centre (cx, cy) = ({cx}, {cy}) lies outside the detector "
                f"(x in [0, {width - 1}], y in [0, {height - 1}])"
            )

    def default_r_max(self, center: tuple[float, float]) -> float:
        return default_r_max(self.shape, center)

    def bilinear_table(self, radius, phi, center, good):
        """:func:`_bilinear_table`, in one compiled pass (:mod:`ccfkit.bilinear`; equal bit for bit)."""
        from .bilinear import bilinear_table  # Numba: not loaded by importing this module

        return bilinear_table(radius, phi, center, good, _SNAP)


def make_polar_plan(
    shape: tuple[int, int],
    *,
    center: tuple[float, float] | None = None,
    mask: np.ndarray | None = None,
    grid: RingGrid | None = None,
    pixels: PixelLayout | None = None,
    scattering: ScatteringGeometry | None = None,
    **grid_fields,
) -> PolarPlan:
    """Build the bilinear polar-resampling table for one geometry and mask.

    Parameters
    ----------
    shape : (int, int)
        Detector shape ``(H, W)`` in pixels.
    center : (float, float), optional
        Beam centre ``(cx, cy)`` in pixels, ``cx`` along columns. Defaults to
        the middle of the detector, ``((W - 1) / 2, (H - 1) / 2)``.
    mask : (H, W) array_like of bool, optional
        True (or non-zero) for good pixels. Default: all good.
    grid : RingGrid, optional
        The radial and angular sampling, and which rings are used.
    pixels : PixelLayout, optional
        Where the pixels lie (a module stack with its geometry: its centre,
        default centre and ``r_max`` are in its own frame, pixels); default
        the plain image of ``shape``.
    scattering : ScatteringGeometry, optional
        The detector's pixel size and distance and the wavelength: what
        places the rings of a grid with ``q_range`` (required there, unused
        otherwise).
    **grid_fields
        Or the fields of :class:`RingGrid` as keywords (``q_bins``,
        ``phi_bins``, ``r_min``, ``r_max``, ``min_ring_fraction``,
        ``q_range``); those not given take :class:`RingGrid`'s defaults.

    Returns
    -------
    PolarPlan

    Raises
    ------
    ValueError
        For a centre off the detector, an empty radial range, a mask of
        another shape, a grid :class:`RingGrid` refuses, ``r_min="auto"``
        where no radius range has usable rings, or a ``q_range`` without
        ``scattering`` (or beyond 90 degrees of scattering angle).

    Examples
    --------
    >>> plan = make_polar_plan((259, 259), q_bins=16, phi_bins=32)
    >>> plan.radius.shape, plan.valid.all(), plan.ring_used.all()
    ((16,), True, True)
    """
    grid = RingGrid.resolve(grid, **grid_fields)
    q_bins, phi_bins, min_ring_fraction = grid.q_bins, grid.phi_bins, grid.min_ring_fraction
    height, width = _checked_shape(shape)
    pixels = RegularGrid((height, width)) if pixels is None else pixels
    if tuple(pixels.shape) != (height, width):
        raise ValueError(f"the pixel layout is {pixels.shape}, the images {(height, width)}")
    cx, cy = (float(c) for c in (pixels.default_center() if center is None else center))
    pixels.check_center((cx, cy))
    r_max = pixels.default_r_max((cx, cy)) if grid.r_max is None else grid.r_max
    good = _as_mask(mask, (height, width))
    phi = 2.0 * np.pi * np.arange(phi_bins) / phi_bins
    table = functools.partial(pixels.bilinear_table, center=(cx, cy), good=good)
    if grid.q_range is not None:
        radius, ranges = _momentum_transfer_radii(grid, scattering)
        plan = _plan_of_table(table, (height, width), (cx, cy), ranges, radius, phi,
                              min_ring_fraction)  # fmt: skip
        return replace(plan, ring_axis="q")
    r_min = grid.r_min
    if r_min == "auto":
        r_min = _auto_r_min(table, float(r_max), phi, q_bins, min_ring_fraction)
    r_min, r_max = float(r_min), float(r_max)
    if not (0.0 <= r_min < r_max):
        raise ValueError(
            f"need 0 <= r_min < r_max, got r_min={r_min}, r_max={r_max} "
            f"(beam centre ({cx}, {cy}) on a {height} x {width} detector)"
        )

    radius = r_min + (np.arange(q_bins) + 0.5) * (r_max - r_min) / q_bins
    ranges = (r_min, r_max)
    return _plan_of_table(table, (height, width), (cx, cy), ranges, radius, phi, min_ring_fraction)


def _momentum_transfer_radii(grid: RingGrid, scattering: ScatteringGeometry | None):
    """The pixel radii of rings at equal steps in ``|q|`` over ``grid.q_range``.

    Returns
    -------
    radius : (Q,) float64
        Pixels from the beam centre of ``q_k = q_min + (k + 0.5) (q_max - q_min) / Q``.
    ranges : (float, float)
        The radii of ``q_min`` and ``q_max``, pixels.
    """
    if scattering is None:
        raise ValueError(
            "q_range places the rings in momentum transfer: it needs the detector distance, "
            "pixel size and wavelength (a ScatteringGeometry)"
        )
    q = ring_momentum_transfer(grid.q_range, grid.q_bins)
    r_min, r_max = (float(r) for r in scattering.radius(list(grid.q_range)))
    return scattering.radius(q), (r_min, r_max)


def _plan_of_table(table, shape, center, ranges, radius, phi, min_ring_fraction) -> PolarPlan:
    """The :class:`PolarPlan` of the samples ``radius x phi`` that ``table`` interpolates.

    ``ranges`` is ``(r_min, r_max)``, pixels.
    Rings with fewer than :func:`min_ring_count` valid samples are unused: their
    samples become invalid, with index 0 and weight 0.
    """
    index, weight, valid = table(radius, phi)
    ring_used = valid.sum(axis=1) >= min_ring_count(min_ring_fraction, phi.shape[0])
    valid &= ring_used[:, None]
    np.multiply(index, valid[..., None], out=index)  # 0 where invalid, in place: the table's
    np.multiply(weight, valid[..., None], out=weight)  # arrays are this plan's own
    for array in (radius, phi, index, weight, valid, ring_used):
        array.flags.writeable = False
    return PolarPlan(
        shape=shape,
        center=center,
        radius=radius,
        phi=phi,
        index=index,
        weight=weight,
        valid=valid,
        r_min=ranges[0],
        r_max=ranges[1],
        min_ring_fraction=float(min_ring_fraction),
        ring_used=ring_used,
    )


def _checked_shape(shape) -> tuple[int, int]:
    """``(H, W)`` as ints; ValueError for a detector smaller than 2 x 2 pixels."""
    height, width = (int(n) for n in shape)
    if height < 2 or width < 2:
        raise ValueError(f"detector shape must be at least 2 x 2 pixels, got {shape}")
    return height, width


def _bilinear_table(radius, phi, center, good):
    """Bilinear neighbours, weights, validity of samples ``radius x phi`` (ccfkit.bilinear's oracle).

    Parameters
    ----------
    radius : (Q,) float64; phi : (P,) float64
    center : (float, float)
        ``(cx, cy)`` in pixels.
    good : (H, W) bool
        Good pixels.

    Returns
    -------
    index : (Q, P, 4) int64
        Flat indices of the four neighbours (clipped onto the detector).
    weight : (Q, P, 4) float64
    valid : (Q, P) bool
        The sample lies on the detector and every neighbour it needs is good.
    """
    height, width = good.shape
    cx, cy = center
    x = cx + radius[:, None] * np.cos(phi)[None, :]
    y = cy + radius[:, None] * np.sin(phi)[None, :]
    x0, fx = _split(x)
    y0, fy = _split(y)
    x1 = x0 + (fx > 0)
    y1 = y0 + (fy > 0)
    on_detector = (x0 >= 0) & (y0 >= 0) & (x1 <= width - 1) & (y1 <= height - 1)
    # Clip only to index the mask safely; off-detector samples are invalid anyway.
    x0c, x1c = np.clip(x0, 0, width - 1), np.clip(x1, 0, width - 1)
    y0c, y1c = np.clip(y0, 0, height - 1), np.clip(y1, 0, height - 1)
    needs_good = good[y0c, x0c] & good[y0c, x1c] & good[y1c, x0c] & good[y1c, x1c]
    corners = [(y0c, x0c), (y0c, x1c), (y1c, x0c), (y1c, x1c)]
    index = np.stack([y * width + x for y, x in corners], axis=-1)
    weight = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=-1)
    return index, weight, on_detector & needs_good


def _auto_r_min(table, r_max, phi, q_bins, min_ring_fraction) -> float:
    """``r_min="auto"``: the first radius (0.05 px grid) at which rings become usable.

    The rings a beam stop or a central hole leaves unusable are skipped, so
    the Q bins are spent where the mask leaves signal; rings further out that
    the mask leaves unusable (panel gaps, a detector edge inside ``r_max``)
    stay in the range as unused rings. ValueError when no ring is usable.

    The first usable radius of a fine grid starts the range; the first bin
    centre lies half a bin further out, so it is checked and the range moved
    out until that ring is usable too (past a narrow usable annulus inside
    a masked band, whose first ring falls in the band). The fine grid is
    searched in blocks from the centre outwards (the answer lies near the
    centre; a detector of a million pixels has ten thousand radii to look at).

    ``table(radius, phi)`` gives ``(index, weight, valid)``
    (:meth:`PixelLayout.bilinear_table` at the plan's centre and mask).
    """
    need = min_ring_count(min_ring_fraction, phi.shape[0])

    def usable(radius):
        return table(np.atleast_1d(radius), phi)[2].sum(axis=1) >= need

    fine = np.arange(0.0, r_max, _AUTO_STEP)
    for start in range(0, len(fine), _AUTO_BLOCK):  # every usable radius, block by block
        block = fine[start : start + _AUTO_BLOCK]
        starts = block[usable(block)]
        if starts.size:  # and the first ring of each: the first start whose ring is usable
            found = starts[usable(starts + 0.5 * (r_max - starts) / q_bins)]
            if found.size:
                return float(found[0])
    raise ValueError(
        f"r_min='auto': no ring out to r_max={r_max:.2f} px has at least "
        f"{min_ring_fraction:.0%} valid samples under this mask; give r_min, or a smaller "
        "min_ring_fraction"
    )


@dataclass(frozen=True)
class PlanSpec:
    """A small, hashable, picklable description of a polar plan.

    It is what travels to Dask workers (a 259 x 259 mask packs into 8 kB) and
    the key under which a process keeps the plans it built: :meth:`plan`
    builds each geometry once per process.

    Attributes: the detector ``shape``, the beam ``center``, the bit-packed
    mask (``None``: all pixels good), the :class:`RingGrid`, the
    :class:`PixelLayout` (``None``: the plain image of ``shape``) and the
    :class:`~ccfkit.geometry.ScatteringGeometry` (``None``: not known; a grid
    with ``q_range`` needs it).
    """

    shape: tuple[int, int]
    center: tuple[float, float] | None
    packed_mask: bytes | None
    grid: RingGrid = field(default_factory=RingGrid)
    pixels: PixelLayout | None = None
    scattering: ScatteringGeometry | None = None

    @classmethod
    def describe(
        cls,
        shape,
        *,
        center=None,
        mask=None,
        grid: RingGrid | None = None,
        pixels: PixelLayout | None = None,
        scattering: ScatteringGeometry | None = None,
    ) -> PlanSpec:
        """The spec of ``make_polar_plan(shape, center=..., mask=..., grid=..., pixels=..., ...)``.

        Raises ValueError for a mask of another shape than ``shape``.
        """
        shape = (int(shape[0]), int(shape[1]))
        return cls(
            shape=shape,
            center=None if center is None else (float(center[0]), float(center[1])),
            packed_mask=None if mask is None else np.packbits(_as_mask(mask, shape)).tobytes(),
            grid=RingGrid() if grid is None else grid,
            pixels=pixels,
            scattering=scattering,
        )

    @property
    def mask(self) -> np.ndarray | None:
        """The (H, W) bool mask, or None."""
        if self.packed_mask is None:
            return None
        bits = np.unpackbits(np.frombuffer(self.packed_mask, dtype=np.uint8))
        return bits[: math.prod(self.shape)].reshape(self.shape).astype(bool)

    def plan(self) -> PolarPlan:
        """The plan, built once per process and spec (the last few are kept)."""
        return _plan_of(self)


@functools.lru_cache(maxsize=4)
def _plan_of(spec: PlanSpec) -> PolarPlan:
    return make_polar_plan(
        spec.shape,
        center=spec.center,
        mask=spec.mask,
        grid=spec.grid,
        pixels=spec.pixels,
        scattering=spec.scattering,
    )


def _split(coordinate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer part and fractional offset of float64 pixel coordinates.

    Offsets within ``_SNAP`` of 0 or 1 snap to the pixel centre.
    """
    nearest = np.rint(coordinate)
    on_centre = np.abs(coordinate - nearest) < _SNAP
    coordinate = np.where(on_centre, nearest, coordinate)
    whole = np.floor(coordinate)
    return whole.astype(np.int64), coordinate - whole


def _as_mask(mask: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """A (H, W) bool array of good pixels from an optional user mask."""
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"mask has shape {mask.shape}, but the images are {shape}")
    return mask.astype(bool, copy=False)
