"""Whether a store may be finished by this build: ``ccfkit build --resume`` (docs/build.md).

A store is resumed only by a build of the same recipe, layout (chunking,
compressor), centre and backend, from the same input: the same files by
content, mask and labels. The frames themselves are checked chunk by chunk
against the digest recorded when they were first read, as the map tasks read
them again (:mod:`ccfkit.digest`, :func:`ccfkit.pipeline.process_chunk`).
"""

from __future__ import annotations

import json

import numpy as np
import zarr

from .build_config import BuildConfig
from .io.source import FrameSource
from .store import StoreError, StoreLayout, StoreRecipe, layout_of, open_store, read_recipe

__all__ = ["open_for_resume"]


#: Layout fields a resume compares, with the option that sets each.
_RESUMED_LAYOUT = {"chunk_frames": "--chunk", "compressor": "--compressor"}


def open_for_resume(out: str, config: BuildConfig, provenance: dict, source: FrameSource,
                     layout: StoreLayout) -> zarr.Group:  # fmt: skip
    """Open an incomplete store to finish it, refusing one built another way or from another input.

    The recipe is compared as the engine's objects (:func:`ccfkit.store.read_recipe`),
    with the layout's chunking and compressor. The input is identified by
    content: resolved paths, frame counts, data-set path, frame shape, the
    fingerprint of :func:`ccfkit.io.source.input_fingerprint`, the mask and
    the labels themselves (not the way their origin was written); the frames
    of every chunk are checked against their recorded digest as they are read
    again (:func:`ccfkit.pipeline.process_chunk`).
    """
    group = open_store(out, mode="r+")
    expected = json.loads(json.dumps(provenance))  # tuples become lists, as stored
    stored = read_recipe(group)
    asked = StoreRecipe.of_build(config)
    theirs, mine = stored.parameters(), asked.parameters()
    changed = [(key, theirs[key], mine[key]) for key in stored.differences(asked)]
    # a store made before q_placement was recorded holds none: taken as what is asked now
    recorded = {"q_placement": expected["q_placement"], **group.attrs.asdict()}
    for key in ("center", "backend", "q_placement"):
        if recorded.get(key) != expected[key]:
            changed.append((key, recorded.get(key), expected[key]))
    recorded_layout = layout_of(group)
    for key, option in _RESUMED_LAYOUT.items():
        if getattr(recorded_layout, key) != getattr(layout, key):
            changed.append((option, getattr(recorded_layout, key), getattr(layout, key)))
    if changed:
        names = ", ".join(key for key, _, _ in changed)
        values = "; ".join(f"{old!r}, now {new!r}" for _, old, new in changed)
        raise StoreError(
            f"{out} was built with another {names} ({values}): resume with the same options "
            "or use --overwrite"
        )
    mask = source.mask
    stored_input, given = group.attrs["input"], expected["input"]
    keys = ("files", "frames_per_file", "data_path", "frame_shape", "fingerprint", "geometry",
            "center_per_frame")  # fmt: skip
    for key in keys:
        if key in stored_input and stored_input[key] != given.get(key):  # old: no fingerprint
            raise StoreError(
                f"{out} was built from another input ({key} differs); use --overwrite"
            )
    if not np.array_equal(group["mask"][:], mask):
        raise StoreError(f"{out} was built with another mask; use --overwrite")
    _check_same_labels(out, group, source)
    return group


def _check_same_labels(out: str, group: zarr.Group, source: FrameSource) -> None:
    """Refuse to resume when the input's labels (values or names) are not the store's."""
    if "labels" not in group and source.labels is None:
        return
    if "labels" not in group or source.labels is None:
        now = "none" if source.labels is None else "some"
        raise StoreError(f"{out}: the input's labels changed (now {now}); use --overwrite")
    names = tuple(group["labels"].attrs.get("names", ()))
    if names != tuple(source.label_names):
        raise StoreError(
            f"{out}: the input's label names changed ({list(names)}, now "
            f"{list(source.label_names)}); use --overwrite"
        )
    stored = group["labels"][:]
    if stored.shape != source.labels.shape:
        raise StoreError(
            f"{out}: the input's labels changed (shape {stored.shape}, now "
            f"{source.labels.shape}); use --overwrite"
        )
    rows = np.flatnonzero((stored != source.labels).any(axis=1))
    if len(rows):
        raise StoreError(
            f"{out}: the input's labels changed since the build began (frame {int(rows[0])} "
            "first); use --overwrite"
        )
