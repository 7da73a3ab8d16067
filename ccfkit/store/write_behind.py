"""Writes that run behind the computation.

A chunk's write waits for the disk (an ``O_DIRECT`` write blocks until the
device has it) or for the store's own threads (zarr's). :class:`WriteBehind`
hands the write to a background thread and lets the task return, so that the
next chunk is computed while the last one is written. The number of writes in flight is bounded (their
chunks stay in memory until written), errors surface at the next
:meth:`~WriteBehind.submit` or at :meth:`~WriteBehind.flush`, and leaving the
``with`` block waits for every write, also on an interruption: a chunk is
marked done only by its own write job, after its data, so an interrupted
build stays resumable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

__all__ = ["WriteBehind"]


class WriteBehind:
    """Run write jobs on one background thread, at most ``depth`` pending.

    Parameters
    ----------
    depth : int
        Jobs submitted but not finished before :meth:`submit` waits.

    Examples
    --------
    >>> with WriteBehind(depth=2) as writes:
    ...     writes.submit(lambda: None)
    """

    def __init__(self, depth: int = 2):
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._slots = threading.BoundedSemaphore(depth)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ccfkit-write")
        self._pending: set[Future] = set()
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], object]) -> None:
        """Queue ``job``; blocks while ``depth`` jobs are pending; raises an earlier job's error."""
        self._raise_error()
        self._slots.acquire()
        future = self._executor.submit(job)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._finished)

    def flush(self) -> None:
        """Wait for every submitted job; raise the first error of any."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.exception()  # waits; the callback records errors
        self._raise_error()

    def _finished(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)
            if self._error is None and not future.cancelled() and future.exception() is not None:
                self._error = future.exception()
        self._slots.release()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> WriteBehind:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc_info) -> None:
        self._executor.shutdown(wait=True)  # finish what was queued, also after an error
        if exc_info[0] is None:
            self._raise_error()
