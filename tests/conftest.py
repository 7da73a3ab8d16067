"""Shared helpers for the ccfkit engine tests (docs/ccf.md §1-4 and its backends section).

Images here are small and made on the fly. The helpers build analytic
patterns (radial profiles, angular harmonics), random masks, and straight,
loop-level versions of the formulas of docs/ccf.md that the fast code is checked
against.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import ccfkit
from ccfkit.backends.array import NumpyBackend

# Hypothesis: modest example counts (the suite must stay fast), no deadline
# (the first call of a Numba kernel may load its cache).
settings.register_profile(
    "ccfkit",
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.differing_executors],
)
# A long run for hunting rare failures: CCFKIT_HYPOTHESIS=stress pytest ...
settings.register_profile("stress", parent=settings.get_profile("ccfkit"), max_examples=1000)
settings.load_profile(os.environ.get("CCFKIT_HYPOTHESIS", "ccfkit"))

#: Test modules of the trainer, all of which import torch (the ``trainer`` extra). Where
#: torch is not installed (the run on the newest Python, README "Python versions") they
#: are not collected; the engine's tests, and the trainer's cases in test_catalogue.py
#: and test_build.py that skip on their own, still run.
TRAINER_MODULES = [
    "test_gallery.py",
    "test_label.py",
    "test_labels.py",
    "test_sorting.py",
    "test_study.py",
    "test_trainer.py",
    "test_trainer_cli.py",
]
HAS_TORCH = importlib.util.find_spec("torch") is not None
collect_ignore = [] if HAS_TORCH else TRAINER_MODULES


def pytest_report_header(config):
    if not HAS_TORCH:
        return "torch is not installed: not collected: " + ", ".join(TRAINER_MODULES)


#: Backends that can run on this machine, asked once.
AVAILABLE = ccfkit.available_backends()

#: Where the shared real-data frame lives: ``shared/`` sits beside the
#: repository root in a clean clone (and in this workspace).
SACLA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sacla"


# --------------------------------------------------------------------------
# Patterns
# --------------------------------------------------------------------------


def grid(shape, center):
    """Pixel-centre radius and angle ``(r, phi)`` of every pixel ``[y, x]``.

    ``phi`` follows docs/ccf.md §1: measured from +x, turning toward +y.
    """
    height, width = shape
    cx, cy = center
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    dx, dy = x - cx, y - cy
    return np.hypot(dx, dy), np.arctan2(dy, dx)


def isotropic(shape, center, g):
    """The image ``I[y, x] = g(r)``, ``r`` the distance to ``center = (cx, cy)``."""
    r, _ = grid(shape, center)
    return g(r)


def harmonic(shape, center, g, m, phi0):
    """The image ``I = g(r) cos(m (phi - phi0))``."""
    r, phi = grid(shape, center)
    return g(r) * np.cos(m * (phi - phi0))


def random_mask(rng, shape, bad_fraction):
    """A bool mask (True = good) with ``bad_fraction`` of the pixels bad."""
    return rng.random(shape) >= bad_fraction


def cos_profile(offset=2.0, amplitude=0.5, scale=8.0):
    """A smooth radial profile ``g(r) = offset + amplitude cos(r / scale)``.

    Returns ``(g, eps)`` where ``eps`` bounds the bilinear interpolation error
    of the image ``g(r)`` on the unit pixel grid: for bilinear interpolation
    ``|f - I f| <= (max|f_xx| + max|f_yy|) / 8``, and for a radial ``f``
    ``|f_xx|, |f_yy| <= max(|g''|, |g'/r|) <= amplitude / scale**2``.
    """

    def g(r):
        return offset + amplitude * np.cos(np.asarray(r) / scale)

    eps = 2.0 * (amplitude / scale**2) / 8.0
    return g, eps


# --------------------------------------------------------------------------
# Straight versions of the formulas of docs/ccf.md (loops over small arrays)
# --------------------------------------------------------------------------


def naive_fourier(values, valid, orders):
    """Eq. 15 written out: ``sum_p M I exp(-i n phi_p) / sum_p M``."""
    values = np.asarray(values, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    batch, q_bins, phi_bins = values.shape
    phi = 2 * np.pi * np.arange(phi_bins) / phi_bins
    out = np.zeros((batch, q_bins, len(orders)), dtype=np.complex128)
    for b in range(batch):
        for k in range(q_bins):
            count = valid[b, k].sum()
            if count == 0:
                continue
            for i, n in enumerate(orders):
                terms = valid[b, k] * values[b, k] * np.exp(-1j * n * phi)
                out[b, k, i] = terms.sum() / count
    return out


def naive_full_map(values, valid, shifted_values, shifted_valid):
    """Eq. 13 between two sets of rings, written as explicit sums.

    ``C[i, j] = sum_p M[i,p] M'[j,p] I[i,p] I'[j,p] / sum_p M[i,p] M'[j,p]``,
    0 where no pair is valid. Pass rolled copies as the primed arrays to get a
    separation ``delta``.
    """
    values = np.asarray(values, dtype=np.float64)
    shifted_values = np.asarray(shifted_values, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    shifted_valid = np.asarray(shifted_valid, dtype=bool)
    batch, q_bins, _ = values.shape
    out = np.zeros((batch, q_bins, q_bins))
    for b in range(batch):
        for i in range(q_bins):
            for j in range(q_bins):
                both = valid[b, i] & shifted_valid[b, j]
                if both.any():
                    out[b, i, j] = (values[b, i] * shifted_values[b, j])[both].sum() / both.sum()
    return out


def needed_pixels(plan):
    """Brute-force geometry: the pixels each sample needs, from docs/ccf.md §1 alone.

    Returns ``(x, y, needs)`` where ``x, y`` are the (Q, P) float64 sample
    positions and ``needs`` is a list over samples of ``[(iy, ix), ...]`` for
    the bilinear neighbours whose weight exceeds 1e-6. Samples with a weight in
    (1e-12, 1e-6] are ambiguous (rounding decides) and are flagged in the
    returned (Q, P) ``ambiguous`` array.
    """
    cx, cy = plan.center
    x = cx + plan.radius[:, None] * np.cos(plan.phi)[None, :]
    y = cy + plan.radius[:, None] * np.sin(plan.phi)[None, :]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    weights = [(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]
    offsets = [(0, 0), (0, 1), (1, 0), (1, 1)]
    ambiguous = np.zeros(x.shape, dtype=bool)
    needs = np.empty(x.shape, dtype=object)
    for k in range(x.shape[0]):
        for p in range(x.shape[1]):
            pixels = []
            for w, (oy, ox) in zip(weights, offsets):
                if w[k, p] > 1e-6:
                    pixels.append((int(y0[k, p]) + oy, int(x0[k, p]) + ox))
                elif w[k, p] > 1e-12:
                    ambiguous[k, p] = True
            needs[k, p] = pixels
    return x, y, needs, ambiguous


def expected_validity(plan, good):
    """docs/ccf.md §1 validity from brute force: every needed pixel on the detector and good."""
    height, width = plan.shape
    _, _, needs, ambiguous = needed_pixels(plan)
    valid = np.zeros(needs.shape, dtype=bool)
    for index in np.ndindex(needs.shape):
        valid[index] = all(
            0 <= iy < height and 0 <= ix < width and good[iy, ix] for iy, ix in needs[index]
        )
    return valid, ambiguous


# --------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------


def relative_error(fast, ref, axes=(-2, -1)):
    """Per-map ``max |fast - ref| / max |ref|`` (0/0 counts as 0)."""
    fast = np.asarray(fast)
    ref = np.asarray(ref)
    diff = np.max(np.abs(fast.astype(np.complex128) - ref.astype(np.complex128)), axis=axes)
    scale = np.max(np.abs(ref), axis=axes)
    return np.where(scale > 0, diff / np.where(scale > 0, scale, 1), diff)


def triangles(q_bins):
    """Boolean masks ``(lower incl. diagonal, strict upper)`` of a Q x Q map."""
    lower = np.tril(np.ones((q_bins, q_bins), dtype=bool))
    return lower, ~lower


def triangle_relative_errors(fast, ref):
    """Per-map relative errors of the lower and of the upper triangle separately."""
    fast = np.asarray(fast, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    lower, upper = triangles(ref.shape[-1])
    return (
        relative_error(np.where(lower, fast, 0), np.where(lower, ref, 0)),
        relative_error(np.where(upper, fast, 0), np.where(upper, ref, 0)),
    )


# --------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------


def make_cpu_backend(name):
    """A CPU backend by test id."""
    if name == "numpy64":
        return NumpyBackend()
    if name == "numpy32":
        return NumpyBackend(dtype=np.float32)
    if name == "numba1":
        from ccfkit.backends.numba import NumbaBackend

        return NumbaBackend(threads=1)
    if name == "numba2":
        from ccfkit.backends.numba import NumbaBackend

        return NumbaBackend(threads=2)
    raise KeyError(name)


CPU_BACKENDS = ["numpy64", "numpy32", "numba1", "numba2"]


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    """Every CPU backend: NumPy float64 (reference), NumPy float32, Numba (1 and 2 threads)."""
    return make_cpu_backend(request.param)


@pytest.fixture(scope="session")
def reference():
    """The oracle: the NumPy backend in float64."""
    return NumpyBackend()


@pytest.fixture
def rng():
    return np.random.default_rng(20190617)


@pytest.fixture
def torch_one_thread():
    """One torch thread: the suite shares a small machine, and results stay bit-stable.

    Nothing to do where torch is not installed (the engine's tests run without it).
    """
    try:
        import torch
    except ModuleNotFoundError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------
# Input files
# --------------------------------------------------------------------------


def write_cxi(
    path, frames, *, bitmask=None, labels=None, names=("round", "elliptical"), **storage
):
    """A minimal CXI file: frames (h5py ``storage`` options), a CXI bit mask, labels."""
    with h5py.File(path, "w") as handle:
        handle.create_dataset("entry_1/data_1/data", data=frames, **storage)
        if bitmask is not None:
            handle["entry_1/instrument_1/detector_1/mask"] = bitmask
        if labels is not None:
            dataset = handle.create_dataset("entry_1/labels", data=labels)
            dataset.attrs["names"] = list(names)
            dataset.attrs["exclusive_groups"] = json.dumps([list(names)])
    return path


def drop_label(path, name: str) -> None:
    """Rewrite a simulated CXI file's labels without the label ``name``."""
    with h5py.File(path, "r+") as handle:
        dataset = handle["entry_1/labels"]
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in dataset.attrs["names"]]
        keep = [k for k, n in enumerate(names) if n != name]
        labels = dataset[:][:, keep]
        groups = [
            [n for n in g if n != name] for g in json.loads(dataset.attrs["exclusive_groups"])
        ]
        del handle["entry_1/labels"]
        new = handle["entry_1"].create_dataset("labels", data=labels)
        new.attrs["names"] = [names[k] for k in keep]
        new.attrs["exclusive_groups"] = json.dumps([g for g in groups if len(g) > 1])
