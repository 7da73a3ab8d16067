"""The ``ccfkit`` program (``python -m ccfkit``): the process's thread settings, then the command.

ccfkit runs its own threads: a build's map tasks, Numba's workers, each
calling single-threaded BLAS (docs/performance.md, "Threads"). OpenBLAS,
loaded with NumPy and SciPy, would start a pool of its own on every core,
whose threads only wait, and spin while they wait, beside ours. The program
owns its process, so it asks OpenBLAS for one thread before NumPy is
imported; a value the user set is kept. Importing :mod:`ccfkit` as a library
changes nothing in the caller's process.
"""

from __future__ import annotations

import os

#: Set before NumPy loads OpenBLAS (it reads them once), unless already set.
PROCESS_ENVIRONMENT = {"OPENBLAS_NUM_THREADS": "1"}


def run() -> None:
    """Set :data:`PROCESS_ENVIRONMENT` where unset, then run :func:`ccfkit.cli.run`."""
    for name, value in PROCESS_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    from .cli import run as command  # NumPy (and OpenBLAS) load here, after the settings

    command()


if __name__ == "__main__":
    run()
