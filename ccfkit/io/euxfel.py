"""European XFEL run directories, read through extra-data.

A run directory holds one file per detector module and sequence (``CORR-R0001-
AGIPD07-S00002.h5``), frames addressed by train and pulse. extra-data
(European XFEL's reader) finds the detector's modules, the trains in which
they recorded, and reads them; this module turns that into frames for the
build:

- every (train, pulse) whose train has data from every module is a frame,
  ``(modules * ss, fs)`` float32 (the modules one under the other, as
  :class:`~ccfkit.io.source.FrameReader` serves module stacks), in train
  order; ``pulses`` selects pulses by their index within each train
  (``slice(start, stop, step)``);
- trains missing a module are skipped (the default; counted) or, with
  ``incomplete="mask"``, kept with the missing modules' pixels NaN, which
  the build treats as masked, frame by frame;
- JUNGFRAU keeps a train's memory cells in one entry: its frames are the
  cells, ``pulses`` picks them by index and the pulse ID is that index;
- the detector's own mask (``image.mask``, JUNGFRAU's ``data.mask``;
  nonzero = bad pixel) is applied
  by extra-data's ``masked_data()``: bad pixels become NaN in their frame;
- the store gets ``train_id`` and ``pulse_id`` (uint64, one per frame).

:class:`RunReader` is small and picklable: each Dask task opens the run
(once per process) and reads the trains of its chunk of frames.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MissingGeometry
from .source import FrameSource, InputError

logger = logging.getLogger(__name__)

__all__ = ["RunReader", "open_run"]

#: What to do with trains in which some module recorded nothing.
INCOMPLETE = ("skip", "mask")
#: The frames' data and mask keys of each kind of detector in extra-data.
DATA_KEYS = {"XTDF": ("image.data", "image.mask"), "JUNGFRAU": ("data.adc", "data.mask")}


@dataclass(frozen=True)
class RunReader:
    """Frames ``[start, stop)`` of one detector of a run; picklable, opens the run per process.

    Attributes
    ----------
    run_dir : str
    detector : str
        Its name in the run, e.g. ``SPB_DET_AGIPD1M-1``.
    detector_class : str
        The extra-data class that reads it (``AGIPD1M``, ``DSSC1M``, ...).
    pulses : (int | None, int | None, int | None)
        ``start, stop, step`` of the pulses taken in every train (by index).
    min_modules : int
        Trains with fewer modules are left out.
    frame_train, frame_pulse : (N,) uint64 ndarray
        Train and pulse ID of every frame, in order.
    stack_shape : (int, int, int)
        ``(modules, ss, fs)``.
    files : tuple of str
        The run's files of this detector.
    """

    run_dir: str
    detector: str
    detector_class: str
    pulses: tuple
    min_modules: int
    frame_train: np.ndarray
    frame_pulse: np.ndarray
    stack_shape: tuple[int, int, int]
    files: tuple[str, ...]

    @property
    def frame_shape(self) -> tuple[int, int]:
        modules, ss, fs = self.stack_shape
        return (modules * ss, fs)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.frame_train), *self.frame_shape)

    @property
    def counts(self) -> tuple[int, ...]:
        return (len(self.frame_train),)

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frames ``[start, stop)`` as ``(n, modules * ss, fs)`` float32; NaN where masked."""
        if not 0 <= start <= stop <= len(self.frame_train):
            raise IndexError(f"frames [{start}, {stop}) outside [0, {len(self.frame_train)})")
        if out is None:
            out = np.empty((stop - start, *self.frame_shape), dtype=np.float32)
        if stop == start:
            return out
        stacks = out.reshape(stop - start, *self.stack_shape)
        done = start
        for trains, (first, last, taken) in read_plan(self.frame_train, start, stop):
            try:  # (modules, frames, ss, fs): the frames [first, last) of each of these trains
                data = _trains_frames(self, np.asarray(trains), first, last, taken)
            except (OSError, KeyError, ValueError) as error:
                reason = " ".join(str(error).split())
                raise InputError(
                    f"{self.run_dir}: cannot read trains {trains[0]}..{trains[-1]} ({reason})"
                ) from None
            expected = len(trains) * (last - first)
            if data.shape[1] != expected:  # a short read must not leave rows unwritten
                raise InputError(
                    f"{self.run_dir}: trains {trains[0]}..{trains[-1]} gave {data.shape[1]} "
                    f"frames where the run's index promises {expected}"
                )
            stacks[done - start : done - start + expected] = data.transpose(1, 0, 2, 3)
            done += expected
        return out

    def pieces(self, start: int, stop: int) -> list[np.ndarray]:
        """Frames ``[start, stop)`` as one ``(n, H, W)`` float32 array in a list."""
        return [self.read(start, stop)]

    def __getitem__(self, index) -> np.ndarray:
        """One frame (an int) or a contiguous slice of frames."""
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self.frame_train))
            if step != 1:
                raise IndexError("RunReader reads contiguous frame ranges only")
            return self.read(start, max(start, stop))
        index = int(index) + (len(self.frame_train) if int(index) < 0 else 0)
        return self.read(index, index + 1)[0]

    def describe(self) -> dict:
        """JSON-ready identity of the input (what ``--resume`` compares)."""
        return {
            "run": str(Path(self.run_dir).resolve()),
            "detector": self.detector,
            "detector_class": self.detector_class,
            "pulses": list(self.pulses),
            "min_modules": self.min_modules,
            "files": [str(Path(name).resolve()) for name in self.files],
            "file_sizes": [Path(name).stat().st_size for name in self.files],
            "frames_per_file": list(self.counts),
            "data_path": f"{self.detector} image.data",
            "frame_shape": list(self.frame_shape),
            "fingerprint": self.fingerprint(),
        }

    def fingerprint(self) -> str:
        """SHA-256 of the frame IDs and the frames of the first and the last train.

        Whole trains (a train is read whole): 16 frames spread over the run,
        as a CXI input samples them, would read 16 trains.
        """
        digest = hashlib.sha256()
        digest.update(self.frame_train.tobytes() + self.frame_pulse.tobytes())
        for train in np.unique(self.frame_train[[0, -1]]):
            start, stop = np.searchsorted(self.frame_train, [train, train + 1])
            digest.update(np.ascontiguousarray(self.read(int(start), int(stop))).tobytes())
        return "sha256:" + digest.hexdigest()


def open_run(
    run_dir: str | Path,
    detector: str,
    *,
    geometry: str | Path | None,
    pulses: slice = slice(None),
    incomplete: str = "skip",
) -> FrameSource:
    """Open one detector of a European XFEL run directory, checked.

    Parameters
    ----------
    run_dir : str or Path
        The run directory (``.../raw/r0001`` or ``.../proc/r0001``).
    detector : str
        The detector's name in the run, e.g. ``SPB_DET_AGIPD1M-1``.
    geometry : str or Path
        Its CrystFEL geometry file (:func:`ccfkit.io.geometry_file.load_geometry`):
        the frames are module stacks, which have no maps without it.
    pulses : slice
        Pulses taken from every train, by their index within the train.
    incomplete : {"skip", "mask"}
        Trains missing a module: left out, or kept with that module masked.

    Returns
    -------
    FrameSource
        With ``frame_ids`` ``train_id`` and ``pulse_id``.

    Raises
    ------
    InputError
        extra-data missing; not a run directory; no such detector (the ones
        present are named); no complete train; a geometry that disagrees.
    """
    if geometry is None:
        raise MissingGeometry(f"{detector}: its frames are module stacks; give --geometry FILE")
    if incomplete not in INCOMPLETE:
        raise InputError(
            f"incomplete trains: {incomplete!r} is not one of {', '.join(INCOMPLETE)}"
        )
    run, name, cls = _open_detector(Path(run_dir), detector)
    every = _detector(cls, run, name, 1)
    n_modules = int(every.n_modules)
    chosen = every
    if incomplete == "skip":
        recorded = len(every.source_to_modno)
        if recorded == n_modules:
            chosen = _detector(cls, run, name, n_modules)
        if recorded < n_modules or not len(chosen.train_ids):
            raise InputError(
                f"{run_dir}: no train of {name} has data from all {n_modules} modules "
                f"({recorded} modules recorded); --incomplete mask keeps trains with the "
                "missing modules masked"
            )
    min_modules = 1 if incomplete == "mask" else n_modules
    skipped = len(every.train_ids) - len(chosen.train_ids)
    reader = _reader(run_dir, name, cls, chosen, pulses, min_modules, run)
    if not len(reader.frame_train):
        raise InputError(f"{run_dir}: the pulses {_slice_text(pulses)} select no frame of {name}")
    from .geometry_file import load_geometry

    pixels = load_geometry(geometry, reader.stack_shape)
    logger.warning(
        "%s: %s, %d frames from %d trains (pulses %s); %d train(s) missing modules %s",
        run_dir, name, len(reader.frame_train), len(np.unique(reader.frame_train)),
        _slice_text(pulses), skipped, "skipped" if incomplete == "skip" else "kept, masked",
    )  # fmt: skip
    ids = {"train_id": reader.frame_train, "pulse_id": reader.frame_pulse}
    return FrameSource(
        reader=reader,
        mask=np.ones(reader.frame_shape, dtype=bool),
        mask_origin=_mask_origin(name, chosen),
        center=pixels.default_center(),
        pixels=pixels,
        pixel_size=pixels.pixel_size,
        wavelength=pixels.wavelength,
        distance=pixels.distance,
        center_origin=f"geometry origin ({pixels.detector})",
        frame_ids={key: (value, {"skipped_trains": skipped}) for key, value in ids.items()},
    )


def _open_detector(run_dir: Path, detector: str):
    """The run, the detector's name and its extra-data class; InputError otherwise."""
    try:
        import extra_data
        from extra_data.components import identify_multimod_detectors
    except ImportError:
        raise InputError(
            "European XFEL runs need extra-data: pip install 'ccfkit[euxfel]' "
            "(docs/dependencies.md)"
        ) from None
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: not a directory (a European XFEL run directory expected)")
    try:
        run = extra_data.RunDirectory(str(run_dir))
    except Exception as error:  # noqa: BLE001 - extra-data's errors for a non-run vary
        reason = " ".join(str(error).split())[:120]
        raise InputError(f"{run_dir}: not a European XFEL run directory ({reason})") from None
    found = identify_multimod_detectors(run)
    matches = [(name, cls) for name, cls in found if name == detector]
    if not matches:
        names = ", ".join(sorted(name for name, _ in found)) or "none"
        raise InputError(f"{run_dir}: no detector {detector} in this run (detectors: {names})")
    name, cls = matches[0]
    return run, name, cls


def _reader(run_dir, name, cls, det, pulses: slice, min_modules: int, run) -> RunReader:
    """The :class:`RunReader` of the trains and pulses of ``det`` that are taken."""
    modules, ss, fs = det.n_modules, *det.module_shape
    train, pulse, entry = _frame_ids(det, cls.__name__, pulses)
    if tuple(entry) != (ss, fs):
        raise InputError(
            f"{run_dir}: {name} holds {tuple(entry)} per frame, not {ss} x {fs} pixels "
            "(raw data? give the corrected run, proc/)"
        )
    files = sorted({str(f.filename) for source in det.source_to_modno for f in run[source].files})
    return RunReader(
        run_dir=str(run_dir),
        detector=name,
        detector_class=cls.__name__,
        pulses=(pulses.start, pulses.stop, pulses.step),
        min_modules=min_modules,
        frame_train=np.asarray(train, dtype=np.uint64),
        frame_pulse=np.asarray(pulse, dtype=np.uint64),
        stack_shape=(int(modules), int(ss), int(fs)),
        files=tuple(files),
    )


def _frame_ids(det, detector_class: str, pulses: slice):
    """Train and pulse ID of every taken frame, and the shape of one module's frame.

    JUNGFRAU's pulse ID is the frame's index among the memory cells of its train.
    """
    from extra_data import by_index

    if detector_class != "JUNGFRAU":
        frames = det["image.data"].select_pulses(by_index[pulses])
        entry = frames.buffer_shape()[2:]
        return frames.train_id_coordinates(), frames.pulse_id_coordinates(), entry
    source = next(iter(det.source_to_modno))
    cells, *entry = det.data[source, DATA_KEYS["JUNGFRAU"][0]].entry_shape
    taken = np.arange(cells)[pulses]
    trains = np.asarray(det.train_ids)
    return np.repeat(trains, len(taken)), np.tile(taken, len(trains)), entry


@functools.lru_cache(maxsize=4)
def _opened(run_dir: str, detector: str, detector_class: str, min_modules: int):
    """The run's detector, opened once per process."""
    import extra_data
    from extra_data import components

    run = extra_data.RunDirectory(run_dir)
    return _detector(getattr(components, detector_class), run, detector, min_modules)


def _detector(cls, run, name: str, min_modules: int):
    """``cls(run, ...)``: extra-data's view of the detector's trains with ``min_modules``.

    Its warning that a run without corrected data falls back to raw data is
    not passed on: such a run is refused with one line (:func:`_reader`).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Falling back to raw data")
        return cls(run, detector_name=name, min_modules=min_modules)


def read_plan(frame_train: np.ndarray, start: int, stop: int) -> list:
    """How frames ``[start, stop)`` are read: whole trains together, a train's part alone.

    Parameters
    ----------
    frame_train : (N,) uint64 ndarray
        The train of every frame, in frame order (a train's frames together).
    start, stop : int

    Returns
    -------
    list of (trains, (first, last, taken))
        In frame order: the train IDs read at once, and the positions
        ``[first, last)`` wanted among the ``taken`` frames of each of them
        (a chunk's first and last train may be cut; the trains between are
        read whole, together).
    """
    plan = []
    for train in np.unique(frame_train[start:stop]):
        low, high = (int(i) for i in np.searchsorted(frame_train, [train, train + 1]))
        part = (max(low, start) - low, min(high, stop) - low, high - low)
        whole = part[0] == 0 and part[1] == part[2]
        if whole and plan and plan[-1][1] == part:
            plan[-1][0].append(int(train))
        else:
            plan.append(([int(train)], part))
    return plan


def _trains_frames(reader: RunReader, trains: np.ndarray, first: int, last: int, taken: int):
    """(modules, frames, ss, fs) float32: the taken frames ``[first, last)`` of ``trains``.

    NaN where masked. XTDF detectors (AGIPD, DSSC, LPD) keep one entry per
    pulse: only the wanted pulses are read (by their index in the train,
    the ``pulses`` slice composed with ``[first, last)``). JUNGFRAU keeps one
    entry per train with its memory cells inside: the trains are read whole
    and the cells picked by index.
    """
    from extra_data import by_id, by_index

    det = _opened(reader.run_dir, reader.detector, reader.detector_class, reader.min_modules)
    key, mask_key = DATA_KEYS.get(reader.detector_class, DATA_KEYS["XTDF"])
    data = det.masked_data(key) if mask_key in det else det[key]
    if reader.detector_class != "JUNGFRAU":
        if (first, last) == (0, taken):
            data = data.select_pulses(by_index[slice(*reader.pulses)])
        else:
            begin, step = reader.pulses[0] or 0, reader.pulses[2] or 1  # as extra-data reads them
            wanted = slice(begin + step * first, begin + step * (last - 1) + 1, step)
            data = data.select_pulses(by_index[wanted])
    frames = data.select_trains(by_id[trains.tolist()]).ndarray(
        module_gaps=True, fill_value=np.nan, astype=np.float32
    )
    if reader.detector_class == "JUNGFRAU":  # (modules, trains, cells, ss, fs)
        frames = frames[:, :, slice(*reader.pulses)][:, :, first:last]
        frames = frames.reshape(frames.shape[0], -1, *frames.shape[-2:])
    return frames


def parse_pulses(text: str | None) -> slice:
    """``START:STOP:STEP`` (each part optional) as a slice; None: every pulse.

    Indices count the pulses of each train from its first, 0; negative ones
    (from the end of a train) are refused: extra-data selects no pulses by
    them, and ``-1`` alone would be the empty slice ``-1:0``.
    """
    if not text:
        return slice(None)
    parts = text.split(":")
    if len(parts) > 3:
        raise InputError(f"--pulses {text!r}: expected START:STOP:STEP")
    try:
        values = [int(part) if part.strip() else None for part in parts]
    except ValueError:
        raise InputError(f"--pulses {text!r}: expected integers START:STOP:STEP") from None
    if any(value is not None and value < 0 for value in values[:2]):
        raise InputError(
            f"--pulses {text!r}: a pulse index is negative; pulses count from 0, the first "
            "pulse of each train"
        )
    if len(values) == 1:
        return slice(values[0], values[0] + 1 if values[0] is not None else None)
    if len(values) == 3 and values[2] is not None and values[2] <= 0:
        raise InputError(f"--pulses {text!r}: the step must be positive")
    return slice(*values)


def _mask_origin(name: str, det) -> str:
    """Where the frames' bad pixels come from (the provenance's ``input.mask``)."""
    mask_key = DATA_KEYS.get(type(det).__name__, DATA_KEYS["XTDF"])[1]
    if mask_key in det:
        return f"{name} {mask_key} (nonzero = bad), per frame"
    return f"none: {name} has no {mask_key} (all pixels good)"


def _slice_text(pulses: slice) -> str:
    parts = [pulses.start, pulses.stop, pulses.step]
    return ":".join("" if value is None else str(value) for value in parts)
