"""Writes that run behind the computation (ccfkit.store.write_behind)."""

from __future__ import annotations

import threading
import time

import pytest

from ccfkit.store import WriteBehind


def test_write_behind_runs_jobs_in_order_and_bounds_the_queue():
    done, started = [], threading.Event()
    release = threading.Event()

    def slow(i):
        def job():
            started.set()
            release.wait(5)
            done.append(i)

        return job

    with WriteBehind(depth=2) as writes:
        writes.submit(slow(0))
        started.wait(5)
        writes.submit(slow(1))  # queued: 2 pending
        blocked = threading.Thread(target=writes.submit, args=(slow(2),))
        blocked.start()
        time.sleep(0.1)
        assert blocked.is_alive()  # a third waits for a slot
        release.set()
        blocked.join(5)
    assert done == [0, 1, 2]  # leaving the block waited for all of them


def test_write_behind_reports_errors():
    def failing():
        raise OSError("disk full")

    writes = WriteBehind(depth=1)
    writes.submit(failing)
    with pytest.raises(OSError, match="disk full"):
        writes.flush()
    with pytest.raises(OSError, match="disk full"):
        writes.submit(lambda: None)
    with pytest.raises(OSError, match="disk full"), writes:
        pass
    with pytest.raises(ValueError):
        WriteBehind(depth=0)
