"""Speed of the build on facility inputs: module stacks with a geometry, compressed frames.

Usage (from the repository root)::

    .venv/bin/python benchmarks/facility_inputs.py --frames 64 --rounds 3

1. Writes ``--frames`` AGIPD 1M module stacks ``(frames, 16, 512, 128)`` of
   simulated speckle (1 Mpx frames) with extra-geom's AGIPD 1M geometry
   (quadrant positions of its documentation) as a CrystFEL file, the same
   frames assembled by extra-geom (``position_modules``: 1.37 Mpx frames with
   the gaps masked) uncompressed, and the assembled frames again with
   bitshuffle-LZ4 (hdf5plugin, one frame per chunk). The frames are photon
   counts (Poisson, 0.5 photons per pixel on average), as single-shot
   frames are.
2. Builds each once (kernels compiled, plans built, files in the page
   cache), then times ``--rounds`` interleaved rounds of the build of each
   (``ccfkit.pipeline.build``, default Q 224 and P 512, the same radial
   range, ``--workers``, chunks of 16 frames, the whole build: statistics,
   maps, store).
3. Times the two ways of sampling the true pixel positions on one frame:
   the plan of the geometry applied to the stacked frame (what the build
   does) against extra-geom's ``position_modules`` followed by the plan of
   the assembled image.
4. Prints a Markdown table (for docs/performance.md).

With ``--run``, instead: the same module stacks written as a European XFEL
run (extra-data's mock writers: 16 module files, ``--frames / 16`` trains
of 16 pulses), built with ``--detector`` against the stack file.

With ``--sequences``, instead: the same frames written as runs whose module
files are split into sequence files of several sizes, built with store
chunks that lie inside one sequence file or span two, and each chunk's read
timed alone (``--frames 192`` gives 12 trains).

With ``--partial-trains``, instead: store chunks of 16 frames of a run of
64 pulses per train, each read alone (only its pulses) against reading the
whole train that holds it.

With ``--decode``, instead: decoding the bitshuffle-LZ4 file alone, raw
chunks decoded outside HDF5 against h5py, one and two threads (ms per frame,
wall and CPU).

With ``--centres``, instead: the cost of one beam centre per frame. 256
frames of 259 x 259 px, centres drawn around the middle (1.8 px standard
deviation), built each at its own centre, then all at their mean
(``--center``), in interleaved rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
from harness import MEASURED_MAP, load_average

QUAD_POS = [(-525, 625), (-550, -10), (520, -160), (542.5, 475)]


def speckle(positions: np.ndarray, n_frames: int, seed: int) -> np.ndarray:
    """(n, modules, ss, fs) float32 speckle of random real objects sampled at ``positions``."""
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(seed)
    side = 1536
    yy, xx = np.mgrid[:side, :side] - side // 2
    support = np.hypot(xx, yy) < 24
    coords = [positions[..., 1].ravel() + side // 2, positions[..., 0].ravel() + side // 2]
    frames = np.empty((n_frames, *positions.shape[:-1]), np.float32)
    for k in range(n_frames):
        obj = np.where(support, rng.random((side, side)), 0.0)
        far = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(obj)))) ** 2
        far *= np.exp(-np.hypot(xx, yy) / 250.0)
        frames[k] = map_coordinates(far, coords, order=1).reshape(positions.shape[:-1])
    # photon counts, as single-shot frames are: 0.5 photons per pixel on average
    return rng.poisson(frames / frames.mean() * 0.5).astype(np.float32)


def write_inputs(workdir: Path, n_frames: int) -> dict:
    """The geometry file, the stack, the assembled frames plain and bitshuffle-LZ4, the mask."""
    import extra_geom
    import h5py
    import hdf5plugin

    workdir.mkdir(parents=True, exist_ok=True)
    geometry = extra_geom.AGIPD_1MGeometry.from_quad_positions(quad_pos=QUAD_POS)
    geom_file = workdir / "agipd.geom"
    geometry.write_crystfel_geom(str(geom_file))
    positions = geometry.get_pixel_positions()[..., :2] / geometry.pixel_size
    stack = speckle(positions, n_frames, seed=0)
    images, centre = geometry.position_modules(stack)
    good = ~np.isnan(images[0])
    images = np.nan_to_num(images).astype(np.float32)
    np.save(workdir / "gaps.npy", good)
    files = {"stack": workdir / "stack.h5", "plain": workdir / "plain.h5"}
    files["lz4"] = workdir / "lz4.h5"
    for name, data, options in (
        ("stack", stack, {}),
        ("plain", images, {}),
        ("lz4", images, {"chunks": (1, *images.shape[1:]), **hdf5plugin.Bitshuffle(cname="lz4")}),
    ):
        with h5py.File(files[name], "w") as handle:
            handle.create_dataset("entry_1/data_1/data", data=data, **options)
    center = f"{centre[1]},{centre[0]}"
    return {"geometry": geometry, "geom_file": geom_file, "files": files, "center": center,
            "stack": stack, "good": good}  # fmt: skip


def run_build(case: dict, workdir: Path, workers: int) -> tuple[float, float]:
    """Wall and CPU seconds (this process) of one build, after a first build of the same input.

    ``case["h5py"]``: bitshuffle-LZ4 chunks are decompressed by HDF5 through
    h5py (under its lock), not read raw and decoded outside it.
    """
    from unittest import mock

    from ccfkit.build_config import BuildConfig
    from ccfkit.io import source
    from ccfkit.pipeline import build

    config = BuildConfig.from_parameters({**MEASURED_MAP, "r_min": 60.0, "r_max": 500.0,
                                          "min_ring_fraction": 0.3})  # fmt: skip
    direct = (lambda *args: None) if case.get("h5py") else source.bitshuffle_layout
    with mock.patch.object(source, "bitshuffle_layout", direct):
        start, cpu = time.perf_counter(), time.process_time()
        build(case["source"], str(workdir / "out.zarr"), config, center=case.get("center"),
              overwrite=True, progress=False, workers=workers, chunk_frames=16)  # fmt: skip
        return time.perf_counter() - start, time.process_time() - cpu


def sampling_costs(inputs: dict, repeats: int = 5) -> dict:
    """Seconds per frame: the geometry's plan on the stack, or assemble then the image's plan."""
    from ccfkit.backends.numba import NumbaBackend
    from ccfkit.io.source import open_source
    from ccfkit.polar import make_polar_plan

    engine = NumbaBackend(threads=1)
    source = open_source([str(inputs["files"]["stack"])], geometry=inputs["geom_file"])
    grid = {
        "q_bins": 224,
        "phi_bins": 512,
        "r_min": 60.0,
        "r_max": 500.0,
        "min_ring_fraction": 0.3,
    }
    stack_plan = make_polar_plan(source.frame_shape, pixels=source.pixels, **grid)
    cy, cx = inputs["geometry"].position_modules(inputs["stack"][:1])[1]
    image_plan = make_polar_plan(
        inputs["good"].shape, center=(cx, cy), mask=inputs["good"], **grid
    )
    frame = inputs["stack"][:1]
    flat = frame.reshape(1, *source.frame_shape)
    engine.resample(engine.as_batch(flat, stack_plan.shape), stack_plan)  # compile
    costs = {}
    start = time.perf_counter()
    for _ in range(repeats):
        engine.resample(engine.as_batch(flat, stack_plan.shape), stack_plan)
    costs["geometry plan on the stack"] = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for _ in range(repeats):
        image = np.nan_to_num(inputs["geometry"].position_modules(frame)[0]).astype(np.float32)
        engine.resample(engine.as_batch(image, image_plan.shape), image_plan)
    costs["position_modules, then the image's plan"] = (time.perf_counter() - start) / repeats
    return costs


def interleaved_builds(cases: dict, out: Path, config, rounds: int, **options) -> dict:
    """Build seconds of each case, ``rounds`` interleaved rounds after one that warms up.

    ``cases`` maps a name to the keywords of :func:`ccfkit.pipeline.build`
    that differ (``source``, ``center``); ``options`` are those they share.
    """
    from ccfkit.pipeline import build

    times = {name: [] for name in cases}
    for round_ in range(rounds + 1):  # the first round warms up
        for name, case in cases.items():
            start = time.perf_counter()
            build(config=config, out=str(out), overwrite=True, progress=False, **case, **options)
            if round_:
                times[name].append(time.perf_counter() - start)
    return times


def centre_costs(workdir: Path, rounds: int, workers: int) -> None:
    """Build time with one centre per frame against one centre for all (printed)."""
    import h5py

    from ccfkit.build_config import BuildConfig
    from ccfkit.io.source import open_source

    rng = np.random.default_rng(0)
    workdir.mkdir(parents=True, exist_ok=True)
    name = workdir / "centres.h5"
    centres = 129.0 + rng.normal(0, 1.8, size=(256, 2))
    with h5py.File(name, "w") as handle:
        handle["entry_1/data_1/data"] = rng.poisson(2.0, (256, 259, 259)).astype(np.float32)
        handle["entry_1/instrument_1/detector_1/beam_center"] = centres
    source = dataclasses.replace(open_source([str(name)]), center_per_frame=True)
    config = BuildConfig.from_parameters({**MEASURED_MAP, "r_min": 4.0, "r_max": 120.0})
    cases = {
        "each frame at its own centre": {"source": source, "center": None},
        "one centre (--center, their mean)": {"source": source, "center": source.center},
    }
    times = interleaved_builds(cases, workdir / "c.zarr", config, rounds, workers=workers)
    print(f"256 frames of 259 x 259, {rounds} rounds, --workers {workers}\n")
    print("| centres | build s (median) | frames/s |\n|---|---:|---:|")
    for case, values in times.items():
        print(
            f"| {case} | {statistics.median(values):.2f} | {256 / statistics.median(values):.0f} |"
        )
    own, one = times.values()
    print(f"\nratio per round: {', '.join(f'{a / b:.1f}' for a, b in zip(own, one))}")


def write_run(run: Path, stack: np.ndarray, trains_per_sequence: int, pulses: int = 16) -> Path:
    """``stack`` written as a corrected AGIPD 1M run: one file per module and sequence.

    Frame ``k`` is pulse ``k % pulses`` of train ``10000 + k // pulses``;
    sequence file ``S0000s`` of each module holds ``trains_per_sequence``
    trains (extra-data's mock writers, the data replaced by ``stack``).
    """
    import h5py
    from extra_data.tests.mockdata import write_file
    from extra_data.tests.mockdata.detectors import AGIPDModule

    run.mkdir(parents=True, exist_ok=True)
    n_trains = len(stack) // pulses
    for module in range(16):
        source = f"SPB_DET_AGIPD1M-1/CORR/{module}CH0"
        for sequence, first in enumerate(range(0, n_trains, trains_per_sequence)):
            trains = min(trains_per_sequence, n_trains - first)
            path = run / f"CORR-R0001-AGIPD{module:02}-S{sequence:05}.h5"
            device = AGIPDModule(source, raw=False, frames_per_train=pulses, channel_name="output")
            write_file(str(path), [device], ntrains=trains, firsttrain=10000 + first)
            with h5py.File(path, "r+") as handle:
                frames = stack[first * pulses : (first + trains) * pulses, module]
                handle[f"INSTRUMENT/{source}:output/image/data"][:] = frames
    return run


def run_costs(workdir: Path, n_frames: int, rounds: int, workers: int) -> None:
    """Build time of a European XFEL run against the same frames in one stack file (printed)."""
    from ccfkit.build_config import BuildConfig
    from ccfkit.io.euxfel import open_run
    from ccfkit.io.source import open_source

    inputs = write_inputs(workdir, n_frames)
    run = write_run(workdir / "r0001", inputs["stack"], trains_per_sequence=n_frames // 16)
    cases = {
        "stack file + geometry": {"source": open_source([str(inputs["files"]["stack"])],
                                                        geometry=inputs["geom_file"])},
        "run + --detector + geometry": {"source": open_run(run, "SPB_DET_AGIPD1M-1",
                                                           geometry=inputs["geom_file"])},
    }  # fmt: skip
    config = BuildConfig.from_parameters({**MEASURED_MAP, "r_min": 60.0, "r_max": 500.0,
                                          "min_ring_fraction": 0.3})  # fmt: skip
    times = interleaved_builds(cases, workdir / "r.zarr", config, rounds, workers=workers,
                               chunk_frames=16)  # fmt: skip
    print(f"{n_frames} frames, {rounds} rounds, --workers {workers}\n")
    print("| input | build s (median) | frames/s |\n|---|---:|---:|")
    for case, values in times.items():
        seconds = statistics.median(values)
        print(f"| {case} | {seconds:.2f} | {n_frames / seconds:.0f} |")
    stack_times, run_times = times.values()
    ratios = ", ".join(f"{r / s:.2f}" for s, r in zip(stack_times, run_times))
    print(f"\nrun / stack file build time, per round: {ratios}")


def sequence_costs(workdir: Path, n_frames: int, rounds: int, workers: int, chunk: int = 32):
    """Store chunks against sequence files: builds, and each chunk's read, inside one file or not.

    The same frames as three runs (16 pulses per train): one sequence file
    per module; sequences of ``2 * chunk`` frames (every store chunk inside
    one file); sequences of ``1.5 * chunk`` frames (every third chunk spans
    two files). Each is built with chunks of ``chunk`` frames, interleaved
    (a first round warms up); then every chunk of the last run is read
    alone (``RunReader.read``, one thread), ``rounds`` times.
    """
    import extra_geom

    from ccfkit.build_config import BuildConfig
    from ccfkit.io.euxfel import open_run

    workdir.mkdir(parents=True, exist_ok=True)
    geometry = extra_geom.AGIPD_1MGeometry.from_quad_positions(quad_pos=QUAD_POS)
    geom_file = workdir / "agipd.geom"
    geometry.write_crystfel_geom(str(geom_file))
    stack = speckle(geometry.get_pixel_positions()[..., :2] / geometry.pixel_size, n_frames, 0)
    layouts = {"one sequence file": n_frames // 16, f"sequences of {2 * chunk} frames": 2 * chunk // 16,
               f"sequences of {3 * chunk // 2} frames": 3 * chunk // 32}  # fmt: skip
    sources = {
        name: open_run(write_run(workdir / f"seq{trains}", stack, trains), "SPB_DET_AGIPD1M-1",
                       geometry=geom_file)
        for name, trains in layouts.items()
    }  # fmt: skip
    config = BuildConfig.from_parameters({**MEASURED_MAP, "r_min": 60.0, "r_max": 500.0,
                                          "min_ring_fraction": 0.3})  # fmt: skip
    cases = {name: {"source": source} for name, source in sources.items()}
    times = interleaved_builds(cases, workdir / "seq.zarr", config, rounds, workers=workers,
                               chunk_frames=chunk)  # fmt: skip
    print(f"{n_frames} frames, chunks of {chunk}, {rounds} rounds, --workers {workers}, "
          f"load average {load_average()}\n")  # fmt: skip
    print(
        "| run written as | files per module | build s (median) | frames/s |\n|---|---:|---:|---:|"
    )
    for name, values in times.items():
        files = -(-n_frames // (16 * layouts[name]))
        seconds = statistics.median(values)
        print(f"| {name} | {files} | {seconds:.2f} | {n_frames / seconds:.0f} |")
    first = times["one sequence file"]
    for name, values in list(times.items())[1:]:
        ratios = ", ".join(f"{t / f:.2f}" for f, t in zip(first, values))
        print(f"{name} / one sequence file, build time per round: {ratios}")
    reader, per_file = sources[name].reader, 16 * layouts[name]
    spent = {"inside one file": [], "across two files": []}
    for _ in range(rounds):
        for start in range(0, n_frames, chunk):
            began = time.perf_counter()
            reader.read(start, start + chunk)
            key = "across two files" if start // per_file != (start + chunk - 1) // per_file else (
                "inside one file")  # fmt: skip
            spent[key].append((time.perf_counter() - began) / chunk)
    print(
        f"\n| {name}: a chunk's read | chunks x rounds | ms per frame (median) |\n|---|---:|---:|"
    )
    for key, values in spent.items():
        print(f"| {key} | {len(values)} | {statistics.median(values) * 1e3:.1f} |")


def partial_train_costs(workdir: Path, rounds: int, pulses: int = 64, chunk: int = 16) -> None:
    """A chunk of fewer frames than a train: its read, against reading its whole trains (printed).

    Two trains of ``pulses`` AGIPD 1M frames (photon counts, one sequence
    file per module); each store chunk of ``chunk`` frames read alone
    (``RunReader.read``: only its pulses), and the whole trains that hold it
    (what a reader of whole trains reads for it), interleaved, one thread.
    """
    import extra_geom

    from ccfkit.io.euxfel import open_run

    workdir.mkdir(parents=True, exist_ok=True)
    geometry = extra_geom.AGIPD_1MGeometry.from_quad_positions(quad_pos=QUAD_POS)
    geom_file = workdir / "agipd.geom"
    geometry.write_crystfel_geom(str(geom_file))
    rng = np.random.default_rng(0)
    stack = rng.poisson(0.5, (2 * pulses, 16, 512, 128)).astype(np.float32)
    run = write_run(workdir / f"pulses{pulses}", stack, trains_per_sequence=2, pulses=pulses)
    reader = open_run(run, "SPB_DET_AGIPD1M-1", geometry=geom_file).reader
    spent = {"the chunk's pulses (RunReader.read)": [], "its whole trains": []}
    reader.read(0, chunk)  # the run opened, the files in the page cache
    for _ in range(rounds):
        for start in range(0, len(stack), chunk):
            began = time.perf_counter()
            part = reader.read(start, start + chunk)
            spent["the chunk's pulses (RunReader.read)"].append(time.perf_counter() - began)
            low = start // pulses * pulses
            began = time.perf_counter()
            whole = reader.read(low, low + pulses)
            spent["its whole trains"].append(time.perf_counter() - began)
            assert np.array_equal(part, whole[start - low : start - low + chunk])
    print(f"2 trains of {pulses} pulses, chunks of {chunk} frames, {rounds} rounds, "
          f"load average {load_average()}\n")  # fmt: skip
    print("| a chunk's read | ms (median) | per chunk frame, ms |\n|---|---:|---:|")
    for name, values in spent.items():
        seconds = statistics.median(values)
        print(f"| {name} | {seconds * 1e3:.0f} | {seconds / chunk * 1e3:.1f} |")


def decode_costs(workdir: Path, n_frames: int, rounds: int) -> None:
    """Decoding the bitshuffle-LZ4 file alone: ms per frame, wall and CPU, 1 and 2 threads.

    Raw chunks decoded outside HDF5 (:mod:`ccfkit.io.bitshuffle_chunks`)
    against h5py's ``read_direct`` (HDF5 decompresses, under h5py's lock);
    the best of ``rounds``.
    """
    from concurrent.futures import ThreadPoolExecutor

    import h5py

    from ccfkit.io.bitshuffle_chunks import bitshuffle_layout, read_bitshuffle_frames

    name, path = str(write_inputs(workdir, n_frames)["files"]["lz4"]), "entry_1/data_1/data"
    layout = bitshuffle_layout(name, path)
    out = np.empty((layout.frames, *layout.frame_shape), np.float32)

    def direct(k):
        read_bitshuffle_frames(name, path, layout, k, k + 1, out[k : k + 1])

    def through_h5py(k):
        with h5py.File(name, "r") as handle:
            handle[path].read_direct(out[k : k + 1], np.s_[k : k + 1])

    print(f"load average {load_average()}\n")
    print("| decoder | threads | wall ms per frame | CPU ms per frame |\n|---|---|---|---|")
    for label, read in (("raw chunks, bshuf_decompress_lz4", direct), ("h5py", through_h5py)):
        for threads in (1, 2):
            best = (np.inf, np.inf)
            for _ in range(rounds):
                start, cpu = time.perf_counter(), time.process_time()
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(read, range(layout.frames)))
                spent = (time.perf_counter() - start, time.process_time() - cpu)
                best = min(best, spent)
            wall, used = (1e3 * v / layout.frames for v in best)
            print(f"| {label} | {threads} | {wall:.1f} | {used:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ccfkit-facility-bench"))
    parser.add_argument("--centres", action="store_true", help="the cost of per-frame centres")
    parser.add_argument("--run", action="store_true", help="a European XFEL run's build")
    parser.add_argument("--decode", action="store_true", help="bitshuffle-LZ4 decoding alone")
    parser.add_argument("--sequences", action="store_true",
                        help="a run's store chunks against its sequence files")  # fmt: skip
    parser.add_argument("--partial-trains", action="store_true",
                        help="a run's chunk of part of a train against whole trains")  # fmt: skip
    args = parser.parse_args()
    if args.partial_trains:
        partial_train_costs(args.workdir, args.rounds)
        return
    if args.sequences:
        sequence_costs(args.workdir, args.frames, args.rounds, args.workers)
        return
    if args.decode:
        decode_costs(args.workdir, args.frames, args.rounds)
        return
    if args.run:
        run_costs(args.workdir, args.frames, args.rounds, args.workers)
        return
    if args.centres:
        centre_costs(args.workdir, args.rounds, args.workers)
        return
    from ccfkit.io.source import open_source

    inputs = write_inputs(args.workdir, args.frames)
    files, good = inputs["files"], inputs["good"]
    cy, cx = (float(c) for c in inputs["center"].split(",")[::-1])
    cases = {
        "stack + geometry": {"source": open_source([str(files["stack"])],
                                                   geometry=inputs["geom_file"])},
        "pre-assembled, plain": {"source": open_source([str(files["plain"])], mask=good),
                                 "center": (cx, cy)},
        "pre-assembled, bitshuffle-LZ4": {"source": open_source([str(files["lz4"])], mask=good),
                                          "center": (cx, cy)},
        "pre-assembled, bitshuffle-LZ4, decompressed by HDF5 (h5py)": {
            "source": open_source([str(files["lz4"])], mask=good), "center": (cx, cy),
            "h5py": True},
    }  # fmt: skip
    for case in cases.values():  # kernels compiled, plans built, files in the page cache
        run_build(case, args.workdir, args.workers)
    results = {name: [] for name in cases}
    cpu = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, case in cases.items():
            wall, used = run_build(case, args.workdir, args.workers)
            results[name].append(wall)
            cpu[name].append(used)
    print(f"{args.frames} frames, {args.rounds} rounds, --workers {args.workers}, "
          f"load average {load_average()}\n")  # fmt: skip
    print("| input | build s (median) | CPU s (median) | frames/s |")
    print("|---|---|---|---|")
    for name, values in results.items():
        seconds = statistics.median(values)
        print(f"| {name} | {seconds:.2f} | {statistics.median(cpu[name]):.2f} | "
              f"{args.frames / seconds:.0f} |")  # fmt: skip
    plain, lz4 = results["pre-assembled, plain"], results["pre-assembled, bitshuffle-LZ4"]
    old = results["pre-assembled, bitshuffle-LZ4, decompressed by HDF5 (h5py)"]
    stack = results["stack + geometry"]
    ratios = [p / s for s, p in zip(stack, plain)]
    print(f"\nstack / pre-assembled frames/s, per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    for label, times in (("bitshuffle-LZ4", lz4), ("bitshuffle-LZ4 through h5py", old)):
        ratios = [z / p for z, p in zip(times, plain)]
        print(f"{label} / plain build time, per round: {', '.join(f'{r:.2f}' for r in ratios)}"
              f" (median {statistics.median(ratios):.2f})")  # fmt: skip
    print("\n| one frame resampled (Q 224, P 512, one thread) | ms |\n|---|---|")
    for name, seconds in sampling_costs(inputs).items():
        print(f"| {name} | {seconds * 1e3:.1f} |")


if __name__ == "__main__":
    main()
