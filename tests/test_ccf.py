"""The correlation maps (docs/ccf.md §3) and the merged triangle map (docs/ccf.md §4)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    cos_profile,
    harmonic,
    isotropic,
    naive_full_map,
    triangles,
)
from hypothesis import assume, given
from hypothesis import strategies as st

from ccfkit import (
    angular_fourier,
    compute_maps,
    full_map,
    make_polar_plan,
    merge_maps,
    order_map,
    resample,
)
from ccfkit.ccf import angular_shift


def _random_polar(seed, batch, q_bins, phi_bins, bad):
    rng = np.random.default_rng(seed)
    valid = rng.random((batch, q_bins, phi_bins)) >= bad
    values = np.where(valid, rng.normal(1.0, 1.0, valid.shape), 0.0)
    return values, valid


# --------------------------------------------------------------------------
# Full map (Eq. 13)
# --------------------------------------------------------------------------


@given(
    batch=st.integers(1, 3),
    q_bins=st.integers(1, 6),
    half_p=st.integers(1, 10),
    bad=st.sampled_from([0.0, 0.3, 0.9]),
    seed=st.integers(0, 2**16),
)
def test_full_map_matches_eq13(batch, q_bins, half_p, bad, seed):
    values, valid = _random_polar(seed, batch, q_bins, 2 * half_p, bad)
    result = full_map(values, valid)
    # float64 sums of <= 20 products of order 1: round-off only.
    np.testing.assert_allclose(
        result, naive_full_map(values, valid, values, valid), rtol=0, atol=1e-12
    )


def test_full_map_without_mask_is_a_gram_matrix():
    values, valid = _random_polar(1, 2, 7, 32, 0.0)
    expected = values @ values.transpose(0, 2, 1) / 32
    np.testing.assert_allclose(full_map(values, valid), expected, rtol=1e-13)  # round-off


@given(
    q_bins=st.integers(1, 6),
    half_p=st.integers(2, 16),
    shift=st.integers(-40, 40),
    jitter=st.floats(-0.4, 0.4),
    bad=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 2**16),
)
def test_delta_equals_rolling_one_ring_set(q_bins, half_p, shift, jitter, bad, seed):
    phi_bins = 2 * half_p
    values, valid = _random_polar(seed, 2, q_bins, phi_bins, bad)
    # A separation within 0.4 samples of `shift` samples (never half-way).
    delta = (shift + jitter) * 2 * np.pi / phi_bins
    assert angular_shift(delta, phi_bins) == shift
    expected = naive_full_map(
        values, valid, np.roll(values, -shift, axis=-1), np.roll(valid, -shift, axis=-1)
    )
    # float64 round-off only.
    np.testing.assert_allclose(full_map(values, valid, delta), expected, rtol=0, atol=1e-12)


def test_delta_direction_on_a_shifted_ring():
    # Ring 1 is ring 0 turned by +3 samples: C[0, 1] at delta = 3 samples pairs
    # I0[p] with I1[p + 3] = I0[p], the ring's mean square.
    rng = np.random.default_rng(4)
    ring = rng.random(16)
    values = np.stack([ring, np.roll(ring, 3)])[None]
    valid = np.ones_like(values, dtype=bool)
    delta = 3 * 2 * np.pi / 16
    assert full_map(values, valid, delta)[0, 0, 1] == pytest.approx(np.mean(ring**2), rel=1e-13)


@given(half_p=st.integers(2, 16), bad=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 2**16))
def test_maps_are_symmetric_at_delta_zero(half_p, bad, seed):
    values, valid = _random_polar(seed, 2, 5, 2 * half_p, bad)
    full = full_map(values, valid)
    order = order_map(angular_fourier(values, valid, [3])[..., 0])
    # Symmetric by construction; allow float64 round-off of a matrix product.
    np.testing.assert_allclose(full, full.transpose(0, 2, 1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(order, order.transpose(0, 2, 1), rtol=0, atol=1e-12)


def test_full_map_pair_count_zero_gives_zero():
    values = np.zeros((1, 2, 8))
    valid = np.zeros((1, 2, 8), dtype=bool)
    valid[0, 0, :4] = True  # ring 0 valid on the first half only
    valid[0, 1, 4:] = True  # ring 1 on the second half: no valid pair
    values[valid] = 2.0
    result = full_map(values, valid)
    assert np.isfinite(result).all()
    # Exact: 0 is the defined value; the diagonal is the ring's mean square, 4.
    assert result[0, 0, 1] == 0.0 and result[0, 1, 0] == 0.0
    np.testing.assert_allclose(np.diagonal(result[0]), 4.0, rtol=1e-15)


# --------------------------------------------------------------------------
# Order map (Eq. 14)
# --------------------------------------------------------------------------


@given(q_bins=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_order_map_is_real_part_of_conjugate_product(q_bins, seed):
    rng = np.random.default_rng(seed)
    coefficients = rng.normal(size=(2, q_bins)) + 1j * rng.normal(size=(2, q_bins))
    expected = np.real(np.conj(coefficients[:, :, None]) * coefficients[:, None, :])
    np.testing.assert_allclose(order_map(coefficients), expected, rtol=0, atol=1e-13)  # round-off


# --------------------------------------------------------------------------
# Analytic patterns through the whole chain
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 8])
def test_isotropic_pattern_full_map_is_outer_product_and_order_maps_vanish(n):
    shape, center = (75, 79), (38.6, 36.2)
    g, eps = cos_profile()
    plan = make_polar_plan(shape, center=center, q_bins=24, phi_bins=64)
    maps = compute_maps(
        isotropic(shape, center, g),
        center=center,
        q_bins=24,
        phi_bins=64,
        order=n,
        scale="none",
        backend="numpy",
    )
    gk = g(plan.radius)
    lower, upper = triangles(24)
    # Each sample is g(r_k) + e with |e| <= eps (bilinear bound), so
    # |C[i, j] - g_i g_j| <= eps (g_i + g_j) + eps^2; plus float32 output
    # rounding (1e-6 relative on values ~6).
    bound = eps * (gk[:, None] + gk[None, :]) + eps**2 + 1e-6 * 6.25
    outer = np.outer(gk, gk)
    assert np.all(np.abs(maps - outer)[lower] <= bound[lower])
    # For n > 0, |F[k, n]| <= eps, so |Cn| <= eps^2 (+ float32 rounding).
    assert np.max(np.abs(maps[upper])) <= eps**2 + 1e-9


@given(m=st.integers(1, 8), phi0=st.floats(0, 2 * np.pi))
def test_harmonic_pattern_order_map_diagonal_is_quarter_amplitude_squared(m, phi0):
    shape, center = (97, 97), (48.0, 48.0)
    r_min, r_max = 30.0, 46.0
    plan = make_polar_plan(shape, center=center, q_bins=8, phi_bins=64, r_min=r_min, r_max=r_max)
    polar = resample(harmonic(shape, center, lambda r: np.ones_like(r), m, phi0), plan)
    cn = order_map(angular_fourier(polar.values, polar.valid, [m])[..., 0])[0]
    # f = cos(m(phi - phi0)): second derivatives <= (m^2 + 2m) / r^2, so each
    # sample is off by eps = (m^2 + 2m) / (4 r_min^2) at most and
    # |F| = 1/2 +- eps; Cn[k, l] = Re(conj F_k F_l) = 1/4 +- (eps + eps^2).
    eps = (m * m + 2 * m) / (4 * r_min**2)
    np.testing.assert_allclose(cn, 0.25, rtol=0, atol=eps + eps**2)
    # Full map of a pure harmonic: the ring mean of cos^2 = 1/2 at delta = 0.
    full = full_map(polar.values, polar.valid)[0]
    np.testing.assert_allclose(full, 0.5, rtol=0, atol=2 * eps + eps**2)


@given(
    batch=st.integers(1, 4),
    q_bins=st.integers(2, 9),
    seed=st.integers(0, 2**16),
    order_scale=st.sampled_from([1e-6, 1.0, 1e6]),
)
def test_merged_map_scales_each_triangle_on_its_own(batch, q_bins, seed, order_scale):
    rng = np.random.default_rng(seed)
    full = rng.normal(size=(batch, q_bins, q_bins))
    order = order_scale * rng.normal(size=(batch, q_bins, q_bins))
    merged = merge_maps(full, order)
    lower, upper = triangles(q_bins)
    for b in range(batch):
        full_max = np.max(np.abs(full[b][lower]))
        order_max = np.max(np.abs(order[b][upper]))
        # Divisions in float64: round-off only.
        np.testing.assert_allclose(merged[b][lower], full[b][lower] / full_max, rtol=1e-14)
        np.testing.assert_allclose(merged[b][upper], order[b][upper] / order_max, rtol=1e-14)
        # Each triangle reaches 1 in magnitude and stays within [-1, 1].
        assert np.max(np.abs(merged[b][lower])) == pytest.approx(1.0, rel=1e-14)
        assert np.max(np.abs(merged[b][upper])) == pytest.approx(1.0, rel=1e-14)
    assert np.all(np.abs(merged) <= 1.0 + 1e-14)


def test_merged_map_scale_none_returns_raw_maps():
    rng = np.random.default_rng(5)
    full = rng.normal(size=(2, 6, 6)) * 100
    order = rng.normal(size=(2, 6, 6)) * 0.01
    merged = merge_maps(full, order, scale="none")
    lower, upper = triangles(6)
    # Exact: no arithmetic at all, only selection.
    np.testing.assert_array_equal(merged[:, lower], full[:, lower])
    np.testing.assert_array_equal(merged[:, upper], order[:, upper])


def test_merged_map_ignores_the_other_triangle():
    # The full map's upper triangle and the order map's lower one (including
    # the diagonal) must not affect the scale of the other triangle.
    full = np.ones((1, 4, 4))
    order = np.ones((1, 4, 4))
    full[0, 0, 3] = 1000.0  # upper: not shown
    order[0, 2, 2] = 1000.0  # diagonal: belongs to the full map
    merged = merge_maps(full, order)
    np.testing.assert_allclose(merged, 1.0, rtol=1e-15)  # every shown value is its triangle's max


def test_all_zero_triangle_stays_zero():
    merged = merge_maps(np.zeros((1, 5, 5)), np.zeros((1, 5, 5)))
    assert np.isfinite(merged).all()
    np.testing.assert_array_equal(merged, 0.0)  # exact: 0 / (nothing) is defined as 0


def test_unknown_scale_is_rejected():
    with pytest.raises(ValueError):
        merge_maps(np.ones((1, 3, 3)), np.ones((1, 3, 3)), scale="log")


@given(delta_samples=st.integers(1, 15), seed=st.integers(0, 2**16))
def test_merged_lower_triangle_uses_delta(delta_samples, seed):
    values, valid = _random_polar(seed, 1, 5, 32, 0.2)
    delta = delta_samples * 2 * np.pi / 32
    full = full_map(values, valid, delta)
    assume(not np.allclose(full, full_map(values, valid)))
    order = order_map(angular_fourier(values, valid, [2])[..., 0])
    merged = merge_maps(full, order, scale="none")
    lower, _ = triangles(5)
    # Selection only: exact.
    np.testing.assert_array_equal(merged[0][lower], full[0][lower])
