"""Frames per second of ``ccfkit simulate`` (259 x 259), against the model without the
instrument physics, in interleaved rounds on this machine.

Usage (from the repository root)::

    nice -n 10 .venv/bin/python benchmarks/simulate_speed.py --frames 3000 --rounds 3

Each round writes ``--frames`` frames with :func:`ccfkit.simulate.cxi_file.write_simulated`
(drawing, rendering, Poisson noise, labels, writing the CXI file to
``--workdir``) for each configuration, in rotating order:

* ``v1 physics``: what ``ccfkit-simulate/1`` computed: no polarisation factor,
  no halo, the old mix of sphere, oblate, prolate and empty frames;
* ``default``: ``ccfkit simulate`` today (polarisation, halo, two-sphere kinds);
* ``default + MCP``: with ``--mcp`` (gain spread and blur).

Printed: the CPU, the frames per second of every round with the cores other
processes used meanwhile (the machine is shared), the medians, and the per-round
ratio ``default / v1 physics``. The result goes into ``docs/simulate.md`` by hand,
with this command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import Round, cpu_seconds, machine

from ccfkit.simulate import SimulationConfig
from ccfkit.simulate.cxi_file import write_simulated

CONFIGS = {
    "v1 physics": SimulationConfig(
        polarization="none", halo=(0.0, 0.0), mix="sphere=0.5,oblate=0.25,prolate=0.2,empty=0.05"
    ),
    "default": SimulationConfig(),
    "default + MCP": SimulationConfig(mcp=True),
}


def one_run(config: SimulationConfig, frames: int, workers: int, path: Path):
    """Wall and CPU seconds (all threads) of one ``write_simulated`` of ``frames`` frames."""
    start, cpu = time.perf_counter(), time.process_time()
    write_simulated(path, config, frames, 0, overwrite=True, workers=workers, progress=False)
    return time.perf_counter() - start, time.process_time() - cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    for key, value in machine().items():
        print(f"{key}: {value}")
    names = list(CONFIGS)
    seconds = {name: [] for name in names}
    cpu = {name: [] for name in names}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        path = Path(tmp) / "speed.cxi"
        one_run(CONFIGS["default"], 64, args.workers, path)  # warm-up: imports, caches
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            before, own0, wall0 = cpu_seconds(), time.process_time(), time.perf_counter()
            for name in order:
                wall, used = one_run(CONFIGS[name], args.frames, args.workers, path)
                seconds[name].append(wall)
                cpu[name].append(used)
            own, wall = time.process_time() - own0, time.perf_counter() - wall0
            load = Round.between(before, cpu_seconds(), own, wall)
            rates = ", ".join(f"{n} {args.frames / seconds[n][-1]:.0f}/s" for n in names)
            print(
                f"round {r + 1} (others {load.others:.2f} + steal {load.steal:.2f} cores): {rates}"
            )
    print(
        f"\n| {args.frames} frames, 259 x 259, {args.workers} workers | frames/s (median) "
        "| CPU ms per frame (median) |"
    )
    print("|---|---|---|")
    for name in names:
        rate = args.frames / statistics.median(seconds[name])
        per_frame = 1e3 * statistics.median(cpu[name]) / args.frames
        print(f"| {name} | {rate:.0f} | {per_frame:.2f} |")
    ratios = [v1 / new for v1, new in zip(seconds["v1 physics"], seconds["default"])]
    print(
        "\nspeed of default / v1 physics, per round: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f" (median {statistics.median(ratios):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
