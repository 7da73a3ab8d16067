"""The build's clock per stage, and its local pool of threads."""

import threading
import time

import pytest

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
    with pytest.raises(ValueError, match="unknown stage"):
        with StageClock().stage("lunch"):
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
