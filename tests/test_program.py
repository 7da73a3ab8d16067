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


#: Runs a program's entry with ``--help``; at the interpreter's exit, prints how many objects are frozen.
EXIT_PROBE = """
import atexit, gc, sys
from {module} import {function} as program
atexit.register(lambda: print("frozen", gc.get_freeze_count()))
sys.argv = ["program", "--help"]
program()
"""


@pytest.mark.parametrize("entry", ["ccfkit.__main__:run", "trainer.cli:run"])
def test_the_programs_freeze_their_objects_before_the_exit(entry):
    module, function = entry.split(":")
    code = EXIT_PROBE.format(module=module, function=function)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert "Usage:" in result.stdout  # the command ran
    assert int(result.stdout.rsplit("frozen", 1)[1]) > 1000  # its imports are out of the last GC


def test_the_console_scripts_are_the_programs():
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    scripts = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    assert scripts == {"ccfkit": "ccfkit.__main__:run", "trainer": "trainer.cli:run"}
