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
* Two spheres (a droplet and its partner: Double Rings, Newton rings, an
  irregular two-lobed droplet) scatter coherently:
  ``A = F(q R1) + rho^3 F(q R2) exp(i q . d)``.
* Expected photons per pixel are ``|A|^2`` times the polarisation factor and
  the pixel's solid angle (:mod:`ccfkit.instrument`), scaled so that the good
  pixels receive ``fluence`` photons on average, plus a stray-light halo and
  a flat background; Poisson noise and an MCP + phosphor response are
  optional.

Conventions: images are ``I[y, x]`` (row ``y``, column ``x``) with pixel
centres at integer coordinates; the beam centre is ``(cx, cy)`` in pixels;
lab axes are ``x`` along columns, ``y`` along rows, ``z`` along the beam.
Lengths inside this module are in nanometres and photon energies in eV; the
file writer (:mod:`ccfkit.simulated_file`) converts to SI.

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
from .instrument import (
    Polarization,
    mcp_response,
    polarization_coefficients,
    polarization_factor,
    solid_angle_factor,
    stray_light_halo,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DISPLAY_NAMES",
    "EXCLUSIVE_GROUPS",
    "LABELS",
    "TWO_SPHERE_KINDS",
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
    "fringe_visibility",
    "label_rules",
    "momentum_transfer",
    "parse_mix",
    "particle_intensity",
    "partner_features",
    "photon_energy_to_wavelength",
    "poisson_counts",
    "projected_semi_axes",
    "q_vectors",
    "render_frames",
    "sphere_form_factor",
    "visible_radius",
]

#: Expected counts up to which the Poisson sampler inverts the CDF (one uniform per
#: pixel); brighter pixels are drawn by ``Generator.poisson``.
POISSON_CUT = 16.0

#: h c in eV nm: wavelength (nm) = HC_EV_NM / photon energy (eV).
HC_EV_NM = 1239.8419843320026


class Kind(enum.IntEnum):
    """What was drawn for a frame (the *cause*; the labels describe the *pattern*).

    ``DOUBLE``, ``NEWTON`` and ``ASYMMETRIC`` are two spheres scattering
    coherently: side by side in the focus, one behind the other along the
    beam, and fused into one irregular, two-lobed droplet.
    """

    SPHERE = 0
    OBLATE = 1
    PROLATE = 2
    EMPTY = 3
    DOUBLE = 4
    NEWTON = 5
    ASYMMETRIC = 6


#: The kinds made of two spheres (a droplet and its *partner*).
TWO_SPHERE_KINDS = (Kind.DOUBLE, Kind.NEWTON, Kind.ASYMMETRIC)

#: Label names (machine names, snake_case), in the column order of the label array:
#: the paper's Table 1 order, without Bent and Layered (not simulated, docs/simulate.md).
LABELS = (
    "spherical_oblate",
    "round",
    "elliptical",
    "newton_rings",
    "prolate",
    "asymmetric",
    "streak",
    "double_rings",
    "empty",
)
#: The paper's names of the labels (Table 1, Fig. 2), stored beside the machine names.
DISPLAY_NAMES = {
    "spherical_oblate": "Spherical/Oblate",
    "round": "Round",
    "elliptical": "Elliptical",
    "newton_rings": "Newton rings",
    "prolate": "Prolate",
    "asymmetric": "Asymmetric",
    "streak": "Streak",
    "double_rings": "Double Rings",
    "empty": "Empty",
}

#: Groups of labels of which a frame carries at most one (paper §2, Fig. 2). The
#: first is also exhaustive: every frame is exactly one of them.
EXCLUSIVE_GROUPS = (("spherical_oblate", "prolate", "empty"), ("round", "elliptical"))

#: Subclass -> superordinate class: a frame with the subclass has the parent too.
PARENTS = {
    "round": "spherical_oblate",
    "elliptical": "spherical_oblate",
    "double_rings": "spherical_oblate",
    "streak": "prolate",
}

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
#: Two ring systems are told apart (Double Rings) when, out to the visible
#: radius, they drift apart by at least this many fringes ...
DOUBLE_MIN_DRIFT = 1.0
#: ... and the partner's rings carry at least this fraction of the droplet's
#: intensity (the envelope ratio ``(R2 / R1)^2``).
PARTNER_MIN_INTENSITY = 0.1
#: Interference between the two spheres is visible when its fringe contrast
#: ``2 rho / (1 + rho^2)`` (``rho = R2 / R1``, the amplitude ratio) is at least this.
MIN_FRINGE_CONTRAST = 0.5
#: Newton rings: at least this many axial fringes (``|q_z d_z| / 2 pi``) inside
#: the visible radius, resolved (>= 2 px apart), and at most half as many
#: transverse ones (``q |d_perp| / 2 pi``), so that the fringes are rings.
NEWTON_MIN_FRINGES = 1.5
#: Asymmetric: both the axial and the transverse phase of the two lobes reach
#: at least this (radians) inside the visible radius; the pattern then differs
#: between ``(x, y)`` and ``(-x, -y)`` by ``4 A1 A2 sin(q_perp . d) sin(q_z d_z)``.
ASYMMETRY_MIN_PHASE = math.pi / 2

#: Ranges of the partner's radius over the droplet's (``rho = R2 / R1``) per kind.
PARTNER_RATIO = {Kind.DOUBLE: (0.35, 0.8), Kind.NEWTON: (0.85, 1.0), Kind.ASYMMETRIC: (0.75, 0.95)}
#: Double: centre-to-centre distance in the detector plane, nm: droplets a few
#: micrometres apart in the focus; their fringes are mostly finer than a pixel,
#: so two ring systems show (:func:`fringe_visibility`).
DOUBLE_SEPARATION_NM = (2000.0, 12000.0)
#: Newton: distance along the beam, nm.
NEWTON_SEPARATION_NM = (1500.0, 6000.0)
#: Asymmetric: the lobes touch (``|d| = R1 + R2``); ``|cos|`` of the angle
#: between ``d`` and the beam in this range (neither side by side nor in line).
ASYMMETRIC_COS_TILT = (0.45, 0.9)

DEFAULT_MIX = {
    Kind.SPHERE: 0.4,
    Kind.OBLATE: 0.2,
    Kind.PROLATE: 0.2,
    Kind.EMPTY: 0.05,
    Kind.DOUBLE: 0.05,
    Kind.NEWTON: 0.05,
    Kind.ASYMMETRIC: 0.05,
}
#: ``--mix paper``: with the default ranges the label fractions come out close to
#: the paper's Table 1 (docs/simulate.md).
PAPER_MIX = {
    Kind.SPHERE: 0.57,
    Kind.OBLATE: 0.166,
    Kind.PROLATE: 0.07,
    Kind.EMPTY: 0.03,
    Kind.DOUBLE: 0.017,
    Kind.NEWTON: 0.072,
    Kind.ASYMMETRIC: 0.075,
}

# Random streams: frame parameters and photon noise (the MCP gains follow the
# Poisson draws in the noise stream).
_PARAM_STREAM, _NOISE_STREAM = 0, 1
# SimulationConfig's (min, max) ranges.
_RANGES = (
    "radius",
    "photon_energy",
    "fluence",
    "oblate_ratio",
    "prolate_ratio",
    "halo",
    "halo_width",
)
# Uniform numbers drawn per frame for its parameters (see draw_parameters); the
# first 9 are those of ccfkit-simulate/1, in the same order.
_N_UNIFORMS = 15


def photon_energy_to_wavelength(energy_ev):
    """Wavelength in nm of photons of ``energy_ev`` eV (array or scalar)."""
    return HC_EV_NM / np.asarray(energy_ev, dtype=np.float64)


def parse_mix(text: str | Mapping) -> dict[Kind, float]:
    """Parse a class mix such as ``"sphere=0.5,oblate=0.25,prolate=0.2,empty=0.05"``.

    Parameters
    ----------
    text : str or mapping
        Comma-separated ``kind=weight`` pairs (kinds: the :class:`Kind` names
        in lower case; missing kinds get weight 0), a mapping of the same, or
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
    polarization : str
        :class:`ccfkit.instrument.Polarization` of the beam (``horizontal``:
        FERMI's linear polarisation, electric field along x).
    solid_angle : bool
        Weight pixels by their solid angle (``cos^3 2theta``).
    halo : (float, float)
        Expected stray-light halo photons per frame on the good pixels
        (log-uniform); ``(0, 0)``: no halo.
    halo_width : (float, float)
        Half width of the halo, as the scattering angle (degrees) where it
        has fallen to ``2^(-3/2)`` of its centre (uniform).
    mcp : bool
        MCP + phosphor response: per-event gain spread and blur.
    gain_spread : float
        Relative standard deviation of one photon's MCP gain.
    blur : float
        Standard deviation of the phosphor blur, pixels.
    jitter : float
        Radius in pixels of the disc in which the beam centre is drawn
        around ``beam_offset``.
    beam_offset : (float, float)
        ``(dx, dy)`` in pixels from the detector middle to the centre of the
        jitter disc: a beam that does not hit the middle.
    hole_radius : float
        Radius in pixels of the central hole of the detector (masked).
    panel_gap : float
        Width in pixels of the masked gaps between the detector's four panels
        (a horizontal and a vertical band through its middle); 0: one panel.
        With a ``beam_offset`` they cut rings around the beam partly.
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
    beam_offset: tuple[float, float] = (0.0, 0.0)
    hole_radius: float = 10.0
    panel_gap: float = 0.0
    polarization: str = "horizontal"
    solid_angle: bool = True
    halo: tuple[float, float] = (1e3, 2e4)
    halo_width: tuple[float, float] = (3.0, 12.0)
    mcp: bool = False
    gain_spread: float = 0.6
    blur: float = 0.7

    def __post_init__(self):
        object.__setattr__(self, "mix", parse_mix(self.mix))
        for name in _RANGES:
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        try:
            polarization = Polarization(str(self.polarization).lower())
        except ValueError:
            choices = ", ".join(p.value for p in Polarization)
            raise ValueError(
                f"unknown polarisation {self.polarization!r}; use {choices}"
            ) from None
        object.__setattr__(self, "polarization", polarization.value)
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
        offset = math.hypot(*self.beam_offset)
        if not (math.isfinite(offset) and offset + self.jitter <= self.size / 4):
            raise ValueError(
                f"the beam offset plus the jitter must stay within size/4 = {self.size / 4:g} px "
                f"of the middle, got {offset:g} + {self.jitter:g}"
            )
        if not (math.isfinite(self.panel_gap) and 0 <= self.panel_gap <= self.size / 4):
            raise ValueError(
                f"panel gap must lie between 0 and size/4 = {self.size / 4:g} px, "
                f"got {self.panel_gap:g}"
            )
        if not (math.isfinite(self.hole_radius) and 0 <= self.hole_radius < (self.size - 1) / 2):
            raise ValueError(
                f"hole radius must lie between 0 and {(self.size - 1) / 2:g} px, "
                f"got {self.hole_radius:g}"
            )
        span("halo (photons per frame)", self.halo, low_ok=True)
        if self.halo[0] == 0 < self.halo[1]:
            raise ValueError("halo: the minimum must be > 0 (log-uniform), or both 0 (no halo)")
        span("halo width (degrees)", self.halo_width, 0.0, 90.0)
        for name in ("gain_spread", "blur"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 10):
                raise ValueError(f"{name.replace('_', ' ')} must lie in [0, 10], got {value:g}")

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
            "beam_offset": "beam_offset_px",
            "hole_radius": "hole_radius_px",
            "panel_gap": "panel_gap_px",
            "halo": "halo_photons",
            "halo_width": "halo_width_deg",
            "blur": "blur_px",
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
    panel_gap : float
        Width in pixels of the masked bands between four panels, through
        :attr:`nominal_center`; 0 for one panel.
    """

    shape: tuple[int, int]
    distance: float
    pixel_size: float
    hole_radius: float
    panel_gap: float = 0.0

    @classmethod
    def from_config(cls, config: SimulationConfig) -> Detector:
        size = int(config.size)
        pixel = 2 * config.distance * math.tan(math.radians(config.max_angle)) / size
        return cls((size, size), float(config.distance), pixel, float(config.hole_radius),
                   float(config.panel_gap))  # fmt: skip

    @property
    def nominal_center(self) -> tuple[float, float]:
        """The detector's middle ``(cx, cy)`` in pixels: the hole's centre."""
        return ((self.shape[1] - 1) / 2, (self.shape[0] - 1) / 2)

    @property
    def half_width(self) -> float:
        """Distance in pixels from the middle to the detector edge (``min(H, W) / 2``)."""
        return min(self.shape) / 2

    def good_pixels(self) -> np.ndarray:
        """(H, W) bool mask, True = good: every pixel outside the central hole and the gaps."""
        cx, cy = self.nominal_center
        y, x = np.ogrid[: self.shape[0], : self.shape[1]]
        good = (x - cx) ** 2 + (y - cy) ** 2 >= self.hole_radius**2
        half_gap = self.panel_gap / 2
        return good & (np.abs(x - cx) >= half_gap) & (np.abs(y - cy) >= half_gap)


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
    partner_radius : (N,) float64, optional
        Radius in nm of the second sphere of the two-sphere kinds
        (:data:`TWO_SPHERE_KINDS`); 0 otherwise (the default).
    separation : (N, 3) float64, optional
        From the droplet's centre to its partner's, nm, lab ``(x, y, z)``;
        0 without a partner (the default).
    halo : (N,) float64, optional
        Expected stray-light halo photons on the good pixels (default 0).
    halo_width : (N,) float64, optional
        Halo width ``w`` in pixels (default 1; irrelevant without halo).
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
    partner_radius: np.ndarray | None = None
    separation: np.ndarray | None = None
    halo: np.ndarray | None = None
    halo_width: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.index)
        defaults = {
            "partner_radius": np.zeros(n),
            "separation": np.zeros((n, 3)),
            "halo": np.zeros(n),
            "halo_width": np.ones(n),
        }
        for name, default in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    def __len__(self) -> int:
        return len(self.index)

    def take(self, rows) -> FrameParameters:
        """The parameters of a subset of frames (``rows`` index these arrays)."""
        return FrameParameters(**{k: v[rows] for k, v in self.__dict__.items()})


def draw_parameters(config: SimulationConfig, seed: int, indices) -> FrameParameters:
    """Draw the particle(s), beam, fluence and stray light of each frame.

    Frame ``i`` uses only ``default_rng([seed, i, 0])`` (15 uniforms), so its
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
    detector = Detector.from_config(config)
    cx0, cy0 = np.add(detector.nominal_center, config.beam_offset)
    center = np.stack([cx0 + shift * np.cos(turn), cy0 + shift * np.sin(turn)], axis=1)

    partner_radius, separation = _draw_partners(kind, radius, u[:, 9:13])

    halo = np.zeros(indices.size)
    if config.halo[1] > 0:
        halo = config.halo[0] * (config.halo[1] / config.halo[0]) ** u[:, 13]  # log-uniform
    width_deg = config.halo_width[0] + (config.halo_width[1] - config.halo_width[0]) * u[:, 14]
    halo_width = detector.distance * np.tan(np.radians(width_deg)) / detector.pixel_size

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
        partner_radius=partner_radius,
        separation=separation,
        halo=halo,
        halo_width=halo_width,
    )


def _draw_partners(kind, radius, u) -> tuple[np.ndarray, np.ndarray]:
    """The partner sphere of the two-sphere kinds from 4 uniforms per frame.

    Parameters
    ----------
    kind, radius : (N,) arrays
        Kinds and the droplets' radii (nm).
    u : (N, 4) float64
        Uniforms: radius ratio, separation, direction (2).

    Returns
    -------
    partner_radius : (N,) float64
        nm; 0 for single particles.
    separation : (N, 3) float64
        nm, lab ``(x, y, z)``; 0 for single particles.
    """
    partner = np.zeros(len(kind))
    separation = np.zeros((len(kind), 3))
    azimuth = 2 * np.pi * u[:, 2]
    in_plane = np.stack([np.cos(azimuth), np.sin(azimuth), np.zeros(len(kind))], axis=1)
    for k in TWO_SPHERE_KINDS:
        sel = kind == k
        lo, hi = PARTNER_RATIO[k]
        partner[sel] = radius[sel] * (lo + (hi - lo) * u[sel, 0])
    touching = radius + partner
    sel = kind == Kind.DOUBLE
    lo, hi = DOUBLE_SEPARATION_NM
    separation[sel] = in_plane[sel] * (lo + (hi - lo) * u[sel, 1])[:, None]
    sel = kind == Kind.NEWTON
    lo, hi = NEWTON_SEPARATION_NM
    separation[sel, 2] = lo + (hi - lo) * u[sel, 1]
    sel = kind == Kind.ASYMMETRIC
    lo, hi = ASYMMETRIC_COS_TILT
    cos_tilt = (lo + (hi - lo) * u[sel, 1]) * np.where(u[sel, 3] < 0.5, -1.0, 1.0)
    sin_tilt = np.sqrt(1 - cos_tilt**2)
    direction = in_plane[sel] * sin_tilt[:, None]
    direction[:, 2] = cos_tilt
    separation[sel] = direction * touching[sel, None]
    return partner, separation


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


def partner_features(params: FrameParameters, detector: Detector, visible=None) -> dict:
    """What the two spheres of a two-sphere frame show, out to the visible radius.

    With ``rho = R2 / R1``, ``q_vis = |q|`` at :func:`visible_radius` and
    ``|q_z| = q^2 / (2 k)`` there (the Ewald sphere's depth):

    * ``drift = q_vis (R1 - R2) / pi``: by how many fringes the two ring
      systems drift apart (Double Rings when >= ``DOUBLE_MIN_DRIFT``);
    * ``contrast = 2 rho / (1 + rho^2)``: contrast of their interference;
    * ``axial_fringes = |q_z d_z| / 2 pi``: rings from the separation along the
      beam (Newton rings), counted only out to where they are >= 2 px apart
      (the phase grows by ``|d_z| k sin 2theta cos^2 2theta p / L`` per pixel);
    * ``transverse_fringes = q_vis |d_perp| / 2 pi``: straight fringes from the
      separation across the beam;
    * ``axial_phase = |q_z d_z|``, ``transverse_phase = q_vis |d_perp|`` (radians).

    Returns
    -------
    dict of str -> (N,) float64
        All 0 for frames without a partner.
    """
    visible = visible_radius(params, detector) if visible is None else visible
    has = params.partner_radius > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(has, params.partner_radius / np.where(has, params.radius, 1.0), 0.0)
    k = 2 * np.pi / params.wavelength
    q_vis = momentum_transfer(visible, detector, params.wavelength)
    d_perp = np.hypot(params.separation[:, 0], params.separation[:, 1])
    d_z = np.abs(params.separation[:, 2])
    # Largest 2theta where the axial fringes are >= 2 px apart: the phase per pixel,
    # |d_z| k (p / L) sin(2t) cos^2(2t), increases up to 35 deg (beyond the half-width).
    grid = np.linspace(
        0.0, math.atan(detector.half_width * detector.pixel_size / detector.distance)
    )
    slope = np.sin(grid) * np.cos(grid) ** 2 * detector.pixel_size / detector.distance
    with np.errstate(divide="ignore"):
        resolved = np.interp(np.pi / np.maximum(d_z * k, 1e-300), slope, grid)
    q_resolved = 2 * k * np.sin(resolved / 2)
    q_axial = np.minimum(q_vis, q_resolved)
    axial_phase = d_z * q_vis**2 / (2 * k)
    return {
        "drift": np.where(has, q_vis * (params.radius - params.partner_radius) / np.pi, 0.0),
        "contrast": 2 * rho / (1 + rho**2),
        "axial_fringes": d_z * q_axial**2 / (2 * k) / (2 * np.pi),
        "transverse_fringes": q_vis * d_perp / (2 * np.pi),
        "axial_phase": axial_phase,
        "transverse_phase": q_vis * d_perp,
        "intensity_ratio": rho**2,
    }


def assign_labels(
    params: FrameParameters, detector: Detector, shift=None, partners: dict | None = None
) -> np.ndarray:
    """Labels of what each pattern shows, with the paper's rules (§2, Fig. 2).

    Rules (thresholds are module constants):

    * ``empty``: no particle, or fewer than ``EMPTY_BELOW_PHOTONS`` scattered
      photons expected.
    * ``prolate``: a prolate particle whose projection is elongated by at
      least ``PROLATE_MIN_ASPECT`` *and* visibly so (``fringe_shift >=
      VISIBLE_FRINGE_SHIFT``). A prolate particle seen nearly end-on looks
      round and is not labelled prolate.
    * ``spherical_oblate``: every other non-empty frame.
    * ``elliptical``: spherical_oblate with a visible ellipticity
      (``fringe_shift >= VISIBLE_FRINGE_SHIFT``); ``round`` otherwise.
    * ``streak``: prolate with a projection elongated by at least
      ``STREAK_MIN_ASPECT``.
    * Two-sphere frames (:func:`partner_features`): ``double_rings`` when the
      partner's rings are bright enough (``intensity_ratio >=
      PARTNER_MIN_INTENSITY``) and drift apart from the droplet's (``drift >=
      DOUBLE_MIN_DRIFT``); ``newton_rings`` when ``contrast >=
      MIN_FRINGE_CONTRAST``, ``axial_fringes >= NEWTON_MIN_FRINGES`` and
      ``transverse_fringes <= axial_fringes / 2``; ``asymmetric`` when
      ``contrast >= MIN_FRINGE_CONTRAST`` and both phases reach
      ``ASYMMETRY_MIN_PHASE``.

    So spherical_oblate, prolate and empty are exclusive and exhaustive, and
    round and elliptical are exclusive (:data:`EXCLUSIVE_GROUPS`).

    Parameters
    ----------
    params : FrameParameters
    detector : Detector
    shift : (N,) array, optional
        :func:`fringe_shift`, when already computed.
    partners : dict, optional
        :func:`partner_features`, when already computed.

    Returns
    -------
    (N, C) uint8
        Columns in the order of :data:`LABELS`.
    """
    long_short = projected_semi_axes(params)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(long_short[:, 1] > 0, long_short[:, 0] / long_short[:, 1], 1.0)
    if shift is None or partners is None:
        visible = visible_radius(params, detector)
        shift = fringe_shift(params, detector, visible) if shift is None else shift
        partners = partner_features(params, detector, visible) if partners is None else partners
    visible = shift >= VISIBLE_FRINGE_SHIFT
    empty = (params.kind == Kind.EMPTY) | (params.fluence < EMPTY_BELOW_PHOTONS)
    prolate = ~empty & (params.kind == Kind.PROLATE) & (aspect >= PROLATE_MIN_ASPECT) & visible
    spherical = ~empty & ~prolate
    pair = ~empty & (params.partner_radius > 0)
    contrast = partners["contrast"] >= MIN_FRINGE_CONTRAST
    columns = {
        "spherical_oblate": spherical,
        "round": spherical & ~visible,
        "elliptical": spherical & visible,
        "newton_rings": pair
        & contrast
        & (partners["axial_fringes"] >= NEWTON_MIN_FRINGES)
        & (partners["transverse_fringes"] <= partners["axial_fringes"] / 2),
        "prolate": prolate,
        "asymmetric": pair
        & contrast
        & (partners["axial_phase"] >= ASYMMETRY_MIN_PHASE)
        & (partners["transverse_phase"] >= ASYMMETRY_MIN_PHASE),
        "streak": prolate & (aspect >= STREAK_MIN_ASPECT),
        "double_rings": pair
        & spherical
        & (partners["intensity_ratio"] >= PARTNER_MIN_INTENSITY)
        & (partners["drift"] >= DOUBLE_MIN_DRIFT),
        "empty": empty,
    }
    return np.stack([columns[name] for name in LABELS], axis=1).astype(np.uint8)


def label_rules() -> str:
    """The labelling rules of :func:`assign_labels` in one paragraph (stored in files)."""
    return (
        f"empty: no particle, or < {EMPTY_BELOW_PHOTONS:g} scattered photons. "
        f"prolate: a prolate particle whose projection has aspect >= {PROLATE_MIN_ASPECT:g} "
        f"and fringe_shift >= {VISIBLE_FRINGE_SHIFT:g}. spherical_oblate: every other "
        f"non-empty frame; elliptical if fringe_shift >= {VISIBLE_FRINGE_SHIFT:g}, else round. "
        f"streak: prolate with projected aspect >= {STREAK_MIN_ASPECT:g}. fringe_shift = "
        "q_vis (long - short) / pi, q_vis = |q| out to where ring maxima expect "
        f">= {VISIBLE_PHOTONS:g} photon per pixel. Two spheres (radii R1 >= R2, rho = R2/R1, "
        f"separation d): double_rings if rho^2 >= {PARTNER_MIN_INTENSITY:g} and "
        f"q_vis (R1 - R2) / pi >= {DOUBLE_MIN_DRIFT:g}; newton_rings if 2 rho / (1 + rho^2) >= "
        f"{MIN_FRINGE_CONTRAST:g}, |q_z d_z| / 2pi >= {NEWTON_MIN_FRINGES:g} (fringes >= 2 px "
        "apart) and q_vis |d_perp| / 2pi <= half of that; asymmetric if 2 rho / (1 + rho^2) >= "
        f"{MIN_FRINGE_CONTRAST:g} and |q_z d_z| and q_vis |d_perp| both >= "
        f"{ASYMMETRY_MIN_PHASE:.4g} rad."
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
    config: SimulationConfig,
    good: np.ndarray | None = None,
    *,
    engine: str = "numba",
) -> np.ndarray:
    """Expected photons per pixel (no noise) for a batch of frames.

    ``E = fluence * w / sum_good(w) + halo + background`` on good pixels, 0
    on masked ones, with ``w = |A(q)|^2 P Omega``: the particle's scattered
    intensity (:func:`particle_intensity`), the polarisation factor ``P``
    (:func:`ccfkit.instrument.polarization_factor`) and the pixel's solid angle
    ``Omega = cos^3 2theta`` (:func:`ccfkit.instrument.solid_angle_factor`),
    each as ``config`` says. ``halo`` is the frame's stray-light halo
    (:func:`ccfkit.instrument.stray_light_halo`), centred on its beam centre.
    Empty frames get the halo and the background only.

    Parameters
    ----------
    params : FrameParameters
        ``B`` frames.
    config : SimulationConfig
    good : (H, W) bool, optional
        True = good pixel; default ``config.detector.good_pixels()``.
    engine : {"numba", "numpy"}
        ``"numpy"``: the reference, whole-image NumPy passes in float32;
        ``"numba"``: one fused GIL-free pass per frame
        (:func:`ccfkit.simulate_numba.expected_frame`, float64 per pixel), the
        same values to float32 rounding (tested).

    Returns
    -------
    (B, H, W) float32
    """
    detector = config.detector
    good = detector.good_pixels() if good is None else np.asarray(good, dtype=bool)
    if engine == "numba":
        return _expected_counts_numba(params, config, good)
    if engine != "numpy":
        raise ValueError(f"engine must be 'numba' or 'numpy', got {engine!r}")
    good32 = good.astype(np.float32)
    height, width = detector.shape
    out = np.empty((len(params), height, width), dtype=np.float32)
    per_length = detector.pixel_size / detector.distance  # pixel offsets -> x / L
    cols = np.arange(width, dtype=np.float64)
    rows = np.arange(height, dtype=np.float64)[:, None]
    for b in range(len(params)):
        cx, cy = params.center[b]
        x_px, y_px = cols - cx, rows - cy
        frame = out[b]
        if params.kind[b] == Kind.EMPTY or params.fluence[b] <= 0:
            frame[...] = 0
        else:
            x_l, y_l = x_px * per_length, y_px * per_length
            cos2t = particle_intensity(x_l, y_l, params.take([b]), per_length, out=frame)
            frame *= _instrument_weight(x_l, y_l, config, good32, cos2t)
            total = frame.sum(dtype=np.float64)
            frame *= np.float32(params.fluence[b] / total) if total > 0 else np.float32(0)
        if params.halo[b] > 0:
            r2 = np.add(np.float32(x_px) ** 2, np.float32(y_px) ** 2, dtype=np.float32)
            frame += stray_light_halo(r2, float(params.halo_width[b]), good32, params.halo[b])
        if config.background:
            frame += np.float32(config.background) * good32
    return out


def _expected_counts_numba(params: FrameParameters, config: SimulationConfig, good) -> np.ndarray:
    """:func:`expected_counts` through :func:`ccfkit.simulate_numba.expected_frame`."""
    from . import simulate_numba as kernels  # Numba only when frames are rendered

    detector = config.detector
    good32 = good.astype(np.float32)
    out = np.empty((len(params), *detector.shape), dtype=np.float32)
    pixel_over_l = detector.pixel_size / detector.distance
    weight = np.array(
        [*polarization_coefficients(config.polarization), 1.0 if config.solid_angle else 0.0]
    )
    for b in range(len(params)):
        mode, particle = _kernel_particle(params, b, pixel_over_l)
        kernels.expected_frame(
            out[b], good32, params.center[b], pixel_over_l, mode, particle, weight,
            float(params.fluence[b]), float(params.halo[b]), float(params.halo_width[b]),
            float(config.background),
        )  # fmt: skip
    return out


def _kernel_particle(params: FrameParameters, b: int, pixel_over_l: float):
    """``(mode, particle)`` of frame ``b`` for :func:`ccfkit.simulate_numba.expected_frame`.

    Returns
    -------
    mode : int
    particle : (7,) float64
        The per-frame constants in that kernel's layout (``k`` in 1/nm).
    """
    from . import simulate_numba as kernels  # Numba only when frames are rendered

    particle = np.zeros(7)
    if params.kind[b] == Kind.EMPTY or params.fluence[b] <= 0:
        return kernels.EMPTY, particle
    k = 2 * np.pi / float(params.wavelength[b])
    if params.partner_radius[b] > 0:
        r1, r2 = float(params.radius[b]), float(params.partner_radius[b])
        particle[:3] = k * r1, r2 / r1, (r2 / r1) ** 3
        particle[3:6] = k * params.separation[b]
        particle[6] = pixel_over_l / 2
        return kernels.TWO_SPHERES, particle
    a, c = (float(v) for v in params.semi_axes[b])
    particle[:2] = k * a, (c * c - a * a) / (2 * a * a)
    particle[2:5] = params.axis[b]
    return kernels.SPHEROID, particle


def _instrument_weight(x_over_l, y_over_l, config: SimulationConfig, good32, cos2t):
    """``P Omega`` on good pixels, 0 on masked ones: (H, W) float32."""
    weight = polarization_factor(x_over_l, y_over_l, config.polarization, cos2t)
    if config.solid_angle:
        weight *= solid_angle_factor(x_over_l, y_over_l, cos2t)
    weight *= good32
    return weight


def particle_intensity(
    x_over_l, y_over_l, one: FrameParameters, pixel_over_l: float, out: np.ndarray
) -> np.ndarray:
    """Scattered intensity ``|A(q)|^2`` of one frame's particle(s), up to a constant.

    The amplitude is the Born (Rayleigh-Gans) one on the Ewald sphere:
    ``A = F(u)`` for a spheroid (``u`` as in the module docstring), and
    ``A = F(q R1) + rho^3 F(q R2) exp(i q . d)`` for two spheres of radii
    ``R1`` and ``R2 = rho R1`` with centres ``d`` apart (volumes ``R^3``), so
    ``|A|^2 = F1^2 + rho^6 F2^2 + 2 rho^3 F1 F2 V cos(q . d)``, where ``V``
    (:func:`fringe_visibility`) averages the fringes over the pixel's area: a
    pixel integrates fringes finer than itself to their mean. ``F`` is the
    sphere's form factor divided by 3 (1/3 at ``q = 0``).

    With ``n = (x, y, L) / D`` and ``q / k = n - z_hat``:

    * ``|q/k|^2 = 2 (1 - L/D) = 2 t (L/D) / (D/L + 1)`` with ``t = (x^2 + y^2) / L^2``
      (the second form does not cancel near the beam centre),
    * ``(q/k) . c_hat = (x c_x + y c_y + L c_z) / D - c_z``,
    * ``u^2 = k^2 (a^2 |q/k|^2 + (c^2 - a^2) ((q/k) . c_hat)^2)``,
    * ``(q/k) . d = (x d_x + y d_y) / D - (1 - L/D) d_z``.

    The spheroid's difference cancels in float32 near the centre for ``c_z ~
    1``, which moves ``u`` there by ~1e-5 relative: far below anything visible.

    Parameters
    ----------
    x_over_l : (W,) float64
        Pixel offsets from the beam centre along x over the distance ``L``.
    y_over_l : (H, 1) float64
        The same along y.
    one : FrameParameters
        One frame.
    pixel_over_l : float
        Pixel size over the detector distance.
    out : (H, W) float32
        Receives ``|A|^2``.

    Returns
    -------
    (H, W) float32
        ``L / D = cos 2theta`` of each pixel (computed on the way).
    """
    f32 = np.float32
    k = 2 * np.pi / float(one.wavelength[0])
    t = np.add(f32(x_over_l) ** 2, f32(y_over_l) ** 2, dtype=np.float32)
    d_over_l = np.add(t, f32(1), out=out)
    np.sqrt(d_over_l, out=d_over_l)
    nz = np.reciprocal(d_over_l)  # L / D
    d_over_l += f32(1)
    s2 = t  # |q/k|^2 / 2 = 1 - L / D
    s2 *= nz
    s2 /= d_over_l
    scratch = out  # d_over_l is no longer needed
    if one.partner_radius[0] > 0:
        r1, r2 = float(one.radius[0]), float(one.partner_radius[0])
        rho3 = f32((r2 / r1) ** 3)
        sep = one.separation[0]
        u1 = np.multiply(s2, f32(2 * (k * r1) ** 2), dtype=np.float32)
        np.sqrt(u1, out=u1)
        u2 = u1 * f32(r2 / r1)
        phase = np.add(
            f32(x_over_l * (k * sep[0])), f32(y_over_l * (k * sep[1])), dtype=np.float32
        )
        phase *= nz
        s2 *= f32(k * sep[2])
        phase -= s2
        np.cos(phase, out=phase)
        phase *= fringe_visibility(x_over_l, y_over_l, nz, k * pixel_over_l, sep)
        f1 = _form_factor32(u1, scratch=s2)
        f2 = _form_factor32(u2, scratch=s2)
        f2 *= rho3
        cross = np.multiply(f1, f2, out=s2)
        cross *= phase
        cross *= f32(2)
        f1 *= f1
        f2 *= f2
        np.add(f1, f2, out=out)
        out += cross
        return nz
    a, c = (float(v) for v in one.semi_axes[0])
    axis = one.axis[0]
    # dot = (x c_x / L + y c_y / L + c_z) * (L / D) - c_z
    dot = np.add(f32(x_over_l * axis[0] + axis[2]), f32(y_over_l * axis[1]), out=scratch)
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
    f = _form_factor32(u, scratch=out)
    np.multiply(f, f, out=out)
    return nz


def fringe_visibility(x_over_l, y_over_l, nz, k_pixel, separation) -> np.ndarray:
    """Pixel average of ``cos(q . d)`` over the cosine at the pixel centre, ``V``.

    Across a square pixel the phase ``phi = q . d`` changes by the gradient
    ``g`` (radians per pixel); the mean of ``cos(phi0 + g . u)`` over
    ``u in [-1/2, 1/2]^2`` is ``cos(phi0) sinc(g_x / 2) sinc(g_y / 2)``
    (``sinc z = sin z / z``). With ``w = (L/D)^2 (x d_x / L + y d_y / L + d_z)``:
    ``g_x = k (p / L) (L / D) (d_x - (x / L) w)``, ``g_y`` the same with ``y``.

    Parameters
    ----------
    x_over_l : (W,) float64
    y_over_l : (H, 1) float64
    nz : (H, W) float32
        ``L / D``.
    k_pixel : float
        ``k p / L`` (1/nm).
    separation : (3,) float64
        ``d`` in nm.

    Returns
    -------
    (H, W) float32
        In ``(-0.22, 1]``: 1 where the fringes are much wider than a pixel.
    """
    f32 = np.float32
    d_x, d_y, d_z = (float(v) for v in separation)
    w = np.add(f32(x_over_l * d_x + d_z), f32(y_over_l * d_y), dtype=np.float32)
    w *= nz
    w *= nz
    half = f32(k_pixel / (2 * np.pi))  # / pi: numpy's sinc takes z / pi
    g_x = np.multiply(w, f32(-x_over_l), dtype=np.float32)
    g_x += f32(d_x)
    g_x *= nz
    g_x *= half
    g_y = np.multiply(w, f32(-y_over_l), out=w)
    g_y += f32(d_y)
    g_y *= nz
    g_y *= half
    visibility = np.sinc(g_x)  # numpy's sinc(z) = sin(pi z) / (pi z)
    visibility *= np.sinc(g_y)
    return visibility


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


def poisson_counts(expected: np.ndarray, rng: np.random.Generator, *, cut: float = POISSON_CUT):
    """Poisson samples of ``expected`` (counts), fast for mostly-dim images.

    Pixels with ``expected <= cut`` are sampled by inverting the Poisson CDF
    with one 24-bit uniform number each (a vectorised pass settles the counts
    below 4); brighter ones use ``rng.poisson``. Exact up to the uniforms' 24-bit
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


def _poisson_rows(lam: np.ndarray, rngs, cut: float = POISSON_CUT) -> np.ndarray:
    """Poisson samples of each row of ``lam`` (B, M) float32, row ``b`` from ``rngs[b]``.

    Row ``b``'s result depends only on ``lam[b]`` and ``rngs[b]``: first one
    24-bit uniform per pixel (from 32 of the bit generator's raw bits) for the
    CDF inversion (:func:`ccfkit.simulate_numba.invert_poisson`, a GIL-free
    kernel, so that threads rendering frames run it side by side), then
    ``rng.poisson`` for the pixels above ``cut``.
    """
    from . import simulate_numba as kernels  # Numba only when frames are rendered

    rows, size = lam.shape
    out = np.zeros((rows, size), dtype=np.float32)
    if not 0 <= cut <= kernels.MAX_INVERSION_CUT:
        raise ValueError(f"cut must be in [0, {kernels.MAX_INVERSION_CUT:g}], got {cut}")
    limit = int(cut * 4 + 40)  # P(X > limit | lam <= cut) < 1e-14
    for b, rng in enumerate(rngs):
        # 32-bit words, in the order of NumPy's float32 uniforms (low half first)
        bits = rng.bit_generator.random_raw((size + 1) // 2).view(np.uint32)
        bright = kernels.invert_poisson(lam[b], bits, float(cut), limit, out[b])
        if bright.size:
            out[b, bright] = rng.poisson(lam[b, bright].astype(np.float64))
    return out


def render_frames(
    params: FrameParameters,
    config: SimulationConfig,
    seed: int,
    good: np.ndarray | None = None,
) -> np.ndarray:
    """The data of a batch of frames: expected counts, Poisson noise and detector response.

    Frame ``i``'s noise comes from ``Generator(SFC64(SeedSequence([seed, i, 1])))``
    alone (SFC64: the fastest of NumPy's bit generators): first the Poisson
    counts, then, with ``config.mcp``, the MCP gains
    (:func:`ccfkit.instrument.mcp_response`). Without noise, the MCP response
    is the blur of the expected counts (no gain spread).

    Returns
    -------
    (B, H, W) float32
        Photon counts (whole numbers with noise and without MCP), or detector
        values in mean photon signals; 0 on masked pixels.
    """
    detector = config.detector
    good = detector.good_pixels() if good is None else good
    expected = expected_counts(params, config, good)
    if not config.noise:
        frames, rngs = expected, [None] * len(params)
    else:
        rngs = [
            np.random.Generator(
                np.random.SFC64(np.random.SeedSequence([seed, int(i), _NOISE_STREAM]))
            )
            for i in params.index
        ]
        frames = _poisson_rows(expected.reshape(len(params), -1), rngs).reshape(expected.shape)
    if config.mcp:
        spread = config.gain_spread if config.noise else 0.0
        for b, rng in enumerate(rngs):
            frames[b] = mcp_response(
                frames[b], rng, gain_spread=spread, blur_px=config.blur, good=good
            )
    return frames


# --- examples ------------------------------------------------------------------------------

#: The panels of the example grid: a title and the rule a frame must satisfy.
EXAMPLE_PANELS = (
    ("Round (sphere)", lambda lab, kind: lab["round"] and kind == Kind.SPHERE),
    ("Round (oblate)", lambda lab, kind: lab["round"] and kind == Kind.OBLATE),
    ("Elliptical", lambda lab, kind: lab["elliptical"]),
    ("Prolate", lambda lab, kind: lab["prolate"] and not lab["streak"]),
    ("Streak", lambda lab, kind: lab["streak"]),
    ("Empty", lambda lab, kind: lab["empty"]),
    ("Double Rings", lambda lab, kind: lab["double_rings"] and kind == Kind.DOUBLE),
    ("Newton rings", lambda lab, kind: lab["newton_rings"] and kind == Kind.NEWTON),
    ("Asymmetric", lambda lab, kind: lab["asymmetric"] and kind == Kind.ASYMMETRIC),
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


def _describe(one: FrameParameters) -> str:
    """Two lines on what was drawn for one frame (for the example titles)."""
    kind = Kind(int(one.kind[0]))
    halo = f"halo {one.halo[0]:.0f}"
    if kind == Kind.EMPTY:
        return f"nothing hit, {one.photon_energy[0]:.0f} eV, {halo}"
    a, c = one.semi_axes[0]
    tilt = math.degrees(math.acos(min(1.0, abs(float(one.axis[0, 2])))))
    shape = {
        Kind.SPHERE: "sphere",
        Kind.OBLATE: f"oblate c/a={c / a:.2f}, axis {tilt:.0f}° off the beam",
        Kind.PROLATE: f"prolate c/a={c / a:.2f}, axis {tilt:.0f}° off the beam",
    }.get(kind)
    if shape is None:  # two spheres
        d = one.separation[0]
        shape = (
            f"{kind.name.lower()}: R2={one.partner_radius[0]:.0f} nm, "
            f"d=({d[0]:.0f}, {d[1]:.0f}, {d[2]:.0f}) nm"
        )
    return (
        f"{shape}\nR={one.radius[0]:.0f} nm, {one.photon_energy[0]:.0f} eV, "
        f"{one.fluence[0]:.1e} photons, {halo}"
    )


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
        names = tuple(DISPLAY_NAMES[name] for name, on in zip(LABELS, labels) if on)
        what = _describe(one)
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
