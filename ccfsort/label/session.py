"""The state of one labelling session: the store, the label table, which frame comes next.

The web application (:mod:`ccfsort.label.app`) only translates HTTP to the
methods here, so everything a labeller can do is a plain, tested call:
:meth:`LabelSession.next_index`, :meth:`~LabelSession.frame`,
:meth:`~LabelSession.save`, :meth:`~LabelSession.undo`.

Which frame comes next (docs/training.md, "Labelling a run"): with a run's
probabilities, the unlabelled frame the model is least sure of
(:func:`ccfsort.selection.uncertainty`, ties to the lower row: active
learning); without, a random unlabelled frame drawn from a seeded generator.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.label_table import LabelTable, LabelTableError, read_label_table, write_label_table

from ..frames import StoreFrames
from ..render import data_uri, image_png, map_png
from ..selection import top_k, uncertainty

__all__ = ["SHORTCUT_KEYS", "LabelError", "LabelSession", "Prediction", "open_session"]

#: Keys that toggle the labels, in label order (labels beyond them have no key).
SHORTCUT_KEYS = "1234567890qwertyuiopasdfghjklzxcvbnm"


class LabelError(ValueError):
    """A request or a set-up that cannot be carried out (one-line message)."""


@dataclass(frozen=True)
class Prediction:
    """A run's view of the store: what ``--run`` adds to the page.

    Attributes
    ----------
    run : str
        The run directory.
    names : tuple of str
        The run's C label names.
    probabilities : (N, C) float32
        Sigmoid probabilities of every store row.
    threshold : float
        The run's decision threshold.
    groups : tuple of tuple of str
        The run's exclusive groups (used when the store declares none).
    """

    run: str
    names: tuple[str, ...]
    probabilities: np.ndarray
    threshold: float
    groups: tuple[tuple[str, ...], ...] = ()


class LabelSession:
    """Labels of a store's frames, saved to a CSV table after every change.

    Parameters
    ----------
    frames : StoreFrames
        The store's images and maps.
    out : Path
        The label table; an existing one is read and continued.
    prediction : Prediction, optional
        A run's probabilities: the next frame is the least certain one.
    seed : int
        Seed of the random order without ``prediction``.

    Raises
    ------
    LabelError
        No label names (a store without labels and no run), a ``prediction``
        of another number of frames, or an ``out`` that is not a label table
        of this store (it is left as it is).
    """

    def __init__(self, frames: StoreFrames, out, *, prediction: Prediction | None = None,
                 seed: int = 0):  # fmt: skip
        info = frames.info
        if info.has_labels:
            names, groups = info.label_names, info.exclusive_groups
        elif prediction is not None:
            names, groups = prediction.names, prediction.groups
        else:
            raise LabelError(
                f"{frames.path}: the store has no label names (its input had no labels); "
                "give --run RUN to label with the run's names"
            )
        if prediction is not None and len(prediction.probabilities) != frames.n_frames:
            raise LabelError(f"the run's predictions cover {len(prediction.probabilities)} "
                             f"frames, the store has {frames.n_frames}")  # fmt: skip
        self.frames, self.out, self.prediction = frames, Path(out), prediction
        self.names, self.groups = tuple(names), tuple(tuple(g) for g in groups)
        self.display_names = _display_names(frames, self.names)
        self.table = self._existing_table()
        self._uncertainty = None
        if prediction is not None:
            self._uncertainty = uncertainty(prediction.probabilities, prediction.threshold)
        self._rng = np.random.default_rng(seed)
        self._current: int | None = None
        self._undo: list[tuple[int, np.ndarray | None]] = []
        self._lock = threading.Lock()

    def _existing_table(self) -> LabelTable:
        if not self.out.exists():
            if not self.out.parent.is_dir():
                raise LabelError(f"--out {self.out}: directory {self.out.parent} does not exist")
            return LabelTable.empty(self.names)
        try:
            return read_label_table(self.out, self.names, self.frames.n_frames)
        except LabelTableError as error:
            raise LabelError(f"refusing to overwrite --out {self.out}: {error}") from None

    # ------------------------------------------------------------------ reading

    def meta(self) -> dict:
        """What the page needs once: names, keys, exclusive groups, where things are."""
        return {
            "names": list(self.names),
            "display_names": list(self.display_names),
            "keys": [
                SHORTCUT_KEYS[i] if i < len(SHORTCUT_KEYS) else None
                for i in range(len(self.names))
            ],
            "groups": [list(g) for g in self.groups],
            "store": str(self.frames.path),
            "out": str(self.out),
            "run": None if self.prediction is None else self.prediction.run,
            "order": "least certain first" if self.prediction is not None else "random",
        }

    def progress(self) -> dict:
        """``labelled``, ``total`` and the labelled frames ``per_class``."""
        with self._lock:
            counts = self.table.labels.sum(axis=0).tolist()
            return {
                "labelled": len(self.table),
                "total": self.frames.n_frames,
                "per_class": dict(zip(self.names, (int(c) for c in counts))),
            }

    def next_index(self) -> int | None:
        """The frame to show next (the same one until it is saved); None when all are labelled."""
        with self._lock:
            if self._current is not None and self._current not in self.table.rows:
                return self._current
            unlabelled = np.setdiff1d(np.arange(self.frames.n_frames), self.table.rows)
            if not len(unlabelled):
                return None
            if self._uncertainty is not None:
                self._current = int(top_k(self._uncertainty, 1, unlabelled)[0])
            else:
                self._current = int(self._rng.choice(unlabelled))
            return self._current

    def frame(self, row: int) -> dict:
        """Everything the page shows of frame ``row`` (pictures as ``data:`` URIs)."""
        row = self._checked_row(row)
        position, position_name = self.frames.along_run()
        payload = {
            "index": row,
            "position": int(position[row]),
            "position_name": position_name,
            "image": data_uri(image_png(self.frames.images([row])[0])),
            "map": data_uri(map_png(self.frames.maps([row])[0])),
            "labels": self.labels_of(row),
            "probabilities": None,
            "uncertainty": None,
        }
        if self.prediction is not None:
            p = self.prediction.probabilities[row]
            payload["probabilities"] = dict(zip(self.prediction.names, map(float, p)))
            payload["threshold"] = self.prediction.threshold
            payload["uncertainty"] = float(self._uncertainty[row])
        return payload

    def labels_of(self, row: int) -> list[str] | None:
        """The saved labels of ``row``, or None when it is not labelled."""
        with self._lock:
            where = np.flatnonzero(self.table.rows == row)
            if not len(where):
                return None
            return [n for n, v in zip(self.names, self.table.labels[where[0]]) if v]

    # ------------------------------------------------------------------ writing

    def save(self, row, labels) -> dict:
        """Label frame ``row`` with ``labels`` (names) and rewrite the table; returns progress.

        Raises
        ------
        LabelError
            ``row`` is not a store row, ``labels`` is not a list of the
            store's names, or it holds two labels of one exclusive group.
            Nothing is saved then.
        """
        row = self._checked_row(row)
        vector = self._label_vector(labels)
        with self._lock:
            where = np.flatnonzero(self.table.rows == row)
            previous = self.table.labels[where[0]].copy() if len(where) else None
            table = self.table.with_row(row, vector)
            write_label_table(self.out, table)
            self.table = table
            self._undo.append((row, previous))
        return self.progress()

    def undo(self) -> int | None:
        """Take back the last save of this session; returns its row (None: nothing to undo)."""
        with self._lock:
            if not self._undo:
                return None
            row, previous = self._undo[-1]
            if previous is None:
                table = self.table.without_row(row)
            else:
                table = self.table.with_row(row, previous)
            write_label_table(self.out, table)
            self.table = table
            self._undo.pop()
            self._current = row
            return row

    def _checked_row(self, row) -> int:
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)):
            raise LabelError(f"index must be an integer, got {row!r}")
        if not 0 <= row < self.frames.n_frames:
            raise LabelError(f"index {row} is outside the store's 0..{self.frames.n_frames - 1}")
        return int(row)

    def _label_vector(self, labels) -> np.ndarray:
        """(C,) uint8 of a list of label names, checked against names and groups."""
        if not isinstance(labels, list) or not all(isinstance(n, str) for n in labels):
            raise LabelError(f"labels must be a list of label names, got {labels!r}")
        unknown = [n for n in labels if n not in self.names]
        if unknown:
            raise LabelError(f"unknown label {unknown[0]!r}; the labels are {list(self.names)}")
        chosen = set(labels)
        for group in self.groups:
            both = [n for n in group if n in chosen]
            if len(both) > 1:
                raise LabelError(
                    f"labels {both} exclude each other (exclusive group {list(group)})"
                )
        return np.array([n in chosen for n in self.names], dtype=np.uint8)


def _display_names(frames: StoreFrames, names: tuple[str, ...]) -> tuple[str, ...]:
    """The store's human-readable names where it has them (same length), else from ``names``."""
    shown = frames.label_attrs.get("display_names")
    if shown and len(shown) == len(names):
        return tuple(str(n) for n in shown)
    return tuple(n.replace("_", " ").capitalize() for n in names)


def open_session(store, out, *, run=None, seed: int = 0, device: str = "cpu",
                 which: str = "best") -> LabelSession:  # fmt: skip
    """A :class:`LabelSession` on ``store`` writing ``out``, with ``run``'s predictions if given.

    Raises
    ------
    FramesError
        The store cannot be read or has no images to show.
    LabelError
        See :class:`LabelSession`.
    trainer.run_dir.RunError, trainer.data.DataError
        ``run`` is not a finished run, or was trained on other inputs.
    """
    frames = StoreFrames(store)
    prediction = None
    if run is not None:
        from trainer.inference import store_probabilities

        result = store_probabilities(run, store, which=which, device=device)
        prediction = Prediction(
            run=str(run), names=tuple(result["names"]), probabilities=result["probabilities"],
            threshold=result["threshold"], groups=tuple(map(tuple, result["groups"])),
        )  # fmt: skip
    return LabelSession(frames, out, prediction=prediction, seed=seed)
