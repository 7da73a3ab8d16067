#!/bin/bash
# The cost of rings in momentum transfer placed at each frame's own wavelength and distance
# (docs/performance.md, "Rings in q per frame"): 3,000 simulated frames of the default
# simulator (a photon energy per frame) and of --randomize (also a distance per frame),
# each built with pixel radii and with --q-range, Q 224, P 512, order 8, 2 workers.
# Usage: benchmarks/q_per_frame.sh [DIR]   (run from the repository root; DIR: /tmp/qbench)
set -euo pipefail
dir=${1:-/tmp/qbench}
mkdir -p "$dir"
for kind in default random; do
  [ -f "$dir/$kind.cxi" ] || .venv/bin/ccfkit simulate "$dir/$kind.cxi" --n 3000 --seed 1 \
    --quiet $([ $kind = random ] && echo --randomize)
  for rings in pixels q; do
    rm -rf "$dir/$kind-$rings.zarr"
    echo "== $kind $rings"
    .venv/bin/ccfkit -v build "$dir/$kind.cxi" "$dir/$kind-$rings.zarr" --q-bins 224 \
      --phi-bins 512 --orders 8 --min-ring-fraction 0.5 --workers 2 --quiet $([ $rings = q ] && echo --q-range 0.01 0.05) 2>&1 |
      grep -E "geometry groups|build:" || true
    .venv/bin/python -c "import sys, zarr; print(zarr.open_group(sys.argv[1], mode='r')\
.attrs.get('q_placement'))" "$dir/$kind-$rings.zarr"
  done
done
