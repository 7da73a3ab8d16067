"""What every benchmark shares: the machine, the disturbance of a round, the doc sections.

A benchmark is a script run from the repository root (``python
benchmarks/NAME.py``); Python puts its folder first on ``sys.path``, so the
scripts import this module by name (``from harness import machine``), with no
path edits. Its parts:

* the machine a figure was measured on: :func:`cpu_model` (that of
  :mod:`ccfkit.provenance`, which stores and run directories record too),
  :func:`machine` (CPU, cores, memory, versions, thread pools), :func:`load_average`;
* how disturbed a round was: :func:`cpu_seconds` and :class:`Round` (cores
  used by other processes and stolen by the hypervisor while it ran);
* running the project's commands: :data:`BIN`, :func:`sh`, and the map the
  documented figures were measured with, :data:`MEASURED_MAP` (its ``ccfkit
  build`` options: :data:`MEASURED_MAP_OPTIONS`);
* writing results into the documentation: :func:`replace_section` (the text
  between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` of a page).
"""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ccfkit.provenance import cpu_model, package_versions, usable_cpus

__all__ = [
    "BIN",
    "ENVIRONMENT",
    "MEASURED_MAP",
    "MEASURED_MAP_OPTIONS",
    "Round",
    "cpu_model",
    "cpu_seconds",
    "first_touch_seconds_per_gib",
    "load_average",
    "machine",
    "replace_section",
    "sh",
]

#: The folder of this Python's executables (``ccfkit``, ``trainer``), to run the commands with.
BIN = Path(sys.executable).parent

#: The map the benchmarks' documented figures were measured with, named in full: the
#: build's defaults before they changed to order 2 and the paper's rings (docs/ccf.md,
#: "Defaults"), so that a benchmark run again measures what its page says. Flat recipe
#: parameters (``BuildConfig.from_parameters``) and the same as ``ccfkit build`` options.
MEASURED_MAP = {"orders": (8,), "r_min": "auto", "min_ring_fraction": 0.5}
MEASURED_MAP_OPTIONS = ["--orders", "8", "--r-min", "auto", "--min-ring-fraction", "0.5"]


# --------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------


#: Variables that change which kernels or how many threads the libraries run (OpenBLAS reads
#: ``OPENBLAS_CORETYPE`` instead of asking the CPU; a machine may set it for all its processes).
ENVIRONMENT = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS",
               "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # fmt: skip

#: Touches fresh memory in a new process: prints the seconds per GiB.
FIRST_TOUCH = """
import sys, time
import numpy as np
size = int(sys.argv[1])
start = time.perf_counter()
np.ones(size, dtype=np.uint8)  # allocated from the operating system and written once
print((time.perf_counter() - start) * 2**30 / size)
"""


def first_touch_seconds_per_gib(size: int = 256 << 20, pause: float = 5.0) -> float:
    """Seconds per GiB a new process takes to write memory it never used before.

    Each page of fresh memory costs a fault and the kernel's zeroing (0.09-0.1 s
    per GiB where the memory is backed, measured on this project's VMs with
    memory just freed). A virtual machine whose host takes back the memory its
    guest frees (free page reporting) pays far more for memory that was free a
    few seconds: the host must find a page first, and so does the page cache of
    every file a build writes (docs/performance.md, "The build and the engine
    on an AMD EPYC Zen 5"). The probe waits ``pause`` seconds first, so that
    memory freed just before is not reused.
    """
    time.sleep(pause)
    result = subprocess.run([sys.executable, "-c", FIRST_TOUCH, str(size)], check=True,
                            capture_output=True, text=True)  # fmt: skip
    return float(result.stdout)


def _cpuinfo(field: str) -> str | None:
    """The value of the first ``field`` line of ``/proc/cpuinfo`` (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _thread_pools() -> str:
    """BLAS and OpenMP pools loaded in this process: library, kernels, threads, file."""
    from threadpoolctl import threadpool_info

    pools = []
    for pool in threadpool_info():
        name = pool.get("internal_api", "?")
        version = pool.get("version") or ""
        arch = pool.get("architecture")
        where = os.path.basename(pool.get("filepath", ""))
        pools.append(
            f"{pool.get('user_api')}: {name} {version}".rstrip()
            + (f" ({arch} kernels)" if arch else "")
            + f", {pool.get('num_threads')} threads [{where}]"
        )
    return "; ".join(pools)


def machine() -> dict[str, str]:
    """CPU, cores, memory, library versions and BLAS/OpenMP of this machine.

    Returns
    -------
    dict
        ``CPU`` (model and SIMD flags), ``cores`` (logical, usable),
        ``memory``, ``OS``, ``Python``, ``versions`` (ccfkit, numpy, scipy,
        numba, pyFAI), ``thread pools`` and ``thread environment``.
    """
    info: dict[str, str] = {}
    flags = (_cpuinfo("flags") or "").split()
    simd = [f for f in ("avx2", "avx512f", "fma") if f in flags]
    info["CPU"] = cpu_model() + (f" ({', '.join(simd)})" if simd else "")
    info["cores"] = f"{os.cpu_count()} logical, {usable_cpus()} usable"
    try:
        with open("/proc/meminfo") as meminfo:
            total_kib = int(meminfo.readline().split()[1])
        info["memory"] = f"{total_kib / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    info["OS"] = f"{platform.system()} {platform.release()}"
    info["Python"] = platform.python_version()
    versions = package_versions(("ccfkit", "numpy", "scipy", "numba", "pyFAI"))
    info["versions"] = ", ".join(f"{name} {version}" for name, version in versions.items())
    info["thread pools"] = _thread_pools()
    env = {k: os.environ[k] for k in ENVIRONMENT if k in os.environ}
    info["thread environment"] = ", ".join(f"{k}={v}" for k, v in env.items()) or "none set"
    return info


def load_average() -> str:
    """The 1, 5 and 15 minute load averages from /proc/loadavg ("unknown" elsewhere)."""
    try:
        with open("/proc/loadavg") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------
# How disturbed a round was
# --------------------------------------------------------------------------


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used by every process since boot, and seconds stolen by the hypervisor.

    Read from the first line of ``/proc/stat``; ``(nan, nan)`` where there is none.
    """
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return float("nan"), float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


@dataclass
class Round:
    """What else happened on the machine during one round.

    Attributes
    ----------
    others : float
        Cores used by other processes, on average over the round.
    steal : float
        Cores taken by the hypervisor (steal time), on average.
    """

    others: float
    steal: float

    @classmethod
    def between(cls, before: tuple[float, float], after: tuple[float, float], own: float,
                seconds: float) -> Round:  # fmt: skip
        """From two :func:`cpu_seconds` readings, the CPU seconds ``own`` used meanwhile by
        the measured processes, and the wall ``seconds`` between the readings."""
        (busy0, steal0), (busy1, steal1) = before, after
        return cls(
            others=max(0.0, (busy1 - busy0) - own) / seconds, steal=(steal1 - steal0) / seconds
        )

    @property
    def disturbance(self) -> float:
        """Cores not available to the benchmark (NaN counts as none)."""
        total = self.others + self.steal
        return 0.0 if math.isnan(total) else total


# --------------------------------------------------------------------------
# Commands and documentation
# --------------------------------------------------------------------------


def sh(*args) -> None:
    """Run a command (printed first, with ``+``); a failure raises ``CalledProcessError``."""
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True)


def replace_section(page: Path | str, name: str, text: str, *, before: str | None = None) -> None:
    """Put ``text`` between the ``name`` markers of ``page``.

    A rerun of a benchmark replaces its own section and leaves the prose
    around it as it is.

    Parameters
    ----------
    page : path
        A markdown file; created (with a title) when missing.
    name : str
        The section's name in its markers.
    text : str
        The section, without the markers.
    before : str, optional
        Where a page has no such section yet, the new one goes before the first
        line that starts with this text (a heading, say); at the end otherwise.
    """
    page = Path(page)
    doc = page.read_text(encoding="utf-8") if page.exists() else "# Performance\n"
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.strip(chr(10))}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: block, doc, count=1)
    else:
        anchor = re.search("^" + re.escape(before), doc, re.MULTILINE) if before else None
        if anchor:
            doc = doc[: anchor.start()] + block + "\n\n" + doc[anchor.start() :]
        else:
            doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    page.write_text(doc, encoding="utf-8")
