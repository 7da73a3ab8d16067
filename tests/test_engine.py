"""compute_maps: the one-call entry point (shapes, dtype, errors, masks, NaN)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cos_profile, isotropic, random_mask, triangles
from hypothesis import given
from hypothesis import strategies as st

import ccfkit
from ccfkit import compute_maps, make_polar_plan
from ccfkit.backends.array import NumpyBackend

SMALL = {"q_bins": 16, "phi_bins": 32}


# --------------------------------------------------------------------------
# Shapes and dtype
# --------------------------------------------------------------------------


def test_single_image_gives_one_map(rng):
    maps = compute_maps(rng.random((41, 45)), backend="numpy", **SMALL)
    assert maps.shape == (16, 16) and maps.dtype == np.float32
    # maxabs scaling: both triangles reach 1 (float32 rounding).
    lower, upper = triangles(16)
    assert np.max(np.abs(maps[lower])) == pytest.approx(1.0, abs=1e-6)
    assert np.max(np.abs(maps[upper])) == pytest.approx(1.0, abs=1e-6)


def test_batch_gives_a_stack(cpu_backend, rng):
    maps = compute_maps(rng.random((3, 41, 45)), backend=cpu_backend, **SMALL)
    assert maps.shape == (3, 16, 16) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert np.all(np.abs(maps) <= 1.0 + 1e-6)  # maxabs: within [-1, 1] up to float32 rounding


def test_defaults_on_259_square_give_224_square(rng):
    image = rng.random((259, 259))
    maps = compute_maps(image, backend="numpy")
    assert maps.shape == (224, 224) and maps.dtype == np.float32
    # The default geometry: centre (129, 129), r_max 129, 224 x 512 samples.
    plan = make_polar_plan((259, 259))
    assert plan.radius.shape == (224,) and plan.phi.shape == (512,)
    # Default order 8 and delta 0 are what the defaults compute.
    explicit = compute_maps(
        image,
        backend="numpy",
        order=8,
        q_bins=224,
        phi_bins=512,
        center=(129, 129),
        r_min=0.0,
        r_max=129.0,
        delta=0.0,
        scale="maxabs",
    )
    np.testing.assert_array_equal(maps, explicit)  # same computation: exact


@given(batch=st.integers(1, 5), chunk=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_batch_equals_images_one_by_one(batch, chunk, seed):
    rng = np.random.default_rng(seed)
    images = rng.random((batch, 23, 27))
    stacked = compute_maps(images, backend=NumpyBackend(batch_size=chunk), **SMALL)
    for b in range(batch):
        alone = compute_maps(images[b], backend="numpy", **SMALL)
        # Independent per image: identical up to BLAS blocking (float32 output).
        np.testing.assert_allclose(stacked[b], alone, rtol=0, atol=1e-6)


def test_compute_maps_is_the_chain_of_stages(rng):
    shape, center = (37, 53), (25.5, 18.25)
    mask = random_mask(rng, shape, 0.15)
    images = rng.random((2,) + shape)
    images[0, 10, 10] = np.nan
    kw = {"center": center, "q_bins": 12, "phi_bins": 48}
    plan = make_polar_plan(shape, mask=mask, **kw)
    polar = ccfkit.resample(images, plan)
    coefficients = ccfkit.angular_fourier(polar.values, polar.valid, [5])[..., 0]
    full = ccfkit.full_map(polar.values, polar.valid, 0.7)
    expected = ccfkit.merge_maps(full, ccfkit.order_map(coefficients)).astype(np.float32)
    maps = compute_maps(images, mask=mask, order=5, delta=0.7, backend="numpy", **kw)
    np.testing.assert_allclose(maps, expected, rtol=0, atol=1e-7)  # same float64 path, float32 out


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (np.ones(40), {}, r"\(B, H, W\) or \(H, W\)"),
        (np.ones((2, 2, 20, 20)), {}, r"\(B, H, W\) or \(H, W\)"),
        (np.ones((20, 20)), {"mask": np.ones((20, 21), dtype=bool)}, "mask has shape"),
        (np.ones((20, 20)), {"center": (25.0, 10.0)}, "outside the detector"),
        (np.ones((20, 20)), {"center": (10.0, -0.5)}, "outside the detector"),
        (np.ones((20, 20)), {"r_min": 9.0, "r_max": 3.0}, "r_min < r_max"),
        (np.ones((20, 20)), {"r_min": 3.0, "r_max": 3.0}, "r_min < r_max"),
        (np.ones((20, 20)), {"phi_bins": 33}, "even phi_bins"),
    ],
    ids=["1d", "4d", "mask-shape", "centre-x", "centre-y", "r-order", "r-empty", "odd-phi"],
)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_compute_maps_rejects_bad_input(images, kwargs, match, backend):
    with pytest.raises(ValueError, match=match):
        compute_maps(images, backend=backend, **{"q_bins": 4, "phi_bins": 8, **kwargs})


# --------------------------------------------------------------------------
# Masks, NaN, inf through every CPU backend
# --------------------------------------------------------------------------


def test_masking_twenty_percent_of_isotropic_pattern(cpu_backend):
    shape, center = (81, 81), (40.3, 39.6)
    g, _ = cos_profile()
    image = isotropic(shape, center, g)
    mask = random_mask(np.random.default_rng(12), shape, 0.2)
    kw = {
        "center": center,
        "q_bins": 16,
        "phi_bins": 64,
        "r_min": 4.0,
        "min_ring_fraction": 0.0,  # 20 % bad pixels leave ~40 % of the bilinear samples
        "order": 0,
        "scale": "none",
        "backend": cpu_backend,
    }
    clean = compute_maps(image, **kw)
    masked = compute_maps(image, mask=mask, **kw)
    # Both maps are ring means of (g_i + e)(g_j + e) with |e| <= 0.002 and
    # g >= 1.5 (cos_profile), i.e. within 0.45 % of g_i g_j each: < 1 % apart.
    # This holds for the full map (lower) and for F0_i F0_j (upper).
    np.testing.assert_allclose(masked, clean, rtol=0.01)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, 1e30])
def test_masked_bad_pixels_change_nothing(cpu_backend, rng, bad_value):
    shape = (37, 53)
    images = rng.random((2,) + shape)
    mask = random_mask(rng, shape, 0.2)
    mask[0, 0] = False
    zeroed, filled = images.copy(), images.copy()
    zeroed[:, ~mask] = 0.0
    filled[:, ~mask] = bad_value
    kw = dict(mask=mask, center=(20.5, 17.0), order=3, delta=0.4, backend=cpu_backend, **SMALL)
    for scale in ("none", "maxabs"):
        a = compute_maps(zeroed, scale=scale, **kw)
        b = compute_maps(filled, scale=scale, **kw)
        assert np.isfinite(b).all()
        # Same good pixels, same arithmetic: equal to float32 round-off of a
        # BLAS product at most; a leak of 1e30/inf/NaN would be far off.
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6 * max(1.0, np.max(np.abs(a))))


def test_unmasked_nan_pixel_never_produces_nan(cpu_backend, rng):
    shape = (37, 53)
    images = rng.random((3,) + shape)
    images[0, 18, 26] = np.nan  # near the centre: every map row of that ring is affected
    images[1, 5, 40] = np.inf
    images[2, 30, 10] = -np.inf
    for scale in ("none", "maxabs"):
        maps = compute_maps(images, scale=scale, order=2, delta=0.3, backend=cpu_backend, **SMALL)
        assert np.isfinite(maps).all()
    # The NaN only removes a few samples: the maps stay close to the maps of
    # the image with that pixel masked instead (same samples invalid).
    mask = np.ones(shape, dtype=bool)
    mask[18, 26] = False
    nan_maps = compute_maps(images[0], scale="none", backend=cpu_backend, **SMALL)
    masked = compute_maps(images[0], mask=mask, scale="none", backend=cpu_backend, **SMALL)
    # Identical sample sets: equal up to float32 round-off.
    np.testing.assert_allclose(nan_maps, masked, rtol=0, atol=1e-6 * np.max(np.abs(masked)))


def test_ring_fully_masked_gives_zero_rows(cpu_backend):
    shape, center = (41, 41), (20.0, 20.0)
    r = np.hypot(*np.mgrid[-20:21, -20:21])
    mask = (r < 7.5) | (r > 10.5)  # an annulus of bad pixels
    image = np.ones(shape) + 0.1 * np.random.default_rng(1).random(shape)
    kw = {
        "center": center,
        "q_bins": 10,
        "phi_bins": 32,
        "r_min": 0.5,
        "r_max": 20.5,
        "order": 0,
        "scale": "none",
    }
    maps = compute_maps(image, mask=mask, backend=cpu_backend, **kw)
    geometry = {k: kw[k] for k in ("center", "q_bins", "phi_bins", "r_min", "r_max")}
    plan = make_polar_plan(shape, mask=mask, **geometry)
    empty = ~plan.valid.any(axis=1)
    assert empty.any()
    assert np.isfinite(maps).all()
    # Exact: rings without valid samples give F = 0 and no valid pairs (C = 0).
    np.testing.assert_array_equal(maps[empty, :], 0.0)
    np.testing.assert_array_equal(maps[:, empty], 0.0)


def test_empty_batch_gives_empty_stack(cpu_backend):
    maps = compute_maps(np.zeros((0, 21, 23)), backend=cpu_backend, **SMALL)
    assert maps.shape == (0, 16, 16) and maps.dtype == np.float32


@pytest.mark.parametrize("order", [-1, 17])
def test_compute_maps_rejects_orders_beyond_the_nyquist_order(order):
    # P = 32 angular samples resolve orders 0..16; order 17 would alias to 15
    with pytest.raises(ValueError, match="orders? must (lie in 0..phi_bins/2|be non-negative)"):
        ccfkit.compute_maps(np.ones((17, 17)), order=order, q_bins=4, phi_bins=32)


# --------------------------------------------------------------------------
# Maps written into the caller's array (out=)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{}, {"orders": (4, 2)}, {"estimator": "mask-corrected"}, {"scale": "none"}],
    ids=["order-8", "two-orders", "mask-corrected", "unscaled"],
)
def test_maps_written_into_out_equal_new_maps(cpu_backend, rng, fields):
    images = rng.random((3, 41, 45)) * 100
    images[1, 20, 22] = np.nan  # an image with its own validity
    mask = random_mask(rng, (41, 45), 0.1)
    expected = compute_maps(images, mask=mask, backend=cpu_backend, **SMALL, **fields)
    out = np.full(expected.shape, np.nan, dtype=np.float32)  # stale contents
    returned = compute_maps(images, mask=mask, backend=cpu_backend, out=out, **SMALL, **fields)
    assert returned is out
    np.testing.assert_array_equal(out, expected)  # bit for bit, NaN included
    one = compute_maps(images[1], mask=mask, backend=cpu_backend, **SMALL, **fields)
    single = np.full(one.shape, np.nan, dtype=np.float32)
    assert compute_maps(images[1], mask=mask, backend=cpu_backend, out=single, **SMALL,
                        **fields) is single  # fmt: skip
    np.testing.assert_array_equal(single, one)


@pytest.mark.parametrize(
    "out",
    [
        np.zeros((2, 16, 16), dtype=np.float64),
        np.zeros((3, 16, 16), dtype=np.float32),
        np.zeros((2, 1, 16, 16), dtype=np.float32),
        np.zeros((2, 16, 32), dtype=np.float32)[:, :, ::2],
        [[0.0] * 16] * 16,
    ],
    ids=["float64", "batch", "channel-axis", "strided", "list"],
)
@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_compute_maps_refuses_an_out_it_cannot_write(backend, out):
    with pytest.raises(ValueError, match="out must be a C-contiguous float32"):
        compute_maps(np.ones((2, 21, 23)), backend=backend, out=out, **SMALL)
