"""Check and time ccfkit on a CUDA machine: one prepared script for a short GPU lease.

Run from the repository root::

    python benchmarks/gpu_check.py --write gpu.md      # everything
    python benchmarks/gpu_check.py --rehearse          # the same steps on the CPU, small

1. The CuPy contract tests against the NumPy reference
   (``pytest tests -m cuda -q``, in a subprocess).
2. The engine, ``compute_maps(..., backend="cupy")`` on 259 x 259 float32
   images, Q = 224, P = 512, order 8, in both precisions (``float32``,
   ``bf16``): with the images already on the GPU (CUDA events) and from host
   memory (wall time, transfers included); the product floor (the batched
   ``polar @ polar.T`` alone, float32 and bf16) on the same polar values;
   ``backend="numba"`` on the host for comparison. Checks that CuPy and Numba
   agree.
3. The accuracy of ``bf16``: max and median relative error per entry of the
   full map against the float64 reference, on the benchmark images and on
   simulated frames (and on the SACLA frame when ``--sacla DIR`` holds it).
4. ``ccfkit build --backend cupy`` of a simulated file in both precisions
   (frames/s, and the build/engine ratio).
5. ``trainer predict`` straight from the file's frames on the GPU (a model
   fitted for one epoch: the weights do not matter for speed): frames/s and
   where the time goes.

Without CuPy or a CUDA device it prints ``no CUDA device: nothing to check``
and exits 0 (``--rehearse`` runs steps 2-5 on the CPU at small sizes, to check
the script itself). Exit status otherwise: 0 when every step ran and the
tests pass and the backends agree, 1 when something failed; a failed step is
reported and the next one still runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from asv_bench.images import ORDER, PHI_BINS, Q_BINS, SHAPE, make_images  # benchmarks/ on path
from harness import MEASURED_MAP_OPTIONS, cpu_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # ccfkit from this checkout even if not installed

#: Largest max |cupy - numba| tolerated on merged maps in [-1, 1] (docs/ccf.md, backends and precision: ~1e-5 relative).
AGREEMENT = 1e-4
#: Seconds the contract tests may take before they are stopped.
TEST_TIMEOUT = 240
#: The precisions compared.
PRECISIONS = ("float32", "bf16")


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
    """Lines naming the GPU, its memory and the CUDA/CuPy versions (the host CPU too)."""
    lines = [f"host CPU: {cpu_model()}, {os.cpu_count()} CPUs; Python {platform.python_version()}"]
    if cupy is None:
        return lines
    device = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(device.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    free, total = device.mem_info
    runtime = cupy.cuda.runtime.runtimeGetVersion()
    driver = cupy.cuda.runtime.driverGetVersion()
    import torch

    return lines + [
        (
            f"GPU {device.id}: {name}, {total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free), "
            f"compute capability {props['major']}.{props['minor']}"
        ),
        (
            f"CUDA runtime {runtime // 1000}.{runtime % 1000 // 10}, driver {driver // 1000}."
            f"{driver % 1000 // 10}; CuPy {cupy.__version__}; PyTorch {torch.__version__}; "
            f"NumPy {np.__version__}"
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
    command = [sys.executable, "-m", "pytest", "tests", "-m", "cuda", "-q", "-p", "no:cacheprovider",
               *extra]  # fmt: skip
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


def maps(images, backend, precision="float32"):
    """``compute_maps`` with the benchmark's parameters."""
    import ccfkit

    return ccfkit.compute_maps(
        images, order=ORDER, q_bins=Q_BINS, phi_bins=PHI_BINS, backend=backend,
        precision=precision,
    )  # fmt: skip


class Clock:
    """Seconds of a call: CUDA events on the GPU (all queued work), else the wall clock."""

    def __init__(self, cupy=None):
        self.cupy = cupy

    def sync(self) -> None:
        if self.cupy is not None:
            self.cupy.cuda.Device().synchronize()

    def time(self, call, rounds: int) -> list[float]:
        seconds = []
        for _ in range(rounds):
            self.sync()
            if self.cupy is None:
                start = time.perf_counter()
                call()
                seconds.append(time.perf_counter() - start)
                continue
            begin, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
            begin.record()
            call()
            end.record()
            end.synchronize()
            seconds.append(self.cupy.cuda.get_elapsed_time(begin, end) / 1e3)
        return seconds


def wall(call, rounds: int, sync=None) -> list[float]:
    """Wall seconds per call (after ``sync``)."""
    seconds = []
    for _ in range(rounds):
        if sync:
            sync()
        start = time.perf_counter()
        call()
        if sync:
            sync()
        seconds.append(time.perf_counter() - start)
    return seconds


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


def engine_rows(xp, engine, images, rounds: int, clock: Clock, host_backend, cpu_images: int):
    """Timings of the engine in both precisions and of its product floor.

    Returns
    -------
    rows : list of (label, images, seconds)
    rates : dict
        images/s by key, for the ratios.
    """
    import ccfkit
    from ccfkit.backends._bf16 import lag_product_bf16
    from ccfkit.ccf import lag_product

    on_device = xp.asarray(images)
    plan = ccfkit.make_polar_plan(SHAPE, q_bins=Q_BINS, phi_bins=PHI_BINS)
    rows, rates = [], {}
    where = "GPU-resident" if xp is not np else "host"
    for precision in PRECISIONS:
        maps(on_device[:8], engine, precision)  # warm: kernels compile, handles open
        seconds = clock.time(lambda p=precision: maps(on_device, engine, p), rounds)
        rows.append((f"{engine.name} {precision}, images {where} (compute_maps)", len(images),
                     seconds))  # fmt: skip
        rates[f"engine {precision}"] = len(images) / statistics.median(seconds)
    if xp is not np:
        for precision in PRECISIONS:
            seconds = wall(lambda p=precision: np.asarray(engine.to_numpy(maps(images, engine, p))),
                           rounds, clock.sync)  # fmt: skip
            rows.append((f"{engine.name} {precision}, images from host memory (NumPy in and out)",
                         len(images), seconds))  # fmt: skip
    # the floor: the batched product alone, on the same polar values
    values = engine.resample(on_device[: min(len(images), 1024)], plan).values
    values = xp.ascontiguousarray(values, dtype=np.float32)
    for precision, product in (("float32", lag_product), ("bf16", lag_product_bf16)):
        product(values[:8], 0, xp)
        seconds = clock.time(lambda f=product: f(values, 0, xp), rounds)
        rows.append((f"product floor {precision}: batched polar @ polar.T", len(values), seconds))
        rates[f"product {precision}"] = len(values) / statistics.median(seconds)
    cpu = images[:cpu_images]
    maps(cpu[:2], host_backend)
    seconds = wall(lambda: maps(cpu, host_backend), rounds)
    rows.append((f"numba on the host, {os.cpu_count()} CPUs, float32", len(cpu), seconds))
    rates["numba"] = len(cpu) / statistics.median(seconds)
    return rows, rates


def accuracy_rows(engine, sets: dict[str, tuple]) -> list[str]:
    """Markdown rows: bf16 against the float64 reference, per image set."""
    from bf16_accuracy import errors  # benchmarks/ on path

    import ccfkit
    from ccfkit.backends.array import NumpyBackend

    lines = [
        "| images | n | max rel. error | median rel. error | max abs. diff (maxabs maps) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (images, options) in sets.items():
        common = dict(q_bins=Q_BINS, phi_bins=PHI_BINS, **options)
        reference = ccfkit.compute_maps(images, backend=NumpyBackend(), scale="none", **common)
        bf16 = ccfkit.compute_maps(images, backend=engine, scale="none", precision="bf16",
                                   **common)  # fmt: skip
        worst, median = errors(engine.to_numpy(bf16), reference)
        scaled = ccfkit.compute_maps(images, backend=NumpyBackend(), **common)
        scaled_bf16 = engine.to_numpy(
            ccfkit.compute_maps(images, backend=engine, precision="bf16", **common)
        )
        diff = float(np.max(np.abs(scaled_bf16 - scaled)))
        lines.append(f"| {name} | {len(images)} | {worst:.2e} | {median:.2e} | {diff:.2e} |")
    return lines


def simulated_frames(count: int, size: int, seed: int, path: Path) -> Path:
    """``ccfkit simulate`` of ``count`` frames into ``path``."""
    _invoke("ccfkit", "simulate", path, "--n", count, "--size", size, "--seed", seed, "--quiet")
    return path


def _invoke(program: str, *args) -> None:
    from click.testing import CliRunner

    if program == "ccfkit":
        from ccfkit.cli import main
    else:
        from trainer.cli import main
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if result.exit_code != 0:
        raise RuntimeError(f"{program} {' '.join(map(str, args))}: {result.output[-2000:]}")


def build_rows(backend: str, source: Path, work: Path, n: int) -> list[tuple[str, int, list]]:
    """``ccfkit build`` of ``source`` in both precisions: wall seconds (one warm-up build)."""
    rows = []
    common = ["--backend", backend, "--quiet", "--chunk", "256", *MEASURED_MAP_OPTIONS]
    _invoke("ccfkit", "build", source, work / "warm.zarr", *common)
    for precision in PRECISIONS:
        out = work / f"{precision}.zarr"
        start = time.perf_counter()
        _invoke("ccfkit", "build", source, out, *common, "--precision", precision)
        rows.append((f"ccfkit build --backend {backend} --precision {precision}", n,
                     [time.perf_counter() - start]))  # fmt: skip
    return rows


def predict_row(device: str, backend: str, source: Path, work: Path, sort: Path):
    """``predict_frames`` on ``sort`` with a run fitted one epoch on a store of ``source``."""
    from ccfsort.sorting import predict_frames

    _invoke("ccfkit", "build", source, work / "train.zarr", "--backend", backend, "--quiet",
            *MEASURED_MAP_OPTIONS)  # fmt: skip
    _invoke("trainer", "fit", work / "train.zarr", "--epochs", "1", "--batch-size", "64",
            "--workers", "0", "--device", device, "--run-dir", work / "run", "--quiet")  # fmt: skip
    options = {"device": device, "backend": backend, "batch_size": 256, "progress": False}
    predict_frames(work / "run", [sort], **options)  # warm
    result = predict_frames(work / "run", [sort], **options)
    seconds = result["seconds"]
    n = len(result["index"])
    return (
        "| frames | frames/s | read s | maps s | model s | total s |\n|---:|---:|---:|---:|---:|---:|\n"
        f"| {n} | {n / seconds['total']:,.0f} | {seconds['read']:.2f} | {seconds['maps']:.2f} "
        f"| {seconds['model']:.2f} | {seconds['total']:.2f} |"
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--images", type=int, default=4096, help="images per GPU call")
    parser.add_argument("--cpu-images", type=int, default=512, help="images per Numba call")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per row")
    parser.add_argument("--frames", type=int, default=8192, help="frames of the build and predict")
    parser.add_argument("--skip-tests", action="store_true", help="only time, run no tests")
    parser.add_argument("--rehearse", action="store_true",
                        help="no GPU: run steps 2-5 on the CPU at small sizes")  # fmt: skip
    parser.add_argument("--sacla", metavar="DIR", help="test_img.npy and test_mask.npy here")
    parser.add_argument("--write", metavar="PATH", help="also write the Markdown report here")
    parser.add_argument(
        "pytest_args", nargs="*", help="extra pytest arguments (after --), e.g. -x"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cupy, reason = cuda_status()
    if cupy is None and not args.rehearse:
        print(f"no CUDA device: nothing to check ({reason})")
        return 0
    if cupy is None:  # rehearsal: the same steps on the CPU, small
        args.images, args.cpu_images, args.frames, args.rounds = 32, 16, 48, 2
    started = time.perf_counter()
    report = ["# ccfkit GPU check", ""]
    report += [f"- {line}" for line in describe_device(cupy)]
    print("\n".join(report[2:]), flush=True)
    failed = []

    def step(name: str, run) -> None:
        """Run one step; a failure is reported and the script goes on."""
        print(f"\n== {name} ({time.perf_counter() - started:.0f} s)", flush=True)
        try:
            run()
        except Exception as error:  # noqa: BLE001 - reported, and the check fails
            traceback.print_exc()
            report.append(f"\n**{name} FAILED**: {type(error).__name__}: {error}")
            failed.append(name)
        if args.write:  # what ran so far, in case a later step is killed
            Path(args.write).write_text("\n".join(report) + "\n", encoding="utf-8")

    if cupy is not None:
        step("smoke test", lambda: smoke_test(cupy))
    if cupy is not None and not args.skip_tests:

        def tests() -> None:
            status = run_contract_tests(args.pytest_args)
            verdict = {0: "passed", 5: "NO TESTS COLLECTED", -1: "TIMED OUT",
                       -2: "NOT RUN (pytest missing)"}.get(status, "FAILED")  # fmt: skip
            report.append(f"- contract tests `pytest tests -m cuda -q`: {verdict} (exit {status})")
            if status not in (0, 5):
                raise RuntimeError(f"pytest exit {status}")

        step("contract tests", tests)

    from ccfkit.backends import get_backend
    from ccfkit.backends.numba import NumbaBackend

    engine = get_backend("cupy") if cupy is not None else NumbaBackend()
    xp = cupy if cupy is not None else np
    clock = Clock(cupy)
    images = make_images(args.images)
    rates = {}

    def agreement() -> None:
        difference = float(np.max(np.abs(engine.to_numpy(maps(xp.asarray(images[:8]), engine))
                                          - maps(images[:8], "numba"))))  # fmt: skip
        ok = difference <= AGREEMENT
        report.append(f"- agreement {engine.name} vs numba on 8 images: max |diff| "
                      f"{difference:.1e} ({'ok' if ok else f'ABOVE {AGREEMENT:g}'})")  # fmt: skip
        if not ok:
            raise RuntimeError("the backends disagree")

    step("agreement", agreement)

    def engine_step() -> None:
        rows, found = engine_rows(xp, engine, images, args.rounds, clock, "numba", args.cpu_images)
        rates.update(found)
        setting = (f"{SHAPE[0]} × {SHAPE[1]} float32, Q = {Q_BINS}, P = {PHI_BINS}, order "
                   f"{ORDER}; median of {args.rounds} calls per row; {engine!r}; bf16 runs as "
                   f"{engine.product_precision('bf16').value}.")  # fmt: skip
        report.extend(["", "## Engine", "", setting, "", table(rows), ""])
        for precision in PRECISIONS:
            report.append(
                f"- {precision}: engine ÷ its product floor = "
                f"{rates[f'product {precision}'] / rates[f'engine {precision}']:.2f}× the time"
            )
        report.append(f"- bf16 ÷ float32 engine speed-up: "
                      f"{rates['engine bf16'] / rates['engine float32']:.2f}×; "
                      f"{engine.name} float32 ÷ host numba: "
                      f"{rates['engine float32'] / rates['numba']:.1f}×")  # fmt: skip
        pool = getattr(xp, "get_default_memory_pool", None)
        if pool is not None:
            report.append(f"- CuPy memory pool: {pool().total_bytes() / 2**30:.2f} GiB held")
            pool().free_all_blocks()

    step("engine", engine_step)

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    size = SHAPE[0]

    def accuracy_step() -> None:
        frames = simulated_frames(64, size, 7, work / "accuracy.cxi")
        import h5py

        with h5py.File(frames, "r") as handle:
            simulated = handle["entry_1/data_1/data"][:].astype(np.float32)
        sets = {"benchmark images": (images[:64], {}),
                "simulated frames (ccfkit simulate)": (simulated, {"r_min": "auto"})}  # fmt: skip
        if args.sacla:
            frame = np.load(Path(args.sacla) / "test_img.npy").astype(np.float32)
            mask = np.load(Path(args.sacla) / "test_mask.npy")
            sets["SACLA MPCCD frame"] = (frame[None], {"mask": mask, "center": (152.0, 151.0),
                                                       "r_min": "auto"})  # fmt: skip
        used = engine.product_precision("bf16").value
        title = f"## bf16 accuracy ({engine.name}, runs as {used}), full map against float64"
        report.extend(["", title, ""])
        report.extend(accuracy_rows(engine, sets))

    step("bf16 accuracy", accuracy_step)

    source = work / "frames.cxi"
    sort = work / "sort.cxi"

    def build_step() -> None:
        simulated_frames(args.frames, size, 1, source)
        rows = build_rows(engine.name, source, work, args.frames)
        report.extend(["", "## Build (simulated file on local disk)", "", table(rows), ""])
        for label, n, seconds in rows:
            precision = label.rsplit(" ", 1)[-1]
            rate = n / seconds[0]
            report.append(f"- build {precision}: {rate:,.0f} frames/s; engine ÷ build "
                          f"{rates.get(f'engine {precision}', float('nan')) / rate:.2f}×")  # fmt: skip

    step("build", build_step)

    def predict_step() -> None:
        simulated_frames(args.frames, size, 2, sort)
        device = "cuda" if cupy is not None else "cpu"
        row = predict_row(device, engine.name, source, work, sort)
        title = f"## trainer predict from frames (device {device}, backend {engine.name})"
        report.extend(["", title, "", "ResNet-18 of width 64 (the paper's), batch 256.", "", row])

    step("predict", predict_step)

    report += ["", f"Total time of this check: {time.perf_counter() - started:.0f} s."]
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
