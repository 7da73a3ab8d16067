"""The merged maps do not depend on the frames' intensity scale (docs/ccf.md, backends).

Under ``scale="maxabs"`` and ``scale="ring"`` a merged map is a ratio of
intensities squared: ``compute_maps(s * images)`` is ``compute_maps(images)``
for every ``s > 0``. The float32 engines (the Numba kernels, the array
backend in float32 that CuPy runs, and both in bf16) hold squares only
between 2^-149 and 2^128: frames far below 1 (1e-20: squares in float32's
subnormal range, or below it) or far above it lose their bits unless the
engine brings each image's values into range first, by a power of two
(exact). These tests scale well-conditioned speckle frames from 1e-24 to
1e18 (the largest pixel stays below ``HUGE_PIXEL`` = 2^56, beyond which a
pixel is unusable by definition) and check each backend against the float64
reference at scale 1, to the contract's 1e-5 (docs/ccf.md, backends).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import AVAILABLE, make_cpu_backend
from hypothesis import given
from hypothesis import strategies as st

import ccfkit
from ccfkit.backends import _bf16, get_backend
from ccfkit.polar import HUGE_PIXEL

#: The contract's bound (tests/test_backends.py): maxabs and ring maps lie in [-1, 1].
RTOL = 1e-5
#: bfloat16 rounding of the full map's entries (tests/test_precision.py, docs/ccf.md).
BF16_FULL_MAP = 3 * 2.0**-8

SCALES = [1e-24, 1e-12, 1.0, 1e12, 1e18]
GRID = {"q_bins": 12, "phi_bins": 32, "orders": (8, 2)}

CUDA = pytest.mark.skipif(
    "cupy" not in AVAILABLE, reason="CuPy with a usable CUDA device is not available"
)
FLOAT32_BACKENDS = ["numba1", "numba2", "numpy32", pytest.param("cupy", marks=[CUDA])]


def _backend(name):
    return get_backend("cupy") if name == "cupy" else make_cpu_backend(name)


def _frames(seed=3, nan=False):
    """Two 33 x 35 speckle frames on a background, largest pixel 0.05 (0.05e18 < 2^56)."""
    rng = np.random.default_rng(seed)
    images = rng.gamma(4.0, 1.0, (2, 33, 35)) + 4.0
    if nan:  # the exact gather and the image's own pair counts
        images[1, 16, 20] = np.nan
    return images * (0.05 / np.nanmax(images))


def _maps(images, backend, **fields):
    maps = ccfkit.compute_maps(images, backend=backend, **GRID, **fields)
    return np.asarray(backend.to_numpy(maps))


def test_the_largest_frame_stays_usable():
    assert np.nanmax(_frames()) * max(SCALES) < HUGE_PIXEL


@pytest.mark.parametrize("name", FLOAT32_BACKENDS)
@pytest.mark.parametrize("scale", ["maxabs", "ring"])
@pytest.mark.parametrize(
    "fields",
    [{}, {"delta": 0.9}, {"estimator": "mask-corrected"}, {"nan": True}],
    ids=["plain", "delta", "mask-corrected", "nan-pixel"],
)
def test_float32_maps_do_not_depend_on_the_intensity_scale(name, scale, fields):
    fields = dict(fields)
    images = _frames(nan=fields.pop("nan", False))
    reference = _maps(images, get_backend("numpy"), scale=scale, **fields)
    backend = _backend(name)
    for s in SCALES:
        maps = _maps(images * s, backend, scale=scale, **fields)
        assert np.isfinite(maps).all(), s
        assert np.max(np.abs(maps - reference)) <= RTOL, s


@pytest.mark.parametrize("name", ["numba1", "numpy32"])
def test_unscaled_maps_of_frames_far_from_1_are_the_reference_in_float32(name):
    """``scale="none"`` keeps intensity squared units: what the engine scaled, it undoes.

    At every scale here the engines scale the frames, and the reference maps are
    normal float32 numbers (at 1e-21 they would be ~1e-45: zeros would pass).
    """
    images = _frames()
    backend = _backend(name)
    for s in [1e-16, 1e-12, 1e12, 1e16]:
        reference = _maps(images * s, get_backend("numpy"), scale="none").astype(np.float32)
        maps = _maps(images * s, backend, scale="none")
        largest = np.max(np.abs(reference), axis=(-2, -1), keepdims=True)
        # 1e-5 of each map's largest entry, or a few of float32's smallest steps (2^-149)
        bound = RTOL * largest + 4 * 2.0**-149
        assert np.all(np.abs(maps - reference) <= bound), s


@pytest.mark.parametrize("name", ["numba1", "numpy32"])
@pytest.mark.parametrize("scale", ["maxabs", "ring"])
def test_bf16_maps_do_not_depend_on_the_intensity_scale(monkeypatch, name, scale):
    pytest.importorskip("torch")
    monkeypatch.setattr(_bf16, "_bf16_missing", lambda device: True)
    images = _frames()
    backend = _backend(name)
    at_one = _maps(images, backend, scale=scale, precision="bf16-emulated")
    reference = _maps(images, get_backend("numpy"), scale=scale)
    assert np.max(np.abs(at_one - reference)) <= 2 * BF16_FULL_MAP
    for s in SCALES:
        maps = _maps(images * s, backend, scale=scale, precision="bf16-emulated")
        assert np.isfinite(maps).all(), s
        # two roundings to 8 bits of differently scaled values: each within the bound
        assert np.max(np.abs(maps - at_one)) <= 2 * BF16_FULL_MAP, s
        assert np.max(np.abs(maps - reference)) <= 2 * BF16_FULL_MAP, s
    # a power of two rounds the same bits: the same maps exactly
    np.testing.assert_array_equal(
        _maps(images * 2.0**-70, backend, scale=scale, precision="bf16-emulated"), at_one
    )


@given(exponent=st.floats(-100.0, 54.0), seed=st.integers(0, 2**16))
def test_numba_maps_of_any_scale_are_the_reference(exponent, seed):
    """Any scale from 2^-100 to 2^54 (times the frames' largest pixel of 0.05)."""
    images = _frames(seed)
    backend = make_cpu_backend("numba1")
    for scale in ("maxabs", "ring"):
        reference = _maps(images, get_backend("numpy"), scale=scale)
        maps = _maps(images * 2.0**exponent, backend, scale=scale)
        assert np.max(np.abs(maps - reference)) <= RTOL


@pytest.mark.parametrize("scale", ["maxabs", "ring"])
def test_the_chain_of_stages_in_float32_does_not_depend_on_the_intensity_scale(scale):
    """:meth:`Backend.merged_maps`, the definition the fused paths shorten, in float32."""
    from ccfkit.backends import Backend
    from ccfkit.backends.array import NumpyBackend

    images = _frames()
    plan = ccfkit.make_polar_plan(images.shape[1:], q_bins=12, phi_bins=32)
    reference = NumpyBackend().merged_maps(images, plan, scale=scale, orders=(8, 2))
    float32 = NumpyBackend(dtype=np.float32)
    for s in SCALES:
        maps = Backend.merged_maps(float32, images * s, plan, scale=scale, orders=(8, 2))
        assert np.max(np.abs(maps - reference)) <= RTOL, s


def test_a_batch_within_range_is_neither_copied_nor_undone():
    """The usual batch costs two reductions: its values come back as they are, no exponents."""
    from ccfkit.backends._range import bring_into_range, unscale_maps

    values = np.random.default_rng(0).normal(size=(3, 4, 8)).astype(np.float32)
    kept, exponents = bring_into_range(values)
    assert kept is values and exponents is None
    maps = np.ones((3, 1, 4, 4))
    assert unscale_maps(maps, exponents, "none") is maps
    values[1] *= 1e-20  # one image far below 1: that one alone is scaled, by a power of two
    scaled, exponents = bring_into_range(values)
    assert exponents[0] == exponents[2] == 0 and exponents[1] > 0
    np.testing.assert_array_equal(scaled[[0, 2]], values[[0, 2]])
    largest = np.abs(scaled[1]).max()
    assert 0.5 <= largest < 1 and np.array_equal(scaled[1], np.ldexp(values[1], exponents[1]))
    np.testing.assert_array_equal(unscale_maps(maps, exponents, "none")[1],
                                  np.ldexp(1.0, -2 * int(exponents[1])))  # fmt: skip
