"""Check and time the trainer on a CUDA machine (sibling of gpu_check.py).

Run from the repository root::

    python benchmarks/train_gpu_check.py [--size 224] [--batch-size 48]

1. Times a training step of ResNet-18 (width 64, 11 classes) on random
   ``--size`` x ``--size`` inputs: fp32 and AMP + channels-last, samples/s.
2. Runs ``trainer fit`` for 2 epochs on a small simulated store on the GPU
   (``--device cuda``), then ``trainer evaluate``, checking that it runs and
   writes its run directory.

Without a CUDA device it prints ``no CUDA device: nothing to check`` and exits
0. Well under 5 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=48)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    from trainer.loop import step_throughput
    from trainer.model import ModelConfig

    cfg = ModelConfig(num_classes=11)
    out = {"device": torch.cuda.get_device_name(0), "size": args.size, "batch": args.batch_size}
    for name, amp in (("fp32", False), ("amp_channels_last", True)):
        r = step_throughput(cfg, (args.size, args.size), batch_size=args.batch_size,
                            steps=args.steps, device="cuda", amp=amp, channels_last=amp)  # fmt: skip
        out[f"step_samples_per_s_{name}"] = round(r["samples_per_s"], 1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(
            [BIN / "ccfkit", "simulate", tmp / "s.cxi", "--n", "256", "--quiet"], check=True
        )
        subprocess.run([BIN / "ccfkit", "build", tmp / "s.cxi", tmp / "s.zarr", "--q-bins", "64",
                        "--phi-bins", "128", "--quiet"], check=True)  # fmt: skip
        subprocess.run([BIN / "trainer", "fit", tmp / "s.zarr", "--epochs", "2", "--device",
                        "cuda", "--run-dir", tmp / "run", "--quiet"], check=True)  # fmt: skip
        subprocess.run([BIN / "trainer", "evaluate", tmp / "run", "--device", "cuda"], check=True)
        out["fit_ok"] = (tmp / "run" / "report.json").is_file()
    print(json.dumps(out, indent=2))
    return 0 if out["fit_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
