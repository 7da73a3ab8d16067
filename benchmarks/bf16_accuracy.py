"""How far ``precision="bf16"`` moves the full map from the float64 reference.

For each image set, the polar values of the NumPy reference are multiplied
three ways and divided by the same pair counts (Eq. 13):

* float64 (the reference);
* bf16 inputs, float32 sums, **bfloat16 output**: what the CPU path returns
  (PyTorch/oneDNN on AMX or AVX512-BF16). Computed here by the same PyTorch
  call, which emulates bf16 where the CPU lacks it: same roundings;
* bf16 inputs, **float32 output**: what the GPU path returns (cuBLAS with
  float32 output), computed as the float64 product of the inputs rounded to
  bfloat16 (the GPU differs only in the order of its float32 sums).

It prints the max and median relative error per entry (``i >= j``, entries
with a non-zero reference) and the largest change of a maxabs-scaled merged
map entry (maps in [-1, 1]), for these products and for the maps of
``compute_maps(..., backend="numba", precision="bf16")`` (the engine's own
path; float32 where the CPU has no bfloat16 units, see the printed CPU). Speed is not measured here (see gpu_check.py and
performance.py).

Usage
-----
::

    .venv/bin/python benchmarks/bf16_accuracy.py --sacla DIR   # DIR: test_img.npy, test_mask.npy
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import h5py
import numpy as np
from asv_bench.images import PHI_BINS, Q_BINS, make_images
from click.testing import CliRunner
from harness import cpu_model

import ccfkit
from ccfkit import ccf, fourier
from ccfkit.backends._bf16 import CPU_BF16_FLAGS, _cpu_flags, lag_product_bf16


def round_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 ``values`` rounded to the nearest bfloat16 (PyTorch's conversion), as float32."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    return tensor.to(torch.bfloat16).to(torch.float32).numpy()


def errors(fast: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(max, median) relative error over ``i >= j`` where the reference is non-zero."""
    lower = np.tril(np.ones(reference.shape[-2:], dtype=bool))
    fast, reference = fast[..., lower], reference[..., lower]
    keep = reference != 0
    relative = np.abs(fast[keep] - reference[keep]) / np.abs(reference[keep])
    return float(relative.max()), float(np.median(relative))


def merged(full: np.ndarray, polar) -> np.ndarray:
    """maxabs-scaled merged maps (order 8) of a full map and the polar images."""
    coefficients = fourier.fourier_reference(polar.values, polar.valid, [0, 8])
    order = ccf.order_map_reference(coefficients[..., 1])
    return ccf.merge_maps_reference(full, order, "maxabs")


def measure(images: np.ndarray, **geometry) -> list[str]:
    """Table cells of one image set: n, then max/median per product, then max |Δ map|."""
    plan = ccfkit.make_polar_plan(images.shape[1:], q_bins=Q_BINS, phi_bins=PHI_BINS, **geometry)
    polar = ccfkit.resample(images.astype(np.float64), plan, backend="numpy")
    pairs = ccf.lag_product(polar.valid.astype(np.float64), 0)
    exact = ccf.divide_by_pairs(ccf.lag_product(polar.values, 0), pairs)
    values32 = polar.values.astype(np.float32)
    cpu = ccf.divide_by_pairs(lag_product_bf16(values32, 0, np).astype(np.float64), pairs)
    rounded = round_to_bf16(values32).astype(np.float64)
    gpu = ccf.divide_by_pairs(ccf.lag_product(rounded, 0), pairs)
    cells = [str(len(images))]
    for product in (cpu, gpu):
        worst, median = errors(product, exact)
        cells += [f"{worst:.1e}", f"{median:.1e}"]
    reference_maps = merged(exact, polar)
    change = max(float(np.abs(merged(p, polar) - reference_maps).max()) for p in (cpu, gpu))
    # the engine's own bf16 path (Numba: values rounded as written, products in blocks)
    engine = ccfkit.compute_maps(images, q_bins=Q_BINS, phi_bins=PHI_BINS, backend="numba",
                                 precision="bf16", **geometry)  # fmt: skip
    engine_change = float(np.abs(engine.reshape(reference_maps.shape) - reference_maps).max())
    return [*cells, f"{change:.1e}", f"{engine_change:.1e}"]


def simulated(count: int) -> np.ndarray:
    """``ccfkit simulate`` frames (259 x 259, default physics, seed 7)."""
    from ccfkit.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.cxi"
        result = CliRunner().invoke(main, ["simulate", str(path), "--n", str(count), "--seed",
                                           "7", "--quiet"])  # fmt: skip
        if result.exit_code != 0:
            raise SystemExit(result.output)
        with h5py.File(path, "r") as handle:
            return handle["entry_1/data_1/data"][:].astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images per synthetic set")
    parser.add_argument("--sacla", metavar="DIR", help="the SACLA frame and mask (.npy) here")
    args = parser.parse_args()
    sets = {
        "benchmark images (asv_bench.images)": (make_images(args.images), {}),
        "ccfkit simulate, default physics": (simulated(args.images), {"r_min": "auto"}),
    }
    if args.sacla:
        frame = np.load(Path(args.sacla) / "test_img.npy").astype(np.float32)[None]
        mask = np.load(Path(args.sacla) / "test_mask.npy")
        sets["SACLA MPCCD frame (real)"] = (frame, {"mask": mask, "center": (152.0, 151.0),
                                                    "r_min": "auto"})  # fmt: skip
    units = ", ".join(sorted(CPU_BF16_FLAGS & _cpu_flags())) or "no bfloat16 units"
    print(f"CPU: {cpu_model()} ({units}); Q = {Q_BINS}, P = {PHI_BINS}; full map (Eq. 13) "
          "against float64")  # fmt: skip
    print()
    print("| images | n | CPU path (bf16 out): max | median | GPU path (float32 out): max "
          "| median | max change of a maxabs map entry | the same, `compute_maps` (numba, bf16) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (images, geometry) in sets.items():
        print(f"| {name} | " + " | ".join(measure(images, **geometry)) + " |")


if __name__ == "__main__":
    main()
