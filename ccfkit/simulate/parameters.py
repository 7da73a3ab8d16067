"""What is drawn for each frame: the particle(s), the beam, the fluence and the stray light.

Every frame is a pure function of ``(seed, index, config)``: its parameters
come from a generator seeded with ``(seed, index, PARAMETER_STREAM)`` (and its
noise, in :mod:`ccfkit.simulate.rendering`, from ``(seed, index,
NOISE_STREAM)``), so a frame does not depend on how many frames are made, in
what blocks, or by how many threads. Lengths in nm, photon energies in eV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import TWO_SPHERE_KINDS, Kind, SimulationConfig, photon_energy_to_wavelength
from .randomization import draw_frame_randomization, file_detector

__all__ = [
    "ASYMMETRIC_COS_TILT",
    "DOUBLE_SEPARATION_NM",
    "NEWTON_SEPARATION_NM",
    "NOISE_STREAM",
    "PARAMETER_STREAM",
    "PARTNER_RATIO",
    "FrameParameters",
    "draw_parameters",
]

#: Ranges of the partner's radius over the droplet's (``rho = R2 / R1``) per kind.
PARTNER_RATIO = {Kind.DOUBLE: (0.35, 0.8), Kind.NEWTON: (0.85, 1.0), Kind.ASYMMETRIC: (0.75, 0.95)}
#: Double: centre-to-centre distance in the detector plane, nm: droplets a few
#: micrometres apart in the focus; their fringes are mostly finer than a pixel,
#: so two ring systems show (:func:`ccfkit.simulate.scattering.fringe_visibility`).
DOUBLE_SEPARATION_NM = (2000.0, 12000.0)
#: Newton: distance along the beam, nm.
NEWTON_SEPARATION_NM = (1500.0, 6000.0)
#: Asymmetric: the lobes touch (``|d| = R1 + R2``); ``|cos|`` of the angle
#: between ``d`` and the beam in this range (neither side by side nor in line).
ASYMMETRIC_COS_TILT = (0.45, 0.9)

#: Random streams of frame ``i``: ``(seed, i, PARAMETER_STREAM)`` seeds its parameters,
#: ``(seed, i, NOISE_STREAM)`` its photon noise (the MCP gains follow the Poisson draws
#: in the noise stream, :func:`ccfkit.simulate.rendering.render_frames`).
PARAMETER_STREAM, NOISE_STREAM = 0, 1
# Uniform numbers drawn per frame for its parameters (see draw_parameters); the
# first 9 are those of ccfkit-simulate/1, in the same order.
_N_UNIFORMS = 15


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
    distance, background, polarization_degree, gain, read_noise : (N,) float64, optional
        What the randomised detector drew for each frame
        (:class:`~ccfkit.simulate.randomization.FrameRandomization`: m, photons
        per pixel, 0-1, detector units per photon, detector units); None: the
        configuration's single value (no gain, no read noise).
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
    distance: np.ndarray | None = None
    background: np.ndarray | None = None
    polarization_degree: np.ndarray | None = None
    gain: np.ndarray | None = None
    read_noise: np.ndarray | None = None

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
        return FrameParameters(
            **{k: None if v is None else v[rows] for k, v in self.__dict__.items()}
        )


def draw_parameters(config: SimulationConfig, seed: int, indices) -> FrameParameters:
    """Draw the particle(s), beam, fluence and stray light of each frame.

    Frame ``i`` uses only ``default_rng([seed, i, 0])`` (15 uniforms) and, with
    a randomised detector, the streams of :mod:`ccfkit.simulate.randomization`,
    so its parameters do not depend on the other frames.

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
        u[row] = np.random.default_rng([seed, int(index), PARAMETER_STREAM]).random(_N_UNIFORMS)

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
    detector = file_detector(config, seed)
    cx0, cy0 = np.add(detector.stop_center, config.beam_offset)
    center = np.stack([cx0 + shift * np.cos(turn), cy0 + shift * np.sin(turn)], axis=1)

    partner_radius, separation = _draw_partners(kind, radius, u[:, 9:13])

    halo = np.zeros(indices.size)
    if config.halo[1] > 0:
        halo = config.halo[0] * (config.halo[1] / config.halo[0]) ** u[:, 13]  # log-uniform
    width_deg = config.halo_width[0] + (config.halo_width[1] - config.halo_width[0]) * u[:, 14]
    drawn = draw_frame_randomization(config, seed, indices, detector)
    distance = detector.distance if drawn.distance is None else drawn.distance
    halo_width = distance * np.tan(np.radians(width_deg)) / detector.pixel_size

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
        **vars(drawn),
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
