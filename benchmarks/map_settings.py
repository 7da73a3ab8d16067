"""What the map settings of docs/ccf.md cost: usable rings, estimators, scalings, orders.

One process per measurement, interleaved over rounds, one Numba thread each
(BLAS held to one thread), timed in CPU seconds of that thread (maps per
CPU-second: steady on a machine shared with other work, where wall time is
not), 259 x 259 float32 images of
:func:`asv_bench.images.make_images` with a central detector hole of radius
12 px (the common case) and, for the mask-corrected estimator where every
ring is partial, the real SACLA mask (300 x 300) when it is beside the
repository. ``--baseline TREE`` also runs the engine of another checkout
(for example ``git worktree add /tmp/before <commit>``) on the same images,
so the page can say how the default engine compares with an earlier one.

Usage
-----
::

    .venv/bin/python benchmarks/map_settings.py --rounds 5 --baseline /tmp/before
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from harness import cpu_model

REPO = Path(__file__).resolve().parents[1]
SACLA_MASK = REPO.parent / "shared" / "data" / "sacla" / "test_mask.npy"

#: name -> (engine keyword arguments, mask kind, tree: "new" or "baseline")
CASES = {
    "before (baseline tree), hole": ({}, "hole", "baseline"),
    "ring estimator, maxabs (defaults), hole": ({}, "hole", "new"),
    "r_min auto, hole": ({"r_min": "auto"}, "hole", "new"),
    "scale ring, hole": ({"scale": "ring"}, "hole", "new"),
    "orders (8, 2), hole": ({"orders": (8, 2)}, "hole", "new"),
    "mask-corrected, hole": ({"estimator": "mask-corrected"}, "hole", "new"),
    "mask-corrected, r_min auto, hole": (
        {"estimator": "mask-corrected", "r_min": "auto"},
        "hole",
        "new",
    ),
    "ring estimator, SACLA mask": ({}, "sacla", "new"),
    "mask-corrected, SACLA mask": ({"estimator": "mask-corrected"}, "sacla", "new"),
}

#: The measurement run in a fresh process (PYTHONPATH selects the tree).
CHILD = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {bench!r})
from asv_bench.images import make_images
import ccfkit
from ccfkit.backends.numba import NumbaBackend
kw, kind, count = json.loads({args!r})
if kind == "sacla":
    mask = np.load({sacla!r})
    images = make_images(count, mask.shape)
    center = (152.0, 151.0)
else:
    images = make_images(count)
    y, x = np.mgrid[:259, :259]
    mask = np.hypot(x - 129, y - 129) > 12
    center = (129.0, 129.0)
if "orders" in kw:
    kw["orders"] = tuple(kw["orders"])
backend = NumbaBackend(threads=1)
call = lambda batch: ccfkit.compute_maps(batch, mask=mask, center=center, backend=backend, **kw)
call(images[:2])  # compile, plan, tables
start = time.thread_time()
call(images)
print(json.dumps(count / (time.thread_time() - start)))
"""


def measure(kw: dict, kind: str, tree: Path, count: int) -> float:
    """Maps per CPU-second of one case in a fresh process running ``tree``'s ccfkit."""
    code = CHILD.format(
        bench=str(REPO / "benchmarks"), args=json.dumps([kw, kind, count]), sacla=str(SACLA_MASK)
    )
    env = {**os.environ, "PYTHONPATH": str(tree), "NUMBA_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=64, help="images per fast case")
    parser.add_argument("--slow-images", type=int, default=8, help="per mask-corrected case")
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout's root")
    parser.add_argument("--only", default="", help="cases whose name contains this text")
    args = parser.parse_args()
    cases = {
        name: case
        for name, case in CASES.items()
        if (case[2] == "new" or args.baseline)
        and (case[1] != "sacla" or SACLA_MASK.is_file())
        and args.only in name
    }
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(args.rounds):
        names = list(cases)
        names = names[round_ % len(names) :] + names[: round_ % len(names)]  # rotate
        for name in names:
            kw, kind, tree = cases[name]
            count = args.slow_images if "mask-corrected" in name else args.images
            rates[name].append(measure(kw, kind, args.baseline if tree == "baseline" else REPO,
                                       count))  # fmt: skip
    print(f"CPU: {cpu_model()}, one thread")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print()
    print("| case | maps per CPU-second (median) | per round |")
    print("|---|---:|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):,.1f} | "
              f"{', '.join(f'{v:,.0f}' for v in values)} |")  # fmt: skip
    base = "before (baseline tree), hole"
    if base in rates:
        new = "ring estimator, maxabs (defaults), hole"
        ratios = [b / n for b, n in zip(rates[base], rates[new])]
        print(
            f"\ntime of today's defaults / time before, per round: "
            f"{', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}"
        )


if __name__ == "__main__":
    main()
