"""The machine and the software a result was made with, described once.

Stores (``environment``, docs/store-layout.md), run directories, studies and
benchmark reports record where they were made through these functions. The
module is light on purpose (the standard library only: package versions are
read from their installed metadata, not by importing them), so a reader of
stores or a command line can describe the machine without loading Numba,
Dask or PyTorch.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

__all__ = ["cpu_model", "environment", "machine", "package_versions", "usable_cpus"]

#: Where Linux describes the processors.
CPUINFO = Path("/proc/cpuinfo")


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity where the OS has one (Linux), else all."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The processor's model name, as ``lscpu`` shows it (``model name`` of ``cpuinfo``).

    Where there is no such file (other operating systems) or line, what
    :mod:`platform` knows (e.g. ``"arm"``, ``"x86_64"``).
    """
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """The installed version of each distribution in ``names`` (``"not installed"`` if absent).

    Read from the packages' metadata: nothing is imported.
    """
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine() -> dict[str, str | int]:
    """The host, operating system, Python, processor model and usable CPUs of this process."""
    return {
        "python": platform.python_version(),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "usable_cpus": usable_cpus(),
    }


def environment(packages: Iterable[str] = ("numpy",)) -> dict[str, str | int]:
    """Provenance of a result: ccfkit's and ``packages``' versions, and :func:`machine`.

    Parameters
    ----------
    packages : iterable of str
        Distribution names besides ccfkit (e.g. ``("numpy", "numba", "dask", "zarr")``).

    Returns
    -------
    dict
        JSON-ready: ``{"ccfkit": version, <package>: version, ..., "python", "host",
        "platform", "cpu", "usable_cpus"}``.
    """
    from ._version import __version__

    return {"ccfkit": __version__, **package_versions(packages), **machine()}
