"""Throughput of ccfkit against the straightforward alternatives.

Measures, side by side and interleaved in one run, on 259 x 259 float32
images, Q = 224 radial bins, P = 512 angular samples, angular order 8:

* the per-image NumPy/SciPy version a scientist would write
  (``scipy.ndimage.map_coordinates`` onto the polar grid, ``numpy.fft.rfft``,
  the order-n outer product and ``polar @ polar.T / P``, merged);
* ``ccfkit.compute_maps(batch, backend="numba")`` with the backend's default
  threads, and ``NumbaBackend(threads=1)`` with BLAS held to one thread;
* the polar stage alone: ``NumbaBackend().resample`` against pyFAI's
  ``integrate2d_ng`` without pixel splitting (CSR, Cython) at the same bins;
* the unavoidable product ``polar @ polar.T`` for every image.

Every round runs each measurement once over the same images, in an order
that rotates from round to round; the page reports medians over rounds and
the ratios the project promises (median of the per-round ratios, so both
sides of a ratio come from the same stretch of time on a noisy machine).

Usage
-----
::

    .venv/bin/python benchmarks/performance.py --write docs/performance.md
    .venv/bin/python benchmarks/performance.py --images 128 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy
import scipy.ndimage
from asv_bench.images import ORDER, PHI_BINS, Q_BINS, SHAPE, make_images
from harness import Round, cpu_seconds, load_average, machine
from threadpoolctl import threadpool_limits

import ccfkit
from ccfkit.backends._bf16 import hardware_reason, lag_product_bf16
from ccfkit.backends.numba import NumbaBackend

#: pyFAI pixel size in metres (0.1 mm), so r in mm is 0.1 x r in pixels.
PIXEL_SIZE = 1e-4
#: pyFAI sample-detector distance in metres; irrelevant to the ``r_mm`` unit.
DISTANCE = 0.1
#: Targets of the three promises (see :func:`ratios`).
TARGET_SPEEDUP_VS_SCIPY = 10.0
TARGET_SPEEDUP_VS_PYFAI = 1.0
TARGET_OVER_MATMUL = 2.0
#: The engine within this factor of its product's floor (docs/performance.md).
TARGET_AT_FLOOR = 1.3
#: Defaults of :func:`run_rounds` and of the command line: seconds of idle before each
#: measurement, seconds after which no new round starts, and the largest disturbance
#: (cores) of a quiet round.
PAUSE, BUDGET, QUIET = 0.2, 200.0, 0.1


# --------------------------------------------------------------------------
# (a) the per-image NumPy/SciPy version
# --------------------------------------------------------------------------


def polar_coordinates() -> tuple[np.ndarray, float, tuple[float, float]]:
    """Sample positions of the benchmark's polar grid, as ``map_coordinates`` wants them.

    ``r_k = (k + 0.5) r_max / Q``, ``phi_p = 2 pi p / P``,
    ``x = cx + r cos(phi)``, ``y = cy + r sin(phi)``, with the centre in the
    middle of a ``SHAPE`` image and ``r_max`` the largest full circle (docs/ccf.md §1).

    Returns
    -------
    coords : (2, Q * P) float64 ndarray
        Rows ``(y, x)``, i.e. (row, column), ring after ring.
    r_max : float
    center : (float, float)
        ``(cx, cy)``.
    """
    height, width = SHAPE
    cx, cy = (width - 1) / 2, (height - 1) / 2
    r_max = min(cx, cy, width - 1 - cx, height - 1 - cy)
    radius = (np.arange(Q_BINS) + 0.5) * r_max / Q_BINS
    phi = 2 * np.pi * np.arange(PHI_BINS) / PHI_BINS
    x = cx + radius[:, None] * np.cos(phi)[None, :]
    y = cy + radius[:, None] * np.sin(phi)[None, :]
    return np.stack([y.ravel(), x.ravel()]), r_max, (cx, cy)


def scipy_merged_map(image: np.ndarray, coords: np.ndarray, order: int = ORDER) -> np.ndarray:
    """The merged map of one image, written the straightforward way.

    Parameters
    ----------
    image : (H, W) float32 ndarray
    coords : (2, Q * P) ndarray
        From :func:`polar_coordinates`.
    order : int
        Angular order of the upper triangle.

    Returns
    -------
    (Q, Q) float32 ndarray
        Full map (``polar @ polar.T / P``) on and below the diagonal, order map
        above it, each triangle divided by its largest absolute value.
    """
    polar = scipy.ndimage.map_coordinates(image, coords, order=1).reshape(Q_BINS, PHI_BINS)
    coefficient = np.fft.rfft(polar, axis=1)[:, order] / PHI_BINS
    order_map = np.real(np.outer(np.conj(coefficient), coefficient))
    full_map = polar @ polar.T / PHI_BINS
    lower = np.tril(full_map)
    upper = np.triu(order_map, 1)
    merged = lower / np.abs(lower).max() + upper / np.abs(upper).max()
    return merged.astype(np.float32)


def scipy_maps(images: np.ndarray, coords: np.ndarray) -> None:
    """Run :func:`scipy_merged_map` on every image, one at a time."""
    for image in images:
        scipy_merged_map(image, coords)


def scipy_maps_one_thread(images: np.ndarray, coords: np.ndarray) -> None:
    """:func:`scipy_maps` with BLAS held to one thread: a plain one-core script."""
    with threadpool_limits(limits=1, user_api="blas"):
        scipy_maps(images, coords)


# --------------------------------------------------------------------------
# (b, c) ccfkit
# --------------------------------------------------------------------------


def numba_maps(images: np.ndarray, backend="numba", precision="float32") -> None:
    """``ccfkit.compute_maps`` on the whole batch (plan built inside, as a user calls it)."""
    ccfkit.compute_maps(images, order=ORDER, q_bins=Q_BINS, phi_bins=PHI_BINS, backend=backend,
                        precision=precision)  # fmt: skip


def numba_maps_one_thread(images: np.ndarray) -> None:
    """``compute_maps`` with ``NumbaBackend(threads=1)`` and BLAS held to one thread."""
    with threadpool_limits(limits=1, user_api="blas"):
        numba_maps(images, backend=NumbaBackend(threads=1))


def numba_polar(images: np.ndarray, plan: ccfkit.PolarPlan, threads: int | None = None) -> None:
    """The polar stage alone: ``NumbaBackend(threads).resample`` on the whole batch."""
    NumbaBackend(threads=threads).resample(images, plan)


# --------------------------------------------------------------------------
# (c) pyFAI
# --------------------------------------------------------------------------


class PyFAIPolar:
    """pyFAI's ``integrate2d_ng`` on the same radial and angular bins.

    A flat detector of 0.1 mm pixels, normal to the beam, with the point of
    normal incidence on the image centre; the unit ``r_mm`` is then the
    in-plane radius, i.e. 0.1 x the pixel radius. No solid-angle or
    polarisation correction, no pixel splitting, CSR sparse matrix, Cython.

    Parameters
    ----------
    r_max : float
        Outer radius in pixels; the radial range is ``(0, r_max)``.
    center : (float, float)
        ``(cx, cy)`` in pixels (pixel centres at integers).

    Attributes
    ----------
    build_seconds : float
        Wall time of the first call: the CSR engine build plus one image.
    """

    method = ("no", "csr", "cython")

    def __init__(self, r_max: float, center: tuple[float, float]):
        import pyFAI.detectors

        try:
            from pyFAI.integrator.azimuthal import AzimuthalIntegrator
        except ImportError:  # pyFAI < 2024.2
            from pyFAI.azimuthalIntegrator import AzimuthalIntegrator

        cx, cy = center
        detector = pyFAI.detectors.Detector(pixel1=PIXEL_SIZE, pixel2=PIXEL_SIZE, max_shape=SHAPE)
        # pyFAI puts pixel corners on integers: pixel centre i sits at (i + 0.5) pixels.
        self.integrator = AzimuthalIntegrator(
            dist=DISTANCE,
            poni1=(cy + 0.5) * PIXEL_SIZE,
            poni2=(cx + 0.5) * PIXEL_SIZE,
            detector=detector,
        )
        self.kwargs = {
            "npt_rad": Q_BINS,
            "npt_azim": PHI_BINS,
            "unit": "r_mm",
            "radial_range": (0.0, r_max * PIXEL_SIZE * 1e3),
            "azimuth_range": (-180.0, 180.0),
            "method": self.method,
            "correctSolidAngle": False,
        }
        self.build_seconds = float("nan")
        self.result = None

    def build(self, image: np.ndarray) -> None:
        """First call: builds the CSR engine (timed into ``build_seconds``)."""
        start = time.perf_counter()
        self.result = self.integrator.integrate2d_ng(image, **self.kwargs)
        self.build_seconds = time.perf_counter() - start

    def __call__(self, images: np.ndarray) -> None:
        """Integrate every image, one call each."""
        for image in images:
            self.integrator.integrate2d_ng(image, **self.kwargs)

    def empty_fraction(self) -> float:
        """Fraction of (radius, angle) bins that no pixel falls into."""
        return float(np.mean(self.result.count == 0))


def pyfai_one_thread(pyfai: PyFAIPolar, images: np.ndarray) -> None:
    """:class:`PyFAIPolar` with OpenMP held to one thread."""
    with threadpool_limits(limits=1, user_api="openmp"):
        pyfai(images)


# --------------------------------------------------------------------------
# (d) the matrix product
# --------------------------------------------------------------------------


def matmul_all(polar: np.ndarray, gram: np.ndarray) -> None:
    """``polar[b] @ polar[b].T`` for every image (numpy dispatches a @ a.T to ssyrk).

    Parameters
    ----------
    polar : (B, Q, P) float32 ndarray
    gram : (Q, Q) float32 ndarray
        Output buffer, reused (as ccfkit reuses its own).
    """
    for values in polar:
        np.matmul(values, values.T, out=gram)


def matmul_bf16(polar: np.ndarray) -> None:
    """The batched product with bfloat16 inputs and float32 sums (PyTorch, as the engine)."""
    lag_product_bf16(polar, 0, np)


def matmul_all_one_thread(polar: np.ndarray, gram: np.ndarray) -> None:
    """:func:`matmul_all` with BLAS held to one thread."""
    with threadpool_limits(limits=1, user_api="blas"):
        matmul_all(polar, gram)


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------


@dataclass
class Measurement:
    """One row of the table: a callable timed over the whole batch each round.

    ``run(n)`` processes the first ``n`` images of the batch; the timed call
    takes all ``images``, an untimed warm-up call just before it the whole
    batch too (or ``--warmup`` images).
    """

    key: str
    label: str
    threads: str
    run: Callable[[int], None]
    images: int
    seconds: list[float] = field(default_factory=list)

    def per_image(self) -> list[float]:
        """Seconds per image, one entry per round."""
        return [s / self.images for s in self.seconds]

    def rate(self) -> float:
        """Images per second from the median seconds per image."""
        return 1.0 / statistics.median(self.per_image())


def flops_per_image(q_bins: int = Q_BINS, phi_bins: int = PHI_BINS) -> dict[str, float]:
    """Floating-point operations per image, by stage.

    Returns
    -------
    dict
        Name -> FLOP. ``matmul_nominal`` is the full product ``2 Q^2 P``;
        ``matmul_symmetric`` the half a symmetric rank-k update computes.
    """
    samples = q_bins * phi_bins
    return {
        "matmul_nominal": 2.0 * q_bins * q_bins * phi_bins,
        "matmul_symmetric": 1.0 * q_bins * (q_bins + 1) * phi_bins,
        "gather": 7.0 * samples,  # 4 multiplies + 3 adds per bilinear sample
        "order_projection": 4.0 * samples,  # one complex x real multiply-add per sample
        "rfft_all_orders": 2.5 * samples * np.log2(phi_bins),  # the SciPy version's FFT
        "order_map_and_merge": 4.0 * q_bins * q_bins,
    }


def agreement(images: np.ndarray, coords: np.ndarray) -> dict[str, float]:
    """How closely the SciPy version and ccfkit agree, on a few images.

    Returns
    -------
    dict
        ``maps``: largest |difference| of the merged maps (both scaled to
        [-1, 1]); ``polar``: largest relative difference of the polar values.
    """
    plan = ccfkit.make_polar_plan(SHAPE, q_bins=Q_BINS, phi_bins=PHI_BINS)
    ours = ccfkit.compute_maps(images, order=ORDER, backend="numba")
    theirs = np.stack([scipy_merged_map(image, coords) for image in images])
    polar = ccfkit.resample(images, plan, backend="numba").values
    reference = np.stack(
        [
            scipy.ndimage.map_coordinates(im, coords, order=1).reshape(polar.shape[1:])
            for im in images
        ]
    )
    return {
        "maps": float(np.max(np.abs(ours - theirs))),
        "polar": float(np.max(np.abs(polar - reference)) / np.max(np.abs(reference))),
    }


def _warm_up(images: np.ndarray, plan: ccfkit.PolarPlan, coords: np.ndarray) -> dict:
    """Compile the Numba kernels (or load them); time the plan; compare with SciPy.

    Returns the notes ``warmup_seconds``, ``plan_seconds`` (one
    ``make_polar_plan``) and ``agreement`` (:func:`agreement` on 4 images).
    """
    notes: dict = {}
    start = time.perf_counter()
    numba_maps(images[:2])  # JIT compile (or load the cache)
    numba_polar(images[:2], plan)
    notes["warmup_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(5):
        ccfkit.make_polar_plan(SHAPE, q_bins=Q_BINS, phi_bins=PHI_BINS)
    notes["plan_seconds"] = (time.perf_counter() - start) / 5
    notes["agreement"] = agreement(images[: min(4, len(images))], coords)
    return notes


def setup(images: np.ndarray) -> tuple[list[Measurement], dict]:
    """Build every measurement (and warm it up) on the same images.

    Returns
    -------
    measurements : list of Measurement
    notes : dict
        Setup facts for the report: agreement, pyFAI build time and empty
        bins, plan build time.
    """
    count = images.shape[0]
    coords, r_max, center = polar_coordinates()
    plan = ccfkit.make_polar_plan(SHAPE, q_bins=Q_BINS, phi_bins=PHI_BINS)
    assert np.allclose(plan.radius, (np.arange(Q_BINS) + 0.5) * r_max / Q_BINS)
    assert plan.center == center
    notes = _warm_up(images, plan, coords)
    pyfai = PyFAIPolar(r_max, center)
    pyfai.build(images[0])
    notes["pyfai_build_seconds"] = pyfai.build_seconds
    notes["pyfai_empty_fraction"] = pyfai.empty_fraction()

    polar = NumbaBackend().resample(images, plan).values
    gram = np.empty((Q_BINS, Q_BINS), dtype=np.float32)
    matmul_all(polar[:2], gram)
    bf16_missing = hardware_reason("cpu")
    notes["bf16"] = bf16_missing or "bf16 matrix units present"
    bf16_as = " (runs as float32: no bf16 units)" if bf16_missing else ""
    bf16_floor = " (emulated by PyTorch: no bf16 units)" if bf16_missing else ""

    def row(key, label, threads, run):
        return Measurement(key, label, threads, run, count)

    default_threads = NumbaBackend().threads
    # NumPy's default float: what a script gets from np.asarray(..., float)
    images64 = images.astype(np.float64)
    measurements = [
        row(
            "scipy",
            "per-image SciPy: map_coordinates + np.fft.rfft + outer + polar @ polar.T",
            "1 process (BLAS default)",
            lambda n: scipy_maps(images[:n], coords),
        ),
        row(
            "scipy64",
            "the same per-image SciPy version on float64 images",
            "1 process (BLAS default)",
            lambda n: scipy_maps(images64[:n], coords),
        ),
        row(
            "scipy64_1",
            "the same on float64 images, one core (the set-up of row (1)'s baseline)",
            "1 (BLAS)",
            lambda n: scipy_maps_one_thread(images64[:n], coords),
        ),
        row(
            "numba",
            f'ccfkit.compute_maps(batch of {count}, backend="numba")',
            f"{default_threads} (default)",
            lambda n: numba_maps(images[:n]),
        ),
        row(
            "numba_bf16",
            f'ccfkit.compute_maps(batch of {count}, backend="numba", precision="bf16"){bf16_as}',
            f"{default_threads} (default)",
            lambda n: numba_maps(images[:n], precision="bf16"),
        ),
        row(
            "numba_1",
            "ccfkit.compute_maps, NumbaBackend(threads=1), BLAS 1 thread",
            "1",
            lambda n: numba_maps_one_thread(images[:n]),
        ),
        row(
            "polar",
            f"ccfkit polar stage: NumbaBackend().resample(batch of {count})",
            f"{default_threads} (default)",
            lambda n: numba_polar(images[:n], plan),
        ),
        row(
            "polar_1",
            "ccfkit polar stage: NumbaBackend(threads=1).resample",
            "1",
            lambda n: numba_polar(images[:n], plan, threads=1),
        ),
        row(
            "pyfai",
            "pyFAI integrate2d_ng, no split / CSR / Cython, per image",
            "OpenMP default",
            lambda n: pyfai(images[:n]),
        ),
        row(
            "pyfai_1",
            "pyFAI integrate2d_ng, no split / CSR / Cython, per image",
            "1 (OpenMP)",
            lambda n: pyfai_one_thread(pyfai, images[:n]),
        ),
        row(
            "matmul",
            "polar @ polar.T per image (ssyrk), float32",
            "BLAS default",
            lambda n: matmul_all(polar[:n], gram),
        ),
        row(
            "matmul_1",
            "polar @ polar.T per image (ssyrk), float32",
            "1 (BLAS)",
            lambda n: matmul_all_one_thread(polar[:n], gram),
        ),
        row(
            "matmul_bf16",
            f"polar @ polar.T batched, bf16 inputs, float32 sums (PyTorch){bf16_floor}",
            "PyTorch default",
            lambda n: matmul_bf16(polar[:n]),
        ),
    ]
    return measurements, notes


def run_rounds(
    measurements: list[Measurement],
    rounds: int,
    pause: float = PAUSE,
    warmup: int | None = None,
    budget: float = BUDGET,
    quiet: float = QUIET,
    log=print,
) -> tuple[list[Round], list[int]]:
    """Time every measurement once per round, until enough quiet rounds are in.

    The order of the measurements rotates from round to round. Other
    processes (a test suite in another shell) and the hypervisor take cores
    away at times, and code that synchronises two threads suffers most; so
    each round records how many cores others used meanwhile, rounds continue
    until ``rounds`` of them were quiet (or ``budget`` seconds have passed),
    and the ``rounds`` quietest are kept, in each measurement's ``seconds``.

    Parameters
    ----------
    measurements : list of Measurement
    rounds : int
        Rounds to keep (and the least to run).
    pause : float
        Seconds to sleep before each measurement, so that thread pools left
        spinning by the previous one (OpenBLAS, OpenMP) go to sleep.
    warmup : int, optional
        Images of an untimed call of the same measurement between the pause
        and the timed call (default: the whole batch). It wakes the threads
        (an idle vCPU of a VM is slow to come back), so that the timed call
        runs in the measurement's own steady state.
    budget : float
        Seconds after which no new round starts once ``rounds`` have run.
    quiet : float
        Largest disturbance (cores used by others + steal) of a quiet round.
    log : callable
        Receives one line per round.

    Returns
    -------
    all_rounds : list of Round
    kept : list of int
        Indices of the kept rounds, in order.
    """
    started = time.perf_counter()
    history: list[Round] = []
    for measurement in measurements:
        measurement.seconds = []
    while True:
        shift = len(history) % len(measurements)
        order = measurements[shift:] + measurements[:shift]
        before = cpu_seconds()
        own0, wall0 = time.process_time(), time.perf_counter()
        for measurement in order:
            time.sleep(pause)
            measurement.run(measurement.images if warmup is None else warmup)
            start = time.perf_counter()
            measurement.run(measurement.images)
            measurement.seconds.append(time.perf_counter() - start)
        own, wall = time.process_time() - own0, time.perf_counter() - wall0
        history.append(Round.between(before, cpu_seconds(), own, wall))
        quiet_rounds = sum(r.disturbance <= quiet for r in history)
        log(
            f"round {len(history)} ({quiet_rounds}/{rounds} quiet; others "
            f"{history[-1].others:.2f} + steal {history[-1].steal:.2f} cores): "
            + ", ".join(f"{m.key} {m.images / m.seconds[-1]:,.0f}/s" for m in measurements)
        )
        if quiet_rounds >= rounds:
            break
        if len(history) >= rounds and time.perf_counter() - started > budget:
            log(f"time budget of {budget:.0f} s spent: keeping the {rounds} quietest rounds")
            break
    kept = sorted(sorted(range(len(history)), key=lambda i: history[i].disturbance)[:rounds])
    for measurement in measurements:
        measurement.seconds = [measurement.seconds[i] for i in kept]
    return history, kept


@dataclass
class Ratio:
    """A promised ratio: median over rounds of ``numerator / denominator`` per image."""

    name: str
    description: str
    values: list[float]
    target: float
    at_least: bool

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def passed(self) -> bool:
        return self.median >= self.target if self.at_least else self.median <= self.target

    def target_text(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {self.target:g}×"


def per_round(by_key: dict[str, Measurement], slow: str, fast: str) -> list[float]:
    """How many times faster ``fast`` is than ``slow`` (time per image), round by round."""
    return [s / f for s, f in zip(by_key[slow].per_image(), by_key[fast].per_image())]


def ratios(by_key: dict[str, Measurement]) -> tuple[list[Ratio], list[Ratio]]:
    """The three promised ratios and a few informative ones, per round.

    Returns
    -------
    promised, informative : lists of Ratio
    """

    promised = [
        Ratio(
            "(1) speed-up over per-image SciPy",
            "images/s of compute_maps (numba) ÷ images/s of the per-image SciPy script on "
            "float64 images, one core: the baseline of about 150 images/s the target "
            "was set against (148 measured)",
            per_round(by_key, "scipy64_1", "numba"),
            TARGET_SPEEDUP_VS_SCIPY,
            True,
        ),
        Ratio(
            "(2) polar stage vs pyFAI",
            "images/s of NumbaBackend().resample ÷ images/s of pyFAI integrate2d_ng "
            "(no split, CSR, Cython)",
            per_round(by_key, "pyfai", "polar"),
            TARGET_SPEEDUP_VS_PYFAI,
            True,
        ),
        Ratio(
            "(3) cost over the matrix product",
            "time per image of compute_maps (numba) ÷ time per image of polar @ polar.T",
            per_round(by_key, "numba", "matmul"),
            TARGET_OVER_MATMUL,
            False,
        ),
    ]
    informative = [
        Ratio(
            "speed-up over per-image SciPy, float32, BLAS on both cores",
            "compute_maps (numba) ÷ the per-image SciPy script on float32 images with "
            "BLAS's default threads (a stricter baseline than the one-core float64 one)",
            per_round(by_key, "scipy", "numba"),
            TARGET_SPEEDUP_VS_SCIPY,
            True,
        ),
        Ratio(
            "speed-up over per-image SciPy, float64, BLAS on both cores",
            "compute_maps (numba) ÷ the per-image SciPy script on float64 images with "
            "BLAS's default threads",
            per_round(by_key, "scipy64", "numba"),
            TARGET_SPEEDUP_VS_SCIPY,
            True,
        ),
        Ratio(
            "speed-up over SciPy, both on one thread",
            "NumbaBackend(threads=1) ÷ per-image SciPy",
            per_round(by_key, "scipy", "numba_1"),
            TARGET_SPEEDUP_VS_SCIPY,
            True,
        ),
        Ratio(
            "polar stage vs pyFAI, both on one thread",
            "NumbaBackend(threads=1).resample ÷ pyFAI with 1 OpenMP thread",
            per_round(by_key, "pyfai_1", "polar_1"),
            TARGET_SPEEDUP_VS_PYFAI,
            True,
        ),
        Ratio(
            "cost over the matrix product, both on one thread (the product's floor)",
            "NumbaBackend(threads=1) ÷ polar @ polar.T with 1 BLAS thread (time per image)",
            per_round(by_key, "numba_1", "matmul_1"),
            TARGET_AT_FLOOR,
            False,
        ),
        Ratio(
            "the product's floor, two cores",
            "compute_maps (numba, default threads) ÷ half the one-thread time of polar @ polar.T",
            [
                2 * n / m
                for n, m in zip(by_key["numba"].per_image(), by_key["matmul_1"].per_image())
            ],
            TARGET_AT_FLOOR,
            False,
        ),
        Ratio(
            "bf16 speed-up of compute_maps",
            "compute_maps precision bf16 ÷ float32, default threads (images/s)",
            per_round(by_key, "numba", "numba_bf16"),
            1.0,
            True,
        ),
    ]
    return promised, informative


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------


def warmup_text(args: argparse.Namespace) -> str:
    """The warm-up call's size, in words."""
    if args.warmup is None or args.warmup >= args.images:
        return "the whole batch"
    return f"{args.warmup} images"


def discarded_text(rounds: list[Round]) -> str:
    """How many rounds were discarded, and how disturbed they were."""
    if not rounds:
        return "no round was discarded"
    low = min(r.disturbance for r in rounds)
    high = max(r.disturbance for r in rounds)
    return f"{len(rounds)} discarded rounds saw {low:.2f}–{high:.2f} cores of disturbance"


def table_rows(measurements: list[Measurement]) -> list[tuple[str, ...]]:
    """Rows of the results table: label, threads, images/s (median, range), ms/image."""
    rows = []
    for m in measurements:
        rates = [1.0 / s for s in m.per_image()]
        rows.append(
            (
                m.label,
                m.threads,
                f"{m.rate():,.0f}",
                f"{min(rates):,.0f}–{max(rates):,.0f}",
                f"{1e3 / m.rate():.3f}",
            )
        )
    return rows


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]], align: str) -> str:
    """A Markdown table; ``align`` has one of ``l``/``r`` per column."""
    marks = {"l": "---", "r": "---:"}
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(marks[a] for a in align) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ratio_rows(items: list[Ratio]) -> list[tuple[str, ...]]:
    return [
        (
            r.name,
            r.description,
            f"{r.median:.2f}×",
            f"{min(r.values):.2f}–{max(r.values):.2f}",
            r.target_text(),
            "PASS" if r.passed else "FAIL",
        )
        for r in items
    ]


def report(
    measurements: list[Measurement],
    notes: dict,
    args: argparse.Namespace,
    command: str,
    elapsed: float,
) -> str:
    """The Markdown page (docs/performance.md), section by section."""
    by_key = {m.key: m for m in measurements}
    out = _intro_lines(notes, args)
    out += _reproduce_lines(notes, command, elapsed)
    out += _result_lines(measurements, by_key)
    out += _arithmetic_lines(by_key)
    out += _check_lines(notes)
    out += _row_lines()
    return "\n".join(out)


def _intro_lines(notes: dict, args: argparse.Namespace) -> list[str]:
    """The title, what was measured and how, and how disturbed the kept rounds were."""
    out = []
    out.append("# Performance\n")
    out.append(
        "Throughput of the CCF engine against what it replaces, measured by "
        "`benchmarks/performance.py` (the numbers below are its output, "
        "written by `--write`). "
        f"Images: {args.images} synthetic 259 × 259 float32 diffraction-like images "
        f"(seed {args.seed}); Q = {Q_BINS}, P = {PHI_BINS}, order {ORDER}. "
        f"Each figure is the median of {args.rounds} interleaved rounds (every row "
        "runs once per round over the same images, in an order that rotates); the "
        "range is the slowest and fastest of those rounds. Ratios are medians of the "
        f"per-round ratios. Before each measurement the script idles {args.pause:g} s "
        "(thread pools left spinning by the previous one go to sleep), then makes an "
        f"untimed call of the same measurement on {warmup_text(args)}, then the timed "
        "call: each row is timed in its own steady state, its threads awake.\n"
    )
    history, kept = notes["rounds"]
    worst = max(history[i].disturbance for i in kept)
    out.append(
        "Other processes and the hypervisor take cores away at times, and rows whose "
        "threads synchronise (BLAS, OpenMP) can lose 10× in such a moment. The script "
        "therefore measures, from `/proc/stat`, the cores used by other processes plus "
        "steal time during each round, runs rounds until "
        f"{args.rounds} of them saw at most {args.quiet:g} cores of such disturbance "
        f"(or {args.budget:.0f} s have passed), and keeps the {args.rounds} quietest. "
        f"This run: {len(history)} rounds, kept {len(kept)}, whose disturbance was at most "
        f"{worst:.2f} cores"
        + ("" if worst <= args.quiet else " (NOT QUIET: treat these figures with care)")
        + "; "
        + discarded_text([r for i, r in enumerate(history) if i not in set(kept)])
        + ".\n"
    )
    return out


def _reproduce_lines(notes: dict, command: str, elapsed: float) -> list[str]:
    """The command, when it ran, the load around it, and the machine."""
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    out = []
    out.append("## Reproduce\n")
    out.append(f"```\n{command}\n```\n")
    out.append(
        f"Measured {when}; the whole run took {elapsed:.0f} s. Load average (1, 5, 15 min) "
        f"before the run: {notes['load'][0]}; after: {notes['load'][1]} (the run itself "
        "keeps up to 2 cores busy; a load well above that means other work shared the "
        "machine).\n"
    )
    out.append("## Machine\n")
    out.extend(f"- **{key}**: {value}" for key, value in machine().items())
    out.append("")
    return out


def _result_lines(measurements: list[Measurement], by_key: dict[str, Measurement]) -> list[str]:
    """The table of every row, the gain of threads, and the ratios against their targets."""
    out = []
    promised, informative = ratios(by_key)
    out.append("## Results\n")
    out.append(
        markdown_table(
            ("what", "threads", "images/s (median)", "images/s (range)", "ms/image"),
            table_rows(measurements),
            "llrrr",
        )
        + "\n"
    )
    gains = [
        (what, statistics.median(per_round(by_key, one, many)))
        for what, many, one in (
            ("compute_maps", "numba", "numba_1"),
            ("the polar stage", "polar", "polar_1"),
            ("pyFAI", "pyfai", "pyfai_1"),
            ("polar @ polar.T", "matmul", "matmul_1"),
        )
    ]
    out.append(
        "Default threads against one thread (median per-round speed-up): "
        + ", ".join(f"{what} {gain:.2f}×" for what, gain in gains)
        + ".\n"
    )
    out.append("## The promises\n")
    out.append(
        markdown_table(
            ("promise", "measured as", "median", "range", "target", "result"),
            ratio_rows(promised),
            "llrrll",
        )
        + "\n"
    )
    out.append("Stricter baselines, and every side on one thread (for reference, not promised):\n")
    out.append(
        markdown_table(
            ("ratio", "measured as", "median", "range", "target", "result"),
            ratio_rows(informative),
            "llrrll",
        )
        + "\n"
    )
    return out


def _arithmetic_lines(by_key: dict[str, Measurement]) -> list[str]:
    """Floating-point operations per image, stage by stage, and the product's measured rate."""
    out = []
    flops = flops_per_image()
    matmul_seconds = statistics.median(by_key["matmul"].per_image())
    matmul1_seconds = statistics.median(by_key["matmul_1"].per_image())
    rest = flops["gather"] + flops["order_projection"] + flops["order_map_and_merge"]
    out.append("## Arithmetic\n")
    out.append(
        markdown_table(
            ("stage", "MFLOP per image"),
            [
                (
                    "full map `polar @ polar.T`, nominal 2·Q²·P",
                    f"{flops['matmul_nominal'] / 1e6:.2f}",
                ),
                (
                    "the same as a symmetric update (what ssyrk computes)",
                    f"{flops['matmul_symmetric'] / 1e6:.2f}",
                ),
                ("bilinear gather, 7 per sample", f"{flops['gather'] / 1e6:.2f}"),
                (
                    "one angular order, 4 per sample (ccfkit)",
                    f"{flops['order_projection'] / 1e6:.2f}",
                ),
                (
                    "all orders by rfft, ≈2.5·P·log2 P per ring (SciPy version)",
                    f"{flops['rfft_all_orders'] / 1e6:.2f}",
                ),
                ("order map + merge, ≈4·Q²", f"{flops['order_map_and_merge'] / 1e6:.2f}"),
            ],
            "lr",
        )
        + "\n"
    )
    out.append(
        f"The matrix product is {flops['matmul_nominal'] / (flops['matmul_nominal'] + rest):.0%} "
        "of ccfkit's nominal arithmetic. Measured rate of `polar @ polar.T`: "
        f"{flops['matmul_nominal'] / matmul_seconds / 1e9:.0f} GFLOP/s nominal "
        f"({flops['matmul_symmetric'] / matmul_seconds / 1e9:.0f} GFLOP/s of the symmetric "
        "half actually computed) with the default BLAS threads; "
        f"{flops['matmul_nominal'] / matmul1_seconds / 1e9:.0f} GFLOP/s nominal "
        f"({flops['matmul_symmetric'] / matmul1_seconds / 1e9:.0f}) on one thread.\n"
    )
    return out


def _check_lines(notes: dict) -> list[str]:
    """bf16 on this CPU, agreement with SciPy, one-time costs."""
    out = []
    out.append("## Checks and one-time costs\n")
    out.append(
        f'- bf16 on this CPU: {notes["bf16"]} (docs/ccf.md, "Precision"; its accuracy: '
        "`benchmarks/bf16_accuracy.py`)."
    )
    agree = notes["agreement"]
    out.append(
        f"- The SciPy version and ccfkit compute the same thing: on 4 images the merged "
        f"maps (each triangle in [-1, 1]) differ by at most {agree['maps']:.1e}, the "
        f"polar values by at most {agree['polar']:.1e} of their largest value."
    )
    out.append(
        "- `make_polar_plan` (float64 geometry; `compute_maps` builds it once per geometry "
        "and process, later calls reuse it): "
        f"{notes['plan_seconds'] * 1e3:.1f} ms."
    )
    out.append(
        f"- pyFAI's first call (CSR engine build plus one image), excluded from the "
        f"timings: {notes['pyfai_build_seconds'] * 1e3:.0f} ms. Without pixel splitting "
        f"{notes['pyfai_empty_fraction']:.0%} of its {Q_BINS} × {PHI_BINS} bins receive no "
        "pixel at all (a 259 × 259 image has 67,081 pixels for 114,688 bins); bilinear "
        "sampling has no such holes. The two polar stages do comparable work; their "
        "results differ by design (bin averages with holes vs point samples)."
    )
    out.append(
        f"- Numba JIT warm-up (compile or load the cache), excluded: "
        f"{notes['warmup_seconds']:.1f} s.\n"
    )
    return out


def _row_lines() -> list[str]:
    """What each row of the tables measures."""
    out = []
    out.append("## What each row measures\n")
    out.append(
        "*Per-image SciPy* is the version a scientist would write: for each image, "
        "`scipy.ndimage.map_coordinates(image, (y, x), order=1)` onto the same polar grid "
        "as `ccfkit.make_polar_plan` (r_k = (k + ½) r_max / Q, φ_p = 2πp / P), "
        "`numpy.fft.rfft` along φ for order 8, the outer product "
        "Re(conj(F_i) F_j), `polar @ polar.T / P`, and the merge of the two triangles, "
        "each divided by its largest absolute value; one image at a time, one process "
        "(the coordinates are computed once, which makes it a little faster than a "
        "script that computes them per call). It runs three ways: on float32 images "
        "with BLAS's default threads; on float64 images (NumPy's default float) with "
        "BLAS's default threads; and on float64 images on one core, which is how the "
        "baseline of row (1) above, about 150 images/s (148 measured), was measured; the "
        "other two are shown as stricter baselines. "
        "*compute_maps* is the public one-call API on the whole batch with the Numba "
        "backend (its plan build included); the one-thread row pins both the backend "
        "and BLAS to one thread, so it uses one core. *Polar stage* is resampling "
        "alone: Numba's bilinear gather of the whole batch into (B, Q, P) values and "
        "validity, against pyFAI's `integrate2d_ng` at the same bins "
        "(`npt_rad=224`, `npt_azim=512`, unit `r_mm` with 0.1 mm pixels, radial range "
        '(0, r_max), no solid-angle correction, method `("no", "csr", "cython")`), '
        "called once per image after its engine is built. *polar @ polar.T* is the one "
        "product no implementation can avoid: numpy dispatches `a @ a.T` to BLAS ssyrk, "
        "once per image of the batch, on (224, 512) float32 polar images, into a "
        "reused output buffer.\n"
    )
    out.append(
        "The machine is a shared VM: single runs vary by ±20 % and the second vCPU is "
        "not always a full core, so compare ratios from one run, not absolute figures "
        "across runs or machines.\n"
    )
    return out


def print_summary(measurements: list[Measurement]) -> None:
    """A plain-text table and the promised ratios on stdout."""
    by_key = {m.key: m for m in measurements}
    width = max(len(m.label) for m in measurements)
    print()
    print(f"{'what':<{width}}  {'threads':<26} {'images/s':>9} {'ms/image':>9}")
    for m in measurements:
        print(f"{m.label:<{width}}  {m.threads:<26} {m.rate():>9,.0f} {1e3 / m.rate():>9.3f}")
    promised, informative = ratios(by_key)
    print()
    for r in promised + informative:
        verdict = "PASS" if r.passed else "FAIL"
        extra = "" if r in promised else "  (informative)"
        print(f"{r.name:<50} {r.median:6.2f}×  target {r.target_text():<6} {verdict}{extra}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--images", type=int, default=256, help="images per batch (every row)")
    parser.add_argument(
        "--rounds", type=int, default=7, help="interleaved quiet rounds to keep (≥ 3)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=BUDGET,
        help="seconds after which no new round starts, quiet or not",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=QUIET,
        help="largest number of cores used by other processes (plus steal) in a quiet round",
    )
    parser.add_argument(
        "--pause", type=float, default=PAUSE, help="seconds of idle before each measurement"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="images of the untimed call before each timing (None: the whole batch)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic images")
    parser.add_argument("--write", metavar="PATH", help="write the Markdown report to PATH")
    args = parser.parse_args(argv)
    if args.images < 4:
        parser.error("--images must be at least 4")
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (the report gives medians)")
    if args.warmup is not None and args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def _kept_build_section(path: str) -> str:
    """The page from the section ``build_benchmark.py`` wrote on, kept as it is.

    That is the build's section and the measured notes after it (map
    settings, sorting, small costs), which this script does not make.
    """
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as handle:
        old = handle.read()
    start = old.find("<!-- build:begin -->")
    if start < 0:
        return ""
    return "\n" + old[start:].rstrip("\n") + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    command = " ".join(
        [".venv/bin/python", "benchmarks/performance.py"]
        + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)]
    )
    started = time.perf_counter()
    load_before = load_average()
    print(f"load average before: {load_before}")
    print(f"making {args.images} images of {SHAPE[0]} x {SHAPE[1]} (seed {args.seed}) ...")
    images = make_images(args.images, seed=args.seed)
    print("setting up and warming up ...")
    measurements, notes = setup(images)
    agree = notes["agreement"]
    print(
        f"agreement SciPy vs ccfkit: merged maps max |diff| {agree['maps']:.2e}, "
        f"polar max rel diff {agree['polar']:.2e}"
        + ("" if agree["maps"] < 1e-3 else "  <-- WARNING: above 1e-3")
    )
    print(
        f"pyFAI first call (CSR build + 1 image): {notes['pyfai_build_seconds'] * 1e3:.0f} ms; "
        f"empty bins {notes['pyfai_empty_fraction']:.0%}"
    )
    history, kept = run_rounds(
        measurements,
        args.rounds,
        pause=args.pause,
        warmup=args.warmup,
        budget=args.budget,
        quiet=args.quiet,
    )
    notes["rounds"] = (history, kept)
    elapsed = time.perf_counter() - started
    notes["load"] = (load_before, load_average())
    print_summary(measurements)
    print(f"\ntotal {elapsed:.0f} s")
    if args.write:
        text = report(measurements, notes, args, command, elapsed)
        os.makedirs(os.path.dirname(os.path.abspath(args.write)), exist_ok=True)
        text += _kept_build_section(args.write)
        with open(args.write, "w", encoding="utf-8") as handle:
            handle.write(text)
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
