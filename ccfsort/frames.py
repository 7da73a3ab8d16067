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
        self._along_run: tuple[np.ndarray, str] | None = None
        if need_images and not self.has_images:
            self._reader = self._source_reader(dict(group.attrs).get("input") or {})

    def _source_reader(self, source: dict):
        """A :class:`~ccfkit.io.source.FrameReader` over the store's input files, checked."""
        from ccfkit.io.source import FrameReader, InputError

        files = source.get("files") or []
        why = "it records no input files"
        try:
            if files:
                reader = FrameReader(
                    files=tuple(files),
                    data_path=source["data_path"],
                    counts=tuple(int(c) for c in source["frames_per_file"]),
                    frame_shape=tuple(int(s) for s in source["frame_shape"]),
                )
                reader.read(int(self.index[0]), int(self.index[0]) + 1)
                return reader
        except (InputError, KeyError, OSError, IndexError) as error:
            why = f"its input cannot be read ({' '.join(str(error).split())})"
        raise FramesError(
            f"{self.path}: the store has no images (build it with --keep-images) and {why}"
        )

    def images(self, rows) -> np.ndarray:
        """(k, H, W) float32 images of ``rows`` (the store's, or the input frames)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.has_images:
            return self._read("images", rows)
        if self._reader is None:
            self._reader = self._source_reader(dict(self._dataset.group.attrs).get("input") or {})
        out = [self._reader.read(int(i), int(i) + 1)[0] for i in self.index[rows]]
        return np.stack(out) if out else np.zeros((0, 1, 1), np.float32)

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


class FileFrames:
    """Images of CXI/HDF5 frames and their maps made with a run's recipe.

    Parameters
    ----------
    inputs : sequence of str
        Files or glob patterns, as ``trainer predict`` takes them.
    config : dict
        The run's ``config.json`` (its training store says how maps are made).
    data_path : str, optional
        The frames' data set [CXI conventions].
    backend : str
        The engine's backend for the maps.
    """

    def __init__(self, inputs, config: dict, *, data_path: str | None = None, backend="auto"):
        from ccfkit.backends import get_backend

        from .sorting import MapRecipe, open_frames_of_run

        recipe = MapRecipe.of_run(config)
        self._source = open_frames_of_run(inputs, recipe, data_path=data_path)
        self._recipe = recipe.for_source(self._source)
        self._engine = get_backend(backend)
        self.n_frames = self._source.n_frames

    def images(self, rows) -> np.ndarray:
        """(k, H, W) float32 frames of ``rows`` (frame indices over the inputs)."""
        out = [self._source.reader.read(int(i), int(i) + 1)[0] for i in rows]
        return np.stack(out) if out else np.zeros((0, 1, 1), np.float32)

    def maps(self, rows) -> np.ndarray:
        """(k, Q, Q) float32: the run's model inputs of ``rows``, channel 0."""
        frames = self.images(rows)
        if not len(frames):
            return frames
        return self._recipe.inputs(frames, self._engine)[:, 0]

    def along_run(self) -> tuple[np.ndarray, str]:
        """``(frame index (N,) int64, "frame index")``."""
        return np.arange(self.n_frames, dtype=np.int64), "frame index"
