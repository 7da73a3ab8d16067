"""The machine and versions a result records (ccfkit.provenance)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np

import ccfkit
from ccfkit import provenance


def test_usable_cpus_is_the_affinity_where_there_is_one():
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert provenance.usable_cpus() == expected >= 1


def test_the_cpu_model_is_lscpus_model_name(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core\n"
        "flags\t\t: fpu avx2\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13 64-Core\n"
    )
    assert provenance.cpu_model(cpuinfo) == "AMD EPYC 7B13 64-Core"
    fallback = platform.processor() or platform.machine() or "unknown"
    assert provenance.cpu_model(tmp_path / "missing") == fallback
    (tmp_path / "arm").write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")  # no model name
    assert provenance.cpu_model(tmp_path / "arm") == fallback


def test_versions_are_read_without_importing():
    versions = provenance.package_versions(["numpy", "surely-not-installed-ccfkit-probe"])
    assert versions == {"numpy": np.__version__,
                        "surely-not-installed-ccfkit-probe": "not installed"}  # fmt: skip


def test_the_environment_names_versions_and_machine():
    env = provenance.environment(("numpy", "zarr"))
    assert env["ccfkit"] == ccfkit.__version__ and env["numpy"] == np.__version__
    assert env["python"] == platform.python_version() and env["host"] == platform.node()
    assert env["cpu"] == provenance.cpu_model()
    assert env["usable_cpus"] == provenance.usable_cpus()
    assert set(env) == {"ccfkit", "numpy", "zarr", "python", "host", "platform", "cpu",
                        "usable_cpus"}  # fmt: skip


def test_provenance_is_light():
    code = (
        "import sys, ccfkit.provenance as p; p.environment(('numba', 'dask', 'torch')); "
        "print([m for m in ('numba', 'dask', 'torch', 'zarr') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == "[]"
