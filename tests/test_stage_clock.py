"""The build's clock per stage, and its local pool of threads."""

import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import zarr
from conftest import write_cxi

from ccfkit import pipeline
from ccfkit.stage_clock import STAGES, StageClock


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_stages_add_up_the_cpu_time_of_every_thread():
    clock = StageClock()

    def work():
        with clock.stage("maps"):
            _spin(0.05)

    # each thread times its own work: two threads spinning 0.05 s CPU each are 0.1 s in all
    workers = [threading.Thread(target=work) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert 0.1 <= clock.cpu["maps"] < 0.5
    assert clock.wall["maps"] >= clock.cpu["maps"] * 0.99
    with clock.stage("waiting"):
        time.sleep(0.05)  # waiting takes wall time, hardly any CPU
    assert clock.wall["waiting"] >= 0.05 and clock.cpu["waiting"] < 0.03
    assert all(clock.cpu[name] == 0.0 for name in STAGES if name not in ("maps", "waiting"))
    line = clock.summary(process_cpu=1.0)
    assert line.startswith("reading 0.00 s CPU") and line.endswith(" s CPU")
    rest = float(line.rsplit("other threads ", 1)[1].split()[0])
    assert rest == pytest.approx(1.0 - clock.cpu["maps"] - clock.cpu["waiting"], abs=0.01)


def test_an_unknown_stage_is_refused():
    with pytest.raises(ValueError, match="unknown stage"), StageClock().stage("lunch"):
        pass


def test_the_thread_pool_returns_results_in_chunk_order():
    done = []
    results = pipeline._run_on_threads(
        lambda chunk, scale: (time.sleep(0.01 * (chunk % 3)), chunk * scale)[1],
        range(7), (10,), 3, done.append,
    )  # fmt: skip
    assert results == [0, 10, 20, 30, 40, 50, 60]
    assert sorted(done) == results


def test_the_thread_pool_raises_the_first_error_and_drops_the_chunks_not_started():
    started = []

    def task(chunk):
        started.append(chunk)
        if chunk == 1:
            raise KeyboardInterrupt  # as Ctrl-C in a task
        time.sleep(0.02)
        return chunk

    with pytest.raises(KeyboardInterrupt):
        pipeline._run_on_threads(task, range(200), (), 2, lambda result: None)
    assert 1 in started and len(started) < 200


def test_a_local_build_imports_no_dask_and_logs_every_stage(tmp_path):
    """Locally the tasks run on the thread pool: Dask is not imported (its import is start-up)."""
    frames = np.random.default_rng(0).random((12, 40, 40), dtype=np.float32) * 100
    cxi = write_cxi(tmp_path / "in.cxi", frames)
    out = tmp_path / "out.zarr"
    script = (
        "import sys; from ccfkit.cli import main; "
        f"main(['-v', 'build', {str(cxi)!r}, {str(out)!r}, '--noise', 'max', '--q-bins', '8', "
        "'--phi-bins', '16', '--chunk', '4', '--workers', '2', '--quiet'], standalone_mode=False); "
        "print('DASK' if any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules) "
        "else 'NO-DASK')"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.split()[-1] == "NO-DASK"
    line = next(s for s in result.stderr.splitlines() if "stages: " in s)
    seconds = dict(re.findall(r"(\w+) ([0-9.]+) s CPU / [0-9.]+ s wall", line))
    assert sorted(seconds) == sorted(STAGES)
    assert float(seconds["maps"]) > 0 and float(seconds["statistics"]) > 0
    assert "statistics pass: 12 frames" in result.stderr and "map pass: 12 frames" in result.stderr
    assert zarr.open_group(str(out), mode="r").attrs["status"] == "complete"
