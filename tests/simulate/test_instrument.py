"""``ccfkit.simulate.instrument``: polarisation, solid angle, halo and the MCP response."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest

from ccfkit import simulate as sim
from ccfkit.simulate import instrument

from .helpers import config, one_particle


def ring_harmonic(image, center, radius, good):
    """``sum I cos(2 phi) / sum I`` over the good pixels within 0.5 px of ``radius``, and
    its Poisson standard error ``sqrt(sum I cos^2(2 phi)) / sum I``."""
    y, x = np.indices(image.shape)
    dx, dy = x - center[0], y - center[1]
    ring = good & (np.abs(np.hypot(dx, dy) - radius) < 0.5)
    cos2 = np.cos(2 * np.arctan2(dy, dx))[ring]
    values = image[ring].astype(np.float64)
    total = values.sum()
    return (values * cos2).sum() / total, math.sqrt((values * cos2**2).sum()) / total


@pytest.mark.parametrize("two_theta_deg", [8.0, 18.0, 28.0])
def test_polarisation_of_a_spheres_mean_pattern_matches_the_thomson_factor(two_theta_deg):
    """Spheres in a horizontally polarised beam: on a ring at 2theta, the intensity
    goes as 1 - sin^2(2theta) cos^2(phi), whose cos(2 phi) harmonic over the ring mean
    is h = -(s/4) / (1 - s/2) (s = sin^2 2theta, a ring of constant |q|; the pixels
    of a ring around the detector middle are symmetric under a quarter turn). The
    mean of 24 noisy frames must lie within 4 Poisson standard errors of it (and
    h differs from 0 by > 10 of them: without polarisation the test fails)."""
    cfg = config(size=129, hole_radius=3.0, fluence=(1e7, 1e7), mix="sphere=1")
    det = cfg.detector
    params = sim.draw_parameters(cfg, 4, np.arange(24))
    mean = sim.render_frames(params, cfg, 4).mean(axis=0)
    center = det.nominal_center  # no jitter
    radius = det.distance * math.tan(math.radians(two_theta_deg)) / det.pixel_size
    got, error = ring_harmonic(mean * 24, center, radius, det.good_pixels())
    s = math.sin(math.radians(two_theta_deg)) ** 2
    want = -(s / 4) / (1 - s / 2)
    assert abs(got - want) < 4 * error, (got, want, error)
    assert abs(want) > 10 * error
    # Unpolarised: no harmonic (within the same error).
    flat = sim.render_frames(params, replace(cfg, polarization="unpolarised"), 4)
    got_flat, error_flat = ring_harmonic(flat.sum(axis=0), center, radius, det.good_pixels())
    assert abs(got_flat) < 4 * error_flat


def test_solid_angle_factor_at_the_corner_is_cos_cubed():
    """Same particle with and without the solid angle: the ratio of the two patterns,
    normalised at the beam centre's neighbour, is cos^3(2 theta) at the corner pixel."""
    cfg = config(size=129, hole_radius=0.0, polarization="none")
    params = one_particle(cfg, a=60, c=60, axis=(0, 0, 1), energy=20, kind=sim.Kind.SPHERE)
    on = sim.expected_counts(params, cfg)[0].astype(np.float64)
    off = sim.expected_counts(params, replace(cfg, solid_angle=False))[0]
    ratio = on / off
    det = cfg.detector
    cx, cy = det.nominal_center
    corner = math.hypot(0 - cx, 0 - cy) * det.pixel_size
    two_theta = math.atan(corner / det.distance)
    near = math.atan(det.pixel_size / det.distance)  # the pixel next to the centre
    assert math.degrees(two_theta) > 38  # 30 deg at the half-width, 39 in the corner
    assert ratio[0, 0] / ratio[64, 65] == pytest.approx(
        math.cos(two_theta) ** 3 / math.cos(near) ** 3, rel=1e-5
    )  # float32
    assert instrument.solid_angle_factor(
        np.array([-cx * det.pixel_size / det.distance]),
        np.array([[-cy * det.pixel_size / det.distance]]),
    )[0, 0] == pytest.approx(math.cos(two_theta) ** 3, rel=1e-6)


def radial_profile(image, center, good, edges):
    y, x = np.indices(image.shape)
    r = np.hypot(x - center[0], y - center[1])
    return np.array(
        [image[good & (r >= lo) & (r < hi)].mean() for lo, hi in itertools.pairwise(edges)]
    )


def test_the_halo_makes_an_empty_frames_radial_profile_fall_off():
    """An empty frame with a halo: counts fall from the centre outwards (many sigma);
    without the halo the profile is flat (the flat background only)."""
    cfg = config(size=129, mix="empty=1", background=0.01, halo=(2e4, 2e4), halo_width=(6, 6))
    det = cfg.detector
    params = sim.draw_parameters(cfg, 0, np.arange(4))
    frames = sim.render_frames(params, cfg, 0)
    edges = np.array([4, 12, 24, 40, 60])
    good = det.good_pixels()
    for frame in frames:
        profile = radial_profile(frame, det.nominal_center, good, edges)
        assert np.all(np.diff(profile) < 0), profile
        assert frame[good].sum() == pytest.approx(2e4 + 0.01 * good.sum(), rel=0.05)
    no_halo = replace(cfg, halo=(0, 0))
    flat = sim.render_frames(sim.draw_parameters(no_halo, 0, np.arange(4)), no_halo, 0)
    profile = radial_profile(flat.mean(axis=0), det.nominal_center, good, edges)
    # 0.01 photons per pixel: each annulus mean within 5 standard errors of 0.01.
    counts = np.array([(good & ring).sum() for ring in _annuli(det, edges)]) * len(flat)
    assert np.all(np.abs(profile - 0.01) < 5 * np.sqrt(0.01 / counts)), profile


def _annuli(det, edges):
    y, x = np.indices(det.shape)
    r = np.hypot(x - det.nominal_center[0], y - det.nominal_center[1])
    return [(r >= lo) & (r < hi) for lo, hi in itertools.pairwise(edges)]


def test_mcp_response_keeps_the_mean_and_widens_the_counts():
    """Gamma gains of mean 1 and relative spread s: a pixel with n photons reads
    mean n, variance n s^2; over Poisson(lam) counts, variance lam (1 + s^2). The blur
    keeps the total (away from the edges) and mixes neighbours."""
    rng = np.random.default_rng(0)
    lam, spread = 2.0, 0.6
    counts = sim.poisson_counts(np.full((200, 200), lam, dtype=np.float32), rng)
    good = np.ones(counts.shape, dtype=bool)
    values = instrument.mcp_response(counts, rng, gain_spread=spread, blur_px=0, good=good)
    n = values.size
    assert values.mean() == pytest.approx(lam, abs=5 * math.sqrt(lam * (1 + spread**2) / n))
    assert values.var() == pytest.approx(lam * (1 + spread**2), rel=0.03)
    spot = np.zeros((31, 31), dtype=np.float32)
    spot[15, 15] = 10.0
    blurred = instrument.mcp_response(
        spot, rng, gain_spread=0, blur_px=0.7, good=np.ones_like(spot, bool)
    )
    assert blurred.sum() == pytest.approx(10.0, rel=1e-5)
    assert blurred[15, 15] < 10 and blurred[15, 16] > 0.5
    masked = np.ones_like(spot, bool)
    masked[15, 16] = False
    assert instrument.mcp_response(spot, rng, gain_spread=0, blur_px=0.7, good=masked)[15, 16] == 0


def test_mcp_frames_keep_the_photons_and_are_reproducible():
    """--mcp: the same Poisson draws (same seed), then gains of mean 1 and the blur:
    frame totals are those of the blurred counts (what the blur spreads into the
    hole and off the edges is lost) within 5 gain standard deviations, values are no
    longer whole numbers, the hole stays 0, and a second render is identical."""
    cfg = config(size=65, mix="sphere=1", fluence=(5e4, 5e4))
    params = sim.draw_parameters(cfg, 2, np.arange(4))
    counts = sim.render_frames(params, cfg, 2)
    mcp = replace(cfg, mcp=True)
    values = sim.render_frames(params, mcp, 2)
    np.testing.assert_array_equal(values, sim.render_frames(params, mcp, 2))
    from scipy.ndimage import gaussian_filter

    good = cfg.detector.good_pixels()
    totals = values.sum(axis=(1, 2), dtype=np.float64)
    for frame, total in zip(counts, totals):
        blurred = (gaussian_filter(frame.astype(np.float64), 0.7, mode="constant") * good).sum()
        assert total < 0.97 * frame.sum()  # the blur loses photons into the hole
        # the gains add 0.6 sqrt(photons) to a total's standard deviation
        assert abs(total - blurred) < 5 * 0.6 * math.sqrt(frame.sum()), (total, blurred)
    assert np.any(values != np.round(values))
    assert np.all(values[:, ~cfg.detector.good_pixels()] == 0)
