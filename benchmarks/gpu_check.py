"""Check and time ccfkit's CuPy backend on a CUDA machine.

Run from the repository root::

    python benchmarks/gpu_check.py                    # tests + timings
    python benchmarks/gpu_check.py --write gpu.md     # also write the table

1. Runs the CuPy contract tests against the NumPy reference
   (``pytest tests -m cuda -q``, in a subprocess).
2. Times ``ccfkit.compute_maps(..., backend="cupy")`` on 259 x 259 float32
   images, Q = 224, P = 512, order 8: with the images already on the GPU
   (CuPy input, timed with CUDA events) and from host memory (NumPy input and
   output, wall time, transfers included); and ``backend="numba"`` on the
   host for comparison (fewer images). Checks that CuPy and Numba agree.

Without CuPy or a CUDA device it prints ``no CUDA device: nothing to check``
and exits 0. Exit status otherwise: 0 when the tests pass and the backends
agree, 1 when something failed. The whole run takes well under 5 minutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from asv_bench.images import ORDER, PHI_BINS, Q_BINS, SHAPE, make_images  # benchmarks/ on path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # ccfkit from this checkout even if not installed

#: Largest max |cupy - numba| tolerated on merged maps in [-1, 1] (docs/ccf.md, backends and precision: ~1e-5 relative).
AGREEMENT = 1e-4
#: Seconds the contract tests may take before they are stopped.
TEST_TIMEOUT = 180


def cuda_status():
    """Whether CuPy and a usable CUDA device are present.

    Returns
    -------
    cupy : module or None
        The imported CuPy, or None when there is nothing to check.
    reason : str
        Why not (empty when ``cupy`` is usable).
    """
    try:
        import cupy
    except Exception as error:  # noqa: BLE001 - ImportError, or a broken CUDA install
        return None, f"CuPy is not importable ({type(error).__name__}: {error})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # noqa: BLE001 - CUDARuntimeError: no driver, no device
        return None, f"CUDA is not usable ({type(error).__name__}: {error})"
    if count < 1:
        return None, "CuPy sees no CUDA device"
    return cupy, ""


def describe_device(cupy) -> list[str]:
    """Lines naming the GPU, its memory and the CUDA/CuPy versions."""
    device = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(device.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    free, total = device.mem_info
    runtime = cupy.cuda.runtime.runtimeGetVersion()
    driver = cupy.cuda.runtime.driverGetVersion()
    return [
        (
            f"GPU {device.id}: {name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free), "
            f"compute capability {props['major']}.{props['minor']}"
        ),
        (
            f"CUDA runtime {runtime // 1000}.{runtime % 1000 // 10}, driver {driver // 1000}."
            f"{driver % 1000 // 10}; CuPy {cupy.__version__}; NumPy {np.__version__}"
        ),
    ]


def smoke_test(cupy) -> None:
    """Compile and run one elementwise kernel and one cuBLAS call (raises on failure)."""
    a = cupy.arange(12, dtype=cupy.float32).reshape(3, 4)
    assert float((a * 2).sum()) == 132.0
    assert float((a @ a.T)[0, 0]) == 14.0
    cupy.cuda.Device().synchronize()


def run_contract_tests(extra: list[str]) -> int:
    """``pytest tests -m cuda -q`` in a subprocess from the repository root.

    Returns
    -------
    int
        pytest's exit status (5: no test collected; -1: timed out; -2: pytest missing).
    """
    import importlib.util

    if (
        importlib.util.find_spec("pytest") is None
        or importlib.util.find_spec("hypothesis") is None
    ):
        print("pytest and hypothesis are needed for the contract tests (pip install -e '.[dev]')")
        return -2
    command = [sys.executable, "-m", "pytest", "tests", "-m", "cuda", "-q", *extra]
    print(f"$ {' '.join(command)}   (in {ROOT})", flush=True)
    path = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
    try:
        return subprocess.run(
            command, cwd=ROOT, env=env, timeout=TEST_TIMEOUT, check=False
        ).returncode
    except subprocess.TimeoutExpired:
        print(f"contract tests stopped after {TEST_TIMEOUT} s", flush=True)
        return -1


def maps(images, backend):
    """``compute_maps`` with the benchmark's parameters."""
    import ccfkit

    return ccfkit.compute_maps(
        images, order=ORDER, q_bins=Q_BINS, phi_bins=PHI_BINS, backend=backend
    )


def time_gpu_resident(cupy, images_gpu, backend, rounds: int, call=None) -> list[float]:
    """Seconds per call on GPU-resident input, by CUDA events around the call.

    The events bracket everything the call queues on the current stream; the
    end event is waited for, so the figure includes all GPU work (and the
    host-side plan build, which the GPU waits for). ``call(images)`` replaces
    ``compute_maps`` when given.
    """
    call = call or (lambda images: maps(images, backend))
    seconds = []
    for _ in range(rounds):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        cupy.cuda.Device().synchronize()
        start.record()
        out = call(images_gpu)
        end.record()
        end.synchronize()
        seconds.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
        del out
    return seconds


def time_host(images, backend, rounds: int, sync=None) -> list[float]:
    """Wall seconds per call on host (NumPy) input; the result comes back to the host."""
    seconds = []
    for _ in range(rounds):
        if sync:
            sync()
        start = time.perf_counter()
        out = maps(images, backend)
        np.asarray(out).sum()  # the maps are on the host and complete
        seconds.append(time.perf_counter() - start)
    return seconds


def agreement(cupy, images, cupy_backend) -> float:
    """max |cupy - numba| of merged maps (both triangles scaled to [-1, 1])."""
    on_gpu = maps(cupy.asarray(images), cupy_backend)
    return float(np.max(np.abs(cupy.asnumpy(on_gpu) - maps(images, "numba"))))


def table(rows: list[tuple[str, int, list[float]]]) -> str:
    """Markdown table of (label, images, seconds per round) rows."""
    lines = [
        "| what | images | images/s (median) | images/s (range) | ms/image |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, count, seconds in rows:
        rates = [count / s for s in seconds]
        median = count / statistics.median(seconds)
        lines.append(
            f"| {label} | {count} | {median:,.0f} | {min(rates):,.0f}–{max(rates):,.0f} "
            f"| {1e3 / median:.4f} |"
        )
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--images", type=int, default=4096, help="images per GPU call")
    parser.add_argument("--cpu-images", type=int, default=512, help="images per Numba call")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per row")
    parser.add_argument("--skip-tests", action="store_true", help="only time, run no tests")
    parser.add_argument("--write", metavar="PATH", help="also write the Markdown report here")
    parser.add_argument(
        "pytest_args", nargs="*", help="extra pytest arguments (after --), e.g. -x"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cupy, reason = cuda_status()
    if cupy is None:
        print(f"no CUDA device: nothing to check ({reason})")
        return 0
    started = time.perf_counter()
    report = ["# ccfkit GPU check", ""]
    report += [f"- {line}" for line in describe_device(cupy)]
    print("\n".join(report[2:]), flush=True)
    try:
        smoke_test(cupy)
    except Exception as error:  # noqa: BLE001 - reported, and the check fails
        print(f"CUDA device present but not working: {type(error).__name__}: {error}")
        return 1

    failed = []
    if not args.skip_tests:
        status = run_contract_tests(args.pytest_args)
        verdict = {
            0: "passed",
            5: "NO TESTS COLLECTED",
            -1: "TIMED OUT",
            -2: "NOT RUN (pytest missing)",
        }.get(status, "FAILED")
        report.append(f"- contract tests `pytest tests -m cuda -q`: {verdict} (exit {status})")
        if status not in (0, 5):
            failed.append("contract tests")

    import ccfkit
    from ccfkit.backends import BackendUnavailableError, get_backend

    try:
        gpu = get_backend("cupy")
    except BackendUnavailableError as error:
        print(f"CUDA works but ccfkit's cupy backend does not: {error}")
        return 1
    report.append(f"- backend: {gpu!r}, GPU batch {gpu.batch_size} images per step")
    print(f"making {args.images} images of {SHAPE[0]} x {SHAPE[1]} ...", flush=True)
    images = make_images(args.images)
    images_gpu = cupy.asarray(images)

    # Warm-up: kernels compile (and cache) on first use; cuBLAS creates its handle.
    maps(images_gpu[: min(len(images), gpu.batch_size)], gpu)
    maps(images[:2], gpu)
    maps(images[:2], "numba")
    cupy.cuda.Device().synchronize()

    difference = agreement(cupy, images[:8], gpu)
    ok = difference <= AGREEMENT
    report.append(
        f"- agreement cupy vs numba on 8 images: max |diff| {difference:.1e} "
        f"({'ok' if ok else f'ABOVE {AGREEMENT:g}'})"
    )
    if not ok:
        failed.append("agreement")

    rows = []
    resident = time_gpu_resident(cupy, images_gpu, gpu, args.rounds)
    rows.append(("cupy, images on the GPU (CuPy in and out, CUDA events)", args.images, resident))
    plan = ccfkit.make_polar_plan(SHAPE, q_bins=Q_BINS, phi_bins=PHI_BINS)
    fused = time_gpu_resident(
        cupy, images_gpu, gpu, args.rounds, call=lambda x: gpu.merged_maps(x, plan, order=ORDER)
    )
    rows.append(("the same, plan built once (`backend.merged_maps`)", args.images, fused))
    host = time_host(images, gpu, args.rounds, sync=cupy.cuda.Device().synchronize)
    rows.append(("cupy, images from host memory (NumPy in and out, wall)", args.images, host))
    cpu_images = images[: args.cpu_images]
    numba = time_host(cpu_images, "numba", args.rounds)
    rows.append(
        (
            f"numba on the host, {os.cpu_count()} CPUs (NumPy in and out, wall)",
            len(cpu_images),
            numba,
        )
    )
    pool = cupy.get_default_memory_pool()
    report.append(
        f"- CuPy memory pool after the timings: {pool.used_bytes() / 2**30:.2f} GiB used, "
        f"{pool.total_bytes() / 2**30:.2f} GiB held"
    )
    del images_gpu
    pool.free_all_blocks()

    report += [
        "",
        (
            f"{SHAPE[0]} × {SHAPE[1]} float32, Q = {Q_BINS}, P = {PHI_BINS}, order {ORDER}; "
            f"median of {args.rounds} calls per row, ccfkit {ccfkit.__version__}."
        ),
        "",
    ]
    report.append(table(rows))
    speedup = statistics.median(
        [(args.images / r) / (len(cpu_images) / n) for r, n in zip(resident, numba)]
    )
    report += [
        "",
        f"images/s of GPU-resident cupy ÷ host numba: {speedup:.1f}×.",
        f"Total time of this check: {time.perf_counter() - started:.0f} s.",
    ]
    text = "\n".join(report) + "\n"
    print()
    print(text)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        print(f"wrote {args.write}")
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
