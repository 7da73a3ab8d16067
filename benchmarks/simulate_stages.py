"""Where a ``ccfkit simulate`` frame's time goes: CPU milliseconds per frame of each
stage, one thread, 259 x 259, default physics.

Usage (from the repository root; ``--tree`` measures another checkout, e.g. the
one before a change, with this script)::

    .venv/bin/python benchmarks/simulate_stages.py --frames 400 --rounds 5
    .venv/bin/python benchmarks/simulate_stages.py --tree /tmp/sim-base

Stages, each timed over the same ``--frames`` frames, the best of ``--rounds``:

* ``parameters + labels``: :func:`draw_parameters`, ``visible_radius``, the
  fringe and partner features, ``assign_labels``;
* ``expected counts``: :func:`expected_counts` (the default engine of that
  checkout);
* ``Poisson noise``: the noise generators of the frames and ``_poisson_rows``
  (:mod:`ccfkit.simulate.rendering`);
* ``render_frames``: expected counts, noise and (none by default) MCP in one
  call, in blocks of 8 as ``write_simulated`` renders them;
* ``HDF5 write``: ``ccfkit.io.cxi._write_block`` of those blocks into a new
  file of the CXI layout.

CPU time of this process (``time.process_time``), so other processes on a
shared machine slow the stages down less than they slow wall time, but they
still do (caches, memory bandwidth): compare checkouts in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", default=None, help="a checkout whose ccfkit is measured")
    args = parser.parse_args(argv)
    if args.tree:
        sys.path.insert(0, os.path.abspath(args.tree))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import h5py
    import numpy as np

    import ccfkit
    from ccfkit import simulate as sim
    from ccfkit.io import cxi

    try:
        from ccfkit.simulate.rendering import _poisson_rows
    except ImportError:  # a checkout from before the simulator was a package
        _poisson_rows = sim._poisson_rows

    config = sim.SimulationConfig()
    detector = config.detector
    good = detector.good_pixels()
    n, block = args.frames, 8
    params = sim.draw_parameters(config, 0, np.arange(n))
    blocks = [params.take(slice(lo, lo + block)) for lo in range(0, n, block)]
    sim.render_frames(blocks[0], config, 0, good)  # compile / load the kernels

    def labels():
        p = sim.draw_parameters(config, 0, np.arange(n))
        visible = sim.visible_radius(p, detector)
        shift = sim.fringe_shift(p, detector, visible)
        sim.assign_labels(p, detector, shift, sim.partner_features(p, detector, visible))

    def expected():
        for one in blocks:
            sim.expected_counts(one, config, good)

    expected_frames = [sim.expected_counts(one, config, good) for one in blocks]

    def noise():
        for one, lam in zip(blocks, expected_frames):
            rngs = [
                np.random.Generator(np.random.SFC64(np.random.SeedSequence([0, int(i), 1])))
                for i in one.index
            ]
            _poisson_rows(lam.reshape(len(one), -1), rngs)

    def render():
        for one in blocks:
            sim.render_frames(one, config, 0, good)

    rendered = [sim.render_frames(one, config, 0, good) for one in blocks]

    tmp = tempfile.mkdtemp()

    def write():
        path = os.path.join(tmp, "stages.h5")
        with h5py.File(path, "w") as handle:
            data = handle.create_dataset(
                "data", shape=(n, *detector.shape), dtype=np.float32, chunks=(1, *detector.shape)
            )
            for lo, frames in zip(range(0, n, block), rendered):
                cxi._write_block(data, lo, frames)
        os.remove(path)

    stages = {
        "parameters + labels": labels,
        "expected counts": expected,
        "Poisson noise": noise,
        "render_frames": render,
        "HDF5 write": write,
    }
    best = {name: float("inf") for name in stages}
    for _ in range(args.rounds):
        for name, stage in stages.items():
            start = time.process_time()
            stage()
            best[name] = min(best[name], time.process_time() - start)
    os.rmdir(tmp)
    print(f"ccfkit from {os.path.dirname(ccfkit.__file__)}; {n} frames, best of {args.rounds}")
    print("| stage | CPU ms per frame |\n|---|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {1e3 * seconds / n:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
