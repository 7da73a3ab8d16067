"""One-thread cost per frame of the build's statistics pass and its scan for unusable pixels.

Run from the repository root, pinned to one core for steadier figures::

    taskset -c 1 .venv/bin/python benchmarks/statistics_pass.py FILE [--frames 640]

``FILE`` is an uncompressed float32 CXI file of frames, as
``benchmarks/build_benchmark.py`` simulates (``sim_6000.cxi`` in its work
folder). Prints, in ms per frame, each the best of ``--repeats`` passes over
the first ``--frames`` frames in pieces of 64 (wall, one thread):

* :func:`ccfkit.noise.frame_statistics` of frames read into memory, and
  straight from the read-only memory-mapped file (``FrameReader.pieces``, as
  the build's statistics pass reads them);
* :func:`ccfkit.noise.unusable_pixel_counts` of frames in memory;
* ``np.max`` of the same frames in memory and mapped: one pass that only reads;

then how far the statistics lie from float64 NumPy over the same frames'
valid pixels (largest relative error of mean and std, and whether the max
is exact).

To compare with another version of the kernels, run the same command with
that version's ``ccfkit/noise.py`` in place (docs/performance.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from harness import cpu_model
from memory_costs import best_seconds

from ccfkit.io.source import open_source
from ccfkit.noise import frame_statistics, unusable_pixel_counts
from ccfkit.polar import HUGE_PIXEL

#: Frames per call, as the build's chunks hand them to the statistics pass.
PIECE = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="an uncompressed float32 CXI file of frames")
    parser.add_argument("--frames", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    source = open_source([args.file])
    reader, mask = source.reader, source.mask
    frames = min(args.frames, reader.shape[0]) // PIECE * PIECE
    starts = range(0, frames, PIECE)
    in_memory = [reader.read(lo, lo + PIECE) for lo in starts]

    def mapped(function):
        return lambda: [function(p) for lo in starts for p in reader.pieces(lo, lo + PIECE)]

    steps = {
        "frame_statistics, frames in memory": lambda: [
            frame_statistics(x, mask) for x in in_memory
        ],
        "frame_statistics, mapped file (FrameReader.pieces)": mapped(
            lambda piece: frame_statistics(piece, mask)
        ),
        "unusable_pixel_counts, frames in memory": lambda: [
            unusable_pixel_counts(x, mask) for x in in_memory
        ],
        "np.max, frames in memory": lambda: [x.max() for x in in_memory],
        "np.max, mapped file": mapped(np.max),
    }
    print(f"{cpu_model()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {frames} frames "
          f"of {reader.frame_shape}, best of {args.repeats}, one thread")  # fmt: skip
    for what, step in steps.items():
        print(f"{what}: {best_seconds(step, args.repeats) / frames * 1e3:.4f} ms/frame")
    print(_against_float64(np.concatenate(in_memory), mask))


def _against_float64(frames: np.ndarray, mask: np.ndarray | None) -> str:
    """Largest relative error of mean and std against float64 NumPy; the max exact or not."""
    stats = frame_statistics(frames, mask)
    good = np.ones(frames.shape[1:], bool) if mask is None else np.asarray(mask, bool)
    errors, exact = [], True
    for frame, (mean, std, top) in zip(frames, stats):
        values = frame[good & (np.abs(frame) < HUGE_PIXEL)].astype(np.float64)  # NaN: False
        errors.append((abs(mean / values.mean() - 1), abs(std / values.std() - 1)))
        exact &= bool(top == values.max())
    mean_error, std_error = np.max(errors, axis=0)
    return (f"against float64 NumPy: mean within {mean_error:.1e}, std within {std_error:.1e} "
            f"(relative, largest of {len(frames)} frames); max exact: {exact}")


if __name__ == "__main__":
    main()
