"""Transfer: train on one simulated set, score on a second one simulated otherwise.

How much does a model learn the physics rather than the simulator's settings?
Run from the repository root (10 minutes of training and scoring on the shared 2-core CPU,
see docs/simulate.md)::

    nice -n 10 .venv/bin/python benchmarks/transfer.py --write docs/simulate.md

1. ``ccfkit simulate`` a training set A (``--train-frames``, seed 0, the default
   options: radius 150-600 nm, fluence 1e5-1e6, halo 1e3-2e4 photons of width
   3-12 degrees) and a shifted set B (``--test-frames``, seed 1): radius
   100-450 nm, fluence 2e4-2e5, halo 5e3-5e4 photons of width 2-20 degrees.
   Both at 259 x 259, so the fringes of the largest droplets do not alias.
2. ``ccfkit build`` both with noise ``none`` into ``--size`` x ``--size`` CCF
   maps (P = 256), into ``--workdir`` (reused when there).
3. ``trainer fit`` on A (ResNet-18 of ``--width``, batch 48, lr 0.1 x0.1 every
   ``--lr-step`` epochs, ``--epochs``), then ``trainer evaluate`` of the best
   checkpoint on A's own eval split and on all of B.
4. Prints accuracy, precision, recall (micro, §3.2), the all-negative
   accuracy and the recall of every class on both, and with ``--write FILE``
   puts the table between ``<!-- transfer:begin -->`` and
   ``<!-- transfer:end -->`` of FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import BIN, MEASURED_MAP_OPTIONS, replace_section, sh

#: The two simulated sets: ccfkit simulate options beside --n and --seed.
SETS = {
    "A": ("the default options", []),
    "B": (
        "radius 100-450 nm, fluence 2e4-2e5, halo 5e3-5e4 photons of 2-20 deg",
        ["--radius", 100, 450, "--fluence", 2e4, 2e5, "--halo", 5e3, 5e4, "--halo-width", 2, 20],
    ),
}


def make_store(workdir: Path, name: str, frames: int, seed: int, args) -> Path:
    """Simulate and build set ``name`` unless it is there already."""
    cxi, store = workdir / f"{name}.cxi", workdir / f"{name}.zarr"
    if not cxi.exists():
        sh(BIN / "ccfkit", "simulate", cxi, "--n", frames, "--seed", seed, "--quiet",
           *SETS[name][1])  # fmt: skip
    if not store.exists():
        sh(BIN / "ccfkit", "build", cxi, store, "--noise", "none", "--q-bins", args.size,
           "--phi-bins", 256, *MEASURED_MAP_OPTIONS, "--quiet")  # fmt: skip
    return store


def evaluate(run_dir: Path, store: Path | None, out: Path) -> dict:
    cmd = [BIN / "trainer", "evaluate", run_dir, "--device", "cpu", "--json", out]
    if store is not None:
        cmd.insert(3, store)
    sh(*cmd)
    return json.loads(out.read_text())


def table(results: dict, args, minutes: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    names = [row["name"] for row in results["A"]["per_class"]]
    header = (
        f"Run {when}, {platform.node()} ({os.cpu_count()} CPUs, torch threads "
        f"{args.threads}), {minutes:.1f} min in all: trained on A ({args.train_frames} "
        f"frames, seed 0, {SETS['A'][0]}; 85 % of them), scored (best checkpoint) on A's "
        f"eval split and on B ({args.test_frames} frames, seed 1, {SETS['B'][0]}). "
        f"{args.size} x {args.size} CCF maps (noise none, P = 256); ResNet-18 width "
        f"{args.width}, batch 48, lr 0.1 x0.1 every {args.lr_step} epochs, {args.epochs} "
        "epochs."
    )
    a, b = results["A"], results["B"]
    lines = [
        header,
        "",
        f"| | A, eval split ({a['n_frames']} frames) | B, all ({b['n_frames']} frames) |",
        "|---|---:|---:|",
    ]
    for key in ("accuracy", "all_negative_accuracy", "precision", "recall", "violation_rate"):
        lines.append(f"| {key.replace('_', ' ')} | {a[key]:.4f} | {b[key]:.4f} |")
    rows = {key: {row["name"]: row for row in results[key]["per_class"]} for key in "AB"}

    def cell(row):
        return f"{row['recall']:.2f} ({row['support']})" if row["support"] else "– (0)"

    for name in names:
        lines.append(f"| recall {name} | {cell(rows['A'][name])} | {cell(rows['B'][name])} |")
    lines += [
        "",
        "Per-class rows: recall (positives in the scored set).",
        "",
        "Command: `python benchmarks/transfer.py " + " ".join(sys.argv[1:]) + "`",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-frames", type=int, default=2000)
    parser.add_argument("--test-frames", type=int, default=800)
    parser.add_argument("--size", type=int, default=64, help="maps are SIZE x SIZE")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr-step", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ccfkit_transfer"))
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)
    train_store = make_store(args.workdir, "A", args.train_frames, 0, args)
    test_store = make_store(args.workdir, "B", args.test_frames, 1, args)
    run_dir = args.workdir / "run"
    sh(BIN / "trainer", "fit", train_store, "--epochs", args.epochs, "--lr-step", args.lr_step,
       "--batch-size", 48, "--width", args.width, "--workers", 0, "--threads", args.threads,
       "--device", "cpu", "--run-dir", run_dir, "--overwrite", "--quiet")  # fmt: skip
    results = {
        "A": evaluate(run_dir, None, args.workdir / "A.json"),
        "B": evaluate(run_dir, test_store, args.workdir / "B.json"),
    }
    text = table(results, args, (time.perf_counter() - start) / 60)
    print(text)
    if args.write:
        replace_section(args.write, "transfer", text)
        print(f"wrote the table into {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
