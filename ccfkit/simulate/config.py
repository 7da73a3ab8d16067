"""What a simulated data set is made of: the configuration, the kinds of particle and their mix.

:class:`SimulationConfig` holds everything that defines a data set apart from
the seed and the number of frames; :class:`Kind` names what may be drawn for a
frame (the *cause*; the labels of :mod:`ccfkit.simulate.labels` describe the
*pattern*), and a *mix* gives each kind's probability. Units and the reasons
for each default are in ``docs/simulate.md``. Lengths are in nanometres and
photon energies in eV (the file writer, :mod:`ccfkit.simulate.cxi_file`,
converts to SI).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .detector import Detector, momentum_transfer
from .instrument import Polarization
from .randomization import BEAM_STOPS, check_randomization, randomized_ranges

__all__ = [
    "DEFAULT_MIX",
    "HC_EV_NM",
    "PAPER_MIX",
    "TWO_SPHERE_KINDS",
    "Kind",
    "SimulationConfig",
    "parse_mix",
    "photon_energy_to_wavelength",
]

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

#: The mix of ``ccfkit simulate`` unless ``--mix`` says otherwise.
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


# The randomisation's (min, max) ranges, and their names in the file's parameters.
_RANDOM_RANGES = (
    "max_angle_range",
    "pixel_size_range",
    "beam_stop_range",
    "panel_gap_range",
    "background_range",
    "polarization_degree",
    "gain_range",
    "read_noise_range",
)
_RANDOM_UNITS = {
    "max_angle_range": "max_angle_range_deg",
    "pixel_size_range": "pixel_size_range_um",
    "beam_stop_range": "beam_stop_range_px",
    "beam_offset_range": "beam_offset_range_px",
    "panel_gap_range": "panel_gap_range_px",
    "background_range": "background_range_photons_per_pixel",
    "gain_range": "gain_range_units_per_photon",
    "read_noise_range": "read_noise_range_photons",
}


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
        :class:`ccfkit.simulate.instrument.Polarization` of the beam (``horizontal``:
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

    Randomised detectors (:mod:`ccfkit.simulate.randomization`; None = off,
    the default: the file is then what it was without these fields):

    randomize : bool
        Draw the detector too: every range below that is not given takes the
        ranges of docs/simulate.md, "Randomised detectors"
        (:func:`~ccfkit.simulate.randomization.randomized_ranges`), meant for
        training sets that should transfer to other detectors.
    max_angle_range : (float, float) or None
        Per frame: scattering angle (degrees) at the detector half-width,
        uniform; the distance follows, with the file's pixel size. Replaces
        ``max_angle`` for the frames.
    pixel_size_range : (float, float) or None
        Per file: pixel size, micrometres, log-uniform.
    beam_stop : str or None
        Per file: the stop's shape, ``round``, ``rectangle``, ``round-arm``,
        ``rectangle-arm`` (with a holder arm to the edge) or ``random`` (one
        of these).
    beam_stop_range : (float, float) or None
        Per file: the stop's radius (half-width), pixels, uniform; replaces
        ``hole_radius``.
    beam_offset_range : float or None
        Per file: the beam and its stop sit at a point drawn uniformly in a
        disc of this radius (pixels) around the detector middle.
    panel_grids : tuple of str or None
        Per file: the panel layout, ``ROWSxCOLUMNS``, one of these, uniform.
    panel_gap_range : (float, float) or None
        Per file: gap width between panels, pixels, uniform; replaces ``panel_gap``.
    background_range : (float, float) or None
        Per frame: flat photons per good pixel, uniform; replaces ``background``.
    polarization_degree : (float, float) or None
        Per frame: degree of linear polarisation along ``polarization``'s
        direction (0 unpolarised, 1 fully), uniform.
    gain_range : (float, float) or None
        Per frame: detector units per photon, log-uniform.
    read_noise_range : (float, float) or None
        Per frame: standard deviation of Gaussian read noise, in photons
        (detector units over the gain), uniform; needs ``noise``.
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
    randomize: bool = False
    max_angle_range: tuple[float, float] | None = None
    pixel_size_range: tuple[float, float] | None = None
    beam_stop: str | None = field(default=None, metadata={"choices": BEAM_STOPS})
    beam_stop_range: tuple[float, float] | None = None
    beam_offset_range: float | None = None
    panel_grids: tuple[str, ...] | None = field(default=None, metadata={"metavar": "RxC[,RxC...]"})
    panel_gap_range: tuple[float, float] | None = None
    background_range: tuple[float, float] | None = None
    polarization_degree: tuple[float, float] | None = None
    gain_range: tuple[float, float] | None = None
    read_noise_range: tuple[float, float] | None = None

    def __post_init__(self):
        object.__setattr__(self, "mix", parse_mix(self.mix))
        for name in _RANGES:
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.randomize:
            for name, value in randomized_ranges(int(self.size)).items():
                if getattr(self, name) is None and self._preset_applies(name):
                    object.__setattr__(self, name, value)
        for name in _RANDOM_RANGES:
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if isinstance(self.panel_grids, str):
            object.__setattr__(self, "panel_grids", tuple(self.panel_grids.split(",")))
        elif self.panel_grids is not None:
            object.__setattr__(self, "panel_grids", tuple(str(g) for g in self.panel_grids))
        try:
            polarization = Polarization(str(self.polarization).lower())
        except ValueError:
            choices = ", ".join(p.value for p in Polarization)
            raise ValueError(
                f"unknown polarisation {self.polarization!r}; use {choices}"
            ) from None
        object.__setattr__(self, "polarization", polarization.value)
        self.validate()

    def _preset_applies(self, name: str) -> bool:
        """Whether ``randomize`` fills in the range ``name`` (read noise needs photon
        noise; a polarisation degree a linear polarisation)."""
        if name == "read_noise_range":
            return bool(self.noise)
        if name == "polarization_degree":
            return str(self.polarization).lower() in ("horizontal", "vertical")
        return True

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
        check_randomization(self, span)

    @property
    def detector(self) -> Detector:
        """The configuration's detector; with per-file ranges, the nominal one that
        :func:`~ccfkit.simulate.randomization.file_detector` draws a file's from."""
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
        # the randomisation's fields only when on: without them the file is as before
        for name in ("randomize", *_RANDOM_RANGES, "beam_stop", "beam_offset_range",
                     "panel_grids"):  # fmt: skip
            if not out[name]:
                out.pop(name)
        rename.update(_RANDOM_UNITS)
        return {rename.get(k, k): (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    def aliasing_warning(self) -> str | None:
        """A sentence when the finest fringes are sampled by fewer than 2 pixels."""
        det = self.detector
        if self.max_angle_range is not None:  # the widest angle has the finest fringes
            widest = math.tan(math.radians(self.max_angle_range[1]))
            det = replace(det, distance=det.half_width * det.pixel_size / widest)
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
