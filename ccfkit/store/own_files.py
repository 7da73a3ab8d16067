"""Which files of a store directory a build wrote (docs/store-layout.md).

``--overwrite`` removes a store only when every entry under it is one a
build of *this* store wrote: the root ``zarr.json``; the arrays its layout
and its recorded digests name, each with its ``zarr.json`` and, under
``c/``, chunk keys only (digits: ``c/3/0/0``); ``digests/`` with the arrays
whose chunk digests this layout records; and the temporary files an
interrupted write leaves (zarr's ``zarr.<uuid>.partial`` and
``<key>.<uuid>.partial``, ccfkit's ``<key>.<uuid>.partial``). Anything else
(``notes.md``, ``ccf/c/my_notes.txt``, ``images/`` in a store without
images) is the user's, and the store is refused (:func:`foreign_entries`).
A store whose creation was interrupted records no layout yet: any array a
store may hold is accepted there, with the same checks inside it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .layout import (
    DIGESTS,
    TASK_WRITTEN,
    StoreError,
    StoreLayout,
    digested_arrays,
    dimension_names,
)

__all__ = ["foreign_entries", "own_arrays", "root_attributes"]

#: A temporary metadata file of an interrupted write: zarr's ``zarr.<uuid4 hex>.partial``.
_TEMPORARY = re.compile(r"zarr(\.json)?\.[0-9a-f]{32}\.partial")
#: A chunk key's component (zarr's default encoding: ``c/<i>/<j>/...``), and its temporaries.
_KEY = re.compile(r"[0-9]+")
_KEY_TEMPORARY = re.compile(r"[0-9]+\.[0-9a-f]{32}\.partial")


def own_arrays(attributes: dict) -> tuple[set[str], set[str]]:
    """``(arrays, digests arrays)`` a build of the store with root ``attributes`` wrote.

    From the recorded ``layout`` and ``chunk_digests`` (the arrays written at
    creation); without a ``layout`` (a creation interrupted before its end),
    every array any store may hold.
    """
    try:
        stored = dict(attributes["layout"])
        stored["label_names"] = tuple(stored.get("label_names", ()))
        layout = StoreLayout(**stored)
    except (KeyError, TypeError, ValueError, StoreError):  # none yet, or not one ccfkit wrote
        everything = StoreLayout(1, 1, image_size=1, stats_by_chunk=True)
        return set(dimension_names(everything)), set(digested_arrays(everything))
    created = attributes.get("chunk_digests")
    if isinstance(created, dict):
        arrays = set(created)
    else:  # written before digests were recorded: any array written at creation
        arrays = set(dimension_names(layout)) - set(TASK_WRITTEN)
    arrays |= {name for name in TASK_WRITTEN if name != "images" or layout.image_size}
    return arrays, set(digested_arrays(layout))


def foreign_entries(path: str | Path) -> list[str]:
    """What a store directory holds that a build did not write (relative paths, sorted).

    Parameters
    ----------
    path : str or Path
        The store directory (its root attributes say what it holds).

    Returns
    -------
    list of str
        The first entry of each foreign part (a directory ends in ``/``); empty
        when ``--overwrite`` may remove everything.
    """
    path = Path(path)
    arrays, digested = own_arrays(root_attributes(path))
    foreign = []
    for entry in _entries(path):
        if entry.name == "zarr.json" and entry.is_file(follow_symlinks=False):
            continue
        if entry.name == DIGESTS and _plain_directory(entry):
            for inner in _entries(Path(entry.path)):
                if inner.name in digested and _plain_directory(inner):
                    foreign += _foreign_in_array(Path(inner.path), f"{DIGESTS}/{inner.name}")
                elif not _own_file(inner):
                    foreign.append(_shown(inner, f"{DIGESTS}/{inner.name}"))
        elif entry.name in arrays and _plain_directory(entry):
            foreign += _foreign_in_array(Path(entry.path), entry.name)
        elif not _temporary(entry):
            foreign.append(_shown(entry, entry.name))
    return foreign


def _foreign_in_array(directory: Path, name: str) -> list[str]:
    """What an array's directory holds besides its ``zarr.json``, chunk keys and temporaries."""
    foreign = []
    for entry in _entries(directory):
        if entry.name == "c" and _plain_directory(entry):
            foreign += _foreign_chunks(Path(entry.path), f"{name}/c", _dimensions(directory))
        elif not _own_file(entry):
            foreign.append(_shown(entry, f"{name}/{entry.name}"))
    return foreign


def _foreign_chunks(directory: Path, name: str, depth: int | None) -> list[str]:
    """What is not a chunk key under ``c/``: ``depth`` components, each a number."""
    foreign = []
    for entry in _entries(directory):
        shown = f"{name}/{entry.name}"
        key = _KEY.fullmatch(entry.name) is not None
        inner = None if depth is None else depth - 1
        if key and _plain_directory(entry) and inner != 0:
            foreign += _foreign_chunks(Path(entry.path), shown, inner)
        elif not (entry.is_file(follow_symlinks=False)
                  and (key and depth in (None, 1) or _KEY_TEMPORARY.fullmatch(entry.name))):  # fmt: skip
            foreign.append(_shown(entry, shown))
    return foreign


def _dimensions(directory: Path) -> int | None:
    """The number of dimensions in an array's ``zarr.json`` (None when it cannot be read)."""
    try:
        shape = json.loads((directory / "zarr.json").read_text()).get("shape")
    except (OSError, ValueError, AttributeError):
        return None
    return len(shape) if isinstance(shape, list) and shape else None


def _entries(directory: Path) -> list[os.DirEntry]:
    with os.scandir(directory) as entries:
        return sorted(entries, key=lambda entry: entry.name)


def _plain_directory(entry: os.DirEntry) -> bool:
    return entry.is_dir(follow_symlinks=False)


def _own_file(entry: os.DirEntry) -> bool:
    """An array's or a group's ``zarr.json``, or a temporary file of a write."""
    metadata = entry.name == "zarr.json" and entry.is_file(follow_symlinks=False)
    return metadata or _temporary(entry)


def _temporary(entry: os.DirEntry) -> bool:
    return _TEMPORARY.fullmatch(entry.name) is not None and entry.is_file(follow_symlinks=False)


def _shown(entry: os.DirEntry, name: str) -> str:
    return name + ("/" if entry.is_dir(follow_symlinks=False) else "")


def root_attributes(path: Path) -> dict:
    """The root group's attributes read from ``zarr.json`` ({} when there is none to read)."""
    try:
        metadata = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(metadata, dict) or metadata.get("node_type") != "group":
        return {}
    attributes = metadata.get("attributes")
    return attributes if isinstance(attributes, dict) else {}
