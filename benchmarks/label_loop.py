"""The labelling loop, measured: label 50 -> fit -> label 50 more (least certain first) -> fit.

A stand-in labeller answers the label page's HTTP interface (``trainer label``,
docs/training.md "Labelling a run") with the simulator's true labels, so the
loop runs unattended. Run from the repository root (a few minutes on the
shared 2-core CPU)::

    nice -n 10 .venv/bin/python benchmarks/label_loop.py --write docs/training.md

1. ``ccfkit simulate`` a pool (``--pool`` frames, seed 0) and a held-out set
   (``--test`` frames, seed 1); ``ccfkit build`` both (``--size`` x
   ``--size`` maps, noise none, ``--keep-images``).
2. Round 1: ``trainer label POOL --out labels.csv`` (no run: random order,
   ``--seed 0``); the labeller takes ``GET /api/next`` and answers
   ``POST /api/labels`` with the frame's true labels, ``--per-round`` times.
   ``trainer fit POOL --labels labels.csv``.
3. Round 2: ``trainer label POOL --run ROUND1 --out labels.csv`` (the same
   table, continued: the frames round 1's model is least sure of first),
   ``--per-round`` more; ``trainer fit --labels`` on all of them. For
   comparison, round 2 is also made in random order into a second table.
4. ``trainer evaluate`` of every run's last checkpoint (the eval split of a few
   labelled frames is too small to choose a checkpoint on) on all of the held-out
   set; with ``--write FILE`` the table goes between ``<!-- label-loop:begin -->``
   and ``<!-- label-loop:end -->`` of FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import zarr
from doc_sections import replace_section
from harness import MEASURED_MAP_OPTIONS
from train_bar import BIN, sh  # one way to run the project's commands from a benchmark

#: Seconds the label server may take to start, and any request to answer.
STARTUP_S, REQUEST_S = 120, 60


def make_store(workdir: Path, name: str, frames: int, seed: int, size: int) -> Path:
    """Simulate and build a set unless it is there already."""
    cxi, store = workdir / f"{name}.cxi", workdir / f"{name}.zarr"
    if not cxi.exists():
        sh(BIN / "ccfkit", "simulate", cxi, "--n", frames, "--seed", seed, "--quiet")
    if not store.exists():
        sh(BIN / "ccfkit", "build", cxi, store, "--noise", "none", "--q-bins", size,
           "--phi-bins", 128, "--keep-images", "--image-size", size, *MEASURED_MAP_OPTIONS,
           "--quiet")  # fmt: skip
    return store


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def call(url: str, body: dict | None = None) -> dict:
    """A JSON answer of the label server (127.0.0.1 only)."""
    assert url.startswith("http://127.0.0.1:")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=REQUEST_S) as response:
        return json.loads(response.read())


def label_round(store: Path, out: Path, count: int, run: Path | None) -> list[int]:
    """Start ``trainer label``, label ``count`` frames through HTTP with the true labels."""
    group = zarr.open_group(str(store), mode="r")
    names, truth = list(group["labels"].attrs["names"]), group["labels"][:]
    port = free_port()
    cmd = [BIN / "trainer", "label", store, "--out", out, "--port", port, "--seed", 0]
    if run is not None:
        cmd += ["--run", run]
    print("+", " ".join(map(str, cmd)), flush=True)
    server = subprocess.Popen([str(c) for c in cmd])
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                call(base + "api/meta")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the label server did not start") from None
                time.sleep(0.5)
        shown = []
        for _ in range(count):
            row = call(base + "api/next")["index"]
            labels = [n for n, v in zip(names, truth[row]) if v]
            call(base + "api/labels", {"index": row, "labels": labels})
            shown.append(row)
        return shown
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=REQUEST_S)


def fit(store: Path, labels: Path, run: Path, args) -> None:
    sh(BIN / "trainer", "fit", store, "--labels", labels, "--epochs", args.epochs,
       "--lr-step", args.lr_step, "--lr", args.lr, "--batch-size", 16, "--width", args.width,
       "--workers", 0, "--threads", args.threads, "--device", "cpu", "--run-dir", run,
       "--overwrite", "--quiet")  # fmt: skip


def evaluate(run: Path, store: Path) -> dict:
    out = run / "heldout.json"
    sh(BIN / "trainer", "evaluate", run, store, "--subset", "all", "--checkpoint", "last",
       "--device", "cpu", "--json", out)  # fmt: skip
    return json.loads(out.read_text())


def table(results: list[tuple[str, int, dict]], args, minutes: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        (
            f"Run {when}, {platform.node()} ({os.cpu_count()} CPUs, torch threads {args.threads}), "
            f"{minutes:.1f} min in all: a pool of {args.pool} simulated frames (seed 0) labelled "
            f"{args.per_round} at a time through the label page's HTTP interface with the "
            f"simulator's true labels; each model scored (last checkpoint: an eval split of 8-15 "
            f"frames is too small to choose one on) on all of a held-out "
            f"set of {args.test} frames (seed 1). {args.size} x {args.size} CCF maps (noise none); "
            f"ResNet-18 width {args.width}, batch 16, lr {args.lr} x0.1 every {args.lr_step} "
            f"epochs, {args.epochs} epochs, 85/15 split of the labelled frames."
        ),
        "",
        (
            "| round | frames labelled | accuracy | precision | recall | mean recall of the "
            "classes | violations | all-negative accuracy |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, labelled, m in results:
        recalls = [row["recall"] for row in m["per_class"] if row["support"]]
        lines.append(
            f"| {name} | {labelled} | {m['accuracy']:.4f} | {m['precision']:.4f} | "
            f"{m['recall']:.4f} | {sum(recalls) / len(recalls):.4f} | "
            f"{m['violation_rate']:.4f} | {m['all_negative_accuracy']:.4f} |"
        )
    lines += [
        "",
        (
            "Micro accuracy, precision and recall over all labels (§3.2); the mean recall of the "
            "classes weighs the rare classes as much as the frequent ones."
        ),
        "",
        "Command: `python benchmarks/label_loop.py " + " ".join(sys.argv[1:]) + "`",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=int, default=600)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--size", type=int, default=32, help="maps are SIZE x SIZE")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--lr-step", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ccfkit_label_loop"))
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)
    pool = make_store(args.workdir, "pool", args.pool, 0, args.size)
    heldout = make_store(args.workdir, "heldout", args.test, 1, args.size)
    labels, runs = args.workdir / "labels.csv", args.workdir / "runs"
    labels.unlink(missing_ok=True)
    n = args.per_round
    label_round(pool, labels, n, None)
    fit(pool, labels, runs / "round1", args)
    random_labels = args.workdir / "labels_random.csv"
    shutil.copyfile(labels, random_labels)
    label_round(pool, labels, n, runs / "round1")  # least certain first
    fit(pool, labels, runs / "round2", args)
    label_round(pool, random_labels, n, None)  # the same round 2 in random order
    fit(pool, random_labels, runs / "round2_random", args)
    results = [
        ("1: random", n, evaluate(runs / "round1", heldout)),
        ("2: least certain of round 1's model", 2 * n, evaluate(runs / "round2", heldout)),
        ("2, for comparison: random", 2 * n, evaluate(runs / "round2_random", heldout)),
    ]
    text = table(results, args, (time.perf_counter() - start) / 60)
    print(text)
    if args.write:
        replace_section(args.write, "label-loop", text)
        print(f"wrote the table into {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
