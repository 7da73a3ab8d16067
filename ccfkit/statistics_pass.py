"""A build's statistics pass: each frame's mean, std and max, each chunk's digest.

:func:`chunk_statistics` is one task of the pass (a store chunk's frames).
The map pass needs every frame's statistics first: their medians set the
noise bound (docs/build.md, "Noise"). Before either pass a build sets itself
up on one thread (the polar plan, with Numba's first compilation, the
backend, the store): ~0.4 s in which the other cores idle
(docs/performance.md). The statistics pass reads nothing but the input, so
:class:`StatisticsAhead` starts it right away, one task per store chunk on
the build's worker threads, beside the set-up; the build takes the results
when it is ready for them. They are the pass's own: the same function on the
same chunks and mask (:meth:`StatisticsAhead.matches`; the build runs the
pass again where they differ). A build that stops during its set-up stops
the pass (:meth:`StatisticsAhead.stop`: chunks not begun are dropped, the
running ones end); an error in a task is raised where the build takes the
results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed

import numpy as np
from tqdm.auto import tqdm

from .digest import frames_digest
from .noise import frame_statistics
from .stage_clock import StageClock, timed_stage

__all__ = ["StatisticsAhead", "chunk_slices", "chunk_statistics", "pieces_statistics"]

logger = logging.getLogger(__name__)


def chunk_statistics(frames: slice, reader, mask: np.ndarray | None,
                     clock: StageClock | None = None) -> tuple[np.ndarray, int]:  # fmt: skip
    """(n, 3) mean, std and max of the valid pixels of each of ``frames``; their digest.

    Parameters
    ----------
    frames : slice
        Frames of ``reader`` (a store chunk's).
    reader : FrameReader
        The input.
    mask : (H, W) bool array or None
        Good pixels.
    clock : StageClock, optional
        Where to add the time of reading and of the statistics.
    """
    with timed_stage(clock, "reading"):
        pieces = reader.pieces(frames.start, frames.stop)
    with timed_stage(clock, "statistics"):  # and the frames' digest, one more pass over them
        return pieces_statistics(pieces, mask), frames_digest(pieces)


def pieces_statistics(pieces: list[np.ndarray], mask: np.ndarray | None) -> np.ndarray:
    """(n, 3) :func:`~ccfkit.noise.frame_statistics` of consecutive ``(n_i, H, W)`` pieces."""
    return np.concatenate([frame_statistics(piece, mask) for piece in pieces])


def chunk_slices(n_frames: int, chunk_frames: int) -> tuple[slice, ...]:
    """The frames of each store chunk, in order (``StoreLayout.chunk_slice``'s)."""
    return tuple(
        slice(lo, min(lo + chunk_frames, n_frames)) for lo in range(0, n_frames, chunk_frames)
    )


class StatisticsAhead:
    """The statistics pass of a local build, running on threads of its own.

    Use :meth:`start`; then :meth:`results` (waits) or :meth:`stop`.

    Attributes
    ----------
    frames : tuple of slice
        The frames of each task (one per store chunk).
    mask : (H, W) bool array or None
        The good pixels the statistics were taken over.
    clock : StageClock
        The tasks' time per stage (the build's map tasks add theirs).
    """

    def __init__(self, statistics: Callable, reader, mask: np.ndarray | None,
                 frames: tuple[slice, ...], workers: int):  # fmt: skip
        self.frames, self.mask, self.clock = frames, mask, StageClock()
        self._cpu, self._thread_cpu = time.process_time(), time.thread_time()
        self._started = time.perf_counter()
        self._ended = self._started
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="ccfkit-statistics")
        self._futures: list[Future] = [
            self._pool.submit(statistics, part, reader, mask, self.clock) for part in frames
        ]
        for future in self._futures:
            future.add_done_callback(self._note_end)

    @classmethod
    def start(cls, statistics: Callable, reader, mask: np.ndarray | None, chunk_frames: int,
              workers: int) -> StatisticsAhead:  # fmt: skip
        """Start ``statistics(frames, reader, mask, clock)`` on every chunk of ``reader``.

        Parameters
        ----------
        statistics : callable
            ``(frames: slice, reader, mask, clock) -> (stats, digest)``, the
            build's statistics task (:func:`chunk_statistics`).
        reader : FrameReader
            The input's frames.
        mask : (H, W) bool array or None
            Good pixels.
        chunk_frames : int
            Frames per store chunk (one task each).
        workers : int
            Threads.
        """
        frames = chunk_slices(reader.shape[0], chunk_frames)
        return cls(statistics, reader, mask, frames, workers)

    def matches(self, frames: tuple[slice, ...], mask: np.ndarray | None) -> bool:
        """Whether the pass is over these chunks' frames and this mask."""
        if (self.mask is None) != (mask is None):
            return False
        same_mask = self.mask is None or np.array_equal(self.mask, mask)
        return tuple(frames) == self.frames and same_mask

    def results(self, progress: bool = True) -> list:
        """Each task's result, in order, once all have ended (a progress bar meanwhile).

        Logs the pass's own duration (``statistics pass: N frames in S s``).
        Raises the first error of a task, after the tasks have stopped.
        """
        n_frames = sum(part.stop - part.start for part in self.frames)
        sizes = {
            future: part.stop - part.start for future, part in zip(self._futures, self.frames)
        }
        bar = tqdm(total=n_frames, desc="statistics", unit="frame", disable=not progress,
                   smoothing=0.1)  # fmt: skip
        try:
            for future in as_completed(self._futures):
                future.result()
                bar.update(sizes[future])
        except BaseException:
            self.stop()
            raise
        finally:
            bar.close()
        self._pool.shutdown(wait=True)
        seconds = self._ended - self._started
        logger.info("statistics pass: %d frames in %.2f s (%.0f frames/s), beside the set-up",
                    n_frames, seconds, n_frames / max(seconds, 1e-9))  # fmt: skip
        return [future.result() for future in self._futures]

    def cpu_baseline(self) -> float:
        """A ``time.process_time()`` origin for the build's CPU from the pass's start on.

        Called by the thread that started the pass, when its set-up is done:
        the pass's start, moved on by that thread's own CPU since (the
        set-up, logged on its own), so that ``time.process_time() -
        cpu_baseline()`` counts the pass's tasks and everything after the
        set-up (:meth:`ccfkit.stage_clock.StageClock.summary`).
        """
        return self._cpu + (time.thread_time() - self._thread_cpu)

    def stop(self) -> None:
        """Drop the tasks not begun, wait for the running ones to end."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _note_end(self, future: Future) -> None:
        """Keep the time the last task ended (a done-callback)."""
        self._ended = max(self._ended, time.perf_counter())
