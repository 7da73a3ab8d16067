"""CPU and wall seconds per stage of a build, summed over the threads that run it.

A build's threads (the map tasks, the background writer) each time their own
stages with their own CPU clock (``time.thread_time``), so the figures add
up across threads and do not depend on what else runs on the machine as much
as wall time does (docs/performance.md, the build's stages). Work done in
threads the build does not own (zarr's I/O loop encodes and writes the
chunks handed to it) is not in any stage: :meth:`StageClock.summary` reports
it as the rest of the process's CPU time.
"""

from __future__ import annotations

import contextlib
import threading
import time

__all__ = ["STAGES", "StageClock"]

#: The stages of a build, in the order they are reported.
STAGES = ("reading", "statistics", "noise", "maps", "writing", "waiting")


class StageClock:
    """Thread CPU seconds and wall seconds per stage, summed over threads (thread-safe).

    Examples
    --------
    >>> clock = StageClock()
    >>> with clock.stage("noise"):
    ...     pass
    >>> sorted(clock.cpu) == sorted(STAGES)
    True
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.cpu = dict.fromkeys(STAGES, 0.0)
        self.wall = dict.fromkeys(STAGES, 0.0)

    @contextlib.contextmanager
    def stage(self, name: str):
        """Time the block as stage ``name`` (one of :data:`STAGES`) on the calling thread."""
        if name not in self.cpu:
            raise ValueError(f"unknown stage {name!r}; expected one of {STAGES}")
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
            with self._lock:
                self.cpu[name] += cpu
                self.wall[name] += wall

    def summary(self, process_cpu: float) -> str:
        """One line: each stage's CPU (and wall) seconds, then the rest of ``process_cpu``.

        Parameters
        ----------
        process_cpu : float
            CPU seconds the whole process used over the same span (``time.process_time``
            differences), seconds.
        """
        with self._lock:
            parts = [f"{name} {self.cpu[name]:.2f} s CPU / {self.wall[name]:.2f} s wall"
                     for name in STAGES]  # fmt: skip
            rest = process_cpu - sum(self.cpu.values())
        return "; ".join([*parts, f"other threads {rest:.2f} s CPU"])
