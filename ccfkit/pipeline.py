"""The build: CXI frames -> noisy frames -> CCF maps -> a Zarr store, in parallel tasks.

Two passes over the frames (docs/build.md, noise): a statistics pass (per-frame mean, std
and max of the valid pixels; their medians set the noise bound), then the map
pass, one task per store chunk: map the chunk's frames from the file,
write the noisy frames (noise drawn from ``(seed, frame index)``) in one pass
from them, compute the merged maps, write the chunk, mark it done. With
``--noise none`` there is one pass: no map waits for a bound, so each map task
also computes its frames' statistics (``StoreLayout.stats_by_chunk``). Tasks
receive a small description of the geometry (:class:`PlanSpec`) and build
the polar plan once per process; each task writes whole Zarr chunks of its
own, each in one atomic step (:mod:`ccfkit.store.chunks`), so no locks are
needed and a build resumes chunk by chunk. Locally the writes run behind the
computation (:mod:`ccfkit.store.write_behind`). ``docs/build.md`` says why each
step is done the way it is, with the measurements.

Parallelism has one level: one task per core (locally a pool of threads that
take the chunks in order; on a cluster Dask's workers), each task computing
on one thread (Numba kernels and BLAS held to one thread). Locally each
stage's CPU and wall seconds are logged (``-v``; :mod:`ccfkit.stage_clock`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import zarr
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .backends import get_backend
from .build_config import BuildConfig, BuildOptions, ring_rule
from .build_resources import BuildFootprint, check_resources
from .digest import frames_digest
from .frame_centers import check_centers, fixed_range, say_mean_center
from .frame_checks import frame_checks, report_frame_checks
from .frame_geometry import (
    GeometryGroups,
    QPlacement,
    maps_of_own_plans,
    place_rings,
    scattering_geometry,  # noqa: F401 (its old import path)
)
from .io.source import FrameReader, FrameSource, InputError
from .noise import (
    NoiseLevel,
    add_noise,
    bounds_of_statistics,
    frame_statistics,
    noise_statistics,
)
from .polar import PlanSpec, PolarPlan
from .provenance import environment, usable_cpus
from .resize import resize_images
from .resume import open_for_resume
from .stage_clock import StageClock
from .store import (
    ChunkWriters,
    OutputState,
    StoreError,
    StoreLayout,
    StoreRecipe,
    WriteBehind,
    WriteMethod,
    check_not_input,
    create_store,
    layout_of,
    locked_store,
    mark_complete,
    pending_chunks,
    write_recorded,
)

logger = logging.getLogger(__name__)

__all__ = ["MIN_VALID_FRACTION", "BuildConfig", "build", "check_geometry"]

#: Smallest fraction of good pixels a build accepts without ``force`` (docs/build.md).
MIN_VALID_FRACTION = 0.01

#: How long a build tries to reach a Dask scheduler before it refuses (nothing created yet).
SCHEDULER_TIMEOUT = "10s"


@functools.lru_cache(maxsize=4)
def task_backend(name: str):
    """The backend a task computes with: one thread for Numba (the tasks run in parallel)."""
    backend = get_backend(name)
    if backend.name == "numba":
        from .backends.numba import NumbaBackend

        return NumbaBackend(threads=1)
    return backend


@dataclass(frozen=True)
class ChunkJob:
    """What a map task needs besides its chunk number; small and picklable."""

    reader: FrameReader
    layout: StoreLayout
    writers: ChunkWriters
    plan: PlanSpec
    config: BuildConfig
    backend: str
    #: (N,) float32: each frame's noise bound, from the statistics pass (None: no noise).
    frame_bounds: np.ndarray | None = None
    centers: np.ndarray | None = None  # (N, 2): each frame at its own beam centre
    geometry: GeometryGroups | None = None  # rings in q at each frame's own geometry
    #: The recorded digest of each chunk's input frames (0: not read yet), :mod:`ccfkit.digest`.
    digests: tuple[int, ...] = ()
    #: Store a map with NaN/inf values as 0 and record it, instead of stopping the build.
    mask_bad_maps: bool = False


def process_chunk(
    chunk: int, job: ChunkJob, writes: WriteBehind | None = None, clock: StageClock | None = None
) -> int:
    """Read chunk ``chunk``'s frames, add noise, compute maps, write them, mark it done.

    With ``job.layout.stats_by_chunk`` (no noise: no statistics pass before),
    the frames' statistics are written too.

    Parameters
    ----------
    chunk : int
        Store chunk (frames ``job.layout.chunk_slice(chunk)``).
    job : ChunkJob
    writes : WriteBehind, optional
        Where to queue the chunk's writes (local builds); without it the task
        writes them itself before it returns.
    clock : StageClock, optional
        Where to add the task's time per stage (local builds).

    Returns
    -------
    int
        Frames computed.
    """
    config = job.config
    plan = job.plan.plan()
    engine = task_backend(job.backend)
    frames_slice = job.layout.chunk_slice(chunk)
    with _stage(clock, "reading"):  # and checking them against their digest
        pieces = job.reader.pieces(frames_slice.start, frames_slice.stop)  # mapped where possible
        digest = _checked_digest(chunk, pieces, job)
    if job.layout.stats_by_chunk:
        with _stage(clock, "statistics"):
            stats = _statistics(pieces, job.plan.mask)
        with _stage(clock, "writing"):
            job.writers.stats.write(chunk, stats)
    indices = np.arange(frames_slice.start, frames_slice.stop)
    with _stage(clock, "noise"):  # one pass from the pages
        bounds = (np.zeros(len(indices), dtype=np.float32) if job.frame_bounds is None
                  else job.frame_bounds[frames_slice])  # fmt: skip
        noisy = _noisy(pieces, indices, bounds, config.noise.seed)
        del pieces  # unmaps
    with _stage(clock, "maps"):
        if job.centers is None and job.geometry is None:
            maps = engine.merged_maps(engine.as_batch(noisy, plan.shape), plan, config.maps)
            maps = engine.to_numpy(maps)
        else:  # each frame its own plan (ccfkit.frame_centers, ccfkit.frame_geometry)
            own = _own(job, frames_slice)
            maps = maps_of_own_plans(engine, noisy, job.plan, config.maps, **own)
    with _stage(clock, "maps"):  # and what they and their frames say (ccfkit.frame_checks)
        checks = frame_checks(noisy, maps, indices, job.plan.mask,
                              mask_bad_maps=job.mask_bad_maps)  # fmt: skip
    images = None
    if job.writers.images is not None:
        images = resize_images(noisy, job.layout.image_size, job.plan.mask)
    writers = job.writers

    def write() -> None:  # the chunk's data, then its done mark
        with _stage(clock, "writing"):
            writers.ccf.write(chunk, maps)
            if images is not None:
                writers.images.write(chunk, images)
            if writers.frame_checks is not None:  # stores made before it have none
                writers.frame_checks.write(chunk, checks)
                writers.input_digest.write(chunk, np.array([digest], dtype=np.uint64))
            writers.mark_done(chunk)

    if writes is None:
        write()
    else:
        with _stage(clock, "waiting"):  # for a free slot of the background writer
            writes.submit(write)
    return len(indices)


def chunk_statistics(chunk: int, job: ChunkJob, clock: StageClock | None = None
                     ) -> tuple[np.ndarray, int]:  # fmt: skip
    """(n, 3) mean, std and max of the valid pixels of each frame of chunk ``chunk``; its digest."""
    frames = job.layout.chunk_slice(chunk)
    with _stage(clock, "reading"):
        pieces = job.reader.pieces(frames.start, frames.stop)
    with _stage(clock, "statistics"):  # and the frames' digest, one more pass over them
        return _statistics(pieces, job.plan.mask), frames_digest(pieces)


def _checked_digest(chunk: int, pieces: list[np.ndarray], job: ChunkJob) -> int:
    """The digest of chunk ``chunk``'s input frames; a change since it was recorded is an error."""
    digest = frames_digest(pieces)
    recorded = job.digests[chunk] if chunk < len(job.digests) else 0
    if recorded and recorded != digest:
        frames = job.layout.chunk_slice(chunk)
        raise InputError(
            f"frames {frames.start}..{frames.stop - 1} of the input changed since this build "
            "read them (their digest differs): the statistics and the maps would mix two "
            "inputs; rebuild with --overwrite"
        )
    return digest


def _stage(clock: StageClock | None, name: str):
    """``clock.stage(name)``, or nothing to time without a clock."""
    return contextlib.nullcontext() if clock is None else clock.stage(name)


def _statistics(pieces: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """(n, 3) statistics of consecutive ``(n_i, H, W)`` pieces of frames."""
    return np.concatenate([frame_statistics(piece, mask) for piece in pieces])


def _noisy(pieces: list[np.ndarray], indices: np.ndarray, bounds: np.ndarray, seed: int
           ) -> np.ndarray:  # fmt: skip
    """The ``(n, H, W)`` noisy frames of consecutive pieces, frame ``k`` drawn from ``indices[k]``.

    ``bounds`` (n,) is each frame's noise bound (:class:`ChunkJob`), ``seed`` the build's.
    """
    if len(pieces) == 1 and _owned_frames(pieces[0]):  # read into memory for this task:
        return add_noise(pieces[0], indices, bounds, seed, out=pieces[0])  # in place, no copy
    out = np.empty((len(indices), *pieces[0].shape[1:]), dtype=np.float32)
    start = 0
    for piece in pieces:
        stop = start + len(piece)
        add_noise(piece, indices[start:stop], bounds[start:stop], seed, out=out[start:stop])
        start = stop
    return out


def _owned_frames(piece: np.ndarray) -> bool:
    """Whether ``piece`` is a float32 array of its own (read into memory), not a view of a file."""
    return (piece.base is None and piece.flags.writeable and piece.flags.c_contiguous
            and piece.dtype == np.float32)  # fmt: skip


def build(
    source: FrameSource,
    out: str,
    config: BuildConfig,
    *,
    center: tuple[float, float] | None = None,
    center_origin: str = "given",
    backend: str = "auto",
    chunk_frames: int = BuildOptions.chunk_frames,
    compressor: str = "none",
    overwrite: bool = False,
    resume: bool = False,
    force: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    write_method: WriteMethod | str = WriteMethod.ZARR,
    mask_bad_maps: bool = False,
    q_placement: str = "per-frame",
) -> zarr.Group:
    """Build (or finish) the store of CCF maps of ``source`` at ``out``.

    Parameters
    ----------
    source : FrameSource
        The checked input.
    out : str
        The ``.zarr`` directory.
    config : BuildConfig
        What to compute (recorded in the store).
    center : (float, float), optional
        Beam centre ``(cx, cy)``; default the file's, else the detector middle.
    center_origin : str
        How the centre was obtained (recorded).
    backend : str
        Engine backend name.
    chunk_frames : int
        Frames per store chunk and task.
    compressor : str
        Map compressor (a key of :data:`ccfkit.store.COMPRESSORS`).
    overwrite, resume : bool
        Replace an existing ccfkit store (or an empty directory) / finish an
        incomplete one (:func:`ccfkit.store.locked_store`).
    force : bool
        Accept what is most likely a mistake: fewer than
        :data:`MIN_VALID_FRACTION` good pixels, ``r_max`` beyond the detector.
    scheduler : str, optional
        A Dask distributed scheduler address; default the local threads.
    workers : int, optional
        Local threads (default: the CPUs this process may use).
    progress : bool
        Show progress bars.
    write_method : WriteMethod or str
        How map chunks are written (:mod:`ccfkit.store.chunks`): through zarr
        (the default) or with O_DIRECT (docs/build.md says where that helps).
        The store is the same either way.
    mask_bad_maps : bool
        Store a map with NaN/inf values as 0 and record its frame
        (``frame_checks``) instead of stopping the build there.
    q_placement : {"per-frame", "mean"}
        Rings in q on an input whose wavelength or distance varies over its
        frames: each frame's at its own (:mod:`ccfkit.frame_geometry`), or
        all at their mean.

    Returns
    -------
    zarr.Group
        The complete store.
    """
    started, start_up_cpu = time.perf_counter(), time.process_time()
    check_not_input(out, source.reader.files)
    workers = workers or usable_cpus()
    chunk_frames = _check_resources(source, config, out, chunk_frames, compressor,
                                    1 if scheduler else workers)  # fmt: skip
    mean_of_centers = center is None and source.centers is not None
    centers = source.centers if mean_of_centers and source.center_per_frame else None
    if center is None:
        center, center_origin = source.center, source.center_origin
    if center is None:
        height, width = source.frame_shape
        center, center_origin = ((width - 1) / 2, (height - 1) / 2), "detector middle"
    if source.pixels is not None and config.output.image_size:
        raise InputError("--keep-images stores images on a pixel grid; a module stack has none")
    if not force:
        check_geometry(source.mask, center, config.grid.r_max, source.pixels)
    placed = place_rings(source, config.grid, q_placement)  # rings in q: per frame where varied
    spec = PlanSpec.describe(source.frame_shape, center=center, mask=source.mask, grid=config.grid,
                             pixels=source.pixels, scattering=placed.scattering)  # fmt: skip
    try:
        plan = spec.plan()
    except ValueError as error:
        raise InputError(str(error)) from error
    if centers is not None:  # the store's radii, each frame at its own centre
        spec, center_origin = fixed_range(spec, plan), "file, one per frame (their mean)"
        check_centers(spec, centers, source.n_frames)
    elif mean_of_centers:
        say_mean_center(source)
    if not plan.ring_used.any():
        raise InputError(
            f"no ring has {ring_rule(config.grid)} under this mask and "
            "geometry: every map would be 0 (check the mask, --center, --r-min/--r-max or "
            "--q-range, or lower --min-ring-fraction)"
        )
    engine = get_backend(backend)  # fails early for an unusable backend
    engine_name = engine.name
    # the store records the precision its maps are computed in: bf16 only on bf16 hardware
    precision = engine.product_precision(config.maps.precision)
    config = replace(config, maps=replace(config.maps, precision=precision))
    layout = StoreLayout(
        n_frames=source.n_frames,
        q_bins=config.grid.q_bins,
        channels=config.maps.channels,
        chunk_frames=chunk_frames,
        label_names=source.label_names if source.labels is not None else (),
        image_size=config.output.image_size,
        map_dtype=config.output.map_dtype,
        compressor=compressor,
        stats_by_chunk=NoiseLevel(config.noise.level) is NoiseLevel.NONE,
    )
    provenance = {  # compared on --resume
        "parameters": StoreRecipe.of_build(config).parameters(),
        "input": source.describe(),
        "center": list(center),
        "center_origin": center_origin,
        "r_min": plan.r_min,
        "r_max": plan.r_max,
        "rings_used": int(plan.ring_used.sum()),
        "q_placement": placed.describe(chunk_frames),
        "backend": engine_name,
        "seed": config.noise.seed,
        "command": " ".join(sys.argv),
        "environment": environment(("numpy", "numba", "dask", "zarr")),
    }
    with (
        _client(scheduler) as client,  # reached before anything is created
        locked_store(out, overwrite=overwrite, resume=resume) as state,
        _naming(out),
    ):
        if resume and state in (OutputState.INCOMPLETE, OutputState.COMPLETE):
            group = open_for_resume(out, config, provenance, source, layout)
            layout = layout_of(group)
        else:
            if resume:
                logger.warning("%s: its creation was interrupted; creating it again", out)
            group = create_store(out, layout, provenance,
                                 _per_store_arrays(source, plan, placed, centers))  # fmt: skip
        job = ChunkJob(
            reader=source.reader, layout=layout, writers=ChunkWriters.of(group, write_method),
            plan=spec, config=config, backend=engine_name, centers=centers,
            geometry=placed.groups, mask_bad_maps=mask_bad_maps,
        )  # fmt: skip
        logger.info("set-up: %.2f s wall, %.2f s CPU", time.perf_counter() - started,
                    time.process_time() - start_up_cpu)  # fmt: skip
        _fill(group, job, client, workers, progress)
    logger.info("store complete: %s", out)
    logger.info("build: %.2f s wall, %.2f s CPU, after a start-up of %.2f s CPU",
                time.perf_counter() - started, time.process_time() - start_up_cpu,
                start_up_cpu)  # fmt: skip
    return group


def _check_resources(source: FrameSource, config: BuildConfig, out: str, chunk_frames: int,
                     compressor: str, workers: int) -> int:  # fmt: skip
    """Refuse a build whose memory or store cannot fit (:mod:`ccfkit.build_resources`).

    Called first: before anything large is made (the polar plan) or created (the store).

    Returns the frames per chunk: ``chunk_frames``, at most the input's (zarr
    allocates a whole chunk to write a shorter one).
    """
    chunk_frames = min(chunk_frames, source.n_frames)
    footprint = BuildFootprint(
        n_frames=source.n_frames, frame_shape=source.frame_shape, q_bins=config.grid.q_bins,
        phi_bins=config.grid.phi_bins, channels=config.maps.channels, chunk_frames=chunk_frames,
        image_size=config.output.image_size,
        map_itemsize=np.dtype(config.output.map_dtype).itemsize, workers=workers,
    )  # fmt: skip
    check_resources(footprint, out, compressed=compressor != "none", fresh=not Path(out).exists())
    return chunk_frames


@contextlib.contextmanager
def _naming(out: str):
    """An OSError that names no file (a full disk: ENOSPC) becomes one naming the store."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise StoreError(
            f"{out}: {error.strerror or error} while building this store; it is left "
            "incomplete: make room (or fix the cause) and finish it with --resume"
        ) from error


def check_geometry(
    mask: np.ndarray, center: tuple[float, float], r_max: float | None, pixels=None
) -> None:
    """Refuse what is most likely a mistake (``--force`` accepts it).

    Parameters
    ----------
    mask : (H, W) bool ndarray
        True = good pixel.
    center : (float, float)
        ``(cx, cy)``, pixels.
    r_max : float or None
        The largest radius asked for, pixels.
    pixels : DetectorGeometry, optional
        Where the pixels of a module stack lie (default: a plain image).

    Raises
    ------
    InputError
        Fewer than :data:`MIN_VALID_FRACTION` good pixels, or ``r_max``
        beyond the detector pixel farthest from the centre.
    """
    valid = float(np.mean(mask))
    if valid < MIN_VALID_FRACTION:
        raise InputError(
            f"only {valid:.2%} of the pixels are good under the mask ({int(mask.sum())} of "
            f"{mask.size}); check the mask (a 0/1 mask read as a CXI bit mask is inverted: "
            "set its 'convention' attribute) or pass --force"
        )
    height, width = mask.shape
    cx, cy = center
    farthest = float(np.hypot(max(cx, width - 1 - cx), max(cy, height - 1 - cy)))
    if pixels is not None:
        farthest = pixels.farthest(center)
    if r_max is not None and r_max > farthest:
        raise InputError(
            f"--r-max {r_max:g} lies beyond the detector (its farthest pixel is {farthest:.1f} px "
            "from the centre): the outer rings would be empty; pass --force to accept"
        )


def _fill(group: zarr.Group, job: ChunkJob, client, workers: int, progress: bool) -> None:
    """Compute the statistics (when needed) and every pending chunk; mark the store complete.

    Locally (no ``client``) the tasks run on a pool of ``workers`` threads
    and their time per stage is logged (``-v``; :mod:`ccfkit.stage_clock`).
    """
    layout, config = job.layout, job.config
    # Without noise the maps do not wait for the statistics: each map task
    # computes its frames' statistics on the way (one pass over the input).
    statistics_first = not layout.stats_by_chunk
    clock = None if client is not None else StageClock()
    cpu = time.process_time()
    with threadpool_limits(limits=1, user_api="blas"):
        run = functools.partial(_run, client=client, workers=workers, progress=progress)
        if statistics_first and "noise" not in group.attrs:
            with _timed("statistics pass", layout.n_frames):
                results = run(chunk_statistics, range(layout.n_chunks), (job, clock),
                              layout.n_frames, "statistics", count=lambda r: len(r[0]))  # fmt: skip
            stats = np.concatenate([result[0] for result in results])
            if "input_digest" in group:  # checked as the map tasks read the frames again
                group["input_digest"][:] = np.array([r[1] for r in results], dtype=np.uint64)
            # every chunk a file, its digests recorded, with the noise that says the pass is done
            write_recorded(group, "stats", stats,
                           noise=_noise_attributes(stats, config.noise.level))  # fmt: skip
        if statistics_first:  # each frame's bound: the set's, or (max-frame) its own maximum
            bounds = bounds_of_statistics(group["stats"][:], config.noise.level,
                                          group.attrs["noise"]["bound"])  # fmt: skip
            job = replace(job, frame_bounds=bounds)
        if "input_digest" in group:
            job = replace(job, digests=tuple(int(d) for d in group["input_digest"][:]))
        todo = pending_chunks(group)
        total = sum(_chunk_length(layout, k) for k in todo)
        # locally the writes run behind the computation (a cluster's tasks write their own)
        behind = WriteBehind(depth=workers) if client is None else contextlib.nullcontext()
        with _timed("map pass", total), behind as writes:
            run(process_chunk, todo, (job, writes, clock), total, "maps")
            if writes is not None:
                with _stage(clock, "waiting"):  # for the last chunks' writes
                    writes.flush()
    if clock is not None:
        logger.info("stages: %s", clock.summary(time.process_time() - cpu))
    if layout.stats_by_chunk:
        group.attrs["noise"] = _noise_attributes(group["stats"][:], config.noise.level)
    if "frame_checks" in group:
        group.attrs["frame_checks"] = report_frame_checks(group["frame_checks"][:])
    mark_complete(group)


def _noise_attributes(stats: np.ndarray, level: str) -> dict:
    """The store's ``noise`` attribute: the level, the medians and the bound."""
    medians = noise_statistics(stats)
    return {
        "level": level,
        "median_mean": medians.median_mean,
        "median_std": medians.median_std,
        "median_max": medians.median_max,
        "bound": medians.bound(level),
    }


def _per_store_arrays(source: FrameSource, plan: PolarPlan, placed: QPlacement, centers=None
                      ) -> dict:  # fmt: skip
    """The arrays written whole when the store is created, with their attributes.

    See :func:`ccfkit.store.create_store`: ``radius``, ``ring_used``, ``mask``, ``q`` when
    the input gives the geometry, ``labels`` when it has labels.
    """
    contents = {
        "radius": (plan.radius, {"units": "pixel"}),
        "ring_used": (plan.ring_used, {"min_ring_fraction": plan.min_ring_fraction}),
        "mask": (source.mask, {"origin": source.mask_origin}),
    }
    if source.labels is not None:
        groups = [list(g) for g in source.exclusive_groups]
        attrs = {"exclusive_groups": groups}
        if source.label_display_names:
            attrs["display_names"] = list(source.label_display_names)
        contents["labels"] = (source.labels, attrs)
    contents.update(source.frame_ids)  # train_id, pulse_id of a European XFEL run
    if centers is not None:
        contents["frame_center"] = (centers, {"units": "pixel", "axes": ["cx", "cy"]})
    geometry = placed.groups
    if geometry is not None:  # rings in q at each frame's own wavelength and distance
        contents["frame_geometry"] = (
            np.stack([geometry.wavelength_nm, geometry.distance, geometry.group], axis=1),
            {"units": ["nm", "m", ""], "axes": ["wavelength", "distance", "group"]},
        )
    scattering = placed.scattering  # the input's mean geometry (ccfkit.frame_geometry)
    if scattering is not None:  # ring_axis: what the rings were placed on (docs/store-layout.md)
        q = scattering.momentum_transfer(plan.radius)
        contents["q"] = (q, {"units": "1/nm", "ring_axis": plan.ring_axis})
    return contents


def _own(job: ChunkJob, frames: slice) -> dict:
    """The centres and geometry groups of ``frames`` (:func:`maps_of_own_plans`' keywords)."""
    own = {}
    if job.centers is not None:
        own["centers"] = job.centers[frames]
    if job.geometry is not None:
        own["groups"] = (job.geometry.geometries, job.geometry.group[frames])
    return own


def _chunk_length(layout: StoreLayout, chunk) -> int:
    frames = layout.chunk_slice(int(chunk))
    return frames.stop - frames.start


def _run(function: Callable, chunks, args: tuple, total: int, what: str, *, client, workers: int,
         progress: bool, count: Callable = int) -> list:  # fmt: skip
    """``function(chunk, *args)`` for every chunk, locally or on a cluster; results in order.

    Locally: a pool of ``workers`` threads takes the chunks in order (the
    kernels release the GIL); no task graph. On a cluster: one Dask task per
    chunk, ``args`` one node of the graph (sent once). The progress bar
    counts ``count(result)`` frames of ``total``.
    """
    bar = tqdm(total=total, desc=what, unit="frame", disable=not progress, smoothing=0.1)
    try:
        if client is None:
            return _run_on_threads(function, chunks, args, workers, lambda r: bar.update(count(r)))
        import dask
        import distributed

        shared = [dask.delayed(arg, pure=True) for arg in args]  # not a copy per task
        tasks = [dask.delayed(function)(int(chunk), *shared) for chunk in chunks]
        futures = client.compute(tasks)
        order = {future.key: i for i, future in enumerate(futures)}
        results = [None] * len(futures)
        for future in distributed.as_completed(futures):
            results[order[future.key]] = future.result()
            bar.update(count(results[order[future.key]]))
        return results
    finally:
        bar.close()


def _run_on_threads(function: Callable, chunks, args: tuple, workers: int, done: Callable) -> list:
    """``function(chunk, *args)`` per chunk on ``workers`` threads; ``done(result)`` as each ends.

    The first error is raised once the tasks already running have ended;
    the chunks not yet started are dropped (an interrupted build resumes).
    """
    chunks = [int(chunk) for chunk in chunks]
    results = [None] * len(chunks)
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="ccfkit-build") as pool:
        futures = {pool.submit(function, chunk, *args): i for i, chunk in enumerate(chunks)}
        try:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                done(results[futures[future]])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


@contextlib.contextmanager
def _timed(what: str, frames: int):
    """Log how long the block took (``-v`` shows it; the build benchmark reads it)."""
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    logger.info("%s: %d frames in %.2f s (%.0f frames/s)", what, frames, seconds,
                frames / max(seconds, 1e-9))  # fmt: skip


def _client(scheduler: str | None):
    """A connected distributed Client (a context manager), or a null context."""
    if not scheduler:
        return contextlib.nullcontext()
    from distributed import Client

    try:
        return Client(scheduler, timeout=SCHEDULER_TIMEOUT)
    except OSError as error:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from error
