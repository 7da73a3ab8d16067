"""What a build pays before its first frame: the libraries' imports and Numba's first compilation.

Run from the repository root (each measurement in a fresh interpreter)::

    .venv/bin/python benchmarks/start_up.py [--runs 3]

Prints, per run, the wall seconds of importing each library a build loads,
in the order it loads them, then of compiling one ``@numba.njit`` function
(Numba's first compilation in a process loads its registries), and their
sum: the floor under ``ccfkit build``'s start-up (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from harness import cpu_model

from ccfkit.__main__ import PROCESS_ENVIRONMENT

#: Measured in one fresh interpreter: each step's import, then the first compilation.
PROBE = """
import time
steps = [("NumPy", "import numpy"), ("click, tqdm", "import click, tqdm"),
         ("h5py, hdf5plugin", "import h5py, hdf5plugin"), ("zarr", "import zarr"),
         ("Numba", "import numba"), ("SciPy's BLAS module", "import scipy.linalg.cython_blas"),
         ("Numba's first compilation",
          "f = numba.njit(cache=False)(lambda x: x + 1); f(1)")]
scope, out = {}, []
for name, code in steps:
    start = time.perf_counter()
    exec(code, scope)
    out.append(f"{name} {time.perf_counter() - start:.3f}")
print("; ".join(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{cpu_model()}; seconds, each run a fresh interpreter")
    for _ in range(args.runs):
        environment = {**PROCESS_ENVIRONMENT, **os.environ}  # as the program sets it
        line = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True,
                              text=True, env=environment).stdout.strip()  # fmt: skip
        total = sum(float(part.rsplit(" ", 1)[1]) for part in line.split("; "))
        print(f"{line}; sum {total:.3f}")


if __name__ == "__main__":
    main()
