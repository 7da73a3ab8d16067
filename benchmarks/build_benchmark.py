"""End-to-end speed and memory of ``ccfkit build`` against the engine alone, stage by stage.

Usage (from the repository root)::

    .venv/bin/python benchmarks/build_benchmark.py --frames 20000 --write docs/performance.md

The build / engine check of docs/performance.md (6,000 frames, two cores, the
whole command against ``compute_maps`` of the same frames in memory)::

    .venv/bin/python benchmarks/build_benchmark.py --frames 6000 --workers 2 --writers zarr \\
        --noise max,none --rounds 3 --no-steps

1. Simulates ``--frames`` 259 x 259 frames with ``ccfkit simulate`` into an
   uncompressed CXI file (kept in ``--workdir`` and reused when present).
2. Runs ``--rounds`` interleaved rounds, each in fresh processes:
   ``ccfkit -v build --noise NOISE --orders 8 --r-min auto --min-ring-fraction 0.5
   --workers W`` (``harness.MEASURED_MAP_OPTIONS``) once per
   ``--writers`` method and ``--noise`` level (in an order that alternates;
   writing the store; wall time, CPU time and peak resident memory from
   ``wait4``; from its log the two passes' durations and each stage's CPU
   seconds summed over its threads, ``ccfkit.stage_clock``), then the engine
   alone: ``compute_maps`` with the build's recipe on ``W`` threads on the
   same frames already in memory, in batches of 256 (kernels loaded before
   the timing). With ``--backed-gib G`` each build and engine run comes right
   after a child process that wrote G GiB of memory (:func:`back_memory`).
3. Prints medians, the per-round ratios and the CPU seconds per stage (start-up,
   reading, statistics, noise, maps, writing, waiting, other threads) and,
   with ``--write``, puts them into the build section of the performance page
   (between ``<!-- build:begin -->`` and ``<!-- build:end -->``); without
   ``--no-steps`` also the one-thread step table and the codec table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (
    MEASURED_MAP,
    MEASURED_MAP_OPTIONS,
    Round,
    cpu_seconds,
    first_touch_seconds_per_gib,
    load_average,
    machine,
    replace_section,
)

PAPER_IMAGES = 39_879
PAPER_SECONDS = 3 * 24 * 3600
#: MB a kept round's build may read from disk (this VM evicts idle page-cache pages).
MAX_DISK_MB = 16
#: The repository's root (this file's checkout).
ROOT = Path(__file__).resolve().parent.parent


def simulate(path: Path, frames: int) -> None:
    """Write ``frames`` simulated frames to ``path`` unless a file with that many is there."""
    import h5py

    if path.exists():
        with h5py.File(path, "r") as handle:
            if handle["entry_1/data_1/data"].shape[0] == frames:
                return
    command = [
        sys.executable,
        "-m",
        "ccfkit.cli",
        "simulate",
        str(path),
        "--n",
        str(frames),
        "--seed",
        "0",
        "--overwrite",
    ]
    subprocess.run(command, check=True)


def engine_alone(path: Path, threads: int, batch: int = 256) -> tuple[float, Round, float]:
    """Seconds ``compute_maps`` needs for every frame of ``path``, frames in memory.

    The build's recipe (its default grid and map settings, the input's centre
    and mask) on ``threads`` threads (``NumbaBackend(threads)``), in batches of
    ``batch``; the kernels are loaded before the timing. Also what else ran
    on the machine meanwhile (other processes, steal), and the CPU seconds
    the engine used.
    """
    from ccfkit import compute_maps
    from ccfkit.backends.numba import NumbaBackend
    from ccfkit.build_config import BuildConfig
    from ccfkit.io.source import open_source

    source = open_source([path])
    frames = source.reader[:]
    recipe = BuildConfig.from_parameters(MEASURED_MAP)
    backend = NumbaBackend(threads=threads)

    def maps(images):
        return compute_maps(images, center=source.center, mask=source.mask, grid=recipe.grid,
                            settings=recipe.maps, backend=backend)  # fmt: skip

    maps(frames[:8])  # compile/load the kernels and build the plan outside the timing
    before = cpu_seconds()
    own = time.process_time()
    start = time.perf_counter()
    for lo in range(0, len(frames), batch):
        maps(frames[lo : lo + batch])
    seconds, cpu = time.perf_counter() - start, time.process_time() - own
    return seconds, Round.between(before, cpu_seconds(), cpu, seconds), cpu


def engine_in_child(path: Path, threads: int, backed_gib: float = 0.0
                    ) -> tuple[float, Round, float]:  # fmt: skip
    """:func:`engine_alone` in a fresh process (its frames stay out of ours).

    ``backed_gib``: :func:`back_memory` that much first.
    """
    command = [sys.executable, __file__, "--engine-only", str(path), "--workers", str(threads)]
    back_memory(backed_gib)
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    seconds, others, steal, cpu = (float(v) for v in result.stdout.split()[-4:])
    return seconds, Round(others, steal), cpu


#: The least a build must do before its first map, as a program: the build's imports, the
#: input's geometry, then the maps of its first 8 frames (kernels loaded, polar plan built).
FIRST_MAP = """
import json, os, sys
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the ccfkit program does
import ccfkit.cli, ccfkit.pipeline
from ccfkit import compute_maps
from ccfkit.backends.numba import NumbaBackend
from ccfkit.build_config import BuildConfig
from ccfkit.io.source import open_source
source = open_source([sys.argv[1]])
recipe = BuildConfig.from_parameters(json.loads(sys.argv[2]))
compute_maps(source.reader.read(0, 8), center=source.center, mask=source.mask,
             grid=recipe.grid, settings=recipe.maps, backend=NumbaBackend(int(sys.argv[3])))
import gc
gc.freeze()  # and exit as the program does (ccfkit.cli.run)
"""


def first_map_in_child(path: Path, threads: int) -> float:
    """Wall seconds of a fresh process that does only :data:`FIRST_MAP` (start to exit).

    The floor under any build of ``path`` in one fresh process: a build that
    read, checked, noised and wrote nothing would still take this plus the
    engine's time.
    """
    command = [sys.executable, "-c", FIRST_MAP, str(path), json.dumps(MEASURED_MAP),
               str(threads)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - start


def back_memory(gib: float) -> None:
    """Write ``gib`` GiB of fresh memory in a child process, which then exits (nothing for 0).

    In a virtual machine whose host takes back the memory its guest frees
    (:func:`harness.first_touch_seconds_per_gib`), the memory a process
    takes next is then memory the host already backs, as all memory is on a
    machine of its own: ``--backed-gib`` runs each build and each engine run
    right after this, to measure the build as such a machine would run it.
    """
    if gib > 0:
        first_touch_seconds_per_gib(int(gib * 2**30), pause=0.0)


def paged_in() -> float:
    """KB read from block devices since boot (``pgpgin`` of /proc/vmstat; 0 where absent)."""
    try:
        with open("/proc/vmstat") as handle:
            for line in handle:
                if line.startswith("pgpgin "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def warm(path: Path, block: int = 64 << 20) -> None:
    """Read ``path`` once, so that the build reads it from the page cache (as after simulating)."""
    buffer = bytearray(block)
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass


#: The build's stages as it logs them (``-v``; ccfkit.stage_clock), then the rest.
STAGES = ("reading", "statistics", "noise", "maps", "writing", "waiting")


@dataclass
class BuildRun:
    """One timed ``ccfkit build``."""

    seconds: float
    cpu: float  # CPU seconds of the build process (user + system)
    peak_gib: float
    passes: dict[str, float]  # "statistics pass", "map pass" -> seconds
    round: Round  # what else ran meanwhile
    disk_mb: float  # read from disk meanwhile (/proc/vmstat pgpgin): 0 with the input cached
    stages: dict[str, tuple[float, float]]  # stage -> (CPU s, wall s), summed over threads
    start_up: tuple[float, float]  # (CPU s, wall s) before the build began, and its exit


def build(path: Path, out: Path, tree: Path | None = None, writer: str | None = None,
          noise: str = "max", workers: int | None = None, backed_gib: float = 0.0
          ) -> BuildRun:  # fmt: skip
    """Wall seconds, peak RSS, passes and stages of ``ccfkit -v build --noise NOISE --orders 8 ...``.

    ``tree``: run another checkout's ccfkit (its root first on ``PYTHONPATH``);
    ``writer``: its ``--chunk-writer``; ``workers``: its ``--workers``;
    ``backed_gib``: :func:`back_memory` that much just before the build starts.
    """
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree else None
    # the program as users run it (its process settings, ccfkit/__main__.py) where it exists
    program = "ccfkit" if ((tree or ROOT) / "ccfkit" / "__main__.py").exists() else "ccfkit.cli"
    command = [sys.executable, "-m", program, "-v", "build", "--noise", noise,
               *MEASURED_MAP_OPTIONS, str(path), str(out), "--overwrite", "--quiet"]  # fmt: skip
    if writer:
        command += ["--chunk-writer", writer]
    if workers:
        command += ["--workers", str(workers)]
    shutil.rmtree(out, ignore_errors=True)  # deleting the last round's store is not timed
    warm(path)
    back_memory(backed_gib)
    paged_in_before = paged_in()
    before = cpu_seconds()
    start = time.perf_counter()
    # in the tree's root: ``python -m`` puts the working directory first on sys.path
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env,
                             cwd=tree or ROOT)  # fmt: skip
    log = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory and CPU
    seconds = time.perf_counter() - start
    quiet = Round.between(before, cpu_seconds(), usage.ru_utime + usage.ru_stime, seconds)
    if status != 0:
        raise RuntimeError(f"build failed with status {status}:\n{log}")
    passes = {
        match[1]: float(match[2])
        for match in re.finditer(r"(statistics pass|map pass): \d+ frames in ([0-9.]+) s", log)
    }
    stages = {
        match[1]: (float(match[2]), float(match[3]))
        for match in re.finditer(r"(\w+) ([0-9.]+) s CPU / ([0-9.]+) s wall", log)
    }
    disk_mb = (paged_in() - paged_in_before) / 1024
    cpu = usage.ru_utime + usage.ru_stime
    whole = re.search(
        r"build: ([0-9.]+) s wall, ([0-9.]+) s CPU, after a start-up of ([0-9.]+)", log
    )
    start_up = (float("nan"), float("nan"))
    if whole:  # start-up: before the build function; its wall time includes the exit
        start_up = (cpu - float(whole[2]), seconds - float(whole[1]))
    return BuildRun(seconds, cpu, usage.ru_maxrss / 2**20, passes, quiet, disk_mb, stages,
                    start_up)  # fmt: skip


def codecs(store: Path, maps: int = 640) -> list[tuple[str, float, float, float]]:
    """Write/read ms per map and compression ratio of each map codec, on built maps.

    Writes go the build's default way (:class:`ccfkit.store.ChunkWriter`
    through zarr, whole chunks of 64); reads through zarr, as the trainer
    reads. Each codec first writes and reads one chunk untimed (codec set-up,
    first calls).
    """
    import zarr

    from ccfkit.store import COMPRESSORS, chunk_writer

    sample = zarr.open_group(str(store), mode="r")["ccf"][:maps]
    maps = len(sample)
    rows = []
    for name, compressor in COMPRESSORS.items():
        for dtype in ("float32", "float16"):
            target = store.parent / "codec.zarr"
            shutil.rmtree(target, ignore_errors=True)
            array = zarr.open_group(str(target), mode="w").create_array(
                "ccf", shape=sample.shape, chunks=(64, *sample.shape[1:]), dtype=dtype,
                compressors=compressor,
            )  # fmt: skip
            files = chunk_writer(array)
            data = sample.astype(dtype)
            files.write(0, data[:64])  # untimed: set-up and first calls
            array[:64]
            start = time.perf_counter()
            for chunk, lo in enumerate(range(0, maps, 64)):
                files.write(chunk, data[lo : lo + 64])
            write = (time.perf_counter() - start) / maps * 1e3
            start = time.perf_counter()
            array[:]
            read = (time.perf_counter() - start) / maps * 1e3
            size = sum(f.stat().st_size for f in (target / "ccf").rglob("*") if f.is_file())
            rows.append((f"{name}, {dtype}", write, read, data.nbytes / size))
            shutil.rmtree(target)
    return rows


def stages(
    path: Path, workdir: Path, frames: int = 2560, chunk: int = 64
) -> list[tuple[str, float, float]]:
    """Milliseconds per frame (wall, CPU) of each step of a map task and its alternatives.

    One thread; the CPU time is the process's (a step that waits on the disk
    has little).

    Each step runs over the same ``frames`` frames in chunks of ``chunk``,
    the way a task meets them.
    """
    import h5py
    import numpy as np
    import zarr
    from threadpoolctl import threadpool_limits
    from zarr.codecs import Crc32cCodec

    from ccfkit import make_polar_plan
    from ccfkit.backends.numba import NumbaBackend
    from ccfkit.io.source import open_source
    from ccfkit.noise import add_noise, frame_statistics
    from ccfkit.store import chunk_writer

    source = open_source([path])
    reader, mask = source.reader, source.mask
    # whole chunks only: the write steps write the engine step's last chunk of maps
    frames = max(chunk, min(frames, reader.shape[0]) // chunk * chunk)
    plan = make_polar_plan(source.frame_shape, center=source.center, mask=mask)
    engine = NumbaBackend(threads=1)
    chunks = [(lo, min(lo + chunk, frames)) for lo in range(0, frames, chunk)]
    target = workdir / "stages.zarr"
    shutil.rmtree(target, ignore_errors=True)
    group = zarr.open_group(str(target), mode="w")
    maps_shape = (frames, plan.q_bins, plan.q_bins)

    def array(name: str):
        return group.create_array(name, shape=maps_shape, chunks=(chunk, *maps_shape[1:]),
                                  dtype="float32", compressors=Crc32cCodec())  # fmt: skip

    by_zarr, direct = chunk_writer(array("by_zarr")), chunk_writer(array("direct"), "direct")
    buffered = workdir / "stages-buffered"
    buffered.mkdir(exist_ok=True)
    indices = {lo: np.arange(lo, hi) for lo, hi in chunks}

    def noisy(pieces, first_indices):  # as a map task adds noise: one pass from the pages
        out = np.empty((len(first_indices), *reader.frame_shape), np.float32)
        start = 0
        for piece in pieces:
            stop = start + len(piece)
            add_noise(piece, first_indices[start:stop], 10.0, 0, out=out[start:stop])
            start = stop
        return out

    maps = {}  # the last chunk's maps only: holding all would measure fresh memory instead
    with h5py.File(reader.files[0], "r") as handle:
        dataset = handle[reader.data_path]
        steps = {
            "read with h5py (`read_direct` into a float32 array)": lambda lo, hi: (
                dataset.read_direct(
                    np.empty((hi - lo, *reader.frame_shape), np.float32), np.s_[lo:hi]
                )
            ),
            "read with plain file reads (`FrameReader.read`)": reader.read,
            "statistics of frames read into memory": lambda lo, hi: frame_statistics(
                reader.read(lo, hi), mask
            ),
            "statistics straight from the mapped file (`FrameReader.pieces`)": lambda lo, hi: [
                frame_statistics(piece, mask) for piece in reader.pieces(lo, hi)
            ],
            "read, then noise added in place": lambda lo, hi: add_noise(
                frames_ := reader.read(lo, hi), indices[lo], 10.0, 0, out=frames_
            ),
            "noise added in one pass from the mapped file": lambda lo, hi: noisy(
                reader.pieces(lo, hi), indices[lo]
            ),
            "engine, one thread (`NumbaBackend(threads=1).merged_maps`)": lambda lo, hi: (
                maps.__setitem__("last", engine.merged_maps(reader.read(lo, hi), plan))
            ),
            "write maps with `ChunkWriter` through zarr (the default; crc32c)": lambda lo, hi: (
                by_zarr.write(lo // chunk, maps["last"][: hi - lo])
            ),
            "write maps through the page cache (new file, plain `write`)": lambda lo, hi: (
                buffered / str(lo)
            ).write_bytes(maps["last"][: hi - lo]),
            "write maps with `ChunkWriter`, `direct` (O_DIRECT; crc32c)": lambda lo, hi: (
                direct.write(lo // chunk, maps["last"][: hi - lo])
            ),
        }
        rows = []
        with threadpool_limits(1):
            for name, step in steps.items():
                step(*chunks[0])  # load kernels and caches outside the timing
                start, cpu = time.perf_counter(), time.process_time()
                for lo, hi in chunks:
                    step(lo, hi)
                wall, cpu = time.perf_counter() - start, time.process_time() - cpu
                rows.append((name, wall / frames * 1e3, cpu / frames * 1e3))
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(buffered, ignore_errors=True)
    return rows


def report(frames: int, kept, total_rounds: int, limit: float, codec_rows, stage_rows,
           command: str, workers: int, loads: str, first_touch: float,
           backed_gib: float = 0.0) -> str:  # fmt: skip
    """The Markdown section, from the kept rounds ``(runs by variant, engine s, round, CPU s)``.

    A variant is ``"WRITER/NOISE"`` (the build's ``--chunk-writer`` and ``--noise``);
    ``first_touch``: :func:`harness.first_touch_seconds_per_gib` on this machine.
    """
    info = machine()
    backed = (f"; each build and engine run came right after a process that wrote {backed_gib:g} "
              "GiB (`--backed-gib`)" if backed_gib else "")  # fmt: skip
    variants = list(kept[0][0])
    engines = [engine for _, engine, *_ in kept]
    engine_s = statistics.median(engines)
    engine_cpu = statistics.median(r[3] for r in kept)
    disturbance = max(
        max(e.disturbance, *(run.round.disturbance for run in runs.values()))
        for runs, _, e, *_ in kept
    )
    rounds = len(kept)
    median = statistics.median
    lines = [
        "## `ccfkit build` end to end",
        "",
        (
            f"{frames:,} simulated 259 x 259 frames (`ccfkit simulate --seed 0`, uncompressed "
            "CXI), Q = 224, P = 512, order 8, float32 maps (default codec `none`), "
            f"{workers} threads on {os.cpu_count()} cores. Each side runs in a fresh process: "
            "the build is the whole command (`ccfkit -v build --noise ... --order 8`, its "
            "start-up and exit included); the engine is `compute_maps` with the build's recipe "
            f"and {workers} threads (`NumbaBackend(threads={workers})`) on the same frames held "
            "in memory, in batches of 256, its kernels loaded first. In every round each build "
            "runs once (in an order that alternates), between two runs of the engine, and is "
            "compared with their mean (the machine's speed drifts); the input is read once "
            "before each build (in the page cache, as right after simulating it). Rounds run "
            f"until {rounds} of them saw at most {limit} cores used by other processes or "
            f"stolen by the hypervisor and builds that read at most {MAX_DISK_MB} MB from disk, "
            f"and the {rounds} quietest are kept ({total_rounds} run; the kept ones saw at most "
            f"{disturbance:.2f} cores). CPU seconds (user + system, of the build process or "
            "the engine's) do not depend on what else runs as much as wall time does. "
            f"Command: `python benchmarks/build_benchmark.py {command}`; load average before "
            f"and after: {loads}. Machine: {info['CPU']}, {info['cores']}, {info['memory']}; "
            f"{info['thread environment']}; a new process writes memory free for 5 s at "
            f"{first_touch:.2f} s per GiB{backed}."
        ),
        "",
        "| what | seconds (median) | per round | frames/s | CPU seconds (median) |",
        "|---|---:|---|---:|---:|",
        (
            f"| engine alone (`compute_maps`, {workers} threads, frames in memory; mean of the "
            f"runs before and after each round) | {engine_s:.2f} | "
            f"{', '.join(f'{e:.2f}' for e in engines)} | {frames / engine_s:,.0f} | "
            f"{engine_cpu:.2f} |"
        ),
    ]
    floors = [r[4] for r in kept]
    floor_ratios = [(floor + engine) / engine for floor, engine in zip(floors, engines)]
    lines.append(
        "| the first map alone (a fresh process: the build's imports, the input's geometry, "
        f"the maps of 8 frames; start to exit) | {median(floors):.2f} | "
        f"{', '.join(f'{f:.2f}' for f in floors)} | | |"
    )
    summary = [
        (
            f"- The floor: the first map alone plus the engine / the engine **"
            f"{median(floor_ratios):.2f}x** (rounds {', '.join(f'{r:.2f}' for r in floor_ratios)}): "
            "what a build in one fresh process would score if reading, statistics, noise, "
            "writing and exit cost nothing."
        )
    ]
    for variant in variants:
        writer, noise = variant.split("/")
        runs = [r[variant] for r, *_ in kept]
        build_s = median(run.seconds for run in runs)
        ratios = [run.seconds / engine for run, engine in zip(runs, engines)]
        cpu_ratios = [run.cpu / r[3] for run, r in zip(runs, kept)]
        lines.append(
            f"| `ccfkit build --noise {noise} --chunk-writer {writer}`, whole command | "
            f"{build_s:.2f} | {', '.join(f'{r.seconds:.2f}' for r in runs)} | "
            f"{frames / build_s:,.0f} | {median(run.cpu for run in runs):.2f} |"
        )
        for name in ("statistics pass", "map pass"):
            if all(name in run.passes for run in runs):
                pass_s = median(run.passes[name] for run in runs)
                lines.append(
                    f"| of which the {name} | {pass_s:.2f} | | {frames / pass_s:,.0f} | |"
                )
        passes = [sum(run.passes.values()) for run in runs]  # statistics and map pass
        pass_ratios = [p / engine for p, engine in zip(passes, engines)]
        summary.append(
            f"- `--noise {noise} --chunk-writer {writer}`: build / engine time "
            f"**{median(ratios):.2f}x** (rounds {', '.join(f'{r:.2f}' for r in ratios)}; "
            f"target <= 1.3x); the passes alone (statistics and maps, without the "
            f"{median(r.seconds - p for r, p in zip(runs, passes)):.2f} s of start-up, set-up "
            f"and exit) / engine **{median(pass_ratios):.2f}x**; "
            f"build / engine CPU seconds **{median(cpu_ratios):.2f}x**; "
            f"{frames / build_s:,.0f} frames/s; peak resident memory "
            f"{max(run.peak_gib for run in runs):.2f} GiB; the paper's {PAPER_IMAGES:,} images "
            f"in {PAPER_IMAGES / (frames / build_s):.0f} s."
        )
    lines += ["", *summary, "", *stage_table(variants, kept, frames, engine_cpu)]
    if stage_rows:
        lines += [
            "",
            ("Where a map task's time goes, and the alternatives it does not take (one thread, "
             f"the first {max(64, min(frames, 2560) // 64 * 64):,} of these frames in chunks of 64; "
             "ms per frame):"),
            "",
            "| step | ms/frame | of which CPU |",
            "|---|---:|---:|",
            *(f"| {name} | {ms:.3f} | {cpu:.3f} |" for name, ms, cpu in stage_rows),
        ]  # fmt: skip
    if codec_rows:
        lines += [
            "",
            "Map codecs on 640 of these maps, one thread (`store.COMPRESSORS`; default `none`):",
            "",
            "| codec, dtype | write ms/map | read ms/map | ratio |",
            "|---|---|---|---|",
            *(f"| {name} | {w:.3f} | {r:.3f} | {ratio:.2f} |" for name, w, r, ratio in codec_rows),
        ]
    return "\n".join(lines)


def stage_table(variants, kept, frames: int, engine_cpu: float) -> list[str]:
    """Markdown lines: each build's CPU seconds per stage (medians of the kept rounds).

    Start-up is the process's CPU before the build function began (imports,
    reading the command line, opening the input); its wall time includes the
    process's exit. The stages are summed over the build's threads
    (``ccfkit.stage_clock``); *other threads* is the rest of the build's CPU
    time: zarr's I/O thread (which encodes and writes the chunks), the main
    thread's set-up (polar plan, backend, creating the store) and its waits.
    """
    median = statistics.median
    head = ["stage", *(f"`--noise {v.split('/')[1]}`, `{v.split('/')[0]}`" for v in variants)]
    lines = [
        (f"CPU seconds per stage of each build (medians of the kept rounds; in brackets: ms "
         f"per frame; the engine alone: {engine_cpu:.2f} s, "
         f"{engine_cpu / frames * 1e3:.3f} ms per frame):"),
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(variants),
    ]  # fmt: skip

    def cell(values) -> str:
        value = median(values)
        return f"{value:.2f} ({value / frames * 1e3:.3f})"

    rows = {
        "start-up (CPU; wall incl. exit)": None,
        **dict.fromkeys(STAGES),
        "other threads": None,
    }
    for name in rows:
        cells = []
        for variant in variants:
            runs = [r[variant] for r, *_ in kept]
            if name.startswith("start-up"):
                cells.append(f"{cell(run.start_up[0] for run in runs)}; "
                             f"{median(run.start_up[1] for run in runs):.2f} s wall")  # fmt: skip
            elif name == "other threads":
                cells.append(cell(run.cpu - run.start_up[0] - sum(c for c, _ in run.stages.values())
                                  for run in runs))  # fmt: skip
            else:
                cells.append(cell(run.stages.get(name, (0.0, 0.0))[0] for run in runs))
                if name == "waiting":
                    cells[-1] = (
                        f"{median(run.stages.get(name, (0.0, 0.0))[1] for run in runs):.2f} s wall"
                    )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="quiet rounds to keep")
    parser.add_argument("--quiet", type=float, default=0.15,
                        help="most cores others (plus steal) may use in a kept round")  # fmt: skip
    parser.add_argument("--budget", type=float, default=900.0, help="seconds for the rounds")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ccfkit-build-benchmark"))
    parser.add_argument("--writers", default="zarr,direct",
                        help="the builds' --chunk-writer methods, each in every round")  # fmt: skip
    parser.add_argument(
        "--noise",
        default="max",
        help="the builds' --noise levels, each in every round (e.g. max,none)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count(),
                        help="the builds' --workers and the engine's threads")  # fmt: skip
    parser.add_argument("--backed-gib", type=float, default=0.0,
                        help="before each build and engine run, write this many GiB of fresh "
                             "memory in a child that exits (a VM's host then backs the memory "
                             "they take: as on a machine of its own)")  # fmt: skip
    parser.add_argument("--no-steps", action="store_true",
                        help="skip the one-thread step table and the codec table")  # fmt: skip
    parser.add_argument("--write", type=Path, default=None, help="performance page to update")
    parser.add_argument("--engine-only", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout's root: its builds (each variant) run in every round too")  # fmt: skip
    args = parser.parse_args()
    if args.engine_only:
        seconds, quiet, cpu = engine_alone(args.engine_only, args.workers)
        print(seconds, quiet.others, quiet.steal, cpu)
        return
    loads = load_average()
    first_touch = first_touch_seconds_per_gib()
    variants = [f"{w}/{n}" for n in args.noise.split(",") for w in args.writers.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"sim_{args.frames}.cxi"
    out = args.workdir / "out.zarr"
    simulate(data, args.frames)

    def run(variant: str, tree: Path | None = None) -> BuildRun:
        writer, noise = variant.split("/")
        return build(data, out, tree, writer, noise, args.workers, args.backed_gib)

    # the builds sit between two runs of the engine and are compared with their mean:
    # the machine's speed drifts, and a drift then affects both sides alike
    rounds: list[tuple[dict[str, BuildRun], float, Round, float, float]] = []
    baselines: list[dict[str, BuildRun]] = []
    deadline = time.monotonic() + args.budget
    before = engine_in_child(data, args.workers, args.backed_gib)
    while sum(_is_quiet(r, args.quiet) for r in rounds) < args.rounds:
        if rounds and time.monotonic() > deadline:
            break
        order = variants if len(rounds) % 2 == 0 else variants[::-1]
        if args.baseline:  # the baseline tree's build of each variant too
            bases = {variant: run(variant, args.baseline) for variant in order}
            for variant, base in bases.items():
                print(f"round {len(rounds) + 1}: baseline tree build ({variant}) "
                      f"{base.seconds:.2f} s, CPU {base.cpu:.2f} s {base.passes}",
                      file=sys.stderr)  # fmt: skip
            baselines.append(bases)
        runs = {variant: run(variant) for variant in order}
        after = engine_in_child(data, args.workers, args.backed_gib)
        floor = first_map_in_child(data, args.workers)
        engine = (before[0] + after[0]) / 2
        engine_round = max(before[1], after[1], key=lambda r: r.disturbance)
        rounds.append(({v: runs[v] for v in variants}, engine, engine_round,
                       (before[2] + after[2]) / 2, floor))  # fmt: skip
        for variant, build_run in runs.items():
            print(
                f"round {len(rounds)}: build ({variant}) {build_run.seconds:.2f} s, CPU "
                f"{build_run.cpu:.2f} s, start-up {build_run.start_up[0]:.2f} s CPU, "
                f"{build_run.passes} {build_run.stages} (others + steal "
                f"{build_run.round.disturbance:.2f} cores, {build_run.disk_mb:.0f} MB read from "
                "disk)",
                file=sys.stderr,
            )
        print(f"round {len(rounds)}: engine before {before[0]:.2f} s, after {after[0]:.2f} s, "
              f"CPU {after[2]:.2f} s ({engine_round.disturbance:.2f} cores); first map alone "
              f"{floor:.2f} s",
              file=sys.stderr)  # fmt: skip
        before = after
    kept = sorted(
        rounds,
        key=lambda r: (
            not _is_quiet(r, args.quiet),
            max(r[2].disturbance, *(run.round.disturbance for run in r[0].values())),
        ),
    )[: args.rounds]
    if baselines:
        print(_against_baseline([r[0] for r in rounds], baselines, args.baseline))
    codec_rows = stage_rows = []
    if not args.no_steps:
        codec_rows = codecs(out)
        stage_rows = stages(data, args.workdir)
    shutil.rmtree(out, ignore_errors=True)
    loads = f"{loads} / {load_average()}"
    command = " ".join(sys.argv[1:])
    section = report(args.frames, kept, len(rounds), args.quiet, codec_rows, stage_rows, command,
                     args.workers, loads, first_touch, args.backed_gib)  # fmt: skip
    print(section)
    if args.write:
        replace_section(args.write, "build", section)


def _against_baseline(runs: list[dict[str, BuildRun]], baselines: list[dict[str, BuildRun]],
                      tree: Path) -> str:  # fmt: skip
    """Per-round, per-variant ratios of this tree over the baseline tree (map pass; build; CPU)."""
    title = f"this tree / baseline tree {tree}, per round and variant (map pass; build; CPU):"
    lines = [title]
    for number, (run, base) in enumerate(zip(runs, baselines), 1):
        for writer in run:
            maps = run[writer].passes["map pass"] / base[writer].passes["map pass"]
            lines.append(f"  round {number}, {writer}: {maps:.3f}; "
                         f"{run[writer].seconds / base[writer].seconds:.3f}; "
                         f"{run[writer].cpu / base[writer].cpu:.3f}")  # fmt: skip
    return "\n".join(lines)


def _is_quiet(round_, limit: float) -> bool:
    """Little else ran, and the input stayed in the page cache (the VM evicts idle pages)."""
    runs, _, engine, *_ = round_
    in_cache = all(run.disk_mb <= MAX_DISK_MB for run in runs.values())
    disturbance = max(engine.disturbance, *(run.round.disturbance for run in runs.values()))
    return in_cache and disturbance <= limit


if __name__ == "__main__":
    main()
