"""The labelled CXI file of ``ccfkit simulate``: frames rendered in threads, then written.

Layout (CXI 1.6 conventions, SI units; the full table is in
``docs/simulate.md``)::

    /cxi_version                                   160
    /entry_1/data_1/data                           float32 (N, H, W), photons, chunk = 1 frame
    /entry_1/instrument_1/detector_1/data          soft link to the above
    /entry_1/instrument_1/detector_1/distance      float64, m
    /entry_1/instrument_1/detector_1/x_pixel_size  float64, m (also y_pixel_size)
    /entry_1/instrument_1/detector_1/mask          uint32 (H, W), CXI bit mask (attrs: convention = "cxi")
    /entry_1/instrument_1/detector_1/beam_center   float64 (N, 2), (cx, cy) in pixels
    /entry_1/instrument_1/source_1/wavelength      float64 (N,), m (per frame)
    /entry_1/instrument_1/source_1/energy          float64 (N,), J (per frame)
    /entry_1/sample_1/...                          what was drawn per frame
    /entry_1/labels                                uint8 (N, C) (attrs: names, display_names,
                                                   exclusive_groups, parents, rules)

The simulation (:mod:`ccfkit.simulate`) draws, labels and renders; this module writes
through the CXI writer (:func:`ccfkit.io.cxi.write_frames`), which knows
nothing of the simulation. Lengths are converted from nm to m and photon
energies from eV to J here.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np

from .._version import __version__
from ..io.cxi import PIXEL_IS_MISSING, dataset, group, write_frames
from .config import Kind, SimulationConfig
from .detector import Detector
from .labels import (
    DISPLAY_NAMES,
    EXCLUSIVE_GROUPS,
    LABELS,
    PARENTS,
    assign_labels,
    fringe_shift,
    label_rules,
    partner_features,
    projected_semi_axes,
    visible_radius,
)
from .parameters import FrameParameters, draw_parameters
from .randomization import file_detector, randomizes
from .rendering import render_frames

logger = logging.getLogger(__name__)

__all__ = ["EV", "FORMULAS", "SCHEMA", "write_simulated"]

#: electronvolt in joules (CXI stores photon energies in J).
EV = 1.602176634e-19

#: The layout's name and version (the file's ``schema`` attribute).
SCHEMA = "ccfkit-simulate/2"


def write_simulated(
    path,
    config: SimulationConfig,
    n_frames: int,
    seed: int,
    *,
    overwrite: bool = False,
    workers: int = 1,
    block: int = 32,
    progress: bool = True,
) -> dict:
    """Simulate ``n_frames`` frames and write them, labelled, to a CXI file.

    Parameters
    ----------
    path : str or Path
        The output file (written as ``path.partial``, then renamed).
    config : SimulationConfig
    n_frames : int
        >= 1.
    seed : int
        >= 0. The file depends only on ``(config, n_frames, seed)`` (and the
        NumPy build), not on ``workers`` or ``block``.
    overwrite : bool
        Replace an existing file.
    workers : int
        Threads that render frames (NumPy releases the GIL); the main thread
        writes.
    block : int
        Frames per rendering task.
    progress : bool
        A tqdm progress bar on stderr (hidden when stderr is not a terminal).

    Returns
    -------
    dict
        ``frames``, ``seconds``, ``frames_per_second``, ``label_counts``.
    """
    from tqdm import tqdm

    _check_counts(n_frames, seed, workers, block)
    warning = config.aliasing_warning()
    if warning:
        logger.warning(warning)
    start = time.perf_counter()
    detector = file_detector(config, seed)
    good = detector.good_pixels()
    params = draw_parameters(config, seed, np.arange(n_frames))

    def render(lo: int) -> tuple[int, np.ndarray]:
        rows = slice(lo, min(lo + block, n_frames))
        return lo, render_frames(params.take(rows), config, seed, good, detector)

    bar = tqdm(
        total=n_frames,
        unit="frame",
        desc="simulate",
        disable=None if progress else True,
        leave=False,
    )
    with bar, ThreadPoolExecutor(max_workers=workers) as pool:
        starts = iter(range(0, n_frames, block))
        # the first blocks render while this thread labels the frames
        pending = deque(pool.submit(render, lo) for lo in islice(starts, 2 * workers))
        try:
            visible, shift, labels = _labelled(params, detector)

            def header(handle) -> None:
                _write_header(handle, config, seed, params, labels, detector, visible, shift)

            write_frames(
                path,
                detector.shape,
                n_frames,
                _rendered(pool, render, pending, starts, bar),
                header=header,
                units=_data_units(config),
                description=(
                    "photon counts per pixel (with --mcp: MCP + phosphor signal, 1 = one "
                    "photon's mean); 0 on masked pixels (see detector_1/mask)"
                ),
                overwrite=overwrite,
            )
        except BaseException:
            for future in pending:  # an error: the blocks not started are not rendered
                future.cancel()
            raise
    return _report(path, n_frames, time.perf_counter() - start, labels)


def _check_counts(n_frames: int, seed: int, workers: int, block: int) -> None:
    """Raise ValueError, with a one-line reason, for a count out of range."""
    if n_frames < 1:
        raise ValueError(f"the number of frames must be >= 1, got {n_frames}")
    if seed < 0:
        raise ValueError(f"the seed must be >= 0, got {seed}")
    if workers < 1 or block < 1:
        raise ValueError("workers and block must be >= 1")


def _labelled(params: FrameParameters, detector: Detector):
    """``(visible_radius, fringe_shift, labels)`` of the frames (:mod:`ccfkit.simulate.labels`)."""
    visible = visible_radius(params, detector)
    shift = fringe_shift(params, detector, visible)
    partners = partner_features(params, detector, visible)
    return visible, shift, assign_labels(params, detector, shift, partners)


def _report(path, n_frames: int, seconds: float, labels: np.ndarray) -> dict:
    """What :func:`write_simulated` returns (and logs)."""
    counts = dict(zip(LABELS, labels.sum(axis=0).tolist()))
    logger.info("wrote %s: %d frames in %.1f s, labels %s", path, n_frames, seconds, counts)
    return {
        "frames": n_frames,
        "seconds": seconds,
        "frames_per_second": n_frames / seconds,
        "label_counts": counts,
    }


def _rendered(pool, render, pending: deque, starts, bar) -> Iterator[tuple[int, np.ndarray]]:
    """The blocks ``render(lo)`` in order: those in ``pending``, then one per start.

    ``pending`` holds the blocks already submitted to ``pool``; each block
    taken submits the next, so at most ``len(pending)`` are in flight while
    the consumer writes one.
    """
    for lo in starts:
        yield _counted(pending.popleft().result(), bar)
        pending.append(pool.submit(render, lo))
    while pending:
        yield _counted(pending.popleft().result(), bar)


def _counted(item: tuple[int, np.ndarray], bar) -> tuple[int, np.ndarray]:
    bar.update(len(item[1]))
    return item


def _data_units(config: SimulationConfig) -> str:
    """The ``units`` attribute of the frames."""
    if config.gain_range is not None:
        return "detector units (gain x photons + read noise)"
    if config.mcp:
        return "mean photon signals (MCP)" if config.noise else "blurred expected photons"
    return "photons" if config.noise else "expected photons"


#: The formulas of the model, by name (stored in the file's ``formulas`` attribute).
FORMULAS = {
    "q": "q = k (n - z), n = (x, y, L) / D, D = sqrt(x^2 + y^2 + L^2), "
    "|q| = 4 pi sin(theta) / lambda",
    "spheroid": "A = F(u), F(u) = 3 (sin u - u cos u) / u^3, "
    "u^2 = a^2 |q|^2 + (c^2 - a^2) (q . c)^2",
    "two_spheres": "|A|^2 = F1^2 + rho^6 F2^2 + 2 rho^3 F1 F2 V cos(q . d), F_i = F(q R_i), "
    "rho = R2 / R1, V = sinc(g_x / 2) sinc(g_y / 2) (g: change of q . d across a pixel)",
    "polarization": {
        "horizontal": "P = 1 - (x / D)^2",
        "vertical": "P = 1 - (y / D)^2",
        "unpolarised": "P = (1 + cos^2 2theta) / 2",
        "none": "P = 1",
    },
    "solid_angle": "Omega = cos^3 2theta = (L / D)^3",
    "counts": "E = fluence |A|^2 P Omega / sum_good(|A|^2 P Omega) + halo + background",
    "halo": "halo = H (1 + r^2 / w^2)^(-3/2) / sum_good(...), r from the beam centre (px)",
    "mcp": "value = Gamma(n / s^2, s^2) per pixel with n photons (gain mean 1, relative "
    "spread s), then a Gaussian blur of sigma pixels",
}


def _write_header(
    handle, config, seed, params: FrameParameters, labels, detector, visible, shift
) -> None:
    """Everything but the frames: provenance, geometry, mask, source, sample, labels.

    The steps write in a fixed order, so that equal content gives equal bytes.
    """
    _write_provenance(handle, config, seed, len(params))
    if randomizes(config):
        _write_randomization_provenance(handle, detector)
    dataset(handle, "cxi_version", 160)
    entry = group(handle, "entry_1", "NXentry")
    instrument = group(entry, "instrument_1", "NXinstrument")
    _write_detector(instrument, detector, params)
    _write_source(instrument, params)
    sample = group(entry, "sample_1", "NXsample")
    background = config.background if params.background is None else params.background
    _write_particles(sample, params, background)
    _write_stray_light(sample, params)
    _write_label_features(sample, params, visible, shift)
    _write_labels(entry, labels)


def _write_provenance(handle, config, seed: int, n_frames: int) -> None:
    """The file's attributes: creator, versions, seed, parameters, model and formulas."""
    handle.attrs["creator"] = "ccfkit simulate"
    handle.attrs["ccfkit_version"] = __version__
    handle.attrs["numpy_version"] = np.__version__
    handle.attrs["schema"] = SCHEMA
    handle.attrs["seed"] = int(seed)
    handle.attrs["n_frames"] = n_frames
    handle.attrs["parameters"] = json.dumps(config.to_dict(), sort_keys=True)
    handle.attrs["model"] = (
        "Born (Rayleigh-Gans) far field of homogeneous spheres/spheroids, or of two spheres "
        "scattering coherently, on the Ewald sphere; polarisation factor "
        f"({config.polarization}), flat-detector solid angle "
        f"({'on' if config.solid_angle else 'off'}), stray-light halo, flat background, "
        f"{'Poisson photon noise' if config.noise else 'no noise'}, MCP + phosphor response "
        f"{'on' if config.mcp else 'off'}; see docs/simulate.md"
    )
    handle.attrs["formulas"] = json.dumps(FORMULAS, sort_keys=True)


def _write_detector(instrument, detector: Detector, params: FrameParameters) -> None:
    """``detector_1``: distance (per frame where drawn) and pixel size (m), the CXI mask,
    the beam centres (N, 2); a randomised detector's gain and read noise per frame."""
    det = group(instrument, "detector_1", "NXdetector")
    if params.distance is None:
        dataset(det, "distance", detector.distance, "m")
    else:
        dataset(det, "distance", params.distance, "m", description="per frame")
    dataset(det, "x_pixel_size", detector.pixel_size, "m")
    dataset(det, "y_pixel_size", detector.pixel_size, "m")
    mask = np.where(detector.good_pixels(), 0, PIXEL_IS_MISSING).astype(np.uint32)
    dataset(det, "mask", mask, convention="cxi", description=_mask_description(detector))
    dataset(
        det,
        "beam_center",
        params.center,
        "pixel",
        columns="cx (column, x), cy (row, y)",
        description="true beam centre per frame; pixel centres at integer coordinates",
        nominal=np.asarray(detector.stop_center),
    )
    _write_detector_response(det, params)


def _mask_description(detector: Detector) -> str:
    """The mask's ``description``: what is masked (the stop, its arm, the panel gaps)."""
    if detector.beam_stop == "rectangle":
        stop = (
            f"a rectangular beam stop, {2 * detector.hole_radius:g} x "
            f"{2 * detector.hole_radius * detector.stop_aspect:g} px"
        )
    elif detector.offset == (0.0, 0.0) and detector.holder_angle is None:
        stop = f"the central hole of the MCP, radius {detector.hole_radius:g} px"
    else:
        stop = f"a round beam stop, radius {detector.hole_radius:g} px"
    where = (
        "the detector middle"
        if detector.offset == (0.0, 0.0)
        else (f"({detector.stop_center[0]:g}, {detector.stop_center[1]:g}) px")
    )
    text = f"CXI bit mask: 0 = good; 512 (PIXEL_IS_MISSING) = {stop} around {where}"
    if detector.holder_angle is not None:
        text += (
            f", its holder arm, {detector.holder_width:g} px wide, towards "
            f"{math.degrees(detector.holder_angle):.0f} deg (from +x towards +y)"
        )
    if detector.panel_gap and detector.panel_grid != (1, 1):
        rows, cols = detector.panel_grid
        panels = "four panels" if (rows, cols) == (2, 2) else f"{rows} x {cols} panels"
        text += f", and gaps {detector.panel_gap:g} px wide between {panels}"
    return text


def _write_detector_response(det, params: FrameParameters) -> None:
    """A randomised detector's gain and read noise per frame, where drawn."""
    if params.gain is not None:
        dataset(det, "gain", params.gain, "detector units per photon", description="per frame")
    if params.read_noise is not None:
        dataset(
            det,
            "read_noise",
            params.read_noise,
            "detector units",
            description="per frame: standard deviation of the Gaussian read noise",
        )


#: The randomised detector's formulas (added to ``formulas`` when it is on).
RANDOMIZATION_FORMULAS = {
    "partial_polarization": "P = 1 - (1 + d) / 2 (x / D)^2 - (1 - d) / 2 (y / D)^2 "
    "(horizontal; x and y swapped vertical), d the degree of linear polarisation",
    "detector_response": "value = g n + sigma z on good pixels, n the photon count (or MCP "
    "signal), g the gain, z standard normal, sigma the read noise (detector units)",
    "distance": "L = (size / 2) p / tan(max_angle), per frame",
}


def _write_randomization_provenance(handle, detector: Detector) -> None:
    """The file's randomised detector (what was drawn per file) as a JSON attribute, and
    the randomisation in ``model`` and ``formulas``."""
    handle.attrs["model"] = (
        f"{handle.attrs['model']}; randomised detector (per file: geometry, beam stop, "
        "panels; per frame: the drawn ranges in parameters)"
    )
    formulas = json.loads(handle.attrs["formulas"])
    handle.attrs["formulas"] = json.dumps({**formulas, **RANDOMIZATION_FORMULAS}, sort_keys=True)
    handle.attrs["randomized_detector"] = json.dumps(
        {
            "pixel_size_m": detector.pixel_size,
            "beam_stop": detector.beam_stop,
            "beam_stop_radius_px": detector.hole_radius,
            "stop_aspect": detector.stop_aspect,
            "holder_angle_deg": (
                None if detector.holder_angle is None else math.degrees(detector.holder_angle)
            ),
            "holder_width_px": detector.holder_width,
            "stop_offset_px": list(detector.offset),
            "panel_grid": list(detector.panel_grid),
            "panel_gap_px": detector.panel_gap,
        },
        sort_keys=True,
    )


def _write_source(instrument, params: FrameParameters) -> None:
    """``source_1``: each frame's wavelength (m) and photon energy (J), and its degree of
    linear polarisation where drawn."""
    source = group(instrument, "source_1", "NXsource")
    dataset(source, "wavelength", params.wavelength * 1e-9, "m", description="per frame")
    dataset(source, "energy", params.photon_energy * EV, "J", description="per frame")
    if params.polarization_degree is not None:
        dataset(
            source,
            "polarization_degree",
            params.polarization_degree,
            description="per frame: degree of linear polarisation, 0 (unpolarised) to 1",
        )


def _write_particles(sample, params: FrameParameters, background: float) -> None:
    """What was drawn per frame in ``sample_1``: kind, sizes (m), axis, fluence, partner."""
    dataset(sample, "name", "helium nanodroplets (simulated)")
    dataset(
        sample,
        "kind",
        params.kind,
        names=json.dumps([k.name.lower() for k in Kind]),
        description="what was drawn: index into names",
    )
    dataset(
        sample,
        "radius",
        params.radius * 1e-9,
        "m",
        description="volume-equivalent radius (a^2 c)^(1/3); 0 = no particle",
    )
    dataset(
        sample,
        "semi_axes",
        params.semi_axes * 1e-9,
        "m",
        columns="a (equatorial, twice), c (along the symmetry axis)",
    )
    dataset(
        sample,
        "axis",
        params.axis,
        columns="x (column), y (row), z (beam)",
        description="unit vector of the spheroid's symmetry axis, lab frame",
    )
    dataset(
        sample,
        "fluence",
        params.fluence,
        "photons",
        description="expected scattered photons on the good pixels (background excluded)",
    )
    if np.ndim(background):
        dataset(sample, "background", background, "photons per pixel", description="per frame")
    else:
        dataset(sample, "background", background, "photons per pixel")
    dataset(
        sample,
        "partner_radius",
        params.partner_radius * 1e-9,
        "m",
        description="radius of the second sphere (double, newton, asymmetric kinds); 0 = none",
    )
    dataset(
        sample,
        "separation",
        params.separation * 1e-9,
        "m",
        columns="x (column), y (row), z (beam)",
        description="from the droplet's centre to its partner's; 0 = no partner",
    )


def _write_stray_light(sample, params: FrameParameters) -> None:
    """Each frame's stray-light halo in ``sample_1``: photons and width (pixels)."""
    dataset(
        sample,
        "halo",
        params.halo,
        "photons",
        description="expected stray-light halo photons on the good pixels",
    )
    dataset(
        sample,
        "halo_width",
        params.halo_width,
        "pixel",
        description="w of the halo (1 + r^2 / w^2)^(-3/2), centred on the beam centre",
    )


def _write_label_features(sample, params: FrameParameters, visible, shift) -> None:
    """What the labels were decided on, in ``sample_1``: the particle's shadow (m), the
    visible radius (pixels) and the fringe shift (fringes)."""
    dataset(
        sample,
        "projected_semi_axes",
        projected_semi_axes(params) * 1e-9,
        "m",
        columns="long, short",
        description="the particle's shadow on the detector plane",
    )
    dataset(
        sample,
        "visible_radius",
        visible,
        "pixel",
        description="estimated radius out to which ring maxima carry >= 1 photon per pixel",
    )
    dataset(
        sample,
        "fringe_shift",
        shift,
        "fringes",
        description="q(visible_radius) (long - short) / pi: how visible the ellipticity is",
    )


def _write_labels(entry, labels: np.ndarray) -> None:
    """``entry_1/labels`` (N, C) uint8 with the taxonomy: names, groups, parents, rules."""
    dataset(
        entry,
        "labels",
        labels,
        names=list(LABELS),
        display_names=[DISPLAY_NAMES[name] for name in LABELS],
        exclusive_groups=json.dumps([list(g) for g in EXCLUSIVE_GROUPS]),
        exhaustive_groups=json.dumps([list(EXCLUSIVE_GROUPS[0])]),
        parents=json.dumps(PARENTS),
        rules=label_rules(),
    )
