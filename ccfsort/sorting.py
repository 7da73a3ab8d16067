"""Sort a run straight from its files: frames -> maps -> model -> labels, streamed.

A trained run knows the store it was trained on; that store records how its
maps were made (docs/store-layout.md: centre, mask, radii, orders,
estimator, scale). :class:`MapRecipe` recovers those parameters, and
:func:`predict_frames` applies them to the frames of new CXI/HDF5 files,
batch by batch, and passes the maps through the model — no store of maps is
written (200 GB per million frames at 224 x 224 float32). Reading and
mapping the next batch run on a worker thread while the model classifies
the current one (the Numba/CuPy kernels and PyTorch release the GIL).

The frames are mapped as they are: the noise a training store may have
added (the paper's robustness study, Table 6) is not added to real data.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ccfkit.atomic import atomic_output
from ccfkit.ccf import MapSettings
from ccfkit.io.errors import InputError, MissingGeometry
from ccfkit.polar import PlanSpec
from ccfkit.settings import NoiseLevel
from ccfkit.store import StoreError, read_recipe
from ccfkit.store.recipe import read_q_placement
from trainer.config import TrainConfig
from trainer.data import DataError, model_inputs, open_store, resolve_normalize
from trainer.inference import load_run, write_probability_csv
from trainer.run_dir import RunError

__all__ = [
    "MapRecipe",
    "open_frames_of_run",
    "predict_frames",
    "prepare_frames",
    "write_predictions",
]

logger = logging.getLogger(__name__)

#: Output formats of :func:`write_predictions`, by file suffix.
FORMATS = {".csv": "csv", ".h5": "hdf5", ".hdf5": "hdf5", ".zarr": "zarr"}


@dataclass(frozen=True)
class MapRecipe:
    """How a run's training store made the model's inputs from frames.

    Attributes
    ----------
    plan : PlanSpec
        Detector shape, centre, mask, radii and usable rings, as stored.
    settings : MapSettings
        Orders, separation, estimator and scale.
    input_kind : str
        ``"ccf"`` (maps) or ``"images"`` (frames resized to ``image_size``).
    image_size : int or None
    normalize : str
        The run's resolved per-frame scaling.
    geometry : dict or None
        The module stack's geometry the store records (None: images).
    q_placement : str
        Rings in q on frames of several wavelengths or distances: at each
        frame's own (``"per-frame"``) or at their mean, as the store's build.
    frame_groups : GeometryGroups or None
        The new frames' own geometries, grouped (:mod:`ccfkit.frame_geometry`).
    own_centers : bool
        The store's build resampled each frame at its own beam centre
        (``--center per-frame``: the store holds ``frame_center``); the new
        frames are then too (:mod:`ccfkit.frame_centers`).
    frame_centers : (N, 2) float64 ndarray or None
        With ``own_centers``: the new frames' ``(cx, cy)``, pixels.
    """

    plan: PlanSpec
    settings: MapSettings
    input_kind: str
    image_size: int | None
    normalize: str
    geometry: dict | None = None
    q_placement: str = "per-frame"
    frame_groups: object | None = None
    own_centers: bool = False
    frame_centers: np.ndarray | None = None

    @classmethod
    def of_run(cls, config: dict) -> MapRecipe:
        """The recipe of a run (its ``config.json`` as a dict).

        Raises
        ------
        RunError
            When the training store is gone, or does not record how its maps
            were made (and a map made another way would mislead the model).
        """
        path = config["store"]["path"]
        try:
            group = open_store(path)
            recipe = read_recipe(group)  # the grid with the radii the build resolved
            mask = group["mask"][:]
            radius = group["radius"][:]
            center = tuple(group.attrs["center"])
            geometry = group.attrs["input"].get("geometry")
            q_placement = read_q_placement(group)
            own_centers = "frame_center" in group
        except (DataError, StoreError, KeyError, OSError) as error:
            raise RunError(
                f"cannot recover how the run's maps were made from its store {path} "
                f"({error}); map the frames with `ccfkit build` and predict on that store"
            ) from None
        train = TrainConfig.from_dict(config["train"])
        plan = PlanSpec.describe(mask.shape, center=center, mask=mask, grid=recipe.resolved_grid,
                                 scattering=recipe.scattering)  # fmt: skip
        if not np.allclose(plan.plan().radius, radius, rtol=0, atol=1e-9):
            raise RunError(f"{path}: its radii cannot be made again from its parameters")
        if recipe.noise is not NoiseLevel.NONE:
            logger.info(
                "the run was trained on maps with noise %r added; new frames are mapped as "
                "they are", recipe.noise.value,
            )  # fmt: skip
        return cls(
            plan=plan,
            settings=recipe.settings,
            input_kind=train.input,
            image_size=recipe.image_size,
            normalize=resolve_normalize(train.normalize, train.input),
            geometry=geometry,
            q_placement=q_placement,
            own_centers=own_centers,
        )

    def for_source(self, source) -> MapRecipe:
        """The recipe for the frames of ``source``: its pixel placement checked against the store's.

        Frames of a module stack are mapped with their geometry's pixel
        positions, which must be those the training store was built with
        (its geometry file's text, recorded in the store, read again by
        extra-geom: the same tiles to 1e-6 px).

        Raises
        ------
        DataError
            Another frame shape; a module stack for a store of images, or
            the reverse; another geometry than the store's; frames without
            a beam centre each for a store of maps made at each frame's own.
        """
        pixels = source.pixels
        if tuple(source.frame_shape) != tuple(self.plan.shape):
            raise DataError(
                f"the frames are {source.frame_shape}, the run's maps were made from "
                f"{tuple(self.plan.shape)} frames"
            )
        if (pixels is None) != (self.geometry is None):
            made = f"module stacks ({self.geometry['file']})" if self.geometry else "images"
            given = "module stacks (--geometry)" if pixels is not None else "images"
            raise DataError(f"the run's maps were made from {made}; these frames are {given}")
        recipe = self._with_centers(source) if self.own_centers else self
        if pixels is None:
            return recipe
        if not _same_placement(pixels, self.geometry):
            raise DataError(
                f"--geometry {pixels.source} is not the geometry the run's maps were made with "
                f"({self.geometry['file']}, {self.geometry['detector']}): its pixels lie elsewhere"
            )
        return replace(recipe, plan=replace(self.plan, pixels=pixels))

    def _with_centers(self, source) -> MapRecipe:
        """The recipe with the beam centre of each frame of ``source`` (``own_centers``).

        Frames that give one centre for all are each mapped at that centre:
        a single frame's own centre is one for all (the files' reader keeps
        no centres per frame for one frame).
        """
        from ccfkit.frame_centers import check_centers

        centers = _frame_centers(source)
        if centers is None:
            raise DataError(
                "the run's maps were made at each frame's own beam centre (--center per-frame); "
                "these frames give no centre per frame"
            )
        check_centers(self.plan, centers, source.n_frames)
        return replace(self, frame_centers=centers)

    def inputs(self, frames: np.ndarray, engine, rows=None) -> np.ndarray:
        """(B, H, W) frames -> (B, C, S, S) float32 model inputs, on the host.

        ``rows``: the frames' (B,) indices over the inputs, which rings in q
        placed at each frame's own geometry need (:attr:`frame_groups`).
        """
        if self.input_kind == "images":
            from ccfkit.resize import resize_images

            return model_inputs(resize_images(frames, self.image_size, self.plan.mask),
                                self.normalize)  # fmt: skip
        if self.frame_groups is not None or self.frame_centers is not None:  # each its own plan
            from ccfkit.frame_geometry import maps_of_own_plans

            if rows is None:
                raise ValueError("frames mapped with their own plans need the frames' rows")
            rows = np.asarray(rows)
            groups = centers = None
            if self.frame_groups is not None:  # rings in q at each frame's own geometry
                groups = self.frame_groups.geometries, self.frame_groups.group[rows]
            if self.frame_centers is not None:  # each frame at its own beam centre
                centers = self.frame_centers[rows]
            maps = maps_of_own_plans(engine, frames, self.plan, self.settings, centers=centers,
                                     groups=groups)  # fmt: skip
            return model_inputs(maps, self.normalize)
        plan = self.plan.plan()
        maps = engine.merged_maps(engine.as_batch(frames, plan.shape), plan, self.settings)
        return model_inputs(engine.to_numpy(maps), self.normalize)


def predict_frames(
    run_dir,
    inputs,
    *,
    which: str = "best",
    device: str = "cpu",
    backend: str = "auto",
    data_path: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
    facility: dict | None = None,
    prepared: tuple | None = None,
) -> dict:
    """Classify the frames of CXI/HDF5 files or a run with a trained run, without a store.

    Parameters
    ----------
    run_dir : path
        A ``trainer fit`` run directory.
    inputs : sequence of str
        Files or glob patterns, in order (as ``ccfkit build`` takes them).
    which : {"best", "last"}
        The checkpoint.
    device : str
        Torch device of the model (``"cuda"`` also moves the maps to CuPy
        when ``backend="auto"``).
    backend : str
        The engine's backend.
    data_path : str, optional
        The frames' data set [CXI conventions].
    batch_size : int
        Frames read, mapped and classified at once.
    facility : dict, optional
        ``geometry``, ``detector``, ``pulses``, ``incomplete``: module
        stacks with their geometry, or a European XFEL run directory, as
        ``ccfkit build`` reads them (:func:`ccfkit.cli_inputs.open_frames`).
    prepared : (MapRecipe, FrameSource), optional
        :func:`prepare_frames`' result for this run and ``inputs``, when the
        caller has it (then ``inputs``, ``data_path`` and ``facility`` are
        not used).

    Returns
    -------
    dict
        ``index`` (N,) int64 frame index over the inputs, ``probabilities``
        (N, C) float32, ``names``, ``threshold``, ``seconds`` (read, maps,
        model, total; read and maps overlap the model).
    """
    from tqdm.auto import tqdm

    from ccfkit.backends import get_backend

    model, config, _ = load_run(run_dir, which, device)
    if prepared is None:
        prepared = prepare_frames(config, inputs, data_path=data_path, facility=facility)
    recipe, source = prepared
    engine = get_backend(backend)
    dev = next(model.parameters()).device
    n = source.n_frames
    seconds = {"read": 0.0, "maps": 0.0, "model": 0.0}

    def prepare(start: int) -> np.ndarray:
        began = time.perf_counter()
        frames = source.reader.read(start, min(start + batch_size, n))
        seconds["read"] += time.perf_counter() - began
        began = time.perf_counter()
        x = recipe.inputs(frames, engine, np.arange(start, start + len(frames)))
        seconds["maps"] += time.perf_counter() - began
        return x

    probabilities = np.empty((n, model.config.num_classes), dtype=np.float32)
    began_all = time.perf_counter()
    bar = tqdm(total=n, desc="predict", unit="frame", disable=not progress)
    with ThreadPoolExecutor(1) as pool, torch.no_grad():
        starts = range(0, n, batch_size)
        pending = pool.submit(prepare, 0) if n else None
        for start in starts:
            x = pending.result()
            if start + batch_size < n:  # the next batch is read and mapped meanwhile
                pending = pool.submit(prepare, start + batch_size)
            began = time.perf_counter()
            logits = model(torch.from_numpy(x).to(dev))
            probabilities[start : start + len(x)] = torch.sigmoid(logits.float()).cpu().numpy()
            seconds["model"] += time.perf_counter() - began
            bar.update(len(x))
    bar.close()
    seconds["total"] = time.perf_counter() - began_all
    return {
        "index": np.arange(n, dtype=np.int64),
        "probabilities": probabilities,
        "names": list(config["store"]["label_names"]),
        "threshold": float(config["train"]["threshold"]),
        "seconds": seconds,
    }


def _frame_centers(source) -> np.ndarray | None:
    """The (N, 2) float64 ``(cx, cy)`` of each frame of ``source``, or None if it gives no centre.

    A source with one centre for all its frames (``centers`` None,
    ``center`` given) has that centre for each.
    """
    if source.centers is not None:
        return np.asarray(source.centers, dtype=np.float64)
    if source.center is None:
        return None
    return np.broadcast_to(np.asarray(source.center, dtype=np.float64), (source.n_frames, 2))


def _same_placement(pixels, recorded: dict) -> bool:
    """Whether ``pixels`` (a DetectorGeometry) places the pixels as the store's recorded geometry."""
    from ccfkit.io.geometry_file import load_recorded_geometry

    stored = load_recorded_geometry(recorded)
    if stored.stack_shape != pixels.stack_shape or len(stored.tiles) != len(pixels.tiles):
        return False
    return all(
        a[:5] == b[:5] and np.allclose(np.array(a[5:]), np.array(b[5:]), rtol=0, atol=1e-6)
        for a, b in zip(stored.tiles, pixels.tiles)
    )


def prepare_frames(config: dict, inputs, *, data_path=None, facility=None):
    """The run's recipe and the frames of ``inputs``, opened and checked for it.

    Parameters
    ----------
    config : dict
        The run's ``config.json``.
    inputs, data_path, facility
        As :func:`predict_frames` takes them.

    Returns
    -------
    (MapRecipe, FrameSource)
        The recipe placed on these frames (their pixel positions; rings in
        ``q`` by their wavelength and distance).
    """
    recipe = MapRecipe.of_run(config)
    source = open_frames_of_run(inputs, recipe, data_path=data_path, facility=facility)
    if recipe.plan.grid.q_range is not None:  # rings in q: placed by these frames' geometry
        from ccfkit.frame_geometry import place_rings

        placed = place_rings(source, recipe.plan.grid, recipe.q_placement)
        recipe = replace(recipe, plan=replace(recipe.plan, scattering=placed.scattering),
                         frame_groups=placed.groups)  # fmt: skip
    return recipe.for_source(source), source


def open_frames_of_run(inputs, recipe: MapRecipe, *, data_path=None, facility=None):
    """The frames of ``inputs``, opened as ``ccfkit build`` opens them, for ``recipe``'s maps.

    The run's store gives the mask and the centre: the files' own are not
    used (nor compared between files). A run directory keeps its own mask
    of bad pixels (NaN, masked frame by frame), as in the build. Module
    stacks without ``--geometry`` are placed by the geometry the store
    recorded (its text, ``input.geometry``), which is said in one line; a
    store that recorded none refuses them.

    Raises
    ------
    DataError
        Module stacks without ``--geometry`` for a store that recorded no geometry.
    """
    from ccfkit.cli_inputs import open_frames
    from ccfkit.io.geometry_file import recorded_file

    facility = dict(facility or {})
    mask = None if facility.get("detector") else recipe.plan.mask
    center_use = "per-frame" if recipe.own_centers else "ignore"  # as the store's build
    options = {"data_path": data_path, "mask": mask, "mask_origin": "the run's store",
               "center_use": center_use}  # fmt: skip
    if facility.get("geometry") is not None or recipe.geometry is None:
        try:
            return open_frames(list(inputs), **options, **facility)
        except MissingGeometry:  # no --geometry (with one, the reader needs none)
            raise DataError(
                "these frames are module stacks, and the run's store records no geometry "
                "(its maps were made from images): this run cannot sort them"
            ) from None
    recorded = recipe.geometry
    logger.warning(
        "no --geometry: the frames are placed by the geometry the run's store recorded (%s, %s)",
        recorded["file"], recorded["detector"],
    )  # fmt: skip
    with recorded_file(recorded) as path:
        try:
            source = open_frames(list(inputs), **options, **{**facility, "geometry": path})
        except InputError as error:  # named by the recorded file, not the temporary copy
            named = f"{recorded['file']} (recorded in the run's store)"
            raise InputError(str(error).replace(str(path), named)) from None
    return replace(source, pixels=replace(source.pixels, source=str(recorded["file"])))


def write_predictions(result: dict, out) -> None:
    """Write :func:`predict_frames`' result to ``out`` (.csv, .h5/.hdf5 or .zarr).

    CSV: ``index, p_<name>..., <name>...`` per frame (probabilities, then the
    0/1 labels at the run's threshold). HDF5 and Zarr: arrays ``index`` (N,),
    ``probabilities`` (N, C) and ``labels`` (N, C) uint8, with the label
    names and the threshold as attributes. CSV and HDF5 are written to a
    temporary name and moved into place (an existing file is replaced); a
    ``.zarr`` output must not exist yet and is written in place.
    """
    out = Path(out)
    kind = FORMATS.get(out.suffix.lower())
    if kind is None:
        raise DataError(f"{out}: unknown output format; use one of {', '.join(FORMATS)}")
    names, threshold = result["names"], result["threshold"]
    probabilities = result["probabilities"]
    labels = (probabilities >= threshold).astype(np.uint8)
    if kind == "zarr":
        _write_zarr(out, result["index"], probabilities, labels, names, threshold)
    elif kind == "csv":
        write_probability_csv(out, {"index": result["index"]}, names, probabilities, threshold)
    else:
        import h5py

        with atomic_output(out, overwrite=True) as partial, h5py.File(partial, "w") as handle:
            handle["index"] = result["index"]
            handle["probabilities"] = probabilities
            handle["labels"] = labels
            for key in ("probabilities", "labels"):
                handle[key].attrs["names"] = names
            handle["labels"].attrs["threshold"] = threshold


def _write_zarr(out: Path, index, probabilities, labels, names, threshold) -> None:
    import zarr

    if out.exists():
        raise DataError(f"{out} exists; choose another output or remove it")
    group = zarr.open_group(str(out), mode="w-")
    group.create_array("index", data=index)
    group.create_array("probabilities", data=probabilities).attrs["names"] = names
    array = group.create_array("labels", data=labels)
    array.attrs.update({"names": names, "threshold": threshold})
