"""Training on a few frames: ``--train-frames K`` drawn with the seed, or ``--train-index FILE``.

Either choice is made inside the training split only, so the validation and
test splits stay those of the full run and results for different K (or index
files) are scored on the same frames (docs/training.md, "Fine-tuning from few
labels"). With a label table (``--labels``) the training split is that of the
labelled frames, and K of those are drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import DataError

__all__ = ["draw_frames", "read_train_index", "training_rows"]


def draw_frames(rows, count: int, seed: int) -> np.ndarray:
    """``count`` of ``rows``, drawn with ``seed``: the first ``count`` of a seeded permutation.

    For one ``seed`` a smaller ``count``'s frames are among a larger one's
    (nested training sets), and the draw depends on ``(rows, count, seed)`` only.

    Parameters
    ----------
    rows : (M,) int array
        The training split's store rows.
    count : int
        ``K``, in 1..M.
    seed : int

    Returns
    -------
    (K,) int64 array
        Sorted store rows.

    Raises
    ------
    DataError
        ``count`` above ``M`` or below 1.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not 1 <= count <= len(rows):
        raise DataError(
            f"--train-frames {count}: the training split has {len(rows)} frames "
            f"(choose 1..{len(rows)})"
        )
    order = np.random.default_rng([seed, 2]).permutation(len(rows))
    return np.sort(rows[order[:count]])


def read_train_index(path) -> np.ndarray:
    """Store rows from a file: a ``.npy`` integer array, or text with one integer per line.

    Returns
    -------
    (K,) int64 array
        Sorted, as given.

    Raises
    ------
    DataError
        Not readable as integers, empty, or a row given twice.
    """
    path = Path(path)
    try:
        if path.suffix == ".npy":
            rows = np.load(path, allow_pickle=False)
        else:
            rows = np.loadtxt(path, dtype=np.float64, ndmin=1, comments="#")
    except (OSError, ValueError) as error:
        raise DataError(f"--train-index {path}: not a list of store rows ({error})") from None
    rows = np.asarray(rows).ravel()
    if not len(rows) or not np.all(np.equal(np.mod(rows, 1), 0)):
        raise DataError(f"--train-index {path}: expected whole store rows, one per line")
    rows = np.sort(rows.astype(np.int64))
    repeated = rows[1:][rows[1:] == rows[:-1]]
    if len(repeated):
        raise DataError(f"--train-index {path}: row {int(repeated[0])} is given twice")
    return rows


def training_rows(split: dict[str, np.ndarray], train_cfg) -> np.ndarray:
    """The rows a run trains on: the training split, or the few chosen inside it.

    Parameters
    ----------
    split : dict
        ``{"train", "validation", "test"}`` store rows.
    train_cfg : TrainConfig
        ``train_frames`` (K drawn with ``seed``) or ``train_index`` (a file of
        rows, all in the training split); neither: ``split["train"]``.

    Raises
    ------
    DataError
        K above the training split's size; an index file with a row outside
        the training split (its split named).
    """
    if train_cfg.train_frames is not None:
        return draw_frames(split["train"], train_cfg.train_frames, train_cfg.seed)
    if train_cfg.train_index is None:
        return split["train"]
    rows = read_train_index(train_cfg.train_index)
    outside = rows[~np.isin(rows, split["train"])]
    if len(outside):
        row = int(outside[0])
        where = next((name for name in ("validation", "test") if row in split[name]), None)
        place = f"in the {where} split" if where else "not among the frames used"
        raise DataError(
            f"--train-index {train_cfg.train_index}: {len(outside)} rows are not in the training "
            f"split (row {row} is {place}); validation and test frames stay out of training"
        )
    return rows
