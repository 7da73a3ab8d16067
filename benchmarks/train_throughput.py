"""Does the input pipeline keep the model busy? Loader samples/s vs a training step.

Run from the repository root::

    python benchmarks/train_throughput.py STORE [--input ccf|images] [--workers 2]
        [--batch-size 48] [--arch 18] [--width 64] [--device auto] [--threads N]

Prints the samples per second of (a) the DataLoader alone (the chunk-aware
sampler and StoreDataset, with 0 and with ``--workers`` spawned workers; the
first batch, i.e. worker start-up, excluded) and (b) one training step of the
network on random data of the store's frame shape (forward, BCE + L1 + L2,
backward, SGD; AMP and channels-last on a GPU). The loader keeps up when (a)
with workers exceeds (b).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--input", default="ccf", choices=["ccf", "images"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--arch", type=int, default=18)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from trainer.data import inspect_store, loader_throughput
    from trainer.loop import step_throughput
    from trainer.model import ModelConfig

    info = inspect_store(args.store, need_labels=False, input_kind=args.input)
    normalize = "max" if args.input == "images" else "none"
    flips = args.input == "images"
    result = {"store": info.path, "input": args.input, "shape": info.shapes[args.input],
              "batch_size": args.batch_size, "torch_threads": torch.get_num_threads()}  # fmt: skip
    for workers in sorted({0, args.workers}):
        r = loader_throughput(args.store, args.input, batch_size=args.batch_size,
                              workers=workers, batches=args.batches, flips=flips,
                              normalize=normalize)  # fmt: skip
        result[f"loader_samples_per_s_workers{workers}"] = round(r["samples_per_s"], 1)
    cfg = ModelConfig(num_classes=max(1, len(info.label_names)), arch=args.arch, width=args.width)
    step = step_throughput(cfg, info.shapes[args.input], batch_size=args.batch_size,
                           steps=args.steps, device=args.device)  # fmt: skip
    result["step_samples_per_s"] = round(step["samples_per_s"], 1)
    result["device"] = args.device
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
