"""Writing CXI files: atomically, and the labelled file of ``ccfkit simulate``.

Layout of a simulated file (CXI 1.6 conventions, SI units; the full table is in
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

Everything is written to ``OUT.partial`` and renamed to ``OUT`` only when
complete; on any error (or Ctrl-C) the partial file is removed.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import h5py
import numpy as np

from .. import __version__
from .. import simulate as sim
from .atomic import atomic_output

logger = logging.getLogger(__name__)

__all__ = [
    "CENTER_PATH",
    "DATA_PATH",
    "LABELS_PATH",
    "MASK_PATH",
    "PIXEL_IS_MISSING",
    "write_simulated",
]

DATA_PATH = "/entry_1/data_1/data"
DETECTOR = "/entry_1/instrument_1/detector_1"
SOURCE = "/entry_1/instrument_1/source_1"
SAMPLE = "/entry_1/sample_1"
MASK_PATH = f"{DETECTOR}/mask"
CENTER_PATH = f"{DETECTOR}/beam_center"
LABELS_PATH = "/entry_1/labels"

#: CXI bit for a pixel with no detector behind it (the MCP's central hole).
PIXEL_IS_MISSING = 512
#: electronvolt in joules (CXI stores photon energies in J).
EV = 1.602176634e-19

SCHEMA = "ccfkit-simulate/2"


def _group(parent: h5py.Group, name: str, nx_class: str | None = None) -> h5py.Group:
    """A group that records no creation time, so equal content gives equal bytes."""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    group = h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))
    if nx_class:
        group.attrs["NX_class"] = nx_class
    return group


def _dataset(group: h5py.Group, name: str, data, units: str | None = None, **attrs):
    dataset = group.create_dataset(name, data=data, track_times=False)
    if units:
        dataset.attrs["units"] = units
    for key, value in attrs.items():
        dataset.attrs[key] = value
    return dataset


def write_simulated(
    path,
    config: sim.SimulationConfig,
    n_frames: int,
    seed: int,
    *,
    overwrite: bool = False,
    workers: int = 1,
    block: int = 8,
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

    if n_frames < 1:
        raise ValueError(f"the number of frames must be >= 1, got {n_frames}")
    if seed < 0:
        raise ValueError(f"the seed must be >= 0, got {seed}")
    if workers < 1 or block < 1:
        raise ValueError("workers and block must be >= 1")
    warning = config.aliasing_warning()
    if warning:
        logger.warning(warning)
    start = time.perf_counter()
    detector = config.detector
    good = detector.good_pixels()
    params = sim.draw_parameters(config, seed, np.arange(n_frames))

    def render(lo: int) -> tuple[int, np.ndarray]:
        rows = slice(lo, min(lo + block, n_frames))
        return lo, sim.render_frames(params.take(rows), config, seed, good)

    bar = tqdm(
        total=n_frames,
        unit="frame",
        desc="simulate",
        disable=None if progress else True,
        leave=False,
    )
    with bar, ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        starts = iter(range(0, n_frames, block))
        try:
            # The first blocks render while this thread labels the frames.
            pending.extend(pool.submit(render, lo) for lo in islice(starts, 2 * workers))
            visible = sim.visible_radius(params, detector)
            shift = sim.fringe_shift(params, detector, visible)
            partners = sim.partner_features(params, detector, visible)
            labels = sim.assign_labels(params, detector, shift, partners)
            # h5py closes the file before atomic_output renames it (exits run in reverse).
            with (
                atomic_output(path, overwrite=overwrite) as partial,
                h5py.File(partial, "w", track_order=False) as handle,
            ):
                _write_header(handle, config, seed, params, labels, good, visible, shift)
                data = _create_frames(handle, config, n_frames)
                for lo in starts:  # keep at most 2 blocks per worker in flight
                    _write_block(data, pending.popleft().result(), bar)
                    pending.append(pool.submit(render, lo))
                while pending:
                    _write_block(data, pending.popleft().result(), bar)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    seconds = time.perf_counter() - start
    counts = dict(zip(sim.LABELS, labels.sum(axis=0).tolist()))
    logger.info("wrote %s: %d frames in %.1f s, labels %s", path, n_frames, seconds, counts)
    return {
        "frames": n_frames,
        "seconds": seconds,
        "frames_per_second": n_frames / seconds,
        "label_counts": counts,
    }


def _create_frames(handle, config: sim.SimulationConfig, n_frames: int) -> h5py.Dataset:
    """The (empty) frames dataset, chunks of one frame, and its link from the detector."""
    height, width = config.detector.shape
    data = _group(handle["entry_1"], "data_1", "NXdata").create_dataset(
        "data",
        shape=(n_frames, height, width),
        dtype=np.float32,
        chunks=(1, height, width),
        track_times=False,
    )
    data.attrs["axes"] = "experiment_identifier:y:x"
    data.attrs["units"] = _data_units(config)
    data.attrs["description"] = (
        "photon counts per pixel (with --mcp: MCP + phosphor signal, 1 = one photon's mean); "
        "0 on masked pixels (see detector_1/mask)"
    )
    handle[f"{DETECTOR}/data"] = h5py.SoftLink(DATA_PATH)
    return data


def _data_units(config: sim.SimulationConfig) -> str:
    """The ``units`` attribute of the frames."""
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


def _write_block(data: h5py.Dataset, item: tuple[int, np.ndarray], bar) -> None:
    """Write frames ``lo, lo + 1, ...`` of ``item`` as raw chunks of one frame each.

    ``data`` is unfiltered with chunks ``(1, H, W)``, so a frame's bytes are its
    chunk: ``write_direct_chunk`` skips HDF5's selection and chunk cache (the
    file's bytes are the same as with ``data[lo:hi] = frames``).
    """
    lo, frames = item
    for offset, frame in enumerate(frames):
        data.id.write_direct_chunk((lo + offset, 0, 0), np.ascontiguousarray(frame, np.float32))
    bar.update(len(frames))


def _write_header(
    handle, config, seed, params: sim.FrameParameters, labels, good, visible, shift
) -> None:
    """Everything but the frames: geometry, mask, source, sample, labels, provenance."""
    detector = config.detector
    handle.attrs["creator"] = "ccfkit simulate"
    handle.attrs["ccfkit_version"] = __version__
    handle.attrs["numpy_version"] = np.__version__
    handle.attrs["schema"] = SCHEMA
    handle.attrs["seed"] = int(seed)
    handle.attrs["n_frames"] = len(params)
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
    _dataset(handle, "cxi_version", 160)
    entry = _group(handle, "entry_1", "NXentry")
    instrument = _group(entry, "instrument_1", "NXinstrument")

    det = _group(instrument, "detector_1", "NXdetector")
    _dataset(det, "distance", detector.distance, "m")
    _dataset(det, "x_pixel_size", detector.pixel_size, "m")
    _dataset(det, "y_pixel_size", detector.pixel_size, "m")
    mask = np.where(good, 0, PIXEL_IS_MISSING).astype(np.uint32)
    _dataset(
        det,
        "mask",
        mask,
        convention="cxi",
        description=(
            "CXI bit mask: 0 = good; 512 (PIXEL_IS_MISSING) = the central hole of the MCP, "
            f"radius {detector.hole_radius:g} px around the detector middle"
        ),
    )
    _dataset(
        det,
        "beam_center",
        params.center,
        "pixel",
        columns="cx (column, x), cy (row, y)",
        description="true beam centre per frame; pixel centres at integer coordinates",
        nominal=np.asarray(detector.nominal_center),
    )

    source = _group(instrument, "source_1", "NXsource")
    _dataset(source, "wavelength", params.wavelength * 1e-9, "m", description="per frame")
    _dataset(source, "energy", params.photon_energy * EV, "J", description="per frame")

    sample = _group(entry, "sample_1", "NXsample")
    _dataset(sample, "name", "helium nanodroplets (simulated)")
    _dataset(
        sample,
        "kind",
        params.kind,
        names=json.dumps([k.name.lower() for k in sim.Kind]),
        description="what was drawn: index into names",
    )
    _dataset(
        sample,
        "radius",
        params.radius * 1e-9,
        "m",
        description="volume-equivalent radius (a^2 c)^(1/3); 0 = no particle",
    )
    _dataset(
        sample,
        "semi_axes",
        params.semi_axes * 1e-9,
        "m",
        columns="a (equatorial, twice), c (along the symmetry axis)",
    )
    _dataset(
        sample,
        "axis",
        params.axis,
        columns="x (column), y (row), z (beam)",
        description="unit vector of the spheroid's symmetry axis, lab frame",
    )
    _dataset(
        sample,
        "fluence",
        params.fluence,
        "photons",
        description="expected scattered photons on the good pixels (background excluded)",
    )
    _dataset(sample, "background", config.background, "photons per pixel")
    _dataset(
        sample,
        "partner_radius",
        params.partner_radius * 1e-9,
        "m",
        description="radius of the second sphere (double, newton, asymmetric kinds); 0 = none",
    )
    _dataset(
        sample,
        "separation",
        params.separation * 1e-9,
        "m",
        columns="x (column), y (row), z (beam)",
        description="from the droplet's centre to its partner's; 0 = no partner",
    )
    _dataset(
        sample,
        "halo",
        params.halo,
        "photons",
        description="expected stray-light halo photons on the good pixels",
    )
    _dataset(
        sample,
        "halo_width",
        params.halo_width,
        "pixel",
        description="w of the halo (1 + r^2 / w^2)^(-3/2), centred on the beam centre",
    )
    _dataset(
        sample,
        "projected_semi_axes",
        sim.projected_semi_axes(params) * 1e-9,
        "m",
        columns="long, short",
        description="the particle's shadow on the detector plane",
    )
    _dataset(
        sample,
        "visible_radius",
        visible,
        "pixel",
        description="estimated radius out to which ring maxima carry >= 1 photon per pixel",
    )
    _dataset(
        sample,
        "fringe_shift",
        shift,
        "fringes",
        description="q(visible_radius) (long - short) / pi: how visible the ellipticity is",
    )

    _dataset(
        entry,
        "labels",
        labels,
        names=list(sim.LABELS),
        display_names=[sim.DISPLAY_NAMES[name] for name in sim.LABELS],
        exclusive_groups=json.dumps([list(g) for g in sim.EXCLUSIVE_GROUPS]),
        exhaustive_groups=json.dumps([list(sim.EXCLUSIVE_GROUPS[0])]),
        parents=json.dumps(sim.PARENTS),
        rules=sim.label_rules(),
    )
