"""One-thread costs that docs/performance.md quotes for the build: digests, fresh memory, plans.

Run from the repository root, pinned to one core for steadier figures::

    taskset -c 1 .venv/bin/python benchmarks/memory_costs.py [--bitshuffle FILE]

Prints, each the best of ``--repeats`` timings (wall, one thread):

* a store chunk's digest per 224 x 224 float32 map: XXH3-64 (schema 3) and
  BLAKE2b (schema 2), :func:`ccfkit.store.layout.chunk_digest`;
* 256 such maps written into a fresh array and into a reused one (the first
  touch of fresh memory: what ``compute_maps`` pays without ``out=``);
* one 259 x 259 frame mapped with its own plan (rings in q at its own
  wavelength, :func:`ccfkit.frame_geometry.maps_of_own_plans`), per frame;
* with ``--bitshuffle FILE`` (a bitshuffle-LZ4 file of whole-frame chunks, as
  ``benchmarks/facility_inputs.py`` writes ``lz4.h5``): 16 frames decoded
  into a fresh array and into a reused one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from harness import cpu_model


def best_seconds(function, repeats: int) -> float:
    """The shortest of ``repeats`` wall-clock timings of ``function()`` (after one untimed call)."""
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def digest_costs(repeats: int) -> dict[str, float]:
    """ms per map of each chunk digest, on a 64-map chunk."""
    from ccfkit.store.layout import chunk_digest

    chunk = np.random.default_rng(0).random((64, 224, 224), dtype=np.float32)
    return {f"chunk digest {scheme}, ms per map":
            best_seconds(lambda s=scheme: chunk_digest(chunk, s), repeats) / 64 * 1e3
            for scheme in ("xxh3-64", "blake2b-64")}  # fmt: skip


def output_costs(repeats: int) -> dict[str, float]:
    """ms per batch of 256 maps written once into a fresh array and into a reused one."""
    shape = (256, 224, 224)
    reused = np.empty(shape, dtype=np.float32)

    def fresh() -> None:
        np.empty(shape, dtype=np.float32).fill(1.0)

    return {
        "256 maps into a fresh array, ms": best_seconds(fresh, repeats) * 1e3,
        "256 maps into a reused array, ms": best_seconds(lambda: reused.fill(1.0), repeats) * 1e3,
    }


def own_plan_costs(repeats: int, frames: int = 32) -> dict[str, float]:
    """ms per frame of maps with each frame's own plan (rings in q at its own wavelength)."""
    from ccfkit.backends.numba import NumbaBackend
    from ccfkit.ccf import MapSettings
    from ccfkit.frame_geometry import maps_of_own_plans
    from ccfkit.geometry import ScatteringGeometry
    from ccfkit.polar import PlanSpec, RingGrid

    rng = np.random.default_rng(0)
    images = rng.random((frames, 259, 259), dtype=np.float32)
    mask = rng.random((259, 259)) > 0.02
    geometries = tuple(ScatteringGeometry(pixel_size=1.45e-4, distance=0.065,
                                          wavelength_nm=40 + 0.3 * k) for k in range(frames))  # fmt: skip
    spec = PlanSpec.describe((259, 259), center=(129.0, 129.0), mask=mask,
                             grid=RingGrid(q_range=(0.01, 0.05)), scattering=geometries[0])  # fmt: skip
    engine, settings = NumbaBackend(threads=1), MapSettings(orders=(8,))

    def maps() -> None:
        maps_of_own_plans(engine, images, spec, settings, groups=(geometries, np.arange(frames)))

    return {"one frame with its own plan, ms": best_seconds(maps, repeats) / frames * 1e3}


def decode_costs(name: str, repeats: int) -> dict[str, float]:
    """ms for 16 frames of a bitshuffle-LZ4 file read into a fresh array and into a reused one."""
    from ccfkit.io.source import open_source

    reader = open_source([name]).reader
    reused = np.empty((16, *reader.frame_shape), dtype=np.float32)
    fresh_ms = best_seconds(lambda: reader.read(0, 16), repeats) * 1e3
    reused_ms = best_seconds(lambda: reader.read(0, 16, out=reused), repeats) * 1e3
    return {
        "16 frames decoded into a fresh array, ms": fresh_ms,
        "16 frames decoded into a reused array, ms": reused_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--bitshuffle", default=None, help="a bitshuffle-LZ4 file of frames")
    args = parser.parse_args()
    print(f"{cpu_model()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"best of {args.repeats}, one thread")  # fmt: skip
    results = {**digest_costs(args.repeats), **output_costs(args.repeats),
               **own_plan_costs(args.repeats)}  # fmt: skip
    if args.bitshuffle:
        results.update(decode_costs(args.bitshuffle, args.repeats))
    for what, value in results.items():
        print(f"{what}: {value:.3f}")


if __name__ == "__main__":
    main()
