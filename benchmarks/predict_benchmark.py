"""Sorting frames straight from a CXI file: frames/s and where the time goes.

Simulates frames (``ccfkit simulate``, 259 x 259), builds a small training
store and fits the paper's ResNet-18 on it for one epoch (the weights do not
matter for speed), then runs :func:`ccfsort.sorting.predict_frames` on the
frames of a second file and prints frames/s with the seconds spent reading,
mapping (on the worker thread, overlapping the model) and in the model.

Usage
-----
::

    .venv/bin/python benchmarks/predict_benchmark.py --frames 512 --q-bins 224
    .venv/bin/python benchmarks/predict_benchmark.py --frames 4096 --device cuda   # a GPU
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner
from harness import MEASURED_MAP_OPTIONS, cpu_model


def _invoke(main, *args) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exit_code != 0:
        raise SystemExit(result.output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=512, help="frames to sort")
    parser.add_argument("--q-bins", type=int, default=224)
    parser.add_argument("--width", type=int, default=64, help="ResNet width (64: the paper's)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()

    from ccfkit.cli import main as ccfkit_main
    from ccfsort.sorting import predict_frames
    from trainer.config import TrainConfig
    from trainer.loop import fit
    from trainer.model import ModelConfig

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _invoke(ccfkit_main, "simulate", root / "train.cxi", "--n", "64", "--seed", "1", "--quiet")
        _invoke(ccfkit_main, "simulate", root / "sort.cxi", "--n", args.frames, "--seed", "2",
                "--quiet")  # fmt: skip
        _invoke(ccfkit_main, "build", root / "train.cxi", root / "train.zarr", "--q-bins",
                args.q_bins, *MEASURED_MAP_OPTIONS, "--quiet")  # fmt: skip
        fit(root / "run", ModelConfig(num_classes=6, width=args.width),
            TrainConfig(store=str(root / "train.zarr"), epochs=1, batch_size=32, workers=0,
                        device=args.device), progress=False)  # fmt: skip
        predict_frames(
            root / "run",
            [root / "sort.cxi"],
            device=args.device,
            backend=args.backend,
            batch_size=args.batch_size,
            progress=False,
        )  # warm
        result = predict_frames(root / "run", [root / "sort.cxi"], device=args.device,
                                backend=args.backend, batch_size=args.batch_size,
                                progress=False)  # fmt: skip
    seconds = result["seconds"]
    n = len(result["index"])
    print(f"CPU: {cpu_model()}, {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.1f}; "
          f"device {args.device}; Python {platform.python_version()}")  # fmt: skip
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print()
    print("| frames | Q | width | frames/s | read s | maps s | model s | total s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {n} | {args.q_bins} | {args.width} | {n / seconds['total']:,.0f} | "
          f"{seconds['read']:.2f} | {seconds['maps']:.2f} | {seconds['model']:.2f} | "
          f"{seconds['total']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
