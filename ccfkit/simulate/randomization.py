"""Randomised detectors: what ``ccfkit simulate --randomize`` and its range options draw.

A network trained on one simulated detector learns that detector: where the
rings of a droplet fall in pixels, the size and shape of its beam stop, its
noise. These options draw the instrument too, from their own random streams
(the particle's and the photon noise's streams are untouched), so that a
training set covers many detectors. What is drawn per file and what per frame
(one mask and one pixel size per CXI file; ``docs/simulate.md``, "Randomised
detectors", gives the ranges of :func:`randomized_ranges` and their reasons):

* **per file** (``default_rng([seed, 0, FILE_STREAM])``, 12 uniforms): the pixel
  size, the beam stop (shape, size, holder arm), the offset of the beam and
  its stop from the detector middle, the panel grid and the gaps between
  panels: everything that is in the mask;
* **per frame** (``default_rng([seed, i, RANDOM_STREAM])``, 8 uniforms): the
  angular scale of the detector (its half-width's scattering angle, hence the
  distance), the flat background, the degree of linear polarisation, the
  detector gain and the read noise; the read noise's values come from
  ``SFC64(SeedSequence([seed, i, READ_NOISE_STREAM]))``.

Each quantity has its own uniform slot, so switching one range on does not
change what the others draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .detector import Detector

__all__ = [
    "BEAM_STOPS",
    "FILE_STREAM",
    "FRAME_FIELDS",
    "HOLDER_WIDTH_FRACTION",
    "RANDOM_STREAM",
    "READ_NOISE_STREAM",
    "RECTANGLE_ASPECT",
    "FrameRandomization",
    "check_randomization",
    "draw_frame_randomization",
    "file_detector",
    "parse_panel_grid",
    "randomized_ranges",
    "randomizes",
]

#: Random streams (the third entry of the seed sequence; 0 and 1 are the particle's and
#: the photon noise's, :mod:`ccfkit.simulate.parameters`).
RANDOM_STREAM, READ_NOISE_STREAM, FILE_STREAM = 2, 3, 4
#: The shapes ``beam_stop`` may name; ``random`` draws one of the others per file.
BEAM_STOPS = ("round", "rectangle", "round-arm", "rectangle-arm", "random")
#: A rectangular stop's half-height over half-width, log-uniform per file.
RECTANGLE_ASPECT = (0.5, 2.0)
#: The holder arm's width over the stop's radius (half-width), uniform per file.
HOLDER_WIDTH_FRACTION = (0.4, 0.8)
#: The per-frame fields of :class:`FrameRandomization`, with the configuration's range.
FRAME_FIELDS = {
    "distance": "max_angle_range",
    "background": "background_range",
    "polarization_degree": "polarization_degree",
    "gain": "gain_range",
    "read_noise": "read_noise_range",
}
# Configuration fields drawn per file (in the mask, or the pixel size).
_FILE_FIELDS = ("pixel_size_range", "beam_stop", "beam_stop_range", "beam_offset_range",
                "panel_grids", "panel_gap_range")  # fmt: skip


def randomized_ranges(size: int) -> dict:
    """The ranges that ``randomize=True`` (``--randomize``) fills in, for a detector of
    ``size`` pixels: lengths in pixels scale with the size (``docs/simulate.md``)."""
    return {
        "max_angle_range": (12.0, 40.0),
        "pixel_size_range": (50.0, 200.0),
        "beam_stop": "random",
        "beam_stop_range": (max(1.0, 0.015 * size), 0.08 * size),
        "beam_offset_range": 0.03 * size,
        "panel_grids": ("1x1", "2x1", "2x2", "4x2", "4x4"),
        "panel_gap_range": (1.0, max(1.0, 0.04 * size)),
        "background_range": (0.0, 0.1),
        "polarization_degree": (0.0, 1.0),
        "gain_range": (0.5, 4.0),
        "read_noise_range": (0.0, 0.5),
    }


def randomizes(config, what: str = "any") -> bool:
    """Whether ``config`` draws anything per ``"file"``, per ``"frame"`` or at all (``"any"``)."""
    fields = {"file": _FILE_FIELDS, "frame": tuple(FRAME_FIELDS.values())}
    names = fields.get(what, _FILE_FIELDS + tuple(FRAME_FIELDS.values()))
    return any(getattr(config, name) is not None for name in names)


def check_randomization(config, span) -> None:
    """Raise ValueError, with a one-line reason, for impossible randomisation ranges.

    ``span(name, (lo, hi), low, high, low_ok)`` checks one range (the
    configuration's own checker).
    """
    size = int(config.size)
    ranges = (
        ("max angle range (degrees)", config.max_angle_range, 0.0, 80.0, False),
        ("pixel size range (micrometres)", config.pixel_size_range, 0.0, 1e5, False),
        ("beam stop range (px)", config.beam_stop_range, 0.0, size / 4, True),
        ("panel gap range (px)", config.panel_gap_range, 0.0, size / 4, True),
        ("background range (photons per pixel)", config.background_range, 0.0, 1e6, True),
        ("polarization degree", config.polarization_degree, 0.0, 1.0, True),
        ("gain range (units per photon)", config.gain_range, 0.0, 1e6, False),
        ("read noise range (photons)", config.read_noise_range, 0.0, 1e3, True),
    )
    for name, value, low, high, low_ok in ranges:
        if value is not None:
            if len(value) != 2:
                raise ValueError(f"{name} must be a MIN MAX pair")
            span(name, value, low, high, low_ok)
    if config.beam_stop is not None and config.beam_stop not in BEAM_STOPS:
        raise ValueError(f"unknown beam stop {config.beam_stop!r}; use {', '.join(BEAM_STOPS)}")
    for grid in config.panel_grids or ():
        parse_panel_grid(grid)
    offset = config.beam_offset_range
    if offset is not None and not (
        math.isfinite(offset)
        and 0 <= offset
        and offset + math.hypot(*config.beam_offset) + config.jitter <= size / 4
    ):
        raise ValueError(
            f"the beam offset range plus the beam offset and the jitter must stay within "
            f"size/4 = {size / 4:g} px of the middle, got {offset:g}"
        )
    if config.polarization_degree is not None and config.polarization not in (
        "horizontal",
        "vertical",
    ):
        raise ValueError("a polarization degree needs a horizontal or vertical polarization")
    if config.read_noise_range is not None and not config.noise:
        raise ValueError("read noise needs photon noise (it is not added to expected counts)")


def parse_panel_grid(text: str) -> tuple[int, int]:
    """``"ROWSxCOLUMNS"`` (e.g. ``"4x2"``) as ``(rows, columns)``, each 1 to 16."""
    rows, sep, cols = str(text).strip().lower().partition("x")
    try:
        grid = (int(rows), int(cols))
    except ValueError:
        grid = (0, 0)
    if not sep or not all(1 <= n <= 16 for n in grid):
        raise ValueError(f"panel grid {text!r} is not ROWSxCOLUMNS with 1 to 16 panels each way")
    return grid


def file_detector(config, seed: int) -> Detector:
    """The detector of the file that ``(config, seed)`` writes.

    Without per-file ranges this is ``config.detector``. Otherwise, from 12
    uniforms of ``default_rng([seed, 0, FILE_STREAM])``: the pixel size
    (log-uniform, ``pixel_size_range`` in micrometres; the distance follows
    from ``max_angle``), the stop (shape uniform among those ``beam_stop``
    allows, its half-width uniform in ``beam_stop_range`` pixels, a rectangle's
    aspect log-uniform in :data:`RECTANGLE_ASPECT`, a holder arm in a uniform
    direction, :data:`HOLDER_WIDTH_FRACTION` of the half-width wide), the
    offset of the stop and the beam (uniform in a disc of radius
    ``beam_offset_range``), the panel grid (uniform among ``panel_grids``) and
    the gap width (uniform in ``panel_gap_range``).
    """
    base = config.detector
    if not randomizes(config, "file"):
        return base
    u = np.random.default_rng([seed, 0, FILE_STREAM]).random(12)
    pixel, distance = base.pixel_size, base.distance
    if config.pixel_size_range is not None:
        lo, hi = config.pixel_size_range
        pixel = lo * (hi / lo) ** u[0] * 1e-6
        distance = base.half_width * pixel / math.tan(math.radians(config.max_angle))
    shapes = BEAM_STOPS[:4] if config.beam_stop == "random" else (config.beam_stop or "round",)
    shape = shapes[min(int(u[1] * len(shapes)), len(shapes) - 1)]
    radius = _uniform(config.beam_stop_range, u[2], config.hole_radius)
    grids = config.panel_grids or ("2x2",)
    lo, hi = RECTANGLE_ASPECT
    arm_lo, arm_hi = HOLDER_WIDTH_FRACTION
    return replace(
        base,
        distance=distance,
        pixel_size=pixel,
        hole_radius=radius,
        offset=_in_disc(config.beam_offset_range or 0.0, u[3], u[4]),
        panel_grid=parse_panel_grid(grids[min(int(u[5] * len(grids)), len(grids) - 1)]),
        panel_gap=_uniform(config.panel_gap_range, u[6], config.panel_gap),
        beam_stop=shape.removesuffix("-arm"),
        stop_aspect=lo * (hi / lo) ** u[7] if shape.startswith("rectangle") else 1.0,
        holder_angle=2 * math.pi * u[8] if shape.endswith("-arm") else None,
        holder_width=(
            max(1.0, radius * (arm_lo + (arm_hi - arm_lo) * u[9]))
            if shape.endswith("-arm")
            else 0.0
        ),
    )


@dataclass(frozen=True)
class FrameRandomization:
    """What the per-frame ranges drew for ``N`` frames; None where a range is off.

    Attributes
    ----------
    distance : (N,) float64 or None
        Sample-detector distance, m (the file's pixel size is fixed).
    background : (N,) float64 or None
        Flat photons per good pixel.
    polarization_degree : (N,) float64 or None
        Degree of linear polarisation, 0 (unpolarised) to 1.
    gain : (N,) float64 or None
        Detector units per photon.
    read_noise : (N,) float64 or None
        Standard deviation of the Gaussian read noise, detector units.
    """

    distance: np.ndarray | None = None
    background: np.ndarray | None = None
    polarization_degree: np.ndarray | None = None
    gain: np.ndarray | None = None
    read_noise: np.ndarray | None = None


def draw_frame_randomization(config, seed: int, indices, detector: Detector):
    """Draw the per-frame detector quantities of frames ``indices``.

    Frame ``i`` uses 8 uniforms of ``default_rng([seed, i, RANDOM_STREAM])``:
    the half-width's scattering angle, uniform in ``max_angle_range``
    (degrees; distance ``L = (size / 2) p / tan(angle)`` with the file's pixel
    size ``p``); the background, uniform in ``background_range``; the
    polarisation degree, uniform; the gain, log-uniform in ``gain_range``;
    the read noise, uniform in ``read_noise_range`` photons, times the gain.

    Returns
    -------
    FrameRandomization
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if not randomizes(config, "frame"):
        return FrameRandomization()
    u = np.empty((indices.size, 8))
    for row, index in enumerate(indices):
        u[row] = np.random.default_rng([seed, int(index), RANDOM_STREAM]).random(8)
    drawn = {}
    if config.max_angle_range is not None:
        angle = np.radians(_uniform(config.max_angle_range, u[:, 0]))
        drawn["distance"] = detector.half_width * detector.pixel_size / np.tan(angle)
    if config.background_range is not None:
        drawn["background"] = _uniform(config.background_range, u[:, 1])
    if config.polarization_degree is not None:
        drawn["polarization_degree"] = _uniform(config.polarization_degree, u[:, 2])
    gain = np.ones(indices.size)
    if config.gain_range is not None:
        lo, hi = config.gain_range
        gain = drawn["gain"] = lo * (hi / lo) ** u[:, 3]
    if config.read_noise_range is not None:
        drawn["read_noise"] = _uniform(config.read_noise_range, u[:, 4]) * gain
    return FrameRandomization(**drawn)


def _uniform(span, u, default=None):
    """``lo + (hi - lo) u`` of ``span = (lo, hi)``; ``default`` when ``span`` is None."""
    if span is None:
        return default
    lo, hi = span
    return lo + (hi - lo) * u


def _in_disc(radius: float, u_radius: float, u_angle: float) -> tuple[float, float]:
    """A point uniform in a disc of ``radius`` from two uniforms."""
    r = radius * math.sqrt(u_radius)
    angle = 2 * math.pi * u_angle
    return (r * math.cos(angle), r * math.sin(angle))
