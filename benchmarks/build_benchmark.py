"""End-to-end speed and memory of ``ccfkit build`` against the engine alone.

Usage (from the repository root)::

    .venv/bin/python benchmarks/build_benchmark.py --frames 20000 --write docs/performance.md

1. Simulates ``--frames`` 259 x 259 frames with ``ccfkit simulate`` into an
   uncompressed CXI file (kept in ``--workdir`` and reused when present).
2. Times ``ccfkit build --noise max --order 8`` (both passes, writing the
   store) in a child process, and reads its peak resident memory.
3. Times the engine alone: ``NumbaBackend().merged_maps`` on the same frames
   already in memory, in batches of 256.
4. Prints the table and, with ``--write``, puts it into the build section of
   the performance page (between ``<!-- build:begin -->`` and
   ``<!-- build:end -->``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

PAPER_IMAGES = 39_879
PAPER_SECONDS = 3 * 24 * 3600


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


def engine_alone(path: Path, batch: int = 256) -> float:
    """Seconds the Numba engine needs for every frame of ``path``, frames in memory."""
    from ccfkit import make_polar_plan
    from ccfkit.backends.numba import NumbaBackend
    from ccfkit.io.source import open_source

    source = open_source([path])
    frames = source.reader[:]
    plan = make_polar_plan(source.frame_shape, center=source.center, mask=source.mask)
    backend = NumbaBackend()
    backend.merged_maps(frames[:8], plan)  # compile/load the kernels outside the timing
    start = time.perf_counter()
    for lo in range(0, len(frames), batch):
        backend.merged_maps(frames[lo : lo + batch], plan)
    return time.perf_counter() - start


def build(path: Path, out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of ``ccfkit build --noise max --order 8`` alone."""
    command = [
        sys.executable,
        "-m",
        "ccfkit.cli",
        "build",
        "--noise",
        "max",
        "--order",
        "8",
        str(path),
        str(out),
        "--overwrite",
        "--quiet",
    ]
    start = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"build failed with status {status}")
    return seconds, usage.ru_maxrss / 2**20


def codecs(store: Path, maps: int = 640) -> list[tuple[str, float, float, float]]:
    """Write/read ms per map and compression ratio of each map codec, on built maps.

    Writes go the build's way (:class:`ccfkit.io.zarr_direct.ChunkFiles`, whole
    chunks of 64); reads through zarr, as the trainer reads.
    """
    import zarr

    from ccfkit.io.zarr_direct import ChunkFiles
    from ccfkit.store import COMPRESSORS

    sample = zarr.open_group(str(store), mode="r")["ccf"][:maps]
    rows = []
    for name, compressor in COMPRESSORS.items():
        for dtype in ("float32", "float16"):
            target = store.parent / "codec.zarr"
            shutil.rmtree(target, ignore_errors=True)
            array = zarr.open_group(str(target), mode="w").create_array(
                "ccf", shape=sample.shape, chunks=(64, *sample.shape[1:]), dtype=dtype,
                compressors=compressor,
            )  # fmt: skip
            files = ChunkFiles.of(array)
            data = sample.astype(dtype)
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


def report(frames: int, engine_s: float, build_s: float, peak_gib: float, codec_rows) -> str:
    """The Markdown section."""
    build_rate = frames / build_s
    projected = PAPER_IMAGES / build_rate
    lines = [
        "## `ccfkit build` end to end",
        "",
        (
            f"{frames:,} simulated 259 x 259 frames (`ccfkit simulate --seed 0`, uncompressed "
            "CXI), Q = 224, P = 512, order 8, `--noise max`, both passes, uncompressed float32 maps, "
            f"{os.cpu_count()} cores. Command: `python benchmarks/build_benchmark.py --frames {frames}`."
        ),
        "",
        "| what | seconds | frames/s |",
        "|---|---|---|",
        (
            f"| engine alone (`NumbaBackend().merged_maps`, frames in memory) | {engine_s:.1f} | "
            f"{frames / engine_s:,.0f} |"
        ),
        (
            f"| `ccfkit build --noise max --order 8` (statistics + maps + store) | {build_s:.1f} | "
            f"{build_rate:,.0f} |"
        ),
        "",
        (
            f"- build / engine time: **{build_s / engine_s:.2f}x** (target <= 1.5x); "
            f"build rate: **{build_rate:,.0f} frames/s** (target >= 600)."
        ),
        f"- peak resident memory of the build: **{peak_gib:.2f} GiB** (target < 2 GB).",
        (
            f"- the paper's {PAPER_IMAGES:,} images at this rate: **{projected:.0f} s** "
            f"(~{projected / 60:.1f} min) instead of three days: "
            f"{PAPER_SECONDS / projected:,.0f}x faster."
        ),
        "",
        "Map codecs on 640 of these maps, one thread (`store.COMPRESSORS`; default `none`):",
        "",
        "| codec, dtype | write ms/map | read ms/map | ratio |",
        "|---|---|---|---|",
        *(f"| {name} | {w:.3f} | {r:.3f} | {ratio:.2f} |" for name, w, r, ratio in codec_rows),
    ]
    return "\n".join(lines)


def write_section(page: Path, section: str) -> None:
    """Replace (or append) the build section of ``page``."""
    text = page.read_text() if page.exists() else "# Performance\n"
    block = f"<!-- build:begin -->\n{section}\n<!-- build:end -->"
    pattern = re.compile(r"<!-- build:begin -->.*?<!-- build:end -->", re.DOTALL)
    text = (
        pattern.sub(block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    page.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ccfkit-build-benchmark"))
    parser.add_argument("--write", type=Path, default=None, help="performance page to update")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"sim_{args.frames}.cxi"
    out = args.workdir / "out.zarr"
    simulate(data, args.frames)
    # the build first: a child's peak memory counts its parent's at the fork
    build_s, peak = build(data, out)
    engine_s = engine_alone(data)
    codec_rows = codecs(out)
    shutil.rmtree(out, ignore_errors=True)
    section = report(args.frames, engine_s, build_s, peak, codec_rows)
    print(section)
    if args.write:
        write_section(args.write, section)


if __name__ == "__main__":
    main()
