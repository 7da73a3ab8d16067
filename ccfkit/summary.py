"""Reading a store back for people: a text summary and the paper's Fig. 4 panel."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr

from .io.errors import InputError
from .io.source import FrameReader
from .noise import add_noise, frame_bounds
from .store import read_checked, read_recipe

__all__ = ["check_picture_output", "describe_store", "draw_frame", "raw_frame"]


def describe_store(group: zarr.Group) -> str:
    """A human-readable summary: status, arrays, parameters, noise, provenance."""
    attrs = dict(group.attrs)
    lines = [
        f"ccfkit store, schema {attrs['schema_version']}, status: {attrs['status']}",
        f"created {attrs.get('created')} by ccfkit {attrs.get('tool_version')}",
        "",
        "arrays:",
    ]
    for name, array in sorted(group.arrays()):
        compressors = getattr(array, "compressors", ())
        codec = type(compressors[0]).__name__ if compressors else "none"
        lines.append(
            f"  {name:<8} {array.dtype!s:<8} {array.shape!s:<20} chunks {array.chunks} {codec}"
        )
    done = read_checked(group["done"], 0, group["done"].shape[0])
    lines.append(f"  chunks done: {int(done.sum())} / {done.size}")
    for key in (
        "parameters",
        "noise",
        "center",
        "center_origin",
        "r_max",
        "backend",
        "input",
        "command",
        "environment",
    ):
        if key in attrs:
            lines += ["", f"{key}:", _indent(json.dumps(attrs[key], indent=2))]
    return "\n".join(lines)


def raw_frame(group: zarr.Group, row: int) -> np.ndarray:
    """The input frame of store row ``row``, read from the files named in the store."""
    described = group.attrs["input"]
    if "geometry" in described:  # module stacks (and runs) have no image to draw
        detector = described["geometry"]["detector"]
        raise InputError(f"the frames are module stacks ({detector}): show draws images only")
    reader = FrameReader(
        tuple(described["files"]),
        described["data_path"],
        tuple(described["frames_per_file"]),
        tuple(described["frame_shape"]),
    )
    return reader[int(group["index"][row])]


def check_picture_output(group: zarr.Group, output: str | Path) -> Path:
    """``output`` if ``ccfkit show -o`` may write it (:func:`ccfkit.outputs.writable_output`).

    Never the store (a local one), a file inside it or one of the input files
    it names; an existing file only when it is a picture this tool drew (its
    PNG marker).
    """
    from .outputs import our_picture, writable_output

    store = getattr(group.store, "root", None)
    inputs = [*([store] if store else []), *group.attrs.get("input", {}).get("files", [])]
    return writable_output(output, inputs=inputs, recognise=our_picture, what="-o")


def draw_frame(group: zarr.Group, row: int, output: str | Path) -> None:
    """Fig. 4 of the paper for one frame: image, noisy image, merged map.

    The noisy image is drawn again from ``(seed, index)``: it is the one the
    map was computed from. A damaged chunk is a
    :class:`~ccfkit.store.StoreError` naming it. ``output`` is checked first
    (:func:`check_picture_output`, an ``OSError``); the PNG is written to it
    exactly (no suffix added), whole (:func:`ccfkit.atomic.atomic_output`), and
    marked as this tool's (``Software``: ``ccfkit show``).
    """
    from matplotlib.figure import Figure

    from .plotting import draw_image, draw_merged_map

    check_picture_output(group, output)  # before anything is drawn
    n_frames = group["ccf"].shape[0]
    if not 0 <= row < n_frames:
        raise IndexError(f"index {row} out of range: the store has {n_frames} frames")
    mask = group["mask"][:]
    image = raw_frame(group, row)
    index = int(group["index"][row])
    noise = group.attrs["noise"]
    bounds = frame_bounds(image[None], noise["level"], noise["bound"], mask)
    noisy = add_noise(image[None], [index], bounds, group.attrs["seed"])[0]
    radius = group["radius"][:]
    order = read_recipe(group).settings.orders[0]
    fig = Figure(figsize=(15, 4.6))
    axes = fig.subplots(1, 3)
    draw_image(axes[0], image, mask=mask, title=f"frame {index} (log10)")
    draw_image(axes[1], noisy, mask=mask, title=f"with noise '{noise['level']}' (log10)")
    maps = np.asarray(read_checked(group["ccf"], row, row + 1)[0], dtype=np.float32)
    merged = maps if maps.ndim == 2 else maps[0]  # channel 0: the merged map of several orders
    colours = draw_merged_map(axes[2], merged, radius, order=order)
    fig.colorbar(colours, ax=axes[2], fraction=0.046)
    if "labels" in group:
        names = group["labels"].attrs["names"]
        bits = read_checked(group["labels"], row, row + 1)[0]
        on = [name for name, bit in zip(names, bits) if bit]
        fig.suptitle("labels: " + (", ".join(on) or "none"))
    fig.tight_layout()
    from .atomic import atomic_output

    with atomic_output(output, overwrite=True) as partial:
        fig.savefig(partial, dpi=90, format="png", metadata={"Software": "ccfkit show"})


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
