"""Reading a CrystFEL geometry file through extra-geom.

The file is never parsed here: extra-geom's CrystFEL reader (``cfel_fmt``)
reads its panels, and extra-geom builds the geometry with the class of the
detector the file describes: AGIPD 1M and 500k, JUNGFRAU, DSSC, LPD,
ePix100/10k, pnCCD, or its generic geometry where no detector class fits
(:func:`read_geometry` states the rule; the build, ``trainer predict`` and
``ccfkit simulate --geometry`` all choose by it). What the build needs from
it, the position of every pixel (``get_pixel_positions()``), becomes a
:class:`~ccfkit.detector_geometry.DetectorGeometry`: a few numbers per tile,
which the workers use without extra-geom.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..detector_geometry import DetectorGeometry, tiles_from_positions
from .errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "DETECTOR_CLASSES",
    "PanelLayout",
    "assemble",
    "generic_geometry",
    "load_geometry",
    "load_recorded_geometry",
    "panel_layout",
    "read_geometry",
    "recorded_file",
]

#: extra-geom's detector classes, tried in this order; the generic geometry where none fits.
DETECTOR_CLASSES = (
    "AGIPD_1MGeometry",
    "AGIPD_500K2GGeometry",
    "LPD_1MGeometry",
    "DSSC_1MGeometry",
    "JUNGFRAUGeometry",
    "PNCCDGeometry",
    "Epix100Geometry",
    "Epix10KGeometry",
)


class PanelLayout(NamedTuple):
    """Where the panels of a CrystFEL file lie in the data, as extra-geom's reader gives them.

    Attributes
    ----------
    panels : tuple of (int, dict)
        Per panel, its module (the data's module index; 0 for a file whose
        modules lie one under the other along ss) and its panel dictionary
        (``cfel_fmt``'s, in data order: module, first ss, first fs).
    shape : (int, int, int)
        ``(modules, ss, fs)`` of the data the panels cover.
    stacked : bool
        The file indexes modules along their own data axis (``dimN = 0, 1,
        ...``); False: modules one under the other along ss (2-D data).
    module_ss : int
        For a file of 2-D data split into the data's modules: ss rows per
        module (a panel's module is its first row // ``module_ss``); else 0.
    """

    panels: tuple
    shape: tuple[int, int, int]
    stacked: bool
    module_ss: int = 0

    def start(self, module: int, panel: dict) -> tuple[int, int]:
        """``(ss, fs)`` of a panel's first pixel in its module."""
        return (
            int(panel["orig_min_ss"]) - module * self.module_ss,
            int(panel["orig_min_fs"]),
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
        the beam at the origin; ``detector`` names the class
        :func:`read_geometry` chose.

    Raises
    ------
    InputError
        As :func:`read_geometry`.
    """
    path = Path(path)
    geometry, crystfel = _read(path, stack_shape)
    return _describe(geometry, type(geometry).__name__, path, stack_shape, _beam(crystfel))


def read_geometry(path: str | Path, stack_shape: tuple[int, int, int] | None = None):
    """extra-geom's geometry object of a CrystFEL file, by the class that fits it.

    The rule, one for ``ccfkit build``, ``trainer predict`` and ``ccfkit
    simulate --geometry``: the first of :data:`DETECTOR_CLASSES` that reads
    the file, uses every panel, whose tiles are the file's panels (their
    ``ss x fs`` pixels) and whose data shape ``(modules, ss, fs)`` is the
    one the file's panels cover; where none does, extra-geom's generic
    geometry of the file's panels (:func:`generic_geometry`). Where data
    exist, their ``(modules, ss, fs)`` must be the chosen geometry's.

    Parameters
    ----------
    path : str or Path
        A CrystFEL ``.geom`` file.
    stack_shape : (int, int, int), optional
        ``(modules, ss, fs)`` of one frame of the data (None: no data yet).

    Raises
    ------
    InputError
        extra-geom is not installed; the file is missing or not a geometry
        extra-geom reads; it fits no detector class and not the generic
        geometry; its modules (count or shape) disagree with the data.
    """
    return _read(Path(path), stack_shape)[0]


def _read(path: Path, stack_shape):
    """:func:`read_geometry`'s geometry, and the file as ``cfel_fmt`` read it."""
    crystfel = _crystfel_geometry(path)
    layout = panel_layout(path, crystfel, stack_shape)
    geometry = _fitting_class(path, layout)
    if geometry is None:
        geometry = generic_geometry(path, layout)
    shape = _expected_shape(geometry)
    if stack_shape is not None and shape != tuple(stack_shape):
        raise InputError(
            f"geometry file {path} describes {_modules(shape)} ({type(geometry).__name__}), "
            f"but the data has {_modules(stack_shape)}"
        )
    return geometry, crystfel


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
    geometry = _extra_geom_of(pixels.source, pixels.text, tuple(pixels.stack_shape))
    stacks = np.asarray(frames, dtype=np.float32).reshape(len(frames), *pixels.stack_shape)
    if len(geometry.expected_data_shape) == 2:  # a one-module detector: (ss, fs) per frame
        stacks = stacks[:, 0]
    images, _ = geometry.position_modules(stacks)
    return np.asarray(images, dtype=np.float32)


@functools.lru_cache(maxsize=4)
def _extra_geom_of(source: str, text: str, stack_shape: tuple[int, ...]):
    """The extra-geom geometry of a file's text (read once per text, not per batch of frames)."""
    with recorded_file({"file": source, "text": text}) as path:
        return read_geometry(path, stack_shape)


def panel_layout(path: Path, crystfel, stack_shape=None) -> PanelLayout:
    """The file's panels in data order, and the data shape they cover.

    ``crystfel`` is the file as ``cfel_fmt`` read it
    (:func:`_crystfel_geometry`). A file of 2-D data (modules one under the
    other along ss) is one module, or the data's modules where the data's
    ``stack_shape`` ``(modules, ss, fs)`` covers it. InputError for a file
    without panels or with a panel of more than one index dimension.
    """
    panels = []
    for name, panel in crystfel.detector["panels"].items():
        index = [dim for dim in panel["dim_structure"] if isinstance(dim, int)]
        if len(index) > 1:
            raise InputError(
                f"geometry file {path}: panel {name} has {len(index)} index dimensions; "
                "a module stack has one (the module)"
            )
        panels.append((index[0] if index else 0, panel))
    if not panels:
        raise InputError(f"geometry file {path}: no panels")
    panels.sort(key=lambda entry: (entry[0], entry[1]["orig_min_ss"], entry[1]["orig_min_fs"]))
    shape = (
        max(module for module, _ in panels) + 1,
        max(int(panel["orig_max_ss"]) for _, panel in panels) + 1,
        max(int(panel["orig_max_fs"]) for _, panel in panels) + 1,
    )
    stacked = any(isinstance(dim, int) for _, p in panels for dim in p["dim_structure"])
    if stacked or stack_shape is None or stack_shape[0] < 2:
        return PanelLayout(tuple(panels), shape, stacked)
    modules, ss, fs = stack_shape
    if (modules * ss, fs) != shape[1:]:
        return PanelLayout(tuple(panels), shape, stacked)
    split = [(int(panel["orig_min_ss"]) // ss, panel) for _, panel in panels]
    return PanelLayout(tuple(split), (modules, ss, fs), False, module_ss=ss)


def _fitting_class(path: Path, layout: PanelLayout):
    """The geometry of the first of :data:`DETECTOR_CLASSES` that fits the file, else None.

    A class fits when it reads the file, its tiles are the file's panels
    (as many, each of the class's ``ss x fs`` pixels) and it expects the
    data shape the panels cover. A class that reads only some panels, or
    reads panels of another size into its own tile size, does not fit.
    """
    import extra_geom

    for name in DETECTOR_CLASSES:
        cls = getattr(extra_geom, name, None)
        if cls is None or not hasattr(cls, "from_crystfel_geom"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its notes on the file's bad regions
                geometry = cls.from_crystfel_geom(str(path))
        except Exception:  # noqa: BLE001, S112 - a class that does not fit fails its own way
            continue
        if _fits(geometry, layout):
            return geometry
    return None


def _fits(geometry, layout: PanelLayout) -> bool:
    """Whether a detector class's reading places exactly the file's panels."""
    tiles = [tile for module in geometry.modules for tile in module]
    tile_size = (int(geometry.frag_ss_pixels), int(geometry.frag_fs_pixels))
    if len(tiles) != len(layout.panels):
        return False
    if any((int(tile.ss_pixels), int(tile.fs_pixels)) != tile_size for tile in tiles):
        return False
    modules, ss, fs = _expected_shape(geometry)
    if layout.stacked or layout.module_ss:
        return (modules, ss, fs) == layout.shape
    return (modules * ss, fs) == layout.shape[1:]  # 2-D data: the class splits it


def generic_geometry(path: str | Path, layout: PanelLayout):
    """extra-geom's generic geometry (``GenericGeometry``) of the file's panels.

    extra-geom's generic geometry has no CrystFEL reader of its own: it is
    made here as its ``from_simple_description`` makes it, from one tile per
    panel (extra-geom's ``GeometryFragment.from_panel_dict``, the step every
    detector class's reader takes), so any placement and orientation of the
    panels is kept. It holds tiles of one size, side by side along ss or fs
    in every module, as many in each.

    Raises
    ------
    InputError
        The panels are not such a stack (one line: why).
    """
    why = _not_generic(layout)
    if why:
        raise InputError(
            f"geometry file {path} fits none of extra-geom's detector classes "
            f"({', '.join(name.removesuffix('Geometry') for name in DETECTOR_CLASSES)}), "
            f"nor its generic geometry: {why}"
        )
    import extra_geom
    from extra_geom.base import GeometryFragment

    per_module = [
        [panel for module, panel in layout.panels if module == number]
        for number in range(layout.shape[0])
    ]
    first = per_module[0]
    height, width = _panel_size(first[0])
    along_ss = len(first) > 1 and layout.start(0, first[1])[0] > 0
    geometry = extra_geom.GenericGeometry(
        [[GeometryFragment.from_panel_dict(panel) for panel in panels] for panels in per_module],
        filename=str(path),
    )
    tiles = len(first)
    geometry.pixel_size = 1.0 / float(first[0]["res"])
    geometry.frag_ss_pixels, geometry.frag_fs_pixels = height, width
    geometry.n_modules, geometry.n_tiles_per_module = len(per_module), tiles
    geometry.ss_tiles, geometry.fs_tiles = (tiles, 1) if along_ss else (1, tiles)
    geometry.expected_data_shape = (
        len(per_module),
        geometry.ss_tiles * height,
        geometry.fs_tiles * width,
    )
    return geometry


def _not_generic(layout: PanelLayout) -> str:
    """Why the panels are not a stack extra-geom's generic geometry holds ('' if they are)."""
    sizes = sorted({_panel_size(panel) for _, panel in layout.panels})
    if len(sizes) > 1:
        shown = ", ".join(f"{ss} x {fs}" for ss, fs in sizes[:4])
        return f"panels of {len(sizes)} sizes ({shown} pixels); its tiles are all of one size"
    if len({float(panel["res"]) for _, panel in layout.panels}) > 1:
        return "panels of different pixel sizes (res)"
    height, width = sizes[0]
    counts = [sum(m == number for m, _ in layout.panels) for number in range(layout.shape[0])]
    if len(set(counts)) > 1:
        return f"modules of different numbers of panels ({', '.join(map(str, counts))})"
    for number in range(layout.shape[0]):
        starts = [
            layout.start(module, panel) for module, panel in layout.panels if module == number
        ]
        if starts not in (
            [(tile * height, 0) for tile in range(len(starts))],
            [(0, tile * width) for tile in range(len(starts))],
        ):
            return (
                f"the panels of module {number} do not lie side by side along ss or fs "
                "from its first pixel"
            )
    return ""


def _panel_size(panel: dict) -> tuple[int, int]:
    """``(ss, fs)`` pixels of a ``cfel_fmt`` panel dictionary."""
    return (
        int(panel["orig_max_ss"]) - int(panel["orig_min_ss"]) + 1,
        int(panel["orig_max_fs"]) - int(panel["orig_min_fs"]) + 1,
    )


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

    ``photon_energy`` (eV) of the beam; the distance is CrystFEL's camera
    length plus its offset, ``clen + coffset`` of the panels, when that is
    one number for all panels and none reads ``clen`` from the data files
    (``clen_from``).
    """
    energy = crystfel.beam.get("photon_energy") or 0.0
    if crystfel.beam.get("photon_energy_from"):
        energy = 0.0
    panels = crystfel.detector["panels"].values()
    distances = {
        float(panel.get("clen") or 0.0) + float(panel.get("coffset") or 0.0) for panel in panels
    }
    known = not any(panel.get("clen_from") for panel in panels)
    distance = distances.pop() if known and len(distances) == 1 else 0.0
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
