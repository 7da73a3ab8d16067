"""Accuracy of ``--center auto`` (centro-symmetry) on simulated frames with known centres.

Usage: ``.venv/bin/python benchmarks/center_accuracy.py [--frames 200] [--jitter 6]``

Simulates frames whose beam centres are drawn in a disc of radius ``--jitter``
pixels around the detector middle, then estimates

- the centre of every single non-empty frame (``estimate_center`` on one frame), and
- one centre from all frames together (what ``ccfkit build --center auto``
  does), against the mean of the true centres,

and prints the errors in pixels.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import h5py
import numpy as np

from ccfkit.center import estimate_center
from ccfkit.io.source import good_pixels
from ccfkit.simulate import SimulationConfig
from ccfkit.simulate.cxi_file import write_simulated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--jitter", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    config = SimulationConfig(jitter=args.jitter, mix="sphere=0.4,oblate=0.3,prolate=0.3")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.cxi"
        write_simulated(path, config, args.frames, args.seed, progress=False)
        with h5py.File(path, "r") as handle:
            frames = handle["entry_1/data_1/data"][()]
            truth = handle["entry_1/instrument_1/detector_1/beam_center"][()]
            mask, _ = good_pixels(handle["entry_1/instrument_1/detector_1/mask"][()])
            labels = handle["entry_1/labels"]
            empty = labels[:, list(labels.attrs["names"]).index("empty")].astype(bool)
    single = np.array([estimate_center(frame, mask) for frame in frames[~empty]])
    errors = np.hypot(*(single - truth[~empty]).T)
    together = np.array(estimate_center(frames, mask))
    print(f"{args.frames} frames, centres within {args.jitter} px of the middle, seed {args.seed}")
    print(
        f"single non-empty frame ({(~empty).sum()}): median error {np.median(errors):.3f} px, 95th percentile "
        f"{np.percentile(errors, 95):.3f} px, max {errors.max():.3f} px"
    )
    print(
        f"all frames together vs the mean true centre: "
        f"{np.hypot(*(together - truth.mean(axis=0))):.3f} px"
    )


if __name__ == "__main__":
    main()
