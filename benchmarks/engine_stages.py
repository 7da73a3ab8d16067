"""Where one CPU thread's time goes in ``compute_maps``, against the product's floor.

The float32 engine is measured against the one product it cannot avoid,
``polar @ polar.T`` (``ssyrk``, docs/performance.md). This script times each pass of
the Numba kernel on its own, on one thread with BLAS held to one thread,
interleaved over rounds on the same images (256 synthetic 259 x 259 frames,
Q = 224, P = 512, order 8, ``scale="maxabs"``), and reports each as a share of
the product's time in the same round:

* the product ``polar @ polar.T`` per image (numpy's ``ssyrk``), the floor;
* the sanitised copy of the image (NaN/inf as 0, the image's one read from memory);
* the polar stage on one image (copy, interpolation);
  the interpolation is that minus the copy;
* the interpolation's instruction floor: the same loop where every sample
  reads the same four pixels (all in L1), so only its instructions count;
* the copy and the exact gather (the path of images whose NaN/inf pixels
  invalidate samples; before the sanitised copy every image took a gather like it),
  for comparison;
* the ring means and orders, and the merge and scaling of the map;
* the whole per-thread kernel, and ``compute_maps`` through the public API,
  in float32 (into a new array, and into the caller's array, ``out=``,
  reused from round to round: a new array's pages are zeroed by the
  operating system on first touch) and in bf16 (``precision="bf16"``); with
  ``--threads 2`` both again on two threads (wall time).

``--clock cpu`` times the one-thread rows in the thread's CPU time: on a
machine that others share, the time they take from the core stays out.

Usage::

    taskset -c 0 .venv/bin/python benchmarks/engine_stages.py --clock cpu
    .venv/bin/python benchmarks/engine_stages.py --threads 2 --write docs/performance.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import sys
import time

import numpy as np
from asv_bench.images import ORDER, PHI_BINS, Q_BINS, SHAPE, make_images
from harness import load_average, machine, replace_section
from threadpoolctl import threadpool_limits

import ccfkit
from ccfkit.backends import numba as kernels
from ccfkit.backends._bf16 import CPU_BF16_FLAGS, _cpu_flags
from ccfkit.backends.numba import NumbaBackend

#: ``scale_mode`` code of ``scale="maxabs"`` in the kernels.
MAXABS = 1


def stage_calls(images: np.ndarray, threads: int = 1) -> dict[str, tuple[str, callable]]:
    """The timed calls, each over the whole batch, by key: (label, call).

    ``threads > 1`` adds ``compute_maps`` on that many threads, float32 and bf16
    (keys starting ``many``: timed in wall time whatever the clock).
    """
    plan = ccfkit.make_polar_plan(SHAPE, q_bins=Q_BINS, phi_bins=PHI_BINS)
    tables = kernels._tables_for(plan)
    cos_n, sin_n = kernels._order_tables(plan, (ORDER,))
    inverse_pairs = kernels._inverse_pairs_for(plan, 0)
    batch, samples = images.shape[0], Q_BINS * PHI_BINS
    flat = images.reshape(batch, -1)
    padded = kernels._padded_scratch(tables)
    values = np.empty(samples, np.float32)
    valid = np.empty(samples, bool)
    polar = np.empty((batch, Q_BINS, PHI_BINS), np.float32)
    kernels._resample_part(
        images, 0, batch, tables, polar, np.empty(polar.shape, bool), np.empty(batch, np.int64)
    )
    gram = np.empty((Q_BINS, Q_BINS), np.float32)
    re, im, means = np.empty((1, Q_BINS)), np.empty((1, Q_BINS)), np.empty(Q_BINS)
    out = np.empty((batch, 1, Q_BINS, Q_BINS), np.float32)
    one_pixel = np.full_like(tables.corner, tables.corner[samples // 2])
    backend = NumbaBackend(threads=1)

    def product():
        for b in range(batch):
            np.matmul(polar[b], polar[b].T, out=gram)

    def sanitize():
        for b in range(batch):
            kernels._sanitize(flat[b], tables.used, padded)

    def polar_image():
        for b in range(batch):
            kernels._polar_image(flat[b], tables, padded, values, valid, False)

    def interpolation_floor():
        for _ in range(batch):
            kernels._interpolate(padded, one_pixel, tables.fx, tables.fy, tables.width, values)

    def exact_gather():
        for b in range(batch):
            kernels._sanitize(flat[b], tables.used, padded)  # brings the image into cache
            kernels._gather(flat[b], tables.index, tables.weight, tables.valid, values, valid)

    def project():
        for b in range(batch):
            kernels._project_rings(polar[b], tables.counts, cos_n, sin_n, re, im, means)

    def finish():
        for b in range(batch):
            kernels.finish_image(gram, inverse_pairs, re, im, means, MAXABS, out[b])

    def kernel():
        kernels._merged_maps_part(
            images,
            0,
            batch,
            tables,
            inverse_pairs,
            cos_n,
            sin_n,
            0,
            plan.min_ring_count,
            MAXABS,
            out,
        )

    def api(precision="float32", engine=backend, out=None):
        ccfkit.compute_maps(images, order=ORDER, q_bins=Q_BINS, phi_bins=PHI_BINS, backend=engine,
                            precision=precision, out=out)  # fmt: skip

    maps = np.empty((batch, Q_BINS, Q_BINS), np.float32)  # the caller's array, reused

    many = NumbaBackend(threads=threads)
    calls = {
        "product": ("`polar @ polar.T` per image (ssyrk): the floor", product),
        "sanitize": ("sanitised copy of the image (`_sanitize`)", sanitize),
        "polar": (
            "polar stage: copy and interpolation (`_polar_image`)",
            polar_image,
        ),
        "floor": (
            "interpolation's instruction floor: every sample on the same 4 pixels",
            interpolation_floor,
        ),
        "exact": (
            (
                "copy, then the exact gather with its NaN check (`_gather`: images whose NaN/inf "
                "pixels invalidate samples)"
            ),
            exact_gather,
        ),
        "project": ("ring means and order 8 (`_project_rings`)", project),
        "finish": ("merge and scale the map (`finish_image`)", finish),
        "kernel": ("the whole per-thread kernel (`_merged_maps_part`)", kernel),
        "api": ("`compute_maps(..., backend=NumbaBackend(threads=1))`", api),
        "api_out": (
            "the same into the caller's array, `out=maps` (reused)",
            lambda: api(out=maps),
        ),
        "bf16": ('the same, `precision="bf16"`', lambda: api("bf16")),
    }
    if threads > 1:
        calls["many"] = (f"`compute_maps`, {threads} threads (wall time)",
                         lambda: api(engine=many))  # fmt: skip
        calls["many_bf16"] = (f'the same, `precision="bf16"`, {threads} threads (wall time)',
                              lambda: api("bf16", many))  # fmt: skip
    return calls


CLOCK_WORDS = {"wall": "wall time", "cpu": "the thread's CPU time (`--clock cpu`)"}
#: The clocks a stage can be timed with: wall time, or the CPU time of this thread (what
#: a one-thread stage costs when other processes share the core: they take wall time, not it).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def run(images: np.ndarray, rounds: int, clock=time.perf_counter, threads: int = 1) -> dict:
    """Seconds per image of every stage, one entry per round (order rotating)."""
    calls = stage_calls(images, threads)
    seconds = {key: [] for key in calls}
    keys = list(calls)
    with threadpool_limits(limits=1, user_api="blas"):
        for _, call in calls.values():
            call()  # compile or load, touch the buffers
        for r in range(rounds):
            for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
                timer = time.perf_counter if key.startswith("many") else clock
                started = timer()
                calls[key][1]()
                seconds[key].append((timer() - started) / images.shape[0])
            print(
                f"round {r + 1}: "
                + ", ".join(f"{k} {1e3 * v[-1]:.3f}" for k, v in seconds.items())
            )
    return {key: (calls[key][0], values) for key, values in seconds.items()}


def report(results: dict, args: argparse.Namespace, command: str, loads: tuple[str, str]) -> str:
    """The markdown section."""
    product = results["product"][1]

    def ratios(values):
        return [v / p for v, p in zip(values, product)]

    interpolation = [p - s for p, s in zip(results["polar"][1], results["sanitize"][1])]
    rows = [(label, values, ratios(values)) for label, values in results.values()]
    rows.insert(3, ("interpolation: polar stage minus the copy", interpolation,
                    ratios(interpolation)))  # fmt: skip
    info = machine()
    when = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Where one thread's time goes (the product's floor)",
        "",
        (
            f"`{command}`, {when}; {info['CPU']}, {info['cores']}; {info['thread pools']}; "
            f"{info['thread environment']}. "
            f"{args.images} images, {args.rounds} interleaved rounds, one thread, BLAS on one "
            f"thread; {CLOCK_WORDS[args.clock]}; load average before {loads[0]}, after {loads[1]}. "
            "Each figure is the median over rounds (the range: the smallest and largest "
            "per-round ratio); *of the product* is the median of the per-round ratios to the "
            "product's time in the same round."
        ),
        "",
        "| stage | ms/image | of the product | range |",
        "|---|---:|---:|---|",
    ]
    lines += [
        f"| {label} | {1e3 * statistics.median(seconds):.3f} | {statistics.median(shares):.2f} | "
        f"{min(shares):.2f}-{max(shares):.2f} |"
        for label, seconds, shares in rows
    ]
    lines += ["", *speed_ups(results)]
    return "\n".join(lines)


def speed_ups(results: dict) -> list[str]:
    """Lines with compute_maps float32 / bf16 (per-round ratios of times: median, range)."""
    lines = []
    for float32, bf16 in [("api", "bf16"), ("many", "many_bf16")]:
        if float32 in results and bf16 in results:
            ratio = [f / b for f, b in zip(results[float32][1], results[bf16][1])]
            words = "one thread" if float32 == "api" else results[float32][0].split(", ")[1]
            lines.append(
                f"- compute_maps float32 / bf16, {words}: **{statistics.median(ratio):.2f}x** "
                f"(rounds {min(ratio):.2f}-{max(ratio):.2f})."
            )
    flags = sorted(CPU_BF16_FLAGS & _cpu_flags())
    lines.append(
        f"- bfloat16 units of this CPU: {', '.join(flags) or 'none (bf16 runs as float32)'}."
    )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or this thread's CPU time (a shared machine)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="also compute_maps on this many threads (float32 and bf16)",
    )
    parser.add_argument("--write", help="markdown file whose stages section to replace")
    args = parser.parse_args(argv)
    command = " ".join(["python benchmarks/engine_stages.py", *(argv or sys.argv[1:])])
    before = load_average()
    images = make_images(args.images, seed=args.seed)
    results = run(images, args.rounds, CLOCKS[args.clock], args.threads)
    section = report(results, args, command, (before, load_average()))
    print(section)
    if args.write:
        replace_section(args.write, "stages", section, before="## `ccfkit simulate`")
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
