"""The frames behind predictions: images and CCF maps to look at, read a few at a time.

A store (docs/store-layout.md) holds every frame's map (``ccf``) and, when
built with ``--keep-images``, its resized image (``images``); otherwise the
images come from the input files the store records (``input.files``,
``input.data_path``; row ``n`` is frame ``index[n]`` of those files, in
order). :class:`StoreFrames` reads either. :class:`FileFrames` serves
frames that were never built into a store (``trainer gallery RUN FILES``):
their images from the files, their maps made with the run's recipe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["FileFrames", "FramesError", "StoreFrames"]

#: Arrays that give a frame's position along the run, preferred first (a facility's
#: train id where the store has one, else the frame index in the input).
ALONG_RUN = (("train_id", "train id"), ("index", "frame index"))


class FramesError(ValueError):
    """Frames that cannot be shown (one-line message)."""


class StoreFrames:
    """Images and maps of a store's rows.

    Parameters
    ----------
    path : str or Path
        A complete ``ccfkit build`` store.
    need_images : bool
        Check now that images can be read (the store's ``images``, or else its
        input files), instead of at the first :meth:`images`.

    Raises
    ------
    FramesError
        Not a usable store; or (``need_images``) a store without images whose
        input files cannot be read.
    """

    def __init__(self, path, *, need_images: bool = True):
        from trainer.data import DataError, StoreDataset, inspect_store

        try:
            info = inspect_store(path, need_labels=False)
        except DataError as error:
            raise FramesError(str(error)) from None
        self.path = Path(path)
        self.info = info
        self.n_frames = info.n_frames
        self._dataset = StoreDataset(str(path), "ccf")
        group = self._dataset.group
        self.index = np.asarray(group["index"][:], dtype=np.int64)
        self.has_images = "images" in group
        #: The ``labels`` array's attributes (names, display_names, exclusive_groups), or {}.
        self.label_attrs = dict(group["labels"].attrs) if info.has_labels else {}
        self._reader = None
        self._pixels = None
        self._along_run: tuple[np.ndarray, str] | None = None
        if need_images and not self.has_images:
            self._reader = self._source_reader(dict(group.attrs).get("input") or {})

    def _source_reader(self, source: dict):
        """A reader over the store's input (files, or a European XFEL run), checked.

        Sets :attr:`_pixels` to the recorded geometry of module stacks.
        """
        from ccfkit.io.source import InputError

        why = "it records no input files"
        try:
            if source.get("files"):
                reader, self._pixels = _recorded_input(source)
                reader.read(int(self.index[0]), int(self.index[0]) + 1)
                return reader
        except (InputError, KeyError, OSError, IndexError) as error:
            why = f"its input cannot be read ({' '.join(str(error).split())})"
        raise FramesError(
            f"{self.path}: the store has no images (build it with --keep-images) and {why}"
        )

    def images(self, rows) -> np.ndarray:
        """(k, H, W) float32 images of ``rows`` (the store's, or the input frames, assembled)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.has_images:
            return self._read("images", rows)
        if self._reader is None:
            self._reader = self._source_reader(dict(self._dataset.group.attrs).get("input") or {})
        out = [self._reader.read(int(i), int(i) + 1)[0] for i in self.index[rows]]
        return assembled(np.stack(out), self._pixels) if out else np.zeros((0, 1, 1), np.float32)

    def maps(self, rows) -> np.ndarray:
        """(k, Q, Q) float32 merged maps of ``rows`` (channel 0 of several orders)."""
        maps = self._read("ccf", np.asarray(rows, dtype=np.int64)).astype(np.float32)
        return maps[:, 0] if maps.ndim == 4 else maps

    def _read(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows of array ``name`` in the given order, decoding each touched chunk once."""
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows),) + tuple(self._dataset.array(name).shape[1:]), np.float32)
        out[order] = self._dataset.read(name, rows[order])
        return out

    def along_run(self) -> tuple[np.ndarray, str]:
        """``(position (N,) int64, its name)``: train id where stored, else frame index."""
        if self._along_run is None:
            group = self._dataset.group
            found = [(key, label) for key, label in ALONG_RUN if key in group]
            if found:
                key, label = found[0]
                self._along_run = (np.asarray(group[key][:], dtype=np.int64), label)
            else:
                self._along_run = (np.arange(self.n_frames, dtype=np.int64), "row")
        return self._along_run

    def frame_names(self, rows) -> list[str]:
        """How each of ``rows`` is named: ``train T · pulse P`` where the store has them."""
        group = self._dataset.group
        ids = {key: group[key] for key in ("train_id", "pulse_id") if key in group}
        rows = [int(r) for r in rows]
        return frame_names({key: array[:] for key, array in ids.items()}, rows)


def _recorded_input(source: dict):
    """The reader of a store's recorded input, and the geometry of its module stacks (or None).

    A European XFEL run is opened again with its detector, pulses and
    geometry; files with their data set, counts and shape.
    """
    from ccfkit.io.geometry_file import load_recorded_geometry, recorded_file
    from ccfkit.io.source import FrameReader

    recorded = source.get("geometry")
    if "run" in source:
        from ccfkit.io.euxfel import open_run

        with recorded_file(recorded) as path:
            opened = open_run(source["run"], source["detector"], geometry=path,
                              pulses=slice(*source["pulses"]),
                              incomplete="mask" if source["min_modules"] == 1 else "skip")  # fmt: skip
        return opened.reader, load_recorded_geometry(recorded)
    pixels = load_recorded_geometry(recorded) if recorded else None
    reader = FrameReader(
        files=tuple(source["files"]),
        data_path=source["data_path"],
        counts=tuple(int(c) for c in source["frames_per_file"]),
        frame_shape=tuple(int(s) for s in source["frame_shape"]),
        stack_shape=pixels.stack_shape if pixels is not None else None,
    )
    return reader, pixels


class FileFrames:
    """Images of CXI/HDF5 frames (or a run's) and their maps made with a run's recipe.

    Module stacks are shown assembled by extra-geom, their maps made from the
    stacks as the build makes them; frames of a European XFEL run are named
    by train and pulse.

    Parameters
    ----------
    inputs : sequence of str
        Files or glob patterns, or a run directory, as ``trainer predict`` takes them.
    config : dict
        The run's ``config.json`` (its training store says how maps are made).
    data_path : str, optional
        The frames' data set [CXI conventions].
    backend : str
        The engine's backend for the maps.
    facility : dict, optional
        ``geometry``, ``detector``, ``pulses``, ``incomplete``
        (:func:`ccfsort.sorting.predict_frames`).
    """

    def __init__(self, inputs, config: dict, *, data_path: str | None = None, backend="auto",
                 facility: dict | None = None):  # fmt: skip
        from ccfkit.backends import get_backend

        from .sorting import prepare_frames

        #: ``(MapRecipe, FrameSource)``: what :func:`ccfsort.sorting.predict_frames` needs.
        self.prepared = prepare_frames(config, inputs, data_path=data_path, facility=facility)
        self._recipe, self._source = self.prepared
        self._engine = get_backend(backend)
        self.n_frames = self._source.n_frames

    def _frames(self, rows) -> np.ndarray:
        """(k, H, W) float32 frames of ``rows`` as read (module stacks stay stacked)."""
        out = [self._source.reader.read(int(i), int(i) + 1)[0] for i in rows]
        return np.stack(out) if out else np.zeros((0, 1, 1), np.float32)

    def images(self, rows) -> np.ndarray:
        """(k, H, W) float32 frames of ``rows`` (frame indices over the inputs), assembled."""
        return assembled(self._frames(rows), self._source.pixels)

    def maps(self, rows) -> np.ndarray:
        """(k, Q, Q) float32: the run's model inputs of ``rows``, channel 0."""
        frames = self._frames(rows)
        if not len(frames):
            return frames
        return self._recipe.inputs(frames, self._engine, rows)[:, 0]

    def along_run(self) -> tuple[np.ndarray, str]:
        """``(train id (N,) int64, "train id")`` of a run, else ``(frame index, "frame index")``."""
        ids = self._source.frame_ids
        if "train_id" in ids:
            return np.asarray(ids["train_id"][0], dtype=np.int64), "train id"
        return np.arange(self.n_frames, dtype=np.int64), "frame index"

    def frame_names(self, rows) -> list[str]:
        """How each of ``rows`` is named: ``train T · pulse P`` where the input has them."""
        ids = {key: value for key, (value, _) in self._source.frame_ids.items()}
        return frame_names(ids, rows)


def frame_names(ids: dict, rows) -> list[str]:
    """``train T · pulse P`` of ``rows`` where ``ids`` has ``train_id`` and ``pulse_id``.

    Parameters
    ----------
    ids : dict of str to (N,) array
        Per-frame identifiers (those present of ``train_id``, ``pulse_id``).
    rows : sequence of int

    Returns
    -------
    list of str
        Empty strings where the frames have no such identifiers.
    """
    if "train_id" not in ids or "pulse_id" not in ids:
        return ["" for _ in rows]
    train, pulse = ids["train_id"], ids["pulse_id"]
    return [f"train {int(train[r])} · pulse {int(pulse[r])}" for r in rows]


def assembled(frames: np.ndarray, pixels) -> np.ndarray:
    """``frames`` as images: module stacks assembled by extra-geom, images as they are.

    Parameters
    ----------
    frames : (k, H, W) float32 array
        Images, or stacked frames ``(k, modules * ss, fs)``.
    pixels : DetectorGeometry or None
        The stacks' geometry (None: images).
    """
    if pixels is None or not len(frames):
        return frames
    from ccfkit.io.geometry_file import assemble

    return assemble(pixels, frames)
