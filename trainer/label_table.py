"""Hand-made labels: the CSV table ``trainer label`` writes and ``trainer fit --labels`` reads.

The table (docs/training.md, "Labelling a run") has a column ``index`` (the
frame's row in the store) and one 0/1 column per label name, in the store's
order; one row per labelled frame, sorted by ``index``. It is rewritten whole
on every save, through :func:`ccfkit.atomic.atomic_output` (a temporary
file renamed over the old one), so a process killed at any moment leaves the
previous table or the new one, never a torn one.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ccfkit.atomic import atomic_output

from .data import DataError, StoreInfo

__all__ = [
    "LabelTable",
    "LabelTableError",
    "labelled_store_info",
    "read_label_table",
    "write_label_table",
]


class LabelTableError(DataError):
    """A label table that cannot be used (one-line message naming the file)."""


@dataclass(frozen=True)
class LabelTable:
    """Labels of some frames of a store.

    Attributes
    ----------
    names : tuple of str
        The C label names, in column order.
    rows : (M,) int64
        Store rows of the labelled frames, sorted, unique.
    labels : (M, C) uint8
        0/1 labels of those frames.
    """

    names: tuple[str, ...]
    rows: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls, names: Sequence[str]) -> LabelTable:
        """A table of ``names`` without a labelled frame."""
        return cls(tuple(names), np.zeros(0, np.int64), np.zeros((0, len(names)), np.uint8))

    def __len__(self) -> int:
        return len(self.rows)

    def with_row(self, row: int, labels: np.ndarray) -> LabelTable:
        """A new table with frame ``row`` set to ``labels`` ((C,) 0/1), added or replaced."""
        keep = self.rows != row
        rows = np.append(self.rows[keep], np.int64(row))
        values = np.vstack([self.labels[keep], np.asarray(labels, np.uint8)[None, :]])
        order = np.argsort(rows, kind="stable")
        return LabelTable(self.names, rows[order], values[order])

    def without_row(self, row: int) -> LabelTable:
        """A new table without frame ``row`` (the same table when it is not labelled)."""
        keep = self.rows != row
        return LabelTable(self.names, self.rows[keep], self.labels[keep])

    def dense(self, n_frames: int) -> np.ndarray:
        """(n_frames, C) uint8: the labelled rows filled in, every other row 0."""
        out = np.zeros((n_frames, len(self.names)), dtype=np.uint8)
        out[self.rows] = self.labels
        return out


def read_label_table(
    path, names: Sequence[str] | None = None, n_frames: int | None = None
) -> LabelTable:
    """Read and check a label table.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    names : sequence of str, optional
        The label names the columns after ``index`` must be, in this order.
    n_frames : int, optional
        Rows of the store: every ``index`` must be below it.

    Returns
    -------
    LabelTable

    Raises
    ------
    LabelTableError
        Missing or unreadable file, no ``index`` column first, columns other
        than ``names``, an index that is not an integer in ``[0, n_frames)`` or
        appears twice, a value other than 0 or 1, a row of the wrong length.
    """
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            lines = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise LabelTableError(f"label table {path}: cannot be read ({error})") from None
    if not lines or not lines[0] or lines[0][0] != "index":
        raise LabelTableError(f"label table {path}: not a label table (no 'index' column first)")
    columns = tuple(lines[0][1:])
    if names is not None and columns != tuple(names):
        raise LabelTableError(
            f"label table {path}: its columns {list(columns)} do not match the store's "
            f"label names {list(names)}"
        )
    rows, values = _parse_rows(path, lines[1:], len(columns), n_frames)
    if len(np.unique(rows)) != len(rows):
        twice = int(rows[np.flatnonzero(np.bincount(rows) > 1)[0]])
        raise LabelTableError(f"label table {path}: index {twice} appears twice")
    order = np.argsort(rows, kind="stable")
    return LabelTable(columns, rows[order], values[order])


def _parse_rows(path: Path, lines, n_columns: int, n_frames: int | None):
    """``(rows (M,) int64, labels (M, C) uint8)`` of the data lines, checked."""
    rows = np.zeros(len(lines), dtype=np.int64)
    values = np.zeros((len(lines), n_columns), dtype=np.uint8)
    for number, line in enumerate(lines):
        where = f"label table {path}, line {number + 2}"
        if len(line) != n_columns + 1:
            raise LabelTableError(f"{where}: {len(line)} values, expected {n_columns + 1}")
        try:
            row = int(line[0])
        except ValueError:
            raise LabelTableError(f"{where}: index {line[0]!r} is not an integer") from None
        if row < 0 or (n_frames is not None and row >= n_frames):
            raise LabelTableError(f"{where}: index {row} is outside the store's 0..{n_frames - 1}")
        if any(value not in ("0", "1") for value in line[1:]):
            raise LabelTableError(f"{where}: labels must be 0 or 1, got {line[1:]}")
        rows[number] = row
        values[number] = [int(value) for value in line[1:]]
    return rows, values


def write_label_table(path, table: LabelTable) -> None:
    """Write ``table`` to ``path`` atomically (a temporary file renamed over the old one)."""
    with (
        atomic_output(Path(path), overwrite=True) as partial,
        open(partial, "w", newline="") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(["index", *table.names])
        for row, labels in zip(table.rows.tolist(), table.labels.tolist()):
            writer.writerow([row, *labels])


def labelled_store_info(info: StoreInfo, path) -> StoreInfo:
    """The store as ``trainer fit --labels PATH`` sees it: labelled by the table.

    The table's columns must be the store's label names; a store without
    labels takes the table's names (and no exclusive group).

    Raises
    ------
    LabelTableError
        The table cannot be read, its columns differ from the store's names,
        an index lies beyond the store, or it labels no frame.
    """
    table = read_label_table(path, info.label_names if info.has_labels else None, info.n_frames)
    if not len(table):
        raise LabelTableError(f"label table {path}: no labelled frame")
    if info.has_labels:
        return info
    return dataclasses.replace(info, label_names=table.names, has_labels=True)
