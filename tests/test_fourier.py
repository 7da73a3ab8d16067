"""Angular Fourier decomposition (docs/ccf.md §2, Eq. 15)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cos_profile, harmonic, isotropic, naive_fourier
from hypothesis import given
from hypothesis import strategies as st

from ccfkit import angular_fourier, make_polar_plan, resample


@given(
    batch=st.integers(1, 3),
    q_bins=st.integers(1, 6),
    half_p=st.integers(1, 12),
    bad=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_fourier_matches_eq15(batch, q_bins, half_p, bad, seed):
    rng = np.random.default_rng(seed)
    phi_bins = 2 * half_p
    valid = rng.random((batch, q_bins, phi_bins)) >= bad
    values = np.where(valid, rng.normal(size=valid.shape), 0.0)
    all_orders = angular_fourier(values, valid)
    expected = naive_fourier(values, valid, range(phi_bins // 2 + 1))
    assert all_orders.shape == (batch, q_bins, phi_bins // 2 + 1)
    # float64 sums of <= 24 terms of order 1: round-off only.
    np.testing.assert_allclose(all_orders, expected, rtol=0, atol=1e-12)
    chosen = [0, phi_bins // 2, min(1, phi_bins // 2)]
    some = angular_fourier(values, valid, chosen)
    np.testing.assert_allclose(some, expected[..., chosen], rtol=0, atol=1e-12)


def test_ring_without_valid_samples_gives_zero():
    values = np.zeros((1, 3, 8))
    valid = np.ones((1, 3, 8), dtype=bool)
    valid[0, 1] = False
    values[0, [0, 2]] = 1.0
    coefficients = angular_fourier(values, valid)
    assert np.isfinite(coefficients).all()
    # Exact: an empty ring is defined as 0; full rings of ones give F0 = 1.
    np.testing.assert_array_equal(coefficients[0, 1], 0.0)
    np.testing.assert_allclose(coefficients[0, [0, 2], 0], 1.0, rtol=1e-15)


def test_normalised_by_valid_count_not_by_p():
    # A ring of 5.0 with half its samples invalid has mean 5, not 2.5.
    values = np.zeros((1, 1, 16))
    valid = np.zeros((1, 1, 16), dtype=bool)
    valid[0, 0, ::2] = True
    values[valid] = 5.0
    coefficients = angular_fourier(values, valid, [0])
    assert coefficients[0, 0, 0] == pytest.approx(5.0, rel=1e-14)  # round-off only


def test_isotropic_pattern_has_only_order_zero():
    shape, center = (73, 69), (35.4, 36.2)
    g, eps = cos_profile()
    plan = make_polar_plan(shape, center=center, q_bins=16, phi_bins=64)
    polar = resample(isotropic(shape, center, g), plan)
    coefficients = angular_fourier(polar.values, polar.valid)[0]
    # F[k, 0] is the ring mean of g(r_k) + e with |e| <= eps (bilinear bound).
    np.testing.assert_allclose(coefficients[:, 0].real, g(plan.radius), rtol=0, atol=eps)
    # For n > 0 the constant g(r_k) sums to 0 over the ring; only e is left.
    assert np.max(np.abs(coefficients[:, 1:])) <= eps


@given(m=st.integers(1, 8), phi0=st.floats(-np.pi, np.pi))
def test_harmonic_pattern_has_half_amplitude_at_its_order(m, phi0):
    shape, center = (97, 101), (50.0, 48.0)
    r_min, r_max = 30.0, 46.0

    def g(r):  # linear, so the Hessian bound below is simple
        return 1.0 + r / 40.0

    plan = make_polar_plan(shape, center=center, q_bins=8, phi_bins=64, r_min=r_min, r_max=r_max)
    polar = resample(harmonic(shape, center, g, m, phi0), plan)
    coefficients = angular_fourier(polar.values, polar.valid)[0]
    # Bilinear bound (|f_xx| + |f_yy|) / 8 for f = g(r) h(phi), h = cos(m(.)):
    # each second derivative <= |g'|/r + 2 |g'| m / r + g (m^2 + 2m) / r^2.
    slope, g_max = 1.0 / 40.0, g(r_max)
    hessian = slope / r_min + 2 * slope * m / r_min + g_max * (m * m + 2 * m) / r_min**2
    eps = 2 * hessian / 8
    expected = g(plan.radius) / 2 * np.exp(-1j * m * phi0)
    # |F[k, m] - g/2 e^{-i m phi0}| <= eps, so also ||F| - g/2| <= eps.
    assert np.max(np.abs(np.abs(coefficients[:, m]) - g(plan.radius) / 2)) <= eps
    assert np.max(np.abs(coefficients[:, m] - expected)) <= eps
    # Orders other than m (and below P/2 - m) see only interpolation error.
    others = [n for n in range(12) if n != m]
    assert np.max(np.abs(coefficients[:, others])) <= eps


def test_float32_input_gives_complex64():
    values = np.ones((1, 2, 8), dtype=np.float32)
    valid = np.ones(values.shape, dtype=bool)
    assert angular_fourier(values, valid).dtype == np.complex64
    assert angular_fourier(values, valid, [2]).dtype == np.complex64
    assert angular_fourier(values.astype(np.float64), valid).dtype == np.complex128
    # One ring of ones: F0 = 1 exactly in any precision.
    assert angular_fourier(values, valid)[0, 0, 0] == pytest.approx(1.0, abs=1e-7)
