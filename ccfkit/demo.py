"""The end-to-end demo: simulate labelled frames, build their stores, draw them.

``ccfkit demo OUT_DIR`` (the README's main job) runs the whole pipeline on data
it makes itself: ``simulate`` -> ``build`` (noise ``none`` and ``max``) ->
pictures of one frame per class beside its merged maps, and of the stages of
the computation for one frame.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import zarr

from .backends import get_backend
from .build_config import BUILD_MAPS
from .io.source import open_source
from .pipeline import BuildConfig, build
from .polar import PlanSpec
from .simulate import SimulationConfig
from .simulate.cxi_file import write_simulated
from .store import read_recipe
from .summary import raw_frame

logger = logging.getLogger(__name__)

__all__ = ["run_demo"]


def run_demo(
    out_dir: Path,
    *,
    frames: int = 96,
    order: int = BUILD_MAPS.orders[0],
    backend: str = "auto",
    seed: int = 0,
) -> list[Path]:
    """Simulate, build and draw; return the files written.

    Parameters
    ----------
    out_dir : Path
        Created if needed. Receives ``frames.cxi``, ``maps-none.zarr``,
        ``maps-max.zarr``, ``demo_maps.png`` and ``ccf_stages.png``.
    frames : int
        Frames to simulate (259 x 259).
    order : int
        Angular order of the upper triangle (default: the build's, 2); the
        other map settings are the build's defaults (docs/ccf.md, "Defaults").
    backend : str
        Engine backend.
    seed : int
        Seed of the simulation and of the noise.

    Returns
    -------
    list of Path
    """
    from matplotlib.figure import Figure

    from .plotting import draw_image, draw_merged_map, stages_figure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "frames.cxi"
    write_simulated(data, SimulationConfig(), frames, seed, overwrite=True, progress=False)
    source = open_source([data])
    stores = {}
    for noise in ("none", "max"):
        path = out_dir / f"maps-{noise}.zarr"
        config = BuildConfig.from_parameters({"orders": (order,), "noise": noise, "seed": seed})
        stores[noise] = build(
            source, str(path), config, backend=backend, overwrite=True, progress=False
        )
        logger.info("demo: built %s", path)

    clean = stores["none"]
    names = clean["labels"].attrs["names"]
    labels = clean["labels"][:]
    examples = _one_frame_per_class(labels, names)
    rows = list(examples.values())
    radius = clean["radius"][:]
    mask = clean["mask"][:]
    fig = Figure(figsize=(14, 4.2 * len(rows)))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for axes_row, row in zip(axes, rows):
        on = ", ".join(name for name, bit in zip(names, labels[row]) if bit)
        draw_image(axes_row[0], raw_frame(clean, row), mask=mask, title=f"frame {row}: {on}")
        for ax, noise in zip(axes_row[1:], ("none", "max")):
            colours = draw_merged_map(
                ax,
                stores[noise]["ccf"][row],
                radius,
                order=order,
                title=f"merged map, noise '{noise}'",
            )
        fig.colorbar(colours, ax=axes_row[2], fraction=0.046)
    fig.tight_layout()
    written = [out_dir / "demo_maps.png"]
    fig.savefig(written[-1], dpi=70)

    # the stages of the most anisotropic frame on show: streak, else elliptical, else any
    shown = examples.get("streak", examples.get("elliptical", rows[0]))
    written.append(
        _draw_stages(clean, shown, order, backend, out_dir / "ccf_stages.png", stages_figure)
    )
    return [data, *(out_dir / f"maps-{noise}.zarr" for noise in stores), *written]


def _one_frame_per_class(labels: np.ndarray, names) -> dict[str, int]:
    """The first frame carrying each label (each frame shown once), in label order."""
    rows: dict[str, int] = {}
    for name, column in zip(names, labels.T):
        hits = [int(i) for i in np.flatnonzero(column) if int(i) not in rows.values()]
        if hits:
            rows[name] = hits[0]
    return rows


def _draw_stages(store: zarr.Group, row: int, order: int, backend: str, path: Path, figure):
    """The stage figure (image, polar image, merged map) of one frame of a store."""
    image = raw_frame(store, row)
    mask = store["mask"][:]
    grid = read_recipe(store).resolved_grid  # the store's own grid: its radii and usable rings
    plan = PlanSpec.describe(mask.shape, center=store.attrs["center"], mask=mask, grid=grid).plan()
    if not np.allclose(plan.radius, store["radius"][:], rtol=0, atol=1e-9):
        raise RuntimeError("the demo store's radii are not its recorded grid's")
    engine = get_backend(backend)
    polar = engine.resample(engine.as_batch(image, plan.shape), plan)
    fig = figure(
        image,
        engine.to_numpy(polar.values[0]),
        engine.to_numpy(polar.valid[0]),
        store["ccf"][row],
        plan.radius,
        mask=mask,
        order=order,
    )
    fig.savefig(path, dpi=90)
    return path
