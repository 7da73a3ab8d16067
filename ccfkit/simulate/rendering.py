"""A frame's data: expected counts, Poisson photon noise and the detector's response.

:func:`expected_counts` combines the particle's pattern
(:mod:`ccfkit.simulate.scattering`) with what the instrument adds
(:mod:`ccfkit.simulate.instrument`); :func:`render_frames` samples the photons
and applies the MCP + phosphor response. The Numba kernels
(:mod:`ccfkit.simulate.kernels`) are imported only here, inside the functions
that render, so that the configuration loads without Numba.

Frame ``i``'s noise comes from its own generator, seeded with ``(seed, i,
NOISE_STREAM)`` (:mod:`ccfkit.simulate.parameters`).
"""

from __future__ import annotations

import numpy as np

from .config import Kind, SimulationConfig
from .detector import Detector
from .instrument import (
    mcp_response,
    polarization_coefficients,
    polarization_factor,
    solid_angle_factor,
    stray_light_halo,
)
from .parameters import NOISE_STREAM, FrameParameters
from .randomization import READ_NOISE_STREAM, file_detector, randomizes
from .scattering import particle_intensity

__all__ = ["POISSON_CUT", "expected_counts", "frame_counts_at", "poisson_counts", "render_frames"]

#: Expected counts up to which the Poisson sampler inverts the CDF (one uniform per
#: pixel); brighter pixels are drawn by ``Generator.poisson``.
POISSON_CUT = 16.0


def expected_counts(
    params: FrameParameters,
    config: SimulationConfig,
    good: np.ndarray | None = None,
    *,
    engine: str = "numba",
    detector: Detector | None = None,
) -> np.ndarray:
    """Expected photons per pixel (no noise) for a batch of frames.

    ``E = fluence * w / sum_good(w) + halo + background`` on good pixels, 0
    on masked ones, with ``w = |A(q)|^2 P Omega``: the particle's scattered
    intensity (:func:`particle_intensity`), the polarisation factor ``P``
    (:func:`ccfkit.simulate.instrument.polarization_factor`) and the pixel's solid angle
    ``Omega = cos^3 2theta`` (:func:`ccfkit.simulate.instrument.solid_angle_factor`),
    each as ``config`` says. ``halo`` is the frame's stray-light halo
    (:func:`ccfkit.simulate.instrument.stray_light_halo`), centred on its beam centre.
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
        (:func:`ccfkit.simulate.kernels.expected_frame`, float64 per pixel), the
        same values to float32 rounding (tested).
    detector : Detector, optional
        The file's detector (:func:`ccfkit.simulate.randomization.file_detector`);
        default ``config.detector``, which a configuration with per-file ranges
        does not know (a ValueError then).

    Per-frame values in ``params`` (a randomised detector's distance,
    background, polarisation degree) replace the configuration's.

    Returns
    -------
    (B, H, W) float32
    """
    detector = _the_detector(config, detector)
    good = detector.good_pixels() if good is None else np.asarray(good, dtype=bool)
    if engine == "numba":
        return _expected_counts_numba(params, config, good, detector)
    if engine != "numpy":
        raise ValueError(f"engine must be 'numba' or 'numpy', got {engine!r}")
    good32 = good.astype(np.float32)
    height, width = detector.shape
    out = np.empty((len(params), height, width), dtype=np.float32)
    cols = np.arange(width, dtype=np.float64)
    rows = np.arange(height, dtype=np.float64)[:, None]
    for b in range(len(params)):
        cx, cy = params.center[b]
        frame_counts_at(out[b], cols - cx, rows - cy, params, b, config, good32, detector)
    return out


def frame_counts_at(frame, x_px, y_px, params, b: int, config, good32, detector) -> None:
    """Frame ``b``'s expected counts at pixels ``(x_px, y_px)`` from its beam, into ``frame``.

    The NumPy reference of :func:`expected_counts` for one frame, wherever
    the pixels lie: on the flat detector's grid (``x_px`` (W,), ``y_px`` (H,
    1)), or at a module stack's pixel positions
    (:mod:`ccfkit.simulate.stack`: both (H, W)).

    Parameters
    ----------
    frame : (H, W) float32
        Receives the counts.
    x_px, y_px : float64 arrays broadcasting to (H, W)
        Pixel offsets from the beam centre, pixels.
    params : FrameParameters
    b : int
        The frame's row in ``params``.
    config : SimulationConfig
    good32 : (H, W) float32
        1 on good pixels, 0 on masked ones.
    detector : Detector
        Pixel size and (unless drawn per frame) distance.
    """
    per_length = detector.pixel_size / _distance(params, detector, b)  # offsets -> x / L
    if params.kind[b] == Kind.EMPTY or params.fluence[b] <= 0:
        frame[...] = 0
    else:
        x_l, y_l = x_px * per_length, y_px * per_length
        cos2t = particle_intensity(x_l, y_l, params.take([b]), per_length, out=frame)
        frame *= _instrument_weight(x_l, y_l, config, good32, cos2t, _degree(params, b))
        total = frame.sum(dtype=np.float64)
        frame *= np.float32(params.fluence[b] / total) if total > 0 else np.float32(0)
    if params.halo[b] > 0:
        r2 = np.add(np.float32(x_px) ** 2, np.float32(y_px) ** 2, dtype=np.float32)
        frame += stray_light_halo(r2, float(params.halo_width[b]), good32, params.halo[b])
    background = _background(params, config, b)
    if background:
        frame += np.float32(background) * good32


def _the_detector(config: SimulationConfig, detector: Detector | None) -> Detector:
    """``detector``, or ``config.detector`` when the configuration draws none per file."""
    if detector is not None:
        return detector
    if randomizes(config, "file"):
        raise ValueError("this configuration draws its detector per file: pass the file's")
    return config.detector


def _distance(params: FrameParameters, detector: Detector, b: int) -> float:
    """Frame ``b``'s detector distance, m: drawn per frame, or the file's."""
    return detector.distance if params.distance is None else float(params.distance[b])


def _background(params: FrameParameters, config: SimulationConfig, b: int) -> float:
    """Frame ``b``'s flat background, photons per good pixel."""
    return config.background if params.background is None else float(params.background[b])


def _degree(params: FrameParameters, b: int) -> float | None:
    """Frame ``b``'s degree of linear polarisation, or None (the configuration's: full)."""
    degree = params.polarization_degree
    return None if degree is None else float(degree[b])


def _expected_counts_numba(
    params: FrameParameters, config: SimulationConfig, good, detector: Detector
) -> np.ndarray:
    """:func:`expected_counts` through :func:`ccfkit.simulate.kernels.expected_frame`."""
    from . import kernels  # Numba only when frames are rendered

    good32 = good.astype(np.float32)
    out = np.empty((len(params), *detector.shape), dtype=np.float32)
    solid = 1.0 if config.solid_angle else 0.0
    weight = np.array([*polarization_coefficients(config.polarization), solid])
    for b in range(len(params)):
        pixel_over_l = detector.pixel_size / _distance(params, detector, b)
        degree = _degree(params, b)
        if degree is not None:
            weight = np.array([*polarization_coefficients(config.polarization, degree), solid])
        mode, particle = _kernel_particle(params, b, pixel_over_l)
        kernels.expected_frame(
            out[b], good32, params.center[b], pixel_over_l, mode, particle, weight,
            float(params.fluence[b]), float(params.halo[b]), float(params.halo_width[b]),
            float(_background(params, config, b)),
        )  # fmt: skip
    return out


def _kernel_particle(params: FrameParameters, b: int, pixel_over_l: float):
    """``(mode, particle)`` of frame ``b`` for :func:`ccfkit.simulate.kernels.expected_frame`.

    Returns
    -------
    mode : int
    particle : (7,) float64
        The per-frame constants in that kernel's layout (``k`` in 1/nm).
    """
    from . import kernels  # Numba only when frames are rendered

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


def _instrument_weight(x_over_l, y_over_l, config: SimulationConfig, good32, cos2t, degree=None):
    """``P Omega`` on good pixels, 0 on masked ones: (H, W) float32 (``degree``: of the
    linear polarisation, None: full)."""
    weight = polarization_factor(x_over_l, y_over_l, config.polarization, cos2t, degree)
    if config.solid_angle:
        weight *= solid_angle_factor(x_over_l, y_over_l, cos2t)
    weight *= good32
    return weight


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
    CDF inversion (:func:`ccfkit.simulate.kernels.invert_poisson`, a GIL-free
    kernel, so that threads rendering frames run it side by side), then
    ``rng.poisson`` for the pixels above ``cut``.
    """
    from . import kernels  # Numba only when frames are rendered

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
    detector: Detector | None = None,
) -> np.ndarray:
    """The data of a batch of frames: expected counts, Poisson noise and detector response.

    Frame ``i``'s noise comes from ``Generator(SFC64(SeedSequence([seed, i, 1])))``
    alone (SFC64: the fastest of NumPy's bit generators): first the Poisson
    counts, then, with ``config.mcp``, the MCP gains
    (:func:`ccfkit.simulate.instrument.mcp_response`). Without noise, the MCP response
    is the blur of the expected counts (no gain spread). A randomised
    detector's gain ``g`` and read noise ``sigma`` (per frame in ``params``)
    come last: ``g n + sigma z`` on good pixels, ``z`` standard normal from
    ``SFC64(SeedSequence([seed, i, READ_NOISE_STREAM]))``.

    ``detector`` is the file's (default:
    :func:`ccfkit.simulate.randomization.file_detector` of ``config`` and ``seed``).

    Returns
    -------
    (B, H, W) float32
        Photon counts (whole numbers with noise and without MCP), or detector
        values in mean photon signals (times the gain, plus read noise, where
        drawn); 0 on masked pixels.
    """
    detector = file_detector(config, seed) if detector is None else detector
    good = detector.good_pixels() if good is None else good
    expected = expected_counts(params, config, good, detector=detector)
    if not config.noise:
        frames, rngs = expected, [None] * len(params)
    else:
        rngs = [
            np.random.Generator(
                np.random.SFC64(np.random.SeedSequence([seed, int(i), NOISE_STREAM]))
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
    if params.gain is not None or params.read_noise is not None:
        _detector_response(frames, params, seed, good)
    return frames


def _detector_response(frames: np.ndarray, params: FrameParameters, seed: int, good) -> None:
    """``frames[b] = g_b frames[b] + sigma_b z`` in place, ``z`` standard normal on the good
    pixels (frame ``i``'s from its :data:`READ_NOISE_STREAM`), 0 on masked ones."""
    for b, index in enumerate(params.index):
        if params.gain is not None:
            frames[b] *= np.float32(params.gain[b])
        if params.read_noise is not None and params.read_noise[b] > 0:
            rng = np.random.Generator(
                np.random.SFC64(np.random.SeedSequence([seed, int(index), READ_NOISE_STREAM]))
            )
            noise = rng.standard_normal(frames[b].shape, dtype=np.float32)
            noise *= np.float32(params.read_noise[b])
            frames[b] += noise * good
