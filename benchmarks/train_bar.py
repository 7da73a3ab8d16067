"""The bar for learning (docs/training.md): does the trainer learn the simulated classes?

Run from the repository root (the full bar; its duration: docs/training.md)::

    python benchmarks/train_bar.py --threads 1 --label full-1thread --write docs/training.md

1. ``ccfkit simulate`` ``--frames`` frames (default 3,000, seed 0), then
   ``ccfkit build`` with ``--noise none``, ``--q-bins``/``--image-size``
   (default 64) and ``--keep-images``, into ``--workdir`` (reused when there).
2. ``trainer fit`` twice, on the CCF maps and on the images, each for at most
   ``--minutes`` (default 20) of training: ResNet-18 (``--width`` 64), batch
   48, lr 0.1 dropped x0.1 every ``--lr-step`` epochs, ``--epochs`` at most,
   the rest of the paper's recipe unchanged; the time limit stops after the
   epoch that passes it.
3. Checks the bar on the evaluation split (15 %, the best-accuracy
   checkpoint): Precision >= 0.85, Recall >= 0.85 and Accuracy at least 10
   points above the all-negative baseline; prints the table and, with
   ``--write FILE``, puts it between the ``<!-- bar:start -->`` and
   ``<!-- bar:end -->`` markers of FILE as an entry of its own, wrapped in
   ``<!-- train-bar:LABEL:begin -->`` / ``<!-- train-bar:LABEL:end -->``
   (``--label`` names the run, e.g. "reduced"): an entry of the same label is
   replaced, everything else there is kept.

Exit status 0 when both arms pass the bar, 1 otherwise.
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

from harness import BIN, MEASURED_MAP_OPTIONS, sh

START, END = "<!-- bar:start -->", "<!-- bar:end -->"


def make_store(workdir: Path, args) -> Path:
    cxi, store = workdir / "bar.cxi", workdir / "bar.zarr"
    workdir.mkdir(parents=True, exist_ok=True)
    if not cxi.exists():
        sh(BIN / "ccfkit", "simulate", cxi, "--n", args.frames, "--seed", 0, "--quiet")
    if not store.exists():
        sh(BIN / "ccfkit", "build", cxi, store, "--noise", "none", "--q-bins", args.size,
           "--phi-bins", args.phi_bins, "--keep-images", "--image-size", args.size,
           *MEASURED_MAP_OPTIONS, "--quiet")  # fmt: skip
    return store


def train(store: Path, workdir: Path, arm: str, args) -> dict:
    run_dir = workdir / f"run-{arm}-{args.label}"
    cmd = [BIN / "trainer", "fit", store, "--input", arm, "--epochs", args.epochs,
           "--lr-step", args.lr_step, "--batch-size", 48, "--width", args.width,
           "--max-minutes", args.minutes, "--workers", args.workers, "--run-dir", run_dir,
           "--overwrite", "--quiet"]  # fmt: skip
    if args.threads:
        cmd += ["--threads", args.threads]
    t0 = time.perf_counter()
    sh(*cmd)
    wall = time.perf_counter() - t0
    report = json.loads((run_dir / "report.json").read_text())
    best = report["best_checkpoint"]
    baseline = report["all_negative_accuracy"]
    passed = (
        best["precision"] >= 0.85
        and best["recall"] >= 0.85
        and best["accuracy"] >= baseline + 0.10
    )
    return {
        "arm": arm,
        "epochs": report["epochs_run"],
        "best_epoch": best["epoch"] + 1,
        "minutes": wall / 60,
        "accuracy": best["accuracy"],
        "precision": best["precision"],
        "recall": best["recall"],
        "violations": best["violation_rate"],
        "final_accuracy": report["final"]["accuracy"],
        "baseline": baseline,
        "passed": passed,
        "run_dir": str(run_dir),
    }


def table(rows: list[dict], args) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        (
            f"**{args.label}** run, {when}, {platform.node()} ({os.cpu_count()} CPUs, torch threads "
            f"{args.threads or 'default'}): {args.frames} simulated frames (seed 0), noise none, "
            f"{args.size} x {args.size} CCF maps (P = {args.phi_bins}) and {args.size} x {args.size} "
            f"images, eval split 15 %; ResNet-18 width {args.width}, batch 48, lr 0.1 x0.1 every "
            f"{args.lr_step} epochs, at most {args.epochs} epochs or {args.minutes} min of training. "
            "Metrics of the best-accuracy checkpoint on the eval split."
        ),
        "",
        "| input | epochs run (best) | minutes | accuracy | all-negative | precision | recall"
        + " | violations | final accuracy | bar |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arm']} | {r['epochs']} ({r['best_epoch']}) | {r['minutes']:.1f} "
            f"| {r['accuracy']:.4f} | {r['baseline']:.4f} | {r['precision']:.4f} "
            f"| {r['recall']:.4f} | {r['violations']:.4f} | {r['final_accuracy']:.4f} "
            f"| {'pass' if r['passed'] else 'FAIL'} |"
        )
    cmd = "python benchmarks/train_bar.py " + " ".join(sys.argv[1:])
    lines += ["", f"Command: `{cmd}`"]
    return "\n".join(lines)


def entry_markers(label: str) -> tuple[str, str]:
    """The HTML comments that begin and end the entry of run ``label``."""
    if "--" in label or "\n" in label:
        raise SystemExit(f"--label {label!r}: no '--' or line breaks (it goes into a comment)")
    return f"<!-- train-bar:{label}:begin -->", f"<!-- train-bar:{label}:end -->"


def with_entry(doc: str, text: str, label: str) -> str:
    """``doc`` with the entry of ``label`` between START and END set to ``text``.

    Parameters
    ----------
    doc : str
        A Markdown document with the ``START`` and ``END`` markers.
    text : str
        The entry (Markdown; tables and rules are fine, nothing is split on them).
    label : str
        The run's label: an entry wrapped in its markers is replaced in place,
        otherwise the entry is appended before ``END``. Anything else between
        the markers (other entries, hand-written text) is kept as it is.

    Returns
    -------
    str
        The new document.
    """
    if START not in doc or END not in doc:
        raise ValueError(f"no {START} ... {END} markers")
    head, rest = doc.split(START, 1)
    body, tail = rest.split(END, 1)
    begin, end = entry_markers(label)
    entry = f"{begin}\n{text.strip()}\n{end}"
    before, found, after = body.partition(begin)
    if found and end in after:
        body = before + entry + after.split(end, 1)[1]
    else:
        body = f"{body.rstrip()}\n\n{entry}\n"
    return f"{head}{START}{body}{END}{tail}"


def write_into(path: Path, text: str, label: str) -> None:
    """Put ``text`` into ``path`` as the entry of ``label`` (see :func:`with_entry`)."""
    try:
        path.write_text(with_entry(path.read_text(), text, label))
    except ValueError as error:
        raise SystemExit(f"{path}: {error}") from error


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--size", type=int, default=64, help="Q of the maps and side of the images.")
    p.add_argument("--phi-bins", type=int, default=256)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr-step", type=int, default=15)
    p.add_argument("--minutes", type=float, default=20.0)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--arms", default="ccf,images")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/train_bar"))
    p.add_argument("--label", default="full")
    p.add_argument("--write", type=Path, default=None, help="Markdown file with the markers.")
    args = p.parse_args(argv)
    store = make_store(args.workdir, args)
    rows = [train(store, args.workdir, arm, args) for arm in args.arms.split(",")]
    text = table(rows, args)
    print(text)
    (args.workdir / f"bar-{args.label}.json").write_text(json.dumps(rows, indent=2))
    if args.write:
        write_into(args.write, text, args.label)
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
