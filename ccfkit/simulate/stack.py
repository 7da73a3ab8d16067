"""Simulated module stacks: the simulated particles seen by a real detector's pixels.

``ccfkit simulate OUT --geometry FILE|NAME`` writes frames as a multi-module
detector records them, ``(frames, modules, ss, fs)``, with the geometry
beside them, so that the real-detector path (``ccfkit build --geometry``,
docs/build.md, "Inputs") can be tested, shown and studied on simulated data.

Every pixel is rendered where the geometry puts it: its ``(x, y)`` from
extra-geom's ``get_pixel_positions()`` (divided by the pixel size) is a
point of the simulated flat detector's plane, one geometry pixel per
simulated pixel, with the geometry's origin at the flat detector's middle
(so the angle per pixel, the particles, the beam centre and the labels are
those of ``ccfkit simulate`` with the same options: docs/simulate.md). The
pattern is evaluated at those points (:func:`expected_stack_counts`, the
formulas of :func:`ccfkit.simulate.rendering.expected_counts`), not
assembled and resampled. Every pixel of the stack is good: the gaps between
modules are where no pixel is. The flat detector's central hole and panel
gaps do not apply, and the MCP response (a blur on the flat pixel grid) is
not simulated on module stacks.

Built-in detectors (:data:`DETECTORS`) are made by extra-geom's own
constructors and written by its CrystFEL writer beside the data, as
``OUT`` with the suffix ``.geom``; a ``FILE`` is read as ``ccfkit build``
reads it, by the class that fits its panels (or extra-geom's generic
geometry): :func:`ccfkit.io.geometry_file.read_geometry` states the rule.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_output
from .config import SimulationConfig
from .cxi_file import EV, _labelled
from .labels import DISPLAY_NAMES, EXCLUSIVE_GROUPS, LABELS
from .parameters import NOISE_STREAM, FrameParameters, draw_parameters
from .randomization import file_detector
from .rendering import _detector_response, _poisson_rows, frame_counts_at

__all__ = ["DETECTORS", "detector_geometry", "expected_stack_counts", "write_simulated_stack"]

#: AGIPD 1M quadrant positions (mm), as extra-geom's documentation gives them.
AGIPD_QUADRANTS = [(-525, 625), (-550, -10), (520, -160), (542.5, 475)]
#: Built-in detectors: name -> (extra-geom class, constructor, keyword arguments).
DETECTORS = {
    "agipd": ("AGIPD_1MGeometry", "from_quad_positions", {"quad_pos": AGIPD_QUADRANTS}),
    "jungfrau": (
        "JUNGFRAUGeometry",
        "from_module_positions",
        {
            "offsets": [(-1100, -600), (-1100, 100), (100, -600), (100, 100)],
            "orientations": [(-1, -1), (-1, -1), (1, 1), (1, 1)],
        },
    ),
    "pnccd": ("PNCCDGeometry", "from_relative_positions", {}),
}
#: The frames' data set (the first CXI location ``ccfkit build`` looks at).
DATA_PATH = "entry_1/data_1/data"


def detector_geometry(spec: str | Path, out: Path, config: SimulationConfig, detector=None):
    """The geometry of ``--geometry``: ``(positions, geometry file, written)``.

    Parameters
    ----------
    spec : str or Path
        A built-in name (:data:`DETECTORS`) or a CrystFEL geometry file.
    out : Path
        The frames' file; a built-in geometry is written beside it
        (``out.with_suffix(".geom")``), with the configuration's distance and
        mean photon energy.
    config : SimulationConfig
    detector : Detector, optional
        The file's simulated detector (default ``config.detector``).

    Returns
    -------
    positions : (modules, ss, fs, 2) float64
        ``(x, y)`` of every pixel, in pixels of the geometry.
    path : Path
        The geometry file.
    text : str or None
        The text to write at ``path`` (a built-in detector), else None.
    distance : float
        The detector distance (m) at which the geometry's pixel subtends the
        simulated pixel's angle (written as the file's and the built-in
        geometry's ``clen``, so that the store's ``q`` is the simulation's).

    Raises
    ------
    ValueError
        extra-geom missing; an unknown name; a file extra-geom cannot read.
    """
    try:
        import extra_geom
    except ImportError:
        raise ValueError("--geometry needs extra-geom: pip install 'ccfkit[euxfel]'") from None
    detector = config.detector if detector is None else detector
    name = str(spec).lower()
    if name in DETECTORS:
        cls, constructor, options = DETECTORS[name]
        geometry = getattr(getattr(extra_geom, cls), constructor)(**options)
        path = out.with_suffix(".geom")
        text = _crystfel_text(geometry, config, _distance(geometry, detector))
    else:
        path, text = Path(spec), None
        if not path.is_file():
            known = ", ".join(DETECTORS)
            raise ValueError(f"--geometry {spec}: no such file, nor a built-in detector ({known})")
        geometry = _read_crystfel(path)
    positions = np.asarray(geometry.get_pixel_positions(), dtype=np.float64)[..., :2]
    positions = positions / float(geometry.pixel_size)
    distance = _distance(geometry, detector)
    return positions.reshape(-1, *positions.shape[-3:]), path, text, distance


def _distance(geometry, detector) -> float:
    """Metres at which the geometry's pixel subtends the simulated detector pixel's angle."""
    return float(geometry.pixel_size) * detector.distance / detector.pixel_size


def _crystfel_text(geometry, config: SimulationConfig, distance: float) -> str:
    """The CrystFEL file extra-geom's writer makes for ``geometry`` (distance, mean energy)."""
    import tempfile

    energy = float(np.mean(config.photon_energy))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "detector.geom"
        geometry.write_crystfel_geom(str(path), clen=distance, photon_energy=energy)
        return path.read_text()


def _read_crystfel(path: Path):
    """The extra-geom geometry of a CrystFEL file, by the rule ``ccfkit build`` uses.

    The data do not exist yet: the file's panels alone choose the class
    (:func:`ccfkit.io.geometry_file.read_geometry`), and the stack written
    has the shape the chosen geometry expects.
    """
    from ..io.errors import InputError
    from ..io.geometry_file import read_geometry

    try:
        return read_geometry(path)
    except InputError as error:
        raise ValueError(str(error)) from None


def expected_stack_counts(
    params: FrameParameters, config: SimulationConfig, positions: np.ndarray, detector=None
) -> np.ndarray:
    """Expected photons per pixel of a module stack, for a batch of frames.

    The NumPy reference formulas of :func:`ccfkit.simulate.expected_counts`
    (:func:`ccfkit.simulate.rendering.frame_counts_at`) at the pixels'
    positions: pixel ``(x, y)`` of the geometry lies ``(x - bx, y - by)``
    simulated pixels from the beam, where ``(bx, by)`` is the frame's beam
    centre relative to the flat detector's middle. Every pixel is good.

    Parameters
    ----------
    params : FrameParameters
        ``B`` frames.
    config : SimulationConfig
    positions : (modules, ss, fs, 2) float64
        Pixel centres ``(x, y)``, pixels, the geometry's origin at the
        flat detector's middle.
    detector : Detector, optional
        The file's simulated detector (default ``config.detector``).

    Returns
    -------
    (B, modules, ss, fs) float32
    """
    detector = config.detector if detector is None else detector
    middle = np.asarray(detector.nominal_center)
    flat = positions.reshape(-1, positions.shape[-2], 2)  # (modules * ss, fs, 2)
    ones = np.ones(flat.shape[:2], dtype=np.float32)
    out = np.empty((len(params), *flat.shape[:2]), dtype=np.float32)
    for b in range(len(params)):
        beam = np.asarray(params.center[b]) - middle
        x_px, y_px = flat[..., 0] - beam[0], flat[..., 1] - beam[1]
        frame_counts_at(out[b], x_px, y_px, params, b, config, ones, detector)
    return out.reshape(len(params), *positions.shape[:3])


def write_simulated_stack(
    path,
    config: SimulationConfig,
    n_frames: int,
    seed: int,
    geometry: str | Path,
    *,
    overwrite: bool = False,
    block: int = 8,
) -> dict:
    """Simulate ``n_frames`` module-stacked frames and write them, labelled, with their geometry.

    Parameters
    ----------
    path : str or Path
        The output HDF5 file (written as ``path.partial``, then renamed).
    config : SimulationConfig
        As for :func:`ccfkit.simulate.cxi_file.write_simulated`; ``mcp``
        must be off.
    n_frames, seed : int
        The particles, beam centres and labels are those of ``ccfkit
        simulate`` with this seed; the photon noise of frame ``i`` comes
        from ``(seed, i)`` alone.
    geometry : str or Path
        A built-in detector name (:data:`DETECTORS`) or a CrystFEL file.
    overwrite : bool
        Replace an existing ``path`` (a built-in geometry file beside it is
        written only if absent or identical).
    block : int
        Frames rendered at once.

    Returns
    -------
    dict
        ``frames``, ``seconds``, ``frames_per_second``, ``label_counts``,
        ``geometry`` (the geometry file), ``stack_shape``.

    Raises
    ------
    ValueError
        ``mcp`` on; a bad count or seed; an unknown detector; a geometry file
        extra-geom cannot read; a different file already where the built-in
        geometry goes.
    """
    if config.mcp:
        raise ValueError("--mcp is simulated on the flat detector only, not on module stacks")
    if n_frames < 1 or seed < 0:
        raise ValueError(f"need at least one frame and a seed >= 0, got {n_frames}, {seed}")
    start = time.perf_counter()
    path = Path(path)
    detector = file_detector(config, seed)
    positions, geom_path, text, distance = detector_geometry(geometry, path, config, detector)
    if text is not None and geom_path.exists() and geom_path.read_text() != text:
        raise ValueError(f"{geom_path} exists with other content; move it or choose another OUT")
    params = draw_parameters(config, seed, np.arange(n_frames))
    _, _, labels = _labelled(params, detector)
    with atomic_output(path, overwrite=overwrite) as partial:
        _write_stack_file(partial, config, seed, params, positions, labels, block, distance,
                          detector)  # fmt: skip
    if text is not None and not geom_path.exists():
        with atomic_output(geom_path) as partial:
            Path(partial).write_text(text)
    seconds = time.perf_counter() - start
    return {
        "frames": n_frames,
        "seconds": seconds,
        "frames_per_second": n_frames / seconds,
        "label_counts": dict(zip(LABELS, labels.sum(axis=0).tolist())),
        "geometry": str(geom_path),
        "stack_shape": tuple(positions.shape[:3]),
    }


def _write_stack_file(
    partial, config, seed, params, positions, labels, block, distance, detector
) -> None:
    """The stack file: frames (N, modules, ss, fs), labels, beam centres, wavelength, distance."""
    import h5py

    n_frames, stack = len(params), positions.shape[:3]
    middle = np.asarray(detector.nominal_center)
    with h5py.File(partial, "w") as handle:
        handle.attrs["creator"] = "ccfkit simulate --geometry"
        handle.attrs["parameters"] = json.dumps({**config.to_dict(), "seed": seed})
        data = handle.create_dataset(
            DATA_PATH, shape=(n_frames, *stack), dtype=np.float32, chunks=(1, *stack)
        )
        data.attrs["axes"] = "experiment_identifier:module_identifier:y:x"
        data.attrs["units"] = "photons" if config.noise else "expected photons"
        for lo in range(0, n_frames, block):
            rows = params.take(slice(lo, lo + block))
            data[lo : lo + block] = _rendered(rows, config, seed, positions, detector)
        detector = handle.create_group("entry_1/instrument_1/detector_1")
        detector["distance"] = distance
        centres = detector.create_dataset("beam_center_geometry", data=params.center - middle)
        centres.attrs["description"] = "(x, y) of each frame's beam in the geometry's frame, px"
        wavelength = np.asarray(params.wavelength, np.float64) * 1e-9
        handle["entry_1/instrument_1/source_1/wavelength"] = wavelength
        handle["entry_1/instrument_1/source_1/energy"] = 1239.841984e-9 / wavelength * EV
        names = handle.create_dataset("entry_1/labels", data=labels.astype(np.uint8))
        names.attrs["names"] = list(LABELS)
        names.attrs["display_names"] = [DISPLAY_NAMES[name] for name in LABELS]
        names.attrs["exclusive_groups"] = json.dumps([list(g) for g in EXCLUSIVE_GROUPS])


def _rendered(params: FrameParameters, config, seed: int, positions, detector) -> np.ndarray:
    """The frames as :func:`ccfkit.simulate.render_frames` makes them, at the stack's pixels.

    Expected counts, Poisson noise from ``(seed, i)`` when asked, then a
    randomised detector's gain and read noise (per frame in ``params``).
    """
    frames = expected_stack_counts(params, config, positions, detector)
    shape = frames.shape
    if config.noise:
        rngs = [
            np.random.Generator(
                np.random.SFC64(np.random.SeedSequence([seed, int(i), NOISE_STREAM]))
            )
            for i in params.index
        ]
        frames = _poisson_rows(frames.reshape(len(params), -1), rngs).reshape(shape)
    if params.gain is not None or params.read_noise is not None:
        flat = frames.reshape(len(params), -1, shape[-1])
        _detector_response(flat, params, seed, np.ones(flat.shape[1:], dtype=bool))
    return frames
