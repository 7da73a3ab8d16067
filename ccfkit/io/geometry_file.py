"""Reading a CrystFEL geometry file through extra-geom.

The file is never parsed here: extra-geom (European XFEL's geometry package)
reads it with the class of the detector it describes: AGIPD 1M and 500k,
JUNGFRAU, DSSC, LPD, ePix100/10k, pnCCD, or its generic geometry where no
detector class fits. The class is the first whose expected data shape is the
data's ``(modules, ss, fs)``. What the build needs from it, the position of
every pixel (``get_pixel_positions()``), becomes a
:class:`~ccfkit.detector_geometry.DetectorGeometry`: a few numbers per tile,
which the workers use without extra-geom.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..detector_geometry import DetectorGeometry, tiles_from_positions
from .errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "assemble",
    "load_geometry",
    "load_recorded_geometry",
    "read_geometry",
    "recorded_file",
]

#: extra-geom's detector classes, tried in this order (the generic geometry last).
DETECTOR_CLASSES = (
    "AGIPD_1MGeometry",
    "AGIPD_500K2GGeometry",
    "LPD_1MGeometry",
    "DSSC_1MGeometry",
    "JUNGFRAUGeometry",
    "PNCCDGeometry",
    "Epix100Geometry",
    "Epix10KGeometry",
    "GenericGeometry",
)


def load_geometry(path: str | Path, stack_shape: tuple[int, int, int]) -> DetectorGeometry:
    """The pixel placement of a module stack from its CrystFEL geometry file.

    Parameters
    ----------
    path : str or Path
        A CrystFEL ``.geom`` file.
    stack_shape : (int, int, int)
        ``(modules, ss, fs)`` of one frame of the data.

    Returns
    -------
    DetectorGeometry
        Positions in pixels (metres divided by the detector's pixel size),
        the beam at the origin.

    Raises
    ------
    InputError
        extra-geom is not installed; the file is missing or not a geometry
        extra-geom reads; its modules (count or shape) disagree with the data.
    """
    path = Path(path)
    crystfel = _crystfel_geometry(path)
    read, reasons = [], []
    for name, geometry in _readings(path, crystfel, reasons):
        shape = tuple(int(n) for n in _expected_shape(geometry))
        if shape == tuple(stack_shape):
            return _describe(geometry, name, path, stack_shape, _beam(crystfel))
        read.append((name, shape))
    if read:
        name, shape = read[0]
        raise InputError(
            f"geometry file {path} describes {_modules(shape)} ({name}), but the data has "
            f"{_modules(stack_shape)}"
        )
    raise InputError(
        f"geometry file {path}: extra-geom cannot read it as a CrystFEL geometry "
        f"({reasons[-1] if reasons else 'no detector class'})"
    )


def read_geometry(path: str | Path):
    """extra-geom's geometry object of a CrystFEL file: the first class that uses every panel.

    For a file whose data shape is not known yet (``ccfkit simulate
    --geometry`` makes the data); :func:`load_geometry` picks the class by
    the data's shape.

    Raises
    ------
    InputError
        As :func:`load_geometry`, but for the data's shape.
    """
    path = Path(path)
    reasons = []
    for _, geometry in _readings(path, _crystfel_geometry(path), reasons):
        return geometry
    raise InputError(
        f"geometry file {path}: extra-geom cannot read it as a CrystFEL geometry "
        f"({reasons[-1] if reasons else 'no detector class'})"
    )


@contextmanager
def recorded_file(recorded: dict):
    """A CrystFEL file holding a recorded geometry's text, for the time of the block.

    Parameters
    ----------
    recorded : dict
        ``file`` (the original path: its name is kept) and ``text``, as a
        store records its input's geometry (``input.geometry``,
        docs/store-layout.md).
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / (Path(recorded.get("file") or "").name or "recorded.geom")
        path.write_text(recorded["text"])
        yield path


def load_recorded_geometry(recorded: dict) -> DetectorGeometry:
    """:func:`load_geometry` of a store's recorded geometry (``file``, ``text``, ``stack_shape``).

    The result names the original file as its source.
    """
    with recorded_file(recorded) as path:
        pixels = load_geometry(path, tuple(recorded["stack_shape"]))
    return dataclasses.replace(pixels, source=str(recorded.get("file") or pixels.source))


def assemble(pixels: DetectorGeometry, frames: np.ndarray) -> np.ndarray:
    """Module stacks assembled into images by extra-geom (``position_modules``).

    Parameters
    ----------
    pixels : DetectorGeometry
        The stacks' geometry (its text is read again by its extra-geom class).
    frames : (k, modules * ss, fs) array
        Stacked frames, as :class:`~ccfkit.io.source.FrameReader` serves them.

    Returns
    -------
    (k, H, W) float32 ndarray
        The detector plane on extra-geom's pixel grid; NaN between modules.
    """
    import extra_geom

    with recorded_file({"file": pixels.source, "text": pixels.text}) as path:
        geometry = getattr(extra_geom, pixels.detector).from_crystfel_geom(str(path))
    stacks = np.asarray(frames, dtype=np.float32).reshape(len(frames), *pixels.stack_shape)
    if len(geometry.expected_data_shape) == 2:  # a one-module detector: (ss, fs) per frame
        stacks = stacks[:, 0]
    images, _ = geometry.position_modules(stacks)
    return np.asarray(images, dtype=np.float32)


def _readings(path: Path, crystfel, reasons: list):
    """``(class name, geometry)`` of each extra-geom class that reads every panel of the file.

    Why the others did not is appended to ``reasons``.
    """
    import extra_geom

    panels = len(crystfel.detector["panels"])
    for name in DETECTOR_CLASSES:
        cls = getattr(extra_geom, name, None)
        if cls is None or not hasattr(cls, "from_crystfel_geom"):
            continue
        try:
            geometry = cls.from_crystfel_geom(str(path))
        except Exception as error:  # noqa: BLE001 - a class that does not fit fails its own way
            reasons.append(f"{name}: {' '.join(str(error).split())[:80]}")
            continue
        if sum(len(module) for module in geometry.modules) != panels:
            # a class of fewer modules reads the first ones of a larger detector's file
            reasons.append(f"{name}: uses {sum(map(len, geometry.modules))} of {panels} panels")
            continue
        yield name, geometry


#: h c in eV m: a photon of E eV has the wavelength HC_EV_M / E metres.
HC_EV_M = 1.239841984e-6


def _crystfel_geometry(path: Path):
    """The file as extra-geom's CrystFEL reader (``cfel_fmt``) reads it.

    InputError for a missing file, or without extra-geom.
    """
    if not path.is_file():
        raise InputError(f"geometry file {path}: no such file")
    try:
        import extra_geom  # noqa: F401 - its reader, cfel_fmt, comes with it
    except ImportError:
        raise InputError(
            "--geometry needs extra-geom: pip install 'ccfkit[euxfel]' (docs/dependencies.md)"
        ) from None
    from cfel_fmt.geometry import load_crystfel_geometry

    try:
        return load_crystfel_geometry(str(path))
    except Exception as error:  # noqa: BLE001 - the reader's errors for a bad file vary
        reason = " ".join(str(error).split())[:120]
        raise InputError(
            f"geometry file {path}: not a CrystFEL geometry extra-geom can read ({reason})"
        ) from None


def _beam(crystfel) -> dict:
    """Wavelength and detector distance (metres) the file gives as numbers, else None.

    ``photon_energy`` (eV) of the beam and ``clen`` of the panels, when it is
    one number for all panels (not read from the data files: ``*_from``).
    """
    energy = crystfel.beam.get("photon_energy") or 0.0
    if crystfel.beam.get("photon_energy_from"):
        energy = 0.0
    distances = {
        float(panel.get("clen") or 0.0)
        for panel in crystfel.detector["panels"].values()
        if not panel.get("clen_from")
    }
    distance = distances.pop() if len(distances) == 1 else 0.0
    return {
        "wavelength": HC_EV_M / float(energy) if energy > 0 else None,
        "distance": distance if distance > 0 else None,
    }


def _expected_shape(geometry) -> tuple[int, ...]:
    """``(modules, ss, fs)`` that ``geometry`` expects (a single module: 1 in front)."""
    shape = tuple(geometry.expected_data_shape)
    return shape if len(shape) == 3 else (1, *shape)


def _modules(shape) -> str:
    modules, ss, fs = shape
    return f"{modules} module{'s' * (modules != 1)} of {ss} x {fs} pixels"


def _describe(geometry, name: str, path: Path, stack_shape, beam: dict) -> DetectorGeometry:
    """The :class:`DetectorGeometry` of an extra-geom geometry object."""
    positions = np.asarray(geometry.get_pixel_positions(), dtype=np.float64)
    positions = positions.reshape(*stack_shape, 3)[..., :2] / float(geometry.pixel_size)
    tiles = tiles_from_positions(positions)
    logger.info("geometry %s: %s, %d tiles", path, name, len(tiles))
    return DetectorGeometry(
        stack_shape=tuple(int(n) for n in stack_shape),
        tiles=tiles,
        detector=name,
        source=str(path.resolve()),
        pixel_size=float(geometry.pixel_size),
        **beam,
        text=path.read_text(errors="replace"),
    )
