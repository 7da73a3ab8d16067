"""asv benchmarks of ccfkit's stages, per backend.

Each stage of docs/ccf.md §1–4 on a small batch (16 images of 259 x 259 float32,
Q = 224, P = 512, order 8), on the NumPy reference and the Numba backend
(and CuPy where it can run), so that a quick run stays short and a
regression in one stage shows on its own. The end-to-end throughput against
SciPy, pyFAI and BLAS is ``benchmarks/performance.py``'s job.

Run from ``benchmarks/``::

    ../.venv/bin/asv run --config asv.conf.json --quick --python=same
    ../.venv/bin/asv run --config asv.conf.json --python=same \
        --set-commit-hash $(git rev-parse HEAD)     # records results in ../.asv/results
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

import ccfkit
from ccfkit.backends import BackendUnavailableError, get_backend

from .images import ORDER, PHI_BINS, Q_BINS, SHAPE, make_images

#: Images per batch; the geometry (SHAPE, Q_BINS, PHI_BINS, ORDER) is :mod:`.images`'.
BATCH = 16
BACKENDS = ["numpy", "numba", "cupy"]


def _gap_mask() -> np.ndarray:
    """Detector mask with a horizontal gap, as between detector modules (False: masked)."""
    mask = np.ones(SHAPE, dtype=bool)
    mask[120:140, :] = False
    return mask


def _backend_or_skip(name: str):
    """The named backend, or ``NotImplementedError`` (asv's "skip") if it cannot run."""
    try:
        return get_backend(name)
    except BackendUnavailableError as error:
        raise NotImplementedError(str(error)) from error


def _sync(backend) -> None:
    """Wait for queued GPU work so that a timing covers it (no-op on the CPU)."""
    if backend.name == "cupy":
        backend.xp.cuda.Device().synchronize()


class TimePlan:
    """Building the bilinear polar table (float64 geometry, backend-independent)."""

    def time_make_polar_plan(self):
        ccfkit.make_polar_plan(SHAPE, q_bins=Q_BINS, phi_bins=PHI_BINS)

    def time_make_polar_plan_masked(self):
        ccfkit.make_polar_plan(SHAPE, mask=self.mask, q_bins=Q_BINS, phi_bins=PHI_BINS)

    def setup(self):
        self.mask = _gap_mask()


class TimeStages:
    """Every stage of the engine on one batch, per backend.

    Inputs of each stage are computed in ``setup`` by the same backend, so a
    benchmark times that stage only.
    """

    params: ClassVar[list[str]] = BACKENDS
    param_names: ClassVar[list[str]] = ["backend"]
    timeout = 120

    def setup(self, name):
        self.backend = backend = _backend_or_skip(name)
        self.plan = ccfkit.make_polar_plan(SHAPE, q_bins=Q_BINS, phi_bins=PHI_BINS)
        self.images = backend.as_batch(make_images(BATCH), SHAPE)
        polar = backend.resample(self.images, self.plan)
        self.values, self.valid = polar.values, polar.valid
        self.coefficients = backend.fourier(self.values, self.valid, [ORDER])[..., 0]
        self.full = backend.full_map(self.values, self.valid, 0.0)
        self.order = backend.order_map(self.coefficients)
        backend.merged_maps(self.images[:1], self.plan, order=ORDER)  # JIT / cache warm-up
        _sync(backend)

    def time_resample(self, name):
        ccfkit.resample(self.images, self.plan, backend=self.backend)
        _sync(self.backend)

    def time_fourier_all_orders(self, name):
        ccfkit.angular_fourier(self.values, self.valid, None, backend=self.backend)
        _sync(self.backend)

    def time_fourier_one_order(self, name):
        ccfkit.angular_fourier(self.values, self.valid, [ORDER], backend=self.backend)
        _sync(self.backend)

    def time_full_map(self, name):
        ccfkit.full_map(self.values, self.valid, 0.0, backend=self.backend)
        _sync(self.backend)

    def time_full_map_shifted(self, name):
        ccfkit.full_map(self.values, self.valid, np.pi / 4, backend=self.backend)
        _sync(self.backend)

    def time_order_map(self, name):
        ccfkit.order_map(self.coefficients, backend=self.backend)
        _sync(self.backend)

    def time_merge_maps(self, name):
        ccfkit.merge_maps(self.full, self.order, "maxabs", backend=self.backend)
        _sync(self.backend)

    def time_merged_maps(self, name):
        """All stages chained on a prebuilt plan (the backend's fused path)."""
        self.backend.merged_maps(self.images, self.plan, order=ORDER)
        _sync(self.backend)

    def time_compute_maps(self, name):
        """The public one-call API, plan build included."""
        ccfkit.compute_maps(
            self.images, order=ORDER, q_bins=Q_BINS, phi_bins=PHI_BINS, backend=self.backend
        )
        _sync(self.backend)


class TimeMaskedMaps:
    """``compute_maps`` with a detector mask and NaN pixels (the slow, exact paths)."""

    params: ClassVar[list[str]] = BACKENDS
    param_names: ClassVar[list[str]] = ["backend"]
    timeout = 120

    def setup(self, name):
        self.backend = _backend_or_skip(name)
        self.mask = _gap_mask()
        images = make_images(BATCH)
        images[::2, 50, 60:70] = np.nan  # half the images add invalid samples of their own
        self.images = images
        ccfkit.compute_maps(images[:1], q_bins=Q_BINS, phi_bins=PHI_BINS, backend=self.backend)

    def time_compute_maps_masked(self, name):
        ccfkit.compute_maps(
            self.images, mask=self.mask, q_bins=Q_BINS, phi_bins=PHI_BINS, backend=self.backend
        )
        _sync(self.backend)


class TrackThroughput:
    """Images per second of ``compute_maps`` on the batch (one figure per backend)."""

    params: ClassVar[list[str]] = BACKENDS
    param_names: ClassVar[list[str]] = ["backend"]
    unit = "images/s"
    timeout = 120

    def setup(self, name):
        self.backend = _backend_or_skip(name)
        self.images = make_images(BATCH)
        ccfkit.compute_maps(
            self.images[:1], q_bins=Q_BINS, phi_bins=PHI_BINS, backend=self.backend
        )

    def track_compute_maps_images_per_second(self, name):
        import time

        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            ccfkit.compute_maps(
                self.images, q_bins=Q_BINS, phi_bins=PHI_BINS, backend=self.backend
            )
            _sync(self.backend)
            best = min(best, time.perf_counter() - start)
        return self.images.shape[0] / best
