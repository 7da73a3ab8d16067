"""Matching a run's label names to another store's, so one can score the other.

A run trained on ``ccfkit simulate`` data knows its labels by machine name
(``spherical_oblate``); another labelled source may spell them
``Spherical/Oblate`` or ``Spherical-Oblate``, or call them something else. Names
that differ only in case and punctuation match by themselves
(:func:`normalize_label`); anything else needs a label map file (JSON object,
``{"store name": "run name", ...}``; see ``docs/training.md``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LabelMatch", "match_labels", "normalize_label", "read_label_map"]


def normalize_label(name: str) -> str:
    """Lower case, every run of other characters than letters and digits one ``_``.

    ``"Spherical/Oblate"``, ``"spherical-oblate"`` and ``"SPHERICAL_OBLATE"``
    all become ``"spherical_oblate"``; ``"Double Rings"`` becomes ``"double_rings"``.
    """
    return re.sub(r"[^0-9a-z]+", "_", str(name).lower()).strip("_")


def read_label_map(path) -> dict[str, str]:
    """Read a label map: a JSON object from store label names to run label names.

    Raises
    ------
    ValueError
        The file is missing, not JSON, or not an object of strings.
    """
    path = Path(path)
    try:
        mapping = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"label map {path}: no such file") from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"label map {path}: not JSON ({error.msg}, line {error.lineno})"
        ) from None
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise ValueError(f'label map {path}: expected a JSON object {{"store name": "run name"}}')
    return mapping


@dataclass(frozen=True)
class LabelMatch:
    """Which store column holds each run label.

    Attributes
    ----------
    run_columns : (M,) int64
        Columns of the run's outputs that are scored.
    store_columns : (M,) int64
        The store's label columns holding the same labels, in the same order.
    names : tuple of str
        The run's names of the scored labels (M).
    store_names : tuple of str
        The store's names of the same labels (M).
    unmatched_run : tuple of str
        Run labels the store does not have (not scored).
    unmatched_store : tuple of str
        Store labels no run label matched (ignored).
    """

    run_columns: np.ndarray
    store_columns: np.ndarray
    names: tuple[str, ...]
    store_names: tuple[str, ...]
    unmatched_run: tuple[str, ...]
    unmatched_store: tuple[str, ...]

    @property
    def is_identity(self) -> bool:
        """Every label matched, in the same order."""
        n = len(self.names)
        return (
            not self.unmatched_run
            and not self.unmatched_store
            and np.array_equal(self.run_columns, np.arange(n))
            and np.array_equal(self.store_columns, np.arange(n))
        )

    def present(self, store_row) -> tuple[str, ...]:
        """The run's names of the scored labels set in ``store_row`` ((C_store,) 0/1)."""
        row = np.asarray(store_row)
        return tuple(name for name, column in zip(self.names, self.store_columns) if row[column])

    def run_groups(self, run_groups) -> tuple[tuple[str, ...], ...]:
        """The run's exclusive groups restricted to the scored labels (groups of >= 2 kept)."""
        scored = set(self.names)
        return tuple(
            tuple(n for n in group if n in scored)
            for group in run_groups
            if sum(n in scored for n in group) >= 2
        )

    def groups(self, store_groups) -> tuple[tuple[str, ...], ...]:
        """The store's exclusive groups in run names, keeping groups of >= 2 scored labels."""
        to_run = dict(zip(self.store_names, self.names))
        return tuple(
            tuple(to_run[c] for c in columns if c in to_run)
            for columns in store_groups
            if sum(c in to_run for c in columns) >= 2
        )


def match_labels(run_names, store_names, label_map: dict[str, str] | None = None) -> LabelMatch:
    """Match each run label to a store label column.

    A store name is first translated through ``label_map`` (store name ->
    run name; a key matches in any case and punctuation), then matched to
    the run's names by :func:`normalize_label`.

    Parameters
    ----------
    run_names : sequence of str
        The run's label names, in its output order.
    store_names : sequence of str
        The store's label names, in its column order.
    label_map : dict of str -> str, optional

    Returns
    -------
    LabelMatch

    Raises
    ------
    ValueError
        No label matches; two store labels map to the same run label; or
        a label map entry names a store or run label that does not exist.
    """
    run_names, store_names = list(run_names), list(store_names)
    by_run = {normalize_label(n): i for i, n in enumerate(run_names)}
    mapped = {normalize_label(k): normalize_label(v) for k, v in (label_map or {}).items()}
    store_keys = {normalize_label(n) for n in store_names}
    for source, target in mapped.items():
        if source not in store_keys:
            raise ValueError(f"label map: {source!r} is not a label of the store {store_names}")
        if target not in by_run:
            raise ValueError(f"label map: {target!r} is not a label of the run {run_names}")
    pairs: dict[int, int] = {}
    unmatched_store = []
    for column, name in enumerate(store_names):
        key = normalize_label(name)
        run_column = by_run.get(mapped.get(key, key))
        if run_column is None:
            unmatched_store.append(name)
        elif run_column in pairs:
            first = store_names[pairs[run_column]]
            raise ValueError(
                f"store labels {first!r} and {name!r} both match the run's "
                f"{run_names[run_column]!r}; give a --label-map"
            )
        else:
            pairs[run_column] = column
    if not pairs:
        raise ValueError(
            f"no label of the store {store_names} matches the run's {run_names}; "
            "give a --label-map"
        )
    run_columns = np.array(sorted(pairs), dtype=np.int64)
    return LabelMatch(
        run_columns=run_columns,
        store_columns=np.array([pairs[c] for c in run_columns], dtype=np.int64),
        names=tuple(run_names[c] for c in run_columns),
        store_names=tuple(store_names[pairs[c]] for c in run_columns),
        unmatched_run=tuple(n for i, n in enumerate(run_names) if i not in pairs),
        unmatched_store=tuple(unmatched_store),
    )
