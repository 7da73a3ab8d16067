"""The ``ccfkit`` program's process settings (``ccfkit/__main__.py``)."""

import json
import os
import subprocess
import sys

import pytest

#: Runs the program (``--version``), then reports the environment and OpenBLAS's threads.
PROGRAM = """
import json, os, sys
from ccfkit.__main__ import run
sys.argv = ["ccfkit", "--version"]
try:
    run()
except SystemExit:
    pass
import numpy  # loads OpenBLAS, if the command did not
from threadpoolctl import threadpool_info
pools = [i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"]
print(json.dumps({"env": os.environ.get("OPENBLAS_NUM_THREADS"), "openblas": pools}))
"""


def _program(environment: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", PROGRAM], env={**env, **environment},
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert "ccfkit" in result.stdout.splitlines()[0]  # the command ran: its version line
    return json.loads(result.stdout.splitlines()[-1])


def test_the_program_runs_openblas_on_one_thread():
    report = _program({})
    assert report["env"] == "1"
    if not report["openblas"]:  # conda's NumPy may link another BLAS
        pytest.skip("NumPy uses another BLAS than OpenBLAS here")
    assert set(report["openblas"]) == {1}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS caps its threads at the cores")
def test_a_users_openblas_setting_is_kept():
    report = _program({"OPENBLAS_NUM_THREADS": "2"})
    assert report["env"] == "2"
    if not report["openblas"]:
        pytest.skip("NumPy uses another BLAS than OpenBLAS here")
    assert 2 in report["openblas"]


def test_importing_ccfkit_leaves_the_process_alone():
    code = "import ccfkit, ccfkit.cli, os; print(os.environ.get('OPENBLAS_NUM_THREADS'))"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, check=True)  # fmt: skip
    assert result.stdout.strip() == "None"
