"""Simulated single-shot diffraction of droplet-like particles, labelled as in the paper.

The model (details, units and limits in ``docs/simulate.md``):

* A homogeneous sphere or spheroid (semi-axes ``a, a, c``, symmetry axis
  ``c_hat`` in any direction) scatters in the first Born (Rayleigh-Gans)
  approximation: the amplitude is ``V F(q)`` with
  ``F(q) = 3 (sin u - u cos u) / u^3`` and ``u = |q| R_eff(q_hat)``,
  ``R_eff^2 = a^2 (1 - (q_hat . c_hat)^2) + c^2 (q_hat . c_hat)^2``.
* ``q`` is the full 3-D momentum transfer on the Ewald sphere: a pixel at
  ``(x, y)`` metres from the beam centre on a flat detector at distance ``L``
  sees the scattering angle ``2 theta = atan(sqrt(x^2 + y^2) / L)``, so
  ``q = k (n - z_hat)`` with ``n = (x, y, L) / D``, ``D = sqrt(x^2 + y^2 + L^2)``,
  ``k = 2 pi / lambda`` and ``|q| = 4 pi sin(theta) / lambda``. No small-angle
  shortcut anywhere.
* Expected photons per pixel are ``|F|^2`` times the pixel's solid angle
  (``~ p^2 L / D^3``), scaled so that the good pixels receive ``fluence``
  photons on average; Poisson noise is optional.

Conventions: images are ``I[y, x]`` (row ``y``, column ``x``) with pixel
centres at integer coordinates; the beam centre is ``(cx, cy)`` in pixels;
lab axes are ``x`` along columns, ``y`` along rows, ``z`` along the beam.
Lengths inside this module are in nanometres and photon energies in eV; the
file writer (:mod:`ccfkit.io.cxi`) converts to SI.

Every frame is a pure function of ``(seed, index, config)``: its parameters
and its noise come from generators seeded with ``(seed, index, stream)``, so a
frame does not depend on how many frames are made, in what blocks, or by how
many threads.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from . import geometry

logger = logging.getLogger(__name__)

__all__ = [
    "EXCLUSIVE_GROUPS",
    "LABELS",
    "Detector",
    "FrameParameters",
    "Kind",
    "SimulationConfig",
    "assign_labels",
    "draw_examples",
    "draw_parameters",
    "example_frames",
    "expected_counts",
    "fringe_shift",
    "label_rules",
    "momentum_transfer",
    "parse_mix",
    "photon_energy_to_wavelength",
    "poisson_counts",
    "projected_semi_axes",
    "q_vectors",
    "render_frames",
    "sphere_form_factor",
    "visible_radius",
]

#: h c in eV nm: wavelength (nm) = HC_EV_NM / photon energy (eV).
HC_EV_NM = 1239.8419843320026


class Kind(enum.IntEnum):
    """What was drawn for a frame (the *cause*; the labels describe the *pattern*)."""

    SPHERE = 0
    OBLATE = 1
    PROLATE = 2
    EMPTY = 3


#: Label names, in the column order of the label array (paper Table 1 / Fig. 2).
LABELS = ("Spherical/Oblate", "Round", "Elliptical", "Prolate", "Streak", "Empty")

#: Groups of labels of which a frame carries at most one (paper §2, Fig. 2). The
#: first is also exhaustive: every frame is exactly one of them.
EXCLUSIVE_GROUPS = (("Spherical/Oblate", "Prolate", "Empty"), ("Round", "Elliptical"))

#: Subclass -> superordinate class: a frame with the subclass has the parent too.
PARENTS = {"Round": "Spherical/Oblate", "Elliptical": "Spherical/Oblate", "Streak": "Prolate"}

#: Below this many scattered photons a frame is labelled Empty (nothing to see).
EMPTY_BELOW_PHOTONS = 100.0
#: A pattern looks elliptical when, out to its last visible ring, its rings along
#: the long and the short axis are out of step by at least this many fringes.
VISIBLE_FRINGE_SHIFT = 0.5
#: Rings are visible out to where their maxima expect this many photons per pixel.
VISIBLE_PHOTONS = 1.0
#: A prolate particle is labelled Prolate when its projection is at least this
#: elongated (long / short semi-axis) *and* the elongation is visible.
PROLATE_MIN_ASPECT = 1.15
#: A Prolate pattern is a Streak when its projection is at least this elongated.
STREAK_MIN_ASPECT = 1.8

DEFAULT_MIX = {Kind.SPHERE: 0.5, Kind.OBLATE: 0.25, Kind.PROLATE: 0.2, Kind.EMPTY: 0.05}
#: ``--mix paper``: with the default ranges the label fractions come out within a
#: point of the paper's Table 1 (docs/simulate.md).
PAPER_MIX = {Kind.SPHERE: 0.72, Kind.OBLATE: 0.18, Kind.PROLATE: 0.07, Kind.EMPTY: 0.03}

# Random streams: frame parameters and photon noise are drawn independently.
_PARAM_STREAM, _NOISE_STREAM = 0, 1
# Uniform numbers drawn per frame for its parameters (see draw_parameters).
_N_UNIFORMS = 9


def photon_energy_to_wavelength(energy_ev):
    """Wavelength in nm of photons of ``energy_ev`` eV (array or scalar)."""
    return HC_EV_NM / np.asarray(energy_ev, dtype=np.float64)


def parse_mix(text: str | Mapping) -> dict[Kind, float]:
    """Parse a class mix such as ``"sphere=0.5,oblate=0.25,prolate=0.2,empty=0.05"``.

    Parameters
    ----------
    text : str or mapping
        Comma-separated ``kind=weight`` pairs (kinds: sphere, oblate, prolate,
        empty; missing kinds get weight 0), a mapping of the same, or
        ``"paper"`` (:data:`PAPER_MIX`).

    Returns
    -------
    dict of Kind -> float
        Weights normalised to sum 1.

    Raises
    ------
    ValueError
        Unknown kind, a weight that is not a finite number >= 0, or all zero.
    """
    if isinstance(text, str) and text.strip().lower() == "paper":
        text = PAPER_MIX
    if isinstance(text, Mapping):
        items = [(str(k.name if isinstance(k, Kind) else k), v) for k, v in text.items()]
    else:
        items = []
        for part in filter(None, (p.strip() for p in str(text).split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"mix entry {part!r} is not KIND=WEIGHT")
            items.append((key, value))
    weights = {kind: 0.0 for kind in Kind}
    names = ", ".join(k.name.lower() for k in Kind)
    for key, value in items:
        try:
            kind = Kind[key.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown kind {key.strip()!r} in the mix; use {names}") from None
        try:
            weight = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"weight {value!r} of {kind.name.lower()} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"weight of {kind.name.lower()} must be a finite number >= 0")
        weights[kind] = weight
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("the mix has no positive weight")
    return {kind: w / total for kind, w in weights.items()}


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that defines a simulated data set, apart from the seed and N.

    Attributes
    ----------
    size : int
        Detector side in pixels (square, ``size x size``).
    distance : float
        Sample-detector distance in metres (the paper's MCP: 0.065).
    max_angle : float
        Scattering angle (degrees) seen at the detector half-width; sets the
        pixel size ``2 L tan(max_angle) / size`` (paper: 30).
    radius : (float, float)
        Volume-equivalent particle radius range in nm (uniform).
    photon_energy : (float, float)
        Photon energy range in eV (uniform; the wavelength varies per frame).
    fluence : (float, float)
        Expected scattered photons per frame on the good pixels (log-uniform).
    mix : dict of Kind -> float
        Probabilities of sphere, oblate, prolate and empty frames.
    oblate_ratio, prolate_ratio : (float, float)
        Ranges of ``c / a`` for oblate (< 1) and prolate (> 1) spheroids.
    noise : bool
        Poisson photon noise (else the expected counts are written).
    background : float
        Expected stray/dark photons per good pixel per frame (flat).
    jitter : float
        Radius in pixels of the disc in which the beam centre is drawn
        around the detector centre.
    hole_radius : float
        Radius in pixels of the central hole of the detector (masked).
    """

    size: int = 259
    distance: float = 0.065
    max_angle: float = 30.0
    radius: tuple[float, float] = (150.0, 600.0)
    photon_energy: tuple[float, float] = (19.0, 35.0)
    fluence: tuple[float, float] = (1e5, 1e6)
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))
    oblate_ratio: tuple[float, float] = (0.55, 0.95)
    prolate_ratio: tuple[float, float] = (1.25, 3.0)
    noise: bool = True
    background: float = 0.01
    jitter: float = 3.0
    hole_radius: float = 10.0

    def __post_init__(self):
        object.__setattr__(self, "mix", parse_mix(self.mix))
        for name in ("radius", "photon_energy", "fluence", "oblate_ratio", "prolate_ratio"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError, with a one-line reason, for an impossible configuration."""

        def span(name, value, low=0.0, high=math.inf, low_ok=False):
            lo, hi = value
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"{name} must be finite, got {lo:g} {hi:g}")
            if lo > hi:
                raise ValueError(f"{name}: the minimum {lo:g} exceeds the maximum {hi:g}")
            if (lo < low if low_ok else lo <= low) or hi > high:
                lower = ">=" if low_ok else ">"
                bound = f" and <= {high:g}" if math.isfinite(high) else ""
                raise ValueError(f"{name} must lie {lower} {low:g}{bound}, got {lo:g} {hi:g}")

        if not 16 <= int(self.size) <= 8192:
            raise ValueError(f"size must be between 16 and 8192 pixels, got {self.size}")
        if not (math.isfinite(self.distance) and self.distance > 0):
            raise ValueError(f"distance must be > 0 m, got {self.distance:g}")
        if not 0 < self.max_angle < 90:
            raise ValueError(f"max_angle must lie in (0, 90) degrees, got {self.max_angle:g}")
        span("radius (nm)", self.radius)
        span("photon energy (eV)", self.photon_energy)
        span("fluence (photons per frame)", self.fluence)
        span("oblate ratio c/a", self.oblate_ratio, 0.0, 1.0)
        span("prolate ratio c/a", self.prolate_ratio, 1.0, low_ok=True)
        if not (math.isfinite(self.background) and self.background >= 0):
            raise ValueError(f"background must be >= 0 photons per pixel, got {self.background:g}")
        if not (math.isfinite(self.jitter) and 0 <= self.jitter <= self.size / 4):
            raise ValueError(
                f"jitter must lie between 0 and size/4 = {self.size / 4:g} px, got {self.jitter:g}"
            )
        if not (math.isfinite(self.hole_radius) and 0 <= self.hole_radius < (self.size - 1) / 2):
            raise ValueError(
                f"hole radius must lie between 0 and {(self.size - 1) / 2:g} px, "
                f"got {self.hole_radius:g}"
            )

    @property
    def detector(self) -> Detector:
        return Detector.from_config(self)

    def to_dict(self) -> dict:
        """JSON-ready parameters (units in the key names)."""
        out = asdict(self)
        out["mix"] = {kind.name.lower(): weight for kind, weight in self.mix.items()}
        rename = {
            "distance": "distance_m",
            "max_angle": "max_angle_deg",
            "radius": "radius_nm",
            "photon_energy": "photon_energy_ev",
            "fluence": "fluence_photons",
            "background": "background_photons_per_pixel",
            "jitter": "jitter_px",
            "hole_radius": "hole_radius_px",
        }
        return {rename.get(k, k): (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    def aliasing_warning(self) -> str | None:
        """A sentence when the finest fringes are sampled by fewer than 2 pixels."""
        det = self.detector
        ratio = max(self.prolate_ratio[1], 1.0) if self.mix[Kind.PROLATE] > 0 else 1.0
        longest = self.radius[1] * ratio ** (2 / 3)  # largest semi-axis, nm
        wavelength = HC_EV_NM / self.photon_energy[1]
        half = det.half_width
        # Fringe period along |q| is pi / R; |q| per pixel at the edge:
        q_edge = momentum_transfer(np.array([half - 1.0, half]), det, wavelength)
        pixels_per_fringe = (math.pi / longest) / float(q_edge[1] - q_edge[0])
        if pixels_per_fringe < 2:
            return (
                f"fringes of a {longest:.0f} nm semi-axis at {self.photon_energy[1]:g} eV are "
                f"{pixels_per_fringe:.1f} px apart at the detector edge: they alias "
                f"(use a larger --size or smaller particles)"
            )
        return None


@dataclass(frozen=True)
class Detector:
    """A square flat detector perpendicular to the beam.

    Attributes
    ----------
    shape : (int, int)
        ``(H, W)`` pixels.
    distance : float
        Sample-detector distance in m.
    pixel_size : float
        Pixel pitch in m (square pixels).
    hole_radius : float
        Radius in pixels of the central hole, centred on :attr:`nominal_center`.
    """

    shape: tuple[int, int]
    distance: float
    pixel_size: float
    hole_radius: float

    @classmethod
    def from_config(cls, config: SimulationConfig) -> Detector:
        size = int(config.size)
        pixel = 2 * config.distance * math.tan(math.radians(config.max_angle)) / size
        return cls((size, size), float(config.distance), pixel, float(config.hole_radius))

    @property
    def nominal_center(self) -> tuple[float, float]:
        """The detector's middle ``(cx, cy)`` in pixels: the hole's centre."""
        return ((self.shape[1] - 1) / 2, (self.shape[0] - 1) / 2)

    @property
    def half_width(self) -> float:
        """Distance in pixels from the middle to the detector edge (``min(H, W) / 2``)."""
        return min(self.shape) / 2

    def good_pixels(self) -> np.ndarray:
        """(H, W) bool mask, True = good: every pixel outside the central hole."""
        cx, cy = self.nominal_center
        y, x = np.ogrid[: self.shape[0], : self.shape[1]]
        return (x - cx) ** 2 + (y - cy) ** 2 >= self.hole_radius**2


@dataclass(frozen=True)
class FrameParameters:
    """What was drawn for ``N`` frames (a struct of arrays).

    Attributes
    ----------
    index : (N,) int64
        Frame indices (the ``index`` of ``(seed, index)``).
    kind : (N,) uint8
        :class:`Kind` values.
    radius : (N,) float64
        Volume-equivalent radius ``(a^2 c)^(1/3)`` in nm; 0 for empty frames.
    semi_axes : (N, 2) float64
        ``(a, c)`` in nm: ``a`` twice (equator), ``c`` along the symmetry axis.
    axis : (N, 3) float64
        Unit vector ``c_hat`` of the symmetry axis in lab coordinates
        ``(x, y, z)``, ``z`` along the beam; isotropic.
    photon_energy : (N,) float64
        eV.
    wavelength : (N,) float64
        nm.
    fluence : (N,) float64
        Expected scattered photons on the good pixels; 0 for empty frames.
    center : (N, 2) float64
        True beam centre ``(cx, cy)`` in pixels.
    """

    index: np.ndarray
    kind: np.ndarray
    radius: np.ndarray
    semi_axes: np.ndarray
    axis: np.ndarray
    photon_energy: np.ndarray
    wavelength: np.ndarray
    fluence: np.ndarray
    center: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def take(self, rows) -> FrameParameters:
        """The parameters of a subset of frames (``rows`` index these arrays)."""
        return FrameParameters(**{k: v[rows] for k, v in self.__dict__.items()})


def draw_parameters(config: SimulationConfig, seed: int, indices) -> FrameParameters:
    """Draw the particle, beam and fluence of each frame.

    Frame ``i`` uses only ``default_rng([seed, i, 0])`` (9 uniforms), so its
    parameters do not depend on the other frames.

    Parameters
    ----------
    config : SimulationConfig
    seed : int
        >= 0.
    indices : (N,) array_like of int
        Frame indices, >= 0.

    Returns
    -------
    FrameParameters
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if seed < 0 or (indices.size and indices.min() < 0):
        raise ValueError("seed and frame indices must be >= 0")
    u = np.empty((indices.size, _N_UNIFORMS))
    for row, index in enumerate(indices):
        u[row] = np.random.default_rng([seed, int(index), _PARAM_STREAM]).random(_N_UNIFORMS)

    edges = np.cumsum([config.mix[k] for k in Kind])
    kind = np.minimum(np.searchsorted(edges, u[:, 0], side="right"), len(Kind) - 1)
    kind = kind.astype(np.uint8)
    empty = kind == Kind.EMPTY

    radius = config.radius[0] + (config.radius[1] - config.radius[0]) * u[:, 1]
    ratio = np.ones(indices.size)
    for k, (lo, hi) in ((Kind.OBLATE, config.oblate_ratio), (Kind.PROLATE, config.prolate_ratio)):
        sel = kind == k
        ratio[sel] = lo + (hi - lo) * u[sel, 2]
    a = radius * ratio ** (-1 / 3)  # a^2 c = radius^3 with c = ratio a
    semi_axes = np.stack([a, a * ratio], axis=1)

    cos_beta = 2 * u[:, 3] - 1  # isotropic: cos(beta) uniform in [-1, 1]
    sin_beta = np.sqrt(np.maximum(0.0, 1 - cos_beta**2))
    azimuth = 2 * np.pi * u[:, 4]
    axis = np.stack([sin_beta * np.cos(azimuth), sin_beta * np.sin(azimuth), cos_beta], axis=1)

    energy = (
        config.photon_energy[0] + (config.photon_energy[1] - config.photon_energy[0]) * u[:, 5]
    )
    lo, hi = config.fluence
    fluence = lo * (hi / lo) ** u[:, 6]  # log-uniform

    shift = config.jitter * np.sqrt(u[:, 7])  # uniform in a disc
    turn = 2 * np.pi * u[:, 8]
    cx0, cy0 = Detector.from_config(config).nominal_center
    center = np.stack([cx0 + shift * np.cos(turn), cy0 + shift * np.sin(turn)], axis=1)

    radius[empty] = 0.0
    semi_axes[empty] = 0.0
    fluence[empty] = 0.0
    return FrameParameters(
        index=indices,
        kind=kind,
        radius=radius,
        semi_axes=semi_axes,
        axis=axis,
        photon_energy=energy,
        wavelength=photon_energy_to_wavelength(energy),
        fluence=fluence,
        center=center,
    )


def projected_semi_axes(params: FrameParameters) -> np.ndarray:
    """Semi-axes of the particle's shadow on the detector plane (projection along z).

    A spheroid ``(a, a, c)`` whose axis makes the angle ``beta`` with the beam
    projects onto an ellipse with semi-axes ``a`` and
    ``sqrt(a^2 cos^2 beta + c^2 sin^2 beta)``. In the small-angle limit the
    pattern is that ellipse's Fourier transform: elongated the other way, by
    the same ratio.

    Returns
    -------
    (N, 2) float64
        ``(long, short)`` semi-axes in nm.
    """
    a, c = params.semi_axes[:, 0], params.semi_axes[:, 1]
    cos2 = params.axis[:, 2] ** 2
    b = np.sqrt(a**2 * cos2 + c**2 * (1 - cos2))
    return np.stack([np.maximum(a, b), np.minimum(a, b)], axis=1)


def visible_radius(params: FrameParameters, detector: Detector, *, chunk: int = 4096):
    """How far out (pixels from the beam centre) the rings carry >= 1 photon per pixel.

    An estimate for the labels, from a sphere of the projection's mean radius
    ``R_s = sqrt(long * short)``: the expected counts at a ring maximum are
    ``fluence * (9 / u^4) cos^3(2 theta) / Z`` (the envelope of ``|F|^2``
    times the solid angle), with ``Z`` the sum of ``|F|^2 cos^3(2 theta)``
    over the annulus between the hole and the detector half-width. The
    result is the largest radius where that reaches ``VISIBLE_PHOTONS``,
    between the hole radius and the half-width.

    Returns
    -------
    (N,) float64
        Pixels; the hole radius for empty frames.
    """
    inner = max(detector.hole_radius, 0.5)
    radius = np.linspace(inner, detector.half_width, 512)
    two_theta = np.arctan(radius * detector.pixel_size / detector.distance)
    s = 2 * np.sin(two_theta / 2)  # |q| / k
    cos3 = np.cos(two_theta) ** 3
    ring = 2 * np.pi * radius * np.gradient(radius)  # pixels per radial step
    long_short = projected_semi_axes(params)
    mean_radius = np.sqrt(long_short[:, 0] * long_short[:, 1])
    out = np.full(len(params), inner)
    for lo in range(0, len(params), chunk):
        rows = slice(lo, lo + chunk)
        k = 2 * np.pi / params.wavelength[rows]
        u = (k * mean_radius[rows])[:, None] * s  # (n, G)
        total = (sphere_form_factor(u) ** 2 * cos3 * ring).sum(axis=1)  # Z
        with np.errstate(divide="ignore", invalid="ignore"):
            peak = params.fluence[rows, None] * 9 / np.maximum(u, 1e-9) ** 4 * cos3
            peak /= total[:, None]
        bright = peak >= VISIBLE_PHOTONS
        last = np.where(
            bright.any(axis=1), len(radius) - 1 - np.argmax(bright[:, ::-1], axis=1), 0
        )
        out[rows] = np.where(total > 0, radius[last], inner)
    return out


def fringe_shift(params: FrameParameters, detector: Detector, visible=None) -> np.ndarray:
    """By how many fringes the rings along the pattern's two axes are out of step.

    ``q_vis (long - short) / pi``: along ``|q|`` the fringes of a radius
    ``R`` are ``pi / R`` apart, so out to ``q_vis`` the directions of the
    projection's long and short semi-axes count ``q_vis R / pi`` fringes each.
    ``q_vis`` is ``|q|`` at :func:`visible_radius`: rings that carry no
    photons show no ellipticity.

    Parameters
    ----------
    params : FrameParameters
    detector : Detector
    visible : (N,) array, optional
        :func:`visible_radius`, when already computed.

    Returns
    -------
    (N,) float64
    """
    long_short = projected_semi_axes(params)
    visible = visible_radius(params, detector) if visible is None else visible
    q_vis = momentum_transfer(visible, detector, params.wavelength)
    return q_vis * (long_short[:, 0] - long_short[:, 1]) / np.pi


def assign_labels(params: FrameParameters, detector: Detector, shift=None) -> np.ndarray:
    """Labels of what each pattern shows, with the paper's rules (§2, Fig. 2).

    Rules (thresholds are module constants):

    * ``Empty``: no particle, or fewer than ``EMPTY_BELOW_PHOTONS`` scattered
      photons expected.
    * ``Prolate``: a prolate particle whose projection is elongated by at
      least ``PROLATE_MIN_ASPECT`` *and* visibly so (``fringe_shift >=
      VISIBLE_FRINGE_SHIFT``). A prolate particle seen nearly end-on looks
      round and is not labelled Prolate.
    * ``Spherical/Oblate``: every other non-empty frame.
    * ``Elliptical``: Spherical/Oblate with a visible ellipticity
      (``fringe_shift >= VISIBLE_FRINGE_SHIFT``); ``Round`` otherwise.
    * ``Streak``: Prolate with a projection elongated by at least
      ``STREAK_MIN_ASPECT``.

    So Spherical/Oblate, Prolate and Empty are exclusive and exhaustive, and
    Round and Elliptical are exclusive (:data:`EXCLUSIVE_GROUPS`).

    Parameters
    ----------
    params : FrameParameters
    detector : Detector
    shift : (N,) array, optional
        :func:`fringe_shift`, when already computed.

    Returns
    -------
    (N, C) uint8
        Columns in the order of :data:`LABELS`.
    """
    long_short = projected_semi_axes(params)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(long_short[:, 1] > 0, long_short[:, 0] / long_short[:, 1], 1.0)
    shift = fringe_shift(params, detector) if shift is None else shift
    visible = shift >= VISIBLE_FRINGE_SHIFT
    empty = (params.kind == Kind.EMPTY) | (params.fluence < EMPTY_BELOW_PHOTONS)
    prolate = ~empty & (params.kind == Kind.PROLATE) & (aspect >= PROLATE_MIN_ASPECT) & visible
    spherical = ~empty & ~prolate
    columns = {
        "Spherical/Oblate": spherical,
        "Round": spherical & ~visible,
        "Elliptical": spherical & visible,
        "Prolate": prolate,
        "Streak": prolate & (aspect >= STREAK_MIN_ASPECT),
        "Empty": empty,
    }
    return np.stack([columns[name] for name in LABELS], axis=1).astype(np.uint8)


def label_rules() -> str:
    """The labelling rules of :func:`assign_labels` in one paragraph (stored in files)."""
    return (
        f"Empty: no particle, or < {EMPTY_BELOW_PHOTONS:g} scattered photons. "
        f"Prolate: a prolate particle whose projection has aspect >= {PROLATE_MIN_ASPECT:g} "
        f"and fringe_shift >= {VISIBLE_FRINGE_SHIFT:g}. Spherical/Oblate: every other "
        f"non-empty frame; Elliptical if fringe_shift >= {VISIBLE_FRINGE_SHIFT:g}, else Round. "
        f"Streak: Prolate with projected aspect >= {STREAK_MIN_ASPECT:g}. fringe_shift = "
        "q_vis (long - short) / pi, q_vis = |q| out to where ring maxima expect "
        f">= {VISIBLE_PHOTONS:g} photon per pixel."
    )


def momentum_transfer(r_px, detector: Detector, wavelength_nm):
    """``|q|`` in 1/nm at ``r_px`` pixels from the beam centre (wide angle).

    ``2 theta = atan(r p / L)``, ``|q| = 4 pi sin(theta) / lambda``.

    Parameters
    ----------
    r_px : array_like
        Distances from the beam centre, pixels.
    detector : Detector
    wavelength_nm : array_like
        Broadcast against ``r_px``.

    Returns
    -------
    ndarray of float64, 1/nm
    """
    return geometry.momentum_transfer(
        r_px, pixel_size=detector.pixel_size, distance=detector.distance,
        wavelength_nm=wavelength_nm,
    )  # fmt: skip


def q_vectors(detector: Detector, center: tuple[float, float], wavelength_nm: float) -> np.ndarray:
    """The 3-D momentum transfer of every pixel (Ewald sphere), float64 reference.

    Returns
    -------
    (3, H, W) float64
        ``(qx, qy, qz)`` in 1/nm, ``q = k (n - z_hat)``; ``qz <= 0``.
    """
    height, width = detector.shape
    x = (np.arange(width) - center[0]) * detector.pixel_size
    y = (np.arange(height) - center[1]) * detector.pixel_size
    x, y = np.meshgrid(x, y)
    dist = np.sqrt(x**2 + y**2 + detector.distance**2)
    k = 2 * np.pi / wavelength_nm
    return np.stack([k * x / dist, k * y / dist, k * (detector.distance / dist - 1)])


def sphere_form_factor(u):
    """``3 (sin u - u cos u) / u^3``, 1 at ``u = 0``; float64, stable for small ``u``."""
    u = np.asarray(u, dtype=np.float64)
    small = np.abs(u) < 0.1
    safe = np.where(small, 1.0, u)
    exact = 3 * (np.sin(safe) - safe * np.cos(safe)) / safe**3
    u2 = u * u
    series = 1 - u2 / 10 + u2 * u2 / 280 - u2**3 / 15120
    return np.where(small, series, exact)


def expected_counts(
    params: FrameParameters,
    detector: Detector,
    good: np.ndarray | None = None,
    background: float = 0.0,
) -> np.ndarray:
    """Expected photons per pixel (no noise) for a batch of frames.

    ``E = fluence * w / sum_good(w) + background`` on good pixels, 0 on
    masked ones, with ``w = |F(q)|^2 (L / D)^3`` (form factor squared times
    the flat-detector solid angle ``p^2 L / D^3`` up to a constant). Empty
    frames get the background only.

    Parameters
    ----------
    params : FrameParameters
        ``B`` frames.
    detector : Detector
    good : (H, W) bool, optional
        True = good pixel; default ``detector.good_pixels()``.
    background : float
        Photons per good pixel per frame.

    Returns
    -------
    (B, H, W) float32
    """
    good = detector.good_pixels() if good is None else np.asarray(good, dtype=bool)
    good32 = good.astype(np.float32)
    height, width = detector.shape
    out = np.empty((len(params), height, width), dtype=np.float32)
    pixel_nm = detector.pixel_size * 1e9
    dist_nm = detector.distance * 1e9
    cols = np.arange(width, dtype=np.float64)
    rows = np.arange(height, dtype=np.float64)[:, None]
    for b in range(len(params)):
        if params.kind[b] == Kind.EMPTY or params.fluence[b] <= 0:
            out[b] = np.float32(background) * good32
            continue
        cx, cy = params.center[b]
        _pattern(
            (cols - cx) * pixel_nm,
            (rows - cy) * pixel_nm,
            dist_nm,
            params.wavelength[b],
            params.semi_axes[b],
            params.axis[b],
            good32,
            out=out[b],
        )
        total = out[b].sum(dtype=np.float64)
        out[b] *= np.float32(params.fluence[b] / total) if total > 0 else np.float32(0)
        if background:
            out[b] += np.float32(background) * good32
    return out


def _pattern(x, y, dist, wavelength, semi_axes, axis, good32, out):
    """Unnormalised expected counts ``|F/3|^2 (L/D)^3`` on good pixels, into ``out``.

    ``x`` (W,), ``y`` (H, 1): pixel offsets from the beam centre; ``dist``:
    the detector distance; all in nm (float64; the (H, W) work is float32, in
    place). With ``n = (x, y, L) / D`` and ``q / k = n - z_hat``:

    * ``|q/k|^2 = 2 (1 - L/D) = 2 t (L/D) / (D/L + 1)`` with ``t = (x^2 + y^2) / L^2``
      (the second form does not cancel near the beam centre),
    * ``(q/k) . c_hat = (x c_x + y c_y + L c_z) / D - c_z``,
    * ``u^2 = k^2 (a^2 |q/k|^2 + (c^2 - a^2) ((q/k) . c_hat)^2)``.

    The last difference cancels in float32 near the centre for ``c_z ~ 1``,
    which moves ``u`` there by ~1e-5 relative: far below anything visible.
    """
    a, c = float(semi_axes[0]), float(semi_axes[1])
    k = 2 * np.pi / float(wavelength)
    f32 = np.float32
    t = np.add(f32(x / dist) ** 2, f32(y / dist) ** 2, dtype=np.float32)
    d_over_l = np.add(t, f32(1), out=out)
    np.sqrt(d_over_l, out=d_over_l)
    nz = np.reciprocal(d_over_l)  # L / D
    d_over_l += f32(1)
    s2 = t  # |q/k|^2 / 2
    s2 *= nz
    s2 /= d_over_l
    # dot = (x c_x / L + y c_y / L + c_z) * (L / D) - c_z
    dot = np.add(f32(x * axis[0] / dist + axis[2]), f32(y * axis[1] / dist), out=out)
    dot *= nz
    dot -= f32(axis[2])
    dot *= dot
    # u^2 / (2 (k a)^2) = |q/k|^2 / 2 + ((c/a)^2 - 1) dot^2 / 2
    dot *= f32((c * c - a * a) / (2 * a * a))
    u = s2
    u += dot
    u *= f32(2 * (k * a) ** 2)
    np.maximum(u, 0, out=u)  # c < a can round u^2 a hair below 0 at the centre
    np.sqrt(u, out=u)
    f = _form_factor32(u, scratch=dot)
    f *= f
    nz3 = np.multiply(nz, nz, out=dot)
    nz3 *= nz
    nz3 *= good32
    np.multiply(f, nz3, out=out)
    return out


def _form_factor32(u, scratch):
    """``(sin u - u cos u) / u^3`` (the form factor / 3) in float32, in place of ``u``.

    ``u >= 0``; a series replaces the cancelling difference below 0.3.
    """
    small = np.flatnonzero(u.ravel() < 0.3)
    small_u2 = u.ravel()[small].astype(np.float64) ** 2
    cube = np.multiply(u, u, out=scratch)
    cube *= u
    cos = np.cos(u)
    cos *= u
    np.sin(u, out=u)
    u -= cos
    with np.errstate(divide="ignore", invalid="ignore"):
        u /= cube
    if small.size:
        u.ravel()[small] = (1 - small_u2 / 10 + small_u2**2 / 280 - small_u2**3 / 15120) / 3
    return u


def poisson_counts(expected: np.ndarray, rng: np.random.Generator, *, cut: float = 3.0):
    """Poisson samples of ``expected`` (counts), fast for mostly-dim images.

    Pixels with ``expected <= cut`` are sampled by inverting the Poisson CDF
    with one float32 uniform number each (most stop at 0 after one compare);
    brighter ones use ``rng.poisson``. Exact up to the uniforms' 24-bit
    resolution (probabilities are off by < 6e-8).

    Parameters
    ----------
    expected : ndarray of float, >= 0
    rng : numpy.random.Generator
    cut : float
        Where the inversion hands over to ``rng.poisson``.

    Returns
    -------
    ndarray of float32, the shape of ``expected``
    """
    lam = np.ascontiguousarray(expected, dtype=np.float32).reshape(1, -1)
    return _poisson_rows(lam, [rng], cut).reshape(np.shape(expected))


def _poisson_rows(lam: np.ndarray, rngs, cut: float = 3.0) -> np.ndarray:
    """Poisson samples of each row of ``lam`` (B, M) float32, row ``b`` from ``rngs[b]``.

    Row ``b``'s result depends only on ``lam[b]`` and ``rngs[b]``; the CDF
    inversion runs over all rows at once (few, large NumPy calls: threads
    running this in parallel do not queue for the GIL).
    """
    rows, size = lam.shape
    out = np.zeros((rows, size), dtype=np.float32)
    uniform = np.empty((rows, size), dtype=np.float32)  # 24-bit, in [0, 1 - 2^-24]
    for b, rng in enumerate(rngs):
        bright = np.flatnonzero(lam[b] > cut)
        if bright.size:
            out[b, bright] = rng.poisson(lam[b, bright].astype(np.float64))
        rng.random(out=uniform[b], dtype=np.float32)
    lam, out, uniform = lam.ravel(), out.ravel(), uniform.ravel()
    p_zero = np.exp(-lam)  # float32
    todo = np.flatnonzero(uniform > p_zero)  # count >= 1 (or a bright pixel)
    todo = todo[lam[todo] <= cut]
    lam_t = lam[todo].astype(np.float64)
    term = p_zero[todo].astype(np.float64)  # P(X = k), k = 0
    cdf = term.copy()  # P(X <= k)
    u_t = uniform[todo].astype(np.float64)
    # The first few steps without compacting (most pixels stop within them) ...
    count = np.ones(todo.size, dtype=np.float32)  # X = 1 + #{k >= 1: u > P(X <= k)}
    steps = 3
    for k in range(1, steps + 1):
        term *= lam_t
        term *= 1.0 / k
        cdf += term
        count += u_t > cdf
    out[todo] = count
    # ... then only the pixels still above the CDF.
    stay = u_t > cdf
    todo, lam_t, term, cdf, u_t = todo[stay], lam_t[stay], term[stay], cdf[stay], u_t[stay]
    k = steps
    limit = int(cut * 4 + 40)  # P(X > limit | lam <= cut) < 1e-14
    while todo.size:
        k += 1
        term *= lam_t
        term *= 1.0 / k
        cdf += term
        stay = u_t > cdf
        if k >= limit:
            stay[:] = False
        out[todo[~stay]] = k
        todo, lam_t, term, cdf, u_t = todo[stay], lam_t[stay], term[stay], cdf[stay], u_t[stay]
    return out.reshape(rows, size)


def render_frames(
    params: FrameParameters,
    config: SimulationConfig,
    seed: int,
    good: np.ndarray | None = None,
) -> np.ndarray:
    """The data of a batch of frames: expected counts, with Poisson noise if configured.

    Frame ``i``'s noise comes from ``Generator(SFC64(SeedSequence([seed, i, 1])))``
    alone (SFC64: the fastest of NumPy's bit generators).

    Returns
    -------
    (B, H, W) float32
        Photon counts (whole numbers with noise); 0 on masked pixels.
    """
    detector = config.detector
    good = detector.good_pixels() if good is None else good
    expected = expected_counts(params, detector, good, config.background)
    if not config.noise:
        return expected
    rngs = [
        np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, int(i), _NOISE_STREAM])))
        for i in params.index
    ]
    return _poisson_rows(expected.reshape(len(params), -1), rngs).reshape(expected.shape)


# --- examples ------------------------------------------------------------------------------

#: The panels of the example grid: a title and the rule a frame must satisfy.
EXAMPLE_PANELS = (
    ("Spherical/Oblate (sphere)", lambda lab, kind: lab["Round"] and kind == Kind.SPHERE),
    ("Spherical/Oblate (oblate)", lambda lab, kind: lab["Round"] and kind == Kind.OBLATE),
    ("Elliptical", lambda lab, kind: lab["Elliptical"]),
    ("Prolate", lambda lab, kind: lab["Prolate"] and not lab["Streak"]),
    ("Streak", lambda lab, kind: lab["Streak"]),
    ("Empty", lambda lab, kind: lab["Empty"]),
)


def example_frames(config: SimulationConfig, seed: int, *, search: int = 2000):
    """Find, among frames ``0..search-1`` of ``seed``, the first of each example panel.

    Returns
    -------
    list of (str, int, FrameParameters, (C,) uint8, (H, W) float32)
        Panel title, frame index, its parameters, labels and data.
    """
    detector = config.detector
    params = draw_parameters(config, seed, np.arange(search))
    labels = assign_labels(params, detector)
    found = []
    for title, rule in EXAMPLE_PANELS:
        for row in range(search):
            lab = dict(zip(LABELS, labels[row].astype(bool)))
            if rule(lab, Kind(params.kind[row])):
                one = params.take([row])
                data = render_frames(one, config, seed)[0]
                found.append((title, int(params.index[row]), one, labels[row], data))
                break
        else:
            logger.warning("no frame for panel %r among the first %d", title, search)
    return found


def draw_examples(config: SimulationConfig, seed: int, path, *, search: int = 2000):
    """Draw one example frame per class (log scale) into ``path`` (PNG).

    Returns
    -------
    list of (str, int, tuple of str)
        Panel title, frame index and label names of each example.
    """
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    examples = example_frames(config, seed, search=search)
    detector = config.detector
    good = detector.good_pixels()
    cols = 3
    rows = max(1, math.ceil(len(examples) / cols))
    fig = Figure(figsize=(4.4 * cols, 4.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    summary = []
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.6")  # masked pixels: grey
    for ax, (title, index, one, labels, data) in zip(axes.ravel(), examples):
        names = tuple(name for name, on in zip(LABELS, labels) if on)
        kind = Kind(int(one.kind[0]))
        if kind == Kind.EMPTY:
            what = f"nothing hit, {one.photon_energy[0]:.0f} eV"
        else:
            a, c = one.semi_axes[0]
            tilt = math.degrees(math.acos(min(1.0, abs(float(one.axis[0, 2])))))
            shape = (
                "sphere"
                if kind == Kind.SPHERE
                else (f"{kind.name.lower()} c/a={c / a:.2f}, axis {tilt:.0f}° off the beam")
            )
            what = (
                f"{shape}\nR={one.radius[0]:.0f} nm, {one.photon_energy[0]:.0f} eV, "
                f"{one.fluence[0]:.1e} photons"
            )
        shown = np.ma.masked_array(np.log10(1 + data), mask=~good)
        image = ax.imshow(shown, cmap=cmap, interpolation="nearest")
        fig.colorbar(image, ax=ax, shrink=0.8, label="log10(1 + photons)")
        ax.set_title(f"#{index}: {', '.join(names)}\n{what}", fontsize=8.5)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        summary.append((title, index, names))
    for ax in axes.ravel()[len(examples) :]:
        ax.axis("off")
    fig.suptitle(
        f"ccfkit simulate, seed {seed}: one frame per class; "
        f"{detector.shape[1]}x{detector.shape[0]} px, {config.max_angle:g}° at the edge, "
        "hole masked",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    return summary
