"""The few-label curve: K labelled frames of a new source, with and without simulator pretraining.

Run from the repository root (about 10 minutes on the shared 2-core CPU)::

    nice -n 10 .venv/bin/python benchmarks/few_labels.py --write docs/study.md

1. ``ccfkit simulate`` a pretraining set A (``--pretrain-frames``, seed 0: the
   simulator's default configuration) and a target set B (``--target-frames``,
   seed 1) made otherwise (:data:`TARGET`: another distance and angular
   range, vertical polarisation, ten times fewer photons, a smaller hole, an
   MCP detector); ``ccfkit build`` both with one recipe (``--size`` x
   ``--size`` CCF maps, noise none) into ``--workdir`` (reused when there).
2. ``trainer fit`` on A (ResNet-18 of ``--width``): the pretrained run.
3. B gets one split (seed 0): 60 % training, 5 % validation, 35 % test,
   shared by every arm (``--split``). For each K in ``--ks`` and each seed,
   ``trainer fit B --train-frames K --seed S`` from scratch and with
   ``--init`` the pretrained run; "all" trains on the whole training split.
   Every arm takes about the same number of optimiser steps
   (``--steps``; epochs = steps / batches per epoch).
4. Each run's last checkpoint is scored on B's test split (the validation
   split of a few-label run is no larger than its training set in practice,
   so no checkpoint is chosen on it); the pretrained run alone (K = 0) too.
   Mean and standard deviation over the seeds; with ``--write FILE`` the table
   goes between ``<!-- few-labels:begin -->`` and ``<!-- few-labels:end -->``.

The runs are made in this process through ``trainer.loop.fit`` (the API
behind ``trainer fit``), one torch thread each (``--threads``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from harness import BIN, MEASURED_MAP_OPTIONS, cpu_model, load_average, replace_section, sh

#: The target source: ``ccfkit simulate`` options that differ from the defaults.
TARGET = (
    "distance 0.1 m, max angle 22 deg, vertical polarisation, fluence 1e4-1e5, hole 6 px, MCP",
    ["--distance", 0.1, "--max-angle", 22, "--polarization", "vertical",
     "--fluence", 1e4, 1e5, "--hole", 6, "--mcp"],
)  # fmt: skip
METRICS = ("accuracy", "precision", "recall", "class_recall")


def make_store(workdir: Path, name: str, frames: int, seed: int, options, args) -> Path:
    """Simulate and build one set unless it is there already."""
    cxi, store = workdir / f"{name}.cxi", workdir / f"{name}.zarr"
    if not cxi.exists():
        sh(BIN / "ccfkit", "simulate", cxi, "--n", frames, "--seed", seed, "--size", args.det,
           "--quiet", *options)  # fmt: skip
    if not store.exists():
        sh(BIN / "ccfkit", "build", cxi, store, "--noise", "none", "--q-bins", args.size,
           "--phi-bins", 128, *MEASURED_MAP_OPTIONS, "--quiet")  # fmt: skip
    return store


def score(run: Path, store: Path, rows: np.ndarray) -> dict:
    """Micro accuracy, precision, recall and the mean recall of the classes on ``rows``."""
    from trainer.data import ChunkBatchSampler, StoreDataset, inspect_store, make_loader
    from trainer.inference import load_run
    from trainer.loop import predict_probabilities
    from trainer.metrics import all_negative_accuracy, compute_metrics

    model, _, _ = load_run(run, "last", "cpu")
    info = inspect_store(store)
    loader = make_loader(StoreDataset(str(store), "ccf"),
                         ChunkBatchSampler(rows, info.chunk_frames, 64, shuffle=False), 0)  # fmt: skip
    probs, labels, _, _ = predict_probabilities(model, loader, torch.device("cpu"))
    metrics = compute_metrics(labels, probs >= 0.5, info.label_names, info.exclusive_groups)
    present = [row.recall for row in metrics.per_class if row.support]
    return {
        "accuracy": metrics.accuracy, "precision": metrics.precision, "recall": metrics.recall,
        "class_recall": float(np.mean(present)), "all_negative": all_negative_accuracy(labels),
    }  # fmt: skip


def arm_config(store: Path, split: Path, k, seed: int, init, freeze: int, args):
    """The TrainConfig of one arm: K frames (None: all) drawn with ``seed``, from ``init``."""
    from trainer.config import TrainConfig

    frames = args.train_rows if k is None else k
    batches = 1 if frames <= args.batch else frames // args.batch  # full batches (drop_last)
    return TrainConfig(
        store=str(store), split_file=str(split), train_frames=k, seed=seed,
        init=None if init is None else str(init), freeze=freeze,
        epochs=max(1, round(args.steps / batches)), lr=args.lr, lr_step=10**6,
        batch_size=args.batch, workers=0, device="cpu", threads=args.threads,
    )  # fmt: skip


def arms(args, pretrained: Path) -> dict:
    """The starts compared: ``{name: (init run or None, stages frozen)}``."""
    starts = {"from scratch": (None, 0), "pretrained": (pretrained, 0)}
    if args.freeze:
        starts[f"pretrained, {args.freeze} stages frozen"] = (pretrained, args.freeze)
    return starts


def run_arms(args, stores: dict, pretrained: Path, split: dict, split_file: Path) -> dict:
    """``{(k, start, seed): scores}`` for every arm (:func:`arms`), trained when missing."""
    from trainer.data import inspect_store
    from trainer.loop import fit
    from trainer.model import ModelConfig

    model = ModelConfig(num_classes=len(inspect_store(stores["B"]).label_names), width=args.width)
    results = {}
    for k in args.ks:
        for arm, (init, freeze) in arms(args, pretrained).items():
            for seed in args.seeds:
                run = args.workdir / "runs" / f"{arm.replace(' ', '_')}-k{k or 'all'}-s{seed}"
                if not (run / "last.pt").exists():
                    cfg = arm_config(stores["B"], split_file, k, seed, init, freeze, args)
                    fit(run, model, cfg, progress=False, overwrite=True)
                results[(k, arm, seed)] = score(run, stores["B"], split["test"])
                print(f"K {k or 'all'} {arm} seed {seed}: {results[(k, arm, seed)]}", flush=True)
    return results


def pretrain(args, store: Path) -> Path:
    """The run on set A that the pretrained arms start from."""
    from trainer.config import TrainConfig
    from trainer.data import inspect_store
    from trainer.loop import fit
    from trainer.model import ModelConfig

    run = args.workdir / "runs" / "pretrain-A"
    if not (run / "last.pt").exists():
        model = ModelConfig(num_classes=len(inspect_store(store).label_names), width=args.width)
        cfg = TrainConfig(store=str(store), epochs=args.pretrain_epochs, lr=args.lr,
                          lr_step=max(1, args.pretrain_epochs * 2 // 3), batch_size=args.batch,
                          workers=0, device="cpu", threads=args.threads)  # fmt: skip
        fit(run, model, cfg, progress=False, overwrite=True)
    return run


def target_split(store: Path, path: Path) -> dict:
    """B's one split (seed 0): 60 % training, 5 % validation, 35 % test, saved at ``path``.

    The validation split only serves the loop's per-epoch evaluation (no
    checkpoint is chosen on it): small, so that it costs little.
    """
    from trainer.data import inspect_store, save_split, split_three_ways

    split = split_three_ways(inspect_store(store).n_frames, 0.05, 0.35, 0)
    save_split(path, split, 0)
    return split


def _cell(values) -> str:
    values = np.asarray(values, dtype=float)
    spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
    return f"{values.mean():.3f}{spread}"


def table(args, results: dict, zero_shot: dict, split: dict, minutes: float) -> str:
    """The Markdown section: what was run, the table, the command."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Run {when}, {platform.node()} ({cpu_model()}, {torch.get_num_threads()} torch "
        "threads per run, "
        f"load average {load_average()} at the end; the 2 cores shared with other work), "
        f"{minutes:.1f} min in all. Pretraining: {args.pretrain_frames} `ccfkit simulate` frames "
        f"(default configuration, {args.det} x {args.det} detector, seed 0), "
        f"{args.pretrain_epochs} epochs. Target: {args.target_frames} frames simulated with "
        f"{TARGET[0]} (seed 1); one split: {len(split['train'])} training, "
        f"{len(split['validation'])} validation, {len(split['test'])} test frames. "
        f"{args.size} x {args.size} CCF maps (noise none); ResNet-18 width {args.width}, batch "
        f"{args.batch}, lr {args.lr}, about {args.steps} optimiser steps per arm"
        + (f"; frozen: `--freeze {args.freeze}`" if args.freeze else "")
        + f". Last checkpoint scored on the test split; mean ± standard deviation over seeds "
        f"{', '.join(map(str, args.seeds))} (the seed draws the K frames, the fresh weights "
        "and the order).",
        "",
        "| K labelled frames | start | accuracy | precision | recall | class recall |",
        "|---|---|---:|---:|---:|---:|",
        "| 0 | the pretrained run alone | " + " | ".join(
            f"{zero_shot[m]:.3f}" for m in METRICS) + " |",
    ]  # fmt: skip
    for k in args.ks:
        name = f"all ({len(split['train'])})" if k is None else str(k)
        for arm in arms(args, None):
            cells = [_cell([results[(k, arm, s)][m] for s in args.seeds]) for m in METRICS]
            lines.append(f"| {name} | {arm} | " + " | ".join(cells) + " |")
    lines += [
        "",
        (
            f"All-negative accuracy of the test split: {zero_shot['all_negative']:.3f}. Class "
            "recall: the mean recall of the classes present in the test split."
        ),
        "",
        f"Command: `python benchmarks/few_labels.py {' '.join(sys.argv[1:])}`",
    ]
    return "\n".join(lines)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/few_labels"))
    parser.add_argument("--det", type=int, default=128, help="Detector side of both sets (px).")
    parser.add_argument("--size", type=int, default=32, help="Map side.")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--steps", type=int, default=60, help="Optimiser steps per arm.")
    parser.add_argument(
        "--freeze", type=int, default=5, help="Stages frozen in the third arm (0: no such arm)."
    )
    parser.add_argument("--pretrain-frames", type=int, default=800)
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    parser.add_argument("--target-frames", type=int, default=400)
    parser.add_argument("--ks", default="10,25,50,100,all")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", type=Path, default=None, help="Markdown page to update.")
    args = parser.parse_args(argv)
    args.ks = [None if k == "all" else int(k) for k in args.ks.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    return args


def main(argv=None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    stores = {
        "A": make_store(args.workdir, "A", args.pretrain_frames, 0, [], args),
        "B": make_store(args.workdir, "B", args.target_frames, 1, TARGET[1], args),
    }
    split_file = args.workdir / "B-split.npz"
    split = target_split(stores["B"], split_file)
    args.train_rows = len(split["train"])
    pretrained = pretrain(args, stores["A"])
    zero_shot = score(pretrained, stores["B"], split["test"])
    results = run_arms(args, stores, pretrained, split, split_file)
    text = table(args, results, zero_shot, split, (time.perf_counter() - started) / 60)
    print(text)
    if args.write is not None:
        replace_section(args.write, "few-labels", text)


if __name__ == "__main__":
    main()
