"""Polar resampling (docs/ccf.md §1): grid, angle convention, validity, masks, NaN."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
from conftest import (
    cos_profile,
    expected_validity,
    isotropic,
    needed_pixels,
    random_mask,
)
from hypothesis import given
from hypothesis import strategies as st

import ccfkit
from ccfkit import compute_maps, default_r_max, make_polar_plan, resample
from ccfkit.geometry import ScatteringGeometry
from ccfkit.polar import PlanSpec, RingGrid

# --------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------


@given(
    q_bins=st.integers(1, 40),
    half_p=st.integers(1, 40),
    r_min=st.floats(0, 10),
    width=st.floats(0.5, 20),
)
def test_grid_follows_spec(q_bins, half_p, r_min, width):
    plan = make_polar_plan(
        (64, 64), q_bins=q_bins, phi_bins=2 * half_p, r_min=r_min, r_max=r_min + width
    )
    k = np.arange(q_bins)
    p = np.arange(2 * half_p)
    # Same float64 formula, so only last-bit rounding may differ.
    np.testing.assert_allclose(plan.radius, r_min + (k + 0.5) * width / q_bins, rtol=1e-12)
    np.testing.assert_allclose(plan.phi, 2 * np.pi * p / (2 * half_p), rtol=1e-12, atol=1e-15)
    assert plan.radius.dtype == np.float64 and plan.phi.dtype == np.float64
    assert plan.valid.shape == (q_bins, 2 * half_p)


@given(
    height=st.integers(8, 70),
    width=st.integers(8, 70),
    fx=st.floats(0.2, 0.8),
    fy=st.floats(0.2, 0.8),
)
def test_default_r_max_is_largest_full_circle(height, width, fx, fy):
    cx, cy = fx * (width - 1), fy * (height - 1)
    expected = min(cx, cy, width - 1 - cx, height - 1 - cy)
    # Plain arithmetic on the same numbers: exact up to rounding.
    assert default_r_max((height, width), (cx, cy)) == pytest.approx(expected, rel=1e-12)
    plan = make_polar_plan((height, width), center=(cx, cy), q_bins=8, phi_bins=32)
    assert plan.r_max == pytest.approx(expected, rel=1e-12)
    # Without a mask, every sample of the default range lies on the detector.
    assert plan.valid.all()


def test_resample_returns_radius_and_phi():
    plan = make_polar_plan((33, 33), q_bins=8, phi_bins=16)
    polar = resample(np.ones((33, 33)), plan)
    assert polar.values.shape == (1, 8, 16) and polar.valid.shape == (1, 8, 16)
    np.testing.assert_array_equal(polar.radius, plan.radius)  # the plan's own array
    np.testing.assert_array_equal(polar.phi, plan.phi)


# --------------------------------------------------------------------------
# Interpolation
# --------------------------------------------------------------------------


@given(
    height=st.integers(9, 41),
    width=st.integers(9, 41),
    fx=st.floats(0.1, 0.9),
    fy=st.floats(0.1, 0.9),
    a=st.floats(-5, 5),
    b=st.floats(-2, 2),
    c=st.floats(-2, 2),
)
def test_bilinear_reproduces_linear_images(height, width, fx, fy, a, b, c):
    # Bilinear interpolation is exact on a + b x + c y; this pins the weights,
    # the corner indices and the x/y (column/row) order all at once.
    cx, cy = fx * (width - 1), fy * (height - 1)
    plan = make_polar_plan((height, width), center=(cx, cy), q_bins=7, phi_bins=24)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    polar = resample(a + b * x + c * y, plan)
    xs = cx + plan.radius[:, None] * np.cos(plan.phi)
    ys = cy + plan.radius[:, None] * np.sin(plan.phi)
    # float64 round-off on values of order 100 only.
    np.testing.assert_allclose(polar.values[0], a + b * xs + c * ys, rtol=0, atol=1e-9)


def test_smooth_isotropic_pattern_within_interpolation_bound():
    shape, center = (65, 71), (33.3, 31.7)
    g, eps = cos_profile()
    plan = make_polar_plan(shape, center=center, q_bins=16, phi_bins=64)
    polar = resample(isotropic(shape, center, g), plan)
    # eps is the analytic bilinear error bound for this g (see cos_profile).
    assert np.max(np.abs(polar.values[0] - g(plan.radius)[:, None])) <= eps


# --------------------------------------------------------------------------
# Angle convention: phi turns from +x toward +y
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cx, cy", [(20, 24), (31, 17)])
@pytest.mark.parametrize(
    "dx, dy, quarter", [(1, 0, 0), (0, 1, 1), (-1, 0, 2), (0, -1, 3)], ids=["+x", "+y", "-x", "-y"]
)
def test_bright_pixel_shows_up_at_its_angle(cx, cy, dx, dy, quarter):
    shape, r, phi_bins = (41, 49), 9, 64
    # r_min = 0.5, r_max = 10.5 with 10 bins puts ring k at radius k + 1.
    plan = make_polar_plan(
        shape, center=(cx, cy), q_bins=10, phi_bins=phi_bins, r_min=0.5, r_max=10.5
    )
    assert plan.radius[r - 1] == r
    image = np.zeros(shape)
    image[cy + dy * r, cx + dx * r] = 1.0
    ring = resample(image, plan).values[0, r - 1]
    assert int(np.argmax(ring)) == quarter * phi_bins // 4
    # The sample sits exactly on the pixel centre: full weight, up to the
    # 1e-16 rounding of cos/sin.
    assert ring[quarter * phi_bins // 4] == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------
# Validity
# --------------------------------------------------------------------------


@given(
    height=st.integers(9, 33),
    width=st.integers(9, 33),
    fx=st.floats(0.0, 1.0),
    fy=st.floats(0.0, 1.0),
    integer_centre=st.booleans(),
    bad=st.floats(0.0, 0.3),
    stretch=st.floats(0.5, 2.0),
    seed=st.integers(0, 2**16),
)
def test_validity_matches_brute_force(height, width, fx, fy, integer_centre, bad, stretch, seed):
    cx, cy = fx * (width - 1), fy * (height - 1)
    if integer_centre:  # many samples land exactly on pixel centres
        cx, cy = float(round(cx)), float(round(cy))
    good = random_mask(np.random.default_rng(seed), (height, width), bad)
    r_max = stretch * max(width, height) / 2  # often beyond the detector
    plan = make_polar_plan(
        (height, width), center=(cx, cy), mask=good, q_bins=9, phi_bins=32, r_max=r_max,
        min_ring_fraction=0.0,
    )  # fmt: skip
    expected, ambiguous = expected_validity(plan, good)
    # Validity is a yes/no decision: exact agreement wherever the geometry is
    # not within 1e-6 of a pixel centre (there rounding may decide).
    np.testing.assert_array_equal(plan.valid[~ambiguous], expected[~ambiguous])
    # Invalid samples carry no weight; valid ones weights that sum to 1.
    np.testing.assert_array_equal(plan.weight[~plan.valid], 0.0)
    np.testing.assert_allclose(plan.weight[plan.valid].sum(axis=-1), 1.0, rtol=0, atol=1e-12)


def test_samples_outside_the_detector_are_invalid():
    shape, center = (40, 50), (10.0, 12.0)
    plan = make_polar_plan(
        shape, center=center, q_bins=12, phi_bins=48, r_max=30.0, min_ring_fraction=0.0
    )
    x, y, _, _ = needed_pixels(plan)
    outside = (x < 0) | (y < 0) | (x > shape[1] - 1) | (y > shape[0] - 1)
    assert outside.any() and (~outside).any()
    # Exact: off-detector samples must be invalid, on-detector ones valid (no mask).
    np.testing.assert_array_equal(plan.valid, ~outside)
    polar = resample(np.ones(shape), plan)
    np.testing.assert_array_equal(polar.valid[0], ~outside)
    np.testing.assert_array_equal(polar.values[0][outside], 0.0)


def test_sample_on_a_pixel_centre_does_not_need_its_zero_weight_neighbours():
    shape, cx, cy = (33, 33), 16, 16
    # Ring k at radius k + 1, so ring 4 (r = 5) samples (21, 16) at phi = 0 and
    # (16, 21) at phi = pi/2 exactly on pixel centres.
    mask = np.ones(shape, dtype=bool)
    mask[cy, cx + 6] = False  # right-hand neighbour of (21, 16)
    mask[cy + 1, cx + 5] = False  # lower neighbour of (21, 16)
    mask[cy + 5, cx + 1] = False  # right-hand neighbour of (16, 21)
    mask[cy + 6, cx] = False  # lower neighbour of (16, 21)
    plan = make_polar_plan(
        shape, center=(cx, cy), mask=mask, q_bins=8, phi_bins=32, r_min=0.5, r_max=8.5
    )
    assert plan.valid[4, 0] and plan.valid[4, 8]
    # The next samples along the ring do need those pixels: invalid. (This
    # makes sure the mask above really sits next to the samples.)
    assert not plan.valid[4, 1] and not plan.valid[4, 7]
    # And the value is exactly the pixel's.
    image = np.arange(33 * 33, dtype=np.float64).reshape(shape)
    polar = resample(image, plan)
    assert polar.values[0, 4, 0] == pytest.approx(image[cy, cx + 5], abs=1e-9)
    assert polar.values[0, 4, 8] == pytest.approx(image[cy + 5, cx], abs=1e-9)


# --------------------------------------------------------------------------
# Masks, NaN and inf through every CPU backend
# --------------------------------------------------------------------------


def _nan_case(rng, shape=(37, 53)):
    center = (25.3, 17.8)
    plan = make_polar_plan(shape, center=center, q_bins=12, phi_bins=48)
    image = rng.random(shape) + 0.5
    return plan, image


def test_unmasked_nan_pixel_invalidates_exactly_the_samples_that_need_it(cpu_backend, rng):
    plan, image = _nan_case(rng)
    iy, ix = 20, 30
    image[iy, ix] = np.nan
    polar = cpu_backend.resample(cpu_backend.as_batch(image, plan.shape), plan)
    values, valid = np.asarray(polar.values)[0], np.asarray(polar.valid)[0]
    touches = ((plan.index == iy * plan.shape[1] + ix) & (plan.weight > 0)).any(axis=-1)
    assert touches.sum() > 0
    # A yes/no decision: exact.
    np.testing.assert_array_equal(valid, plan.valid & ~touches)
    assert np.isfinite(values).all()
    np.testing.assert_array_equal(values[~valid], 0.0)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf, 1e30])
def test_masked_pixel_value_never_leaks(cpu_backend, rng, bad_value):
    shape = (37, 53)
    plan0, image = _nan_case(rng, shape)
    mask = random_mask(rng, shape, 0.2)
    mask[0, 0] = False  # the "safe" index of invalid samples is pixel 0
    plan = make_polar_plan(shape, center=plan0.center, mask=mask, q_bins=12, phi_bins=48)
    zeroed, filled = image.copy(), image.copy()
    zeroed[~mask] = 0.0
    filled[~mask] = bad_value
    a = cpu_backend.resample(cpu_backend.as_batch(zeroed, shape), plan)
    b = cpu_backend.resample(cpu_backend.as_batch(filled, shape), plan)
    np.testing.assert_array_equal(np.asarray(a.valid), np.asarray(b.valid))
    # Identical arithmetic on identical good pixels: exact equality; a leak of
    # 1e30, inf or NaN could not hide under any tolerance anyway.
    np.testing.assert_array_equal(np.asarray(a.values), np.asarray(b.values))
    assert np.isfinite(np.asarray(b.values)).all()


def test_masking_is_applied_by_resample():
    shape = (37, 53)
    rng = np.random.default_rng(3)
    mask = random_mask(rng, shape, 0.2)
    plan = make_polar_plan(shape, mask=mask, q_bins=12, phi_bins=48)
    image = rng.random(shape)
    for backend in ("numpy", "numba"):
        polar = resample(image, plan, backend=backend)
        # exact: a yes/no decision, the plan's on every backend for a clean image
        np.testing.assert_array_equal(polar.valid[0], plan.valid)
    assert (~plan.valid).sum() > 0.3 * plan.valid.size  # 20% bad pixels => ~59% bad samples


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"center": (-1.0, 5.0)}, "outside the detector"),
        ({"center": (5.0, 40.0)}, "outside the detector"),
        ({"r_min": 5.0, "r_max": 5.0}, "r_min"),
        ({"r_min": 6.0, "r_max": 5.0}, "r_min"),
        ({"phi_bins": 31}, "phi_bins"),
        ({"q_bins": 0}, "q_bins"),
        ({"mask": np.ones((10, 10), dtype=bool)}, "mask"),
    ],
)
def test_make_polar_plan_rejects_bad_geometry(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_polar_plan((33, 31), **{"q_bins": 8, "phi_bins": 16, **kwargs})


def test_resample_rejects_images_of_another_shape():
    plan = make_polar_plan((33, 31), q_bins=8, phi_bins=16)
    with pytest.raises(ValueError, match="shape"):
        resample(np.ones((31, 33)), plan)


def test_plan_is_read_only():
    plan = make_polar_plan((17, 17), q_bins=4, phi_bins=8)
    with pytest.raises(ValueError):
        plan.weight[0, 0, 0] = 2.0


def test_package_docstring_names_only_exported_stages():
    # What `from ccfkit import *` needs: every name listed in __all__ exists.
    assert [name for name in ccfkit.__all__ if not hasattr(ccfkit, name)] == []
    # Every function the package docstring points users to is exported.
    named = set(re.findall(r":func:`(\w+)`", ccfkit.__doc__))
    assert {"compute_maps", "make_polar_plan", "resample", "angular_fourier"} <= named
    assert named <= set(ccfkit.__all__)


def test_plan_spec_checks_the_mask_shape():
    with pytest.raises(
        ValueError, match=r"mask has shape \(20, 21\), but the images are \(20, 20\)"
    ):
        PlanSpec.describe((20, 20), mask=np.ones((20, 21), dtype=bool))
    spec = PlanSpec.describe((20, 20), mask=np.eye(20))  # non-bool masks: non-zero is good
    np.testing.assert_array_equal(spec.mask, np.eye(20, dtype=bool))


def test_the_ring_grid_travels_whole_from_the_build_to_the_plan():
    """BuildConfig -> RingGrid -> PlanSpec -> the plan of make_polar_plan's keywords."""
    from dataclasses import asdict

    from ccfkit.build_config import BuildConfig

    grid = RingGrid(q_bins=12, phi_bins=32, r_min=1.5, r_max=9.0, min_ring_fraction=0.25)
    config = BuildConfig.from_parameters(asdict(grid))
    assert config.grid == grid == RingGrid(12, 32, 1.5, 9.0, 0.25)
    mask = np.ones((21, 23), dtype=bool)
    mask[3:6, 4:9] = False
    plan = PlanSpec.describe((21, 23), center=(10.5, 9.0), mask=mask, grid=config.grid).plan()
    direct = make_polar_plan((21, 23), center=(10.5, 9.0), mask=mask, **asdict(grid))
    for made in (direct, make_polar_plan((21, 23), center=(10.5, 9.0), mask=mask, grid=grid)):
        np.testing.assert_array_equal(plan.radius, made.radius)
        np.testing.assert_array_equal(plan.valid, made.valid)
        np.testing.assert_array_equal(plan.index, made.index)
    assert (plan.q_bins, plan.phi_bins, plan.r_min, plan.r_max) == (12, 32, 1.5, 9.0)
    assert plan.min_ring_fraction == 0.25
    with pytest.raises(TypeError, match="give either grid or q_bins"):
        make_polar_plan((21, 23), grid=grid, q_bins=8)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"q_bins": 0}, "q_bins >= 1"),
        ({"phi_bins": 33}, "even phi_bins"),
        ({"min_ring_fraction": 1.5}, r"lie in \[0, 1\]"),
        ({"r_min": "inner"}, "number of pixels or 'auto'"),
        ({"q_range": (0.2, 0.1)}, "0 <= QMIN < QMAX"),
        ({"q_range": (-0.1, 0.1)}, "0 <= QMIN < QMAX"),
        ({"q_range": (0.1,)}, "two numbers QMIN QMAX"),
        ({"q_range": (0.1, 0.2), "r_min": 3.0}, "give q_range .* or r_min/r_max"),
        ({"q_range": (0.1, 0.2), "r_max": 30.0}, "give q_range .* or r_min/r_max"),
    ],
)
def test_the_ring_grid_refuses_what_no_plan_can_use(fields, match):
    with pytest.raises(ValueError, match=match):
        RingGrid(**fields)
    with pytest.raises(ValueError, match=match):
        make_polar_plan((21, 23), **fields)


# --------------------------------------------------------------------------
# Rings in momentum transfer (docs/ccf.md, "Rings in momentum transfer")
# --------------------------------------------------------------------------


def test_rings_in_momentum_transfer_sit_at_the_radii_of_a_hand_computation():
    """Q = 2 rings at q = pi/lambda and 2 pi/lambda: sin(theta) = 1/4 and 1/2.

    ``r = (L / p) tan(2 theta)``: ``tan(2 arcsin s) = 2 s sqrt(1 - s^2) / (1 - 2 s^2)``,
    i.e. sqrt(15)/7 and sqrt(3); the range's ends, q = pi/(2 lambda) and 5 pi/(2 lambda)
    (s = 1/8 and 5/8), give sqrt(63)/31 and 5 sqrt(39)/7.
    """
    wavelength = 0.1  # nm
    scattering = ScatteringGeometry(pixel_size=100e-6, distance=0.01, wavelength_nm=wavelength)
    q_range = (np.pi / (2 * wavelength), 5 * np.pi / (2 * wavelength))
    plan = make_polar_plan(
        (401, 401), q_range=q_range, q_bins=2, phi_bins=16, scattering=scattering
    )
    np.testing.assert_allclose(plan.radius, [100 * np.sqrt(15) / 7, 100 * np.sqrt(3)], rtol=1e-13)
    assert plan.r_min == pytest.approx(100 * np.sqrt(63) / 31, rel=1e-13)
    assert plan.r_max == pytest.approx(100 * 5 * np.sqrt(39) / 7, rel=1e-13)
    assert plan.ring_axis == "q" and RingGrid(q_range=q_range).ring_axis == "q"
    # and back: the rings' q are the grid's, at equal steps
    np.testing.assert_allclose(
        scattering.momentum_transfer(plan.radius), [np.pi / wavelength, 2 * np.pi / wavelength],
        rtol=1e-13,
    )  # fmt: skip
    # the samples sit on those radii, as on any plan (the 2nd ring's sample at phi = 0)
    x = plan.weight[1, 0] @ (plan.index[1, 0] % 401)
    assert x == pytest.approx(200 + 100 * np.sqrt(3), abs=1e-9)


def test_a_pixel_grid_is_the_default_and_q_range_needs_the_scattering_geometry():
    assert RingGrid().ring_axis == "radius"
    assert make_polar_plan((33, 33), q_bins=4, phi_bins=8).ring_axis == "radius"
    with pytest.raises(ValueError, match="needs the detector distance, pixel size and wavelength"):
        make_polar_plan((33, 33), q_range=(0.1, 0.2), q_bins=4, phi_bins=8)
    scattering = ScatteringGeometry(pixel_size=75e-6, distance=0.1, wavelength_nm=1.0)
    with pytest.raises(ValueError, match="2 theta >= 90 degrees"):
        make_polar_plan((33, 33), q_range=(1.0, 9.0), scattering=scattering)
    # the build's r_min "auto" and the library's 0 give way to q_range
    assert RingGrid(r_min="auto", q_range=[0.1, 0.2]) == RingGrid(q_range=(0.1, 0.2))


def _rendered(config, center, wavelength_nm):
    """One prolate spheroid (c = 2a = 300 nm, in the detector plane) on ``config``'s detector.

    Expected photons: Born form factor on the Ewald sphere, polarisation and
    solid angle, no noise, halo or background (:mod:`ccfkit.simulate`).
    """
    from ccfkit.simulate.config import Kind
    from ccfkit.simulate.parameters import FrameParameters
    from ccfkit.simulate.rendering import expected_counts

    particle = FrameParameters(
        index=np.array([0]),
        kind=np.array([Kind.PROLATE], dtype=np.uint8),
        radius=np.array([150.0 * 2 ** (1 / 3)]),
        semi_axes=np.array([[150.0, 300.0]]),
        axis=np.array([[np.cos(0.5), np.sin(0.5), 0.0]]),
        photon_energy=np.array([1239.8419843320026 / wavelength_nm]),
        wavelength=np.array([wavelength_nm]),
        fluence=np.array([1e6]),
        center=np.array([center]),
    )
    detector = config.detector
    scattering = ScatteringGeometry(detector.pixel_size, detector.distance, wavelength_nm)
    return expected_counts(particle, config, engine="numpy")[0], detector.good_pixels(), scattering


@pytest.mark.parametrize(
    "settings", [{"orders": (8,)}, {"orders": (2,)}, {"orders": (8, 2), "scale": "ring"}]
)
def test_one_particle_on_two_detectors_gives_the_same_maps_in_momentum_transfer(settings):
    """The same particle seen by detectors of other size, pixel size, distance and hole.

    A: 257 x 257 px of 292 um at 65 mm (30 degrees at its edge), a hole of 8 px,
    centred on a pixel; B: 385 x 385 px of 364 um at 100 mm (35 degrees), a hole
    of 20 px, centred between pixels. On rings placed at equal steps in q
    (0.015 to 0.062 1/nm, inside both detectors' holes and edges) the maps
    differ only by interpolation: bilinear interpolation errs by at most
    ``h^2/8 |I''|``, about ``(pi / period)^2 / 2`` of a fringe's amplitude,
    and the particle's finest fringes (pi / 300 nm in q) span 18 px on A and
    23 px on B, so 1.5 % per sample at worst; the maps average it over
    256 samples per ring. Measured: 3.1e-3 (order 8), 3.0e-4 (order 2),
    6.3e-3 (ring scale, whose order-8 channel divides by the ring means)
    of the maps' range; bound 1e-2. On the same pixel radii (25 to 120 px)
    the two detectors see other q, and their maps differ by 0.29 to 1.6.
    """
    from ccfkit.simulate.config import SimulationConfig

    def detector(size, distance, max_angle, hole):
        return SimulationConfig(size=size, distance=distance, max_angle=max_angle,
                                hole_radius=hole, halo=(0, 0), background=0.0, noise=False,
                                jitter=0.0)  # fmt: skip

    wavelength = 49.6  # nm: 25 eV, the simulator's default range
    detectors = [
        (detector(257, 0.065, 30.0, 8.0), (128.0, 128.0)),
        (detector(385, 0.1, 35.0, 20.0), (191.3, 192.6)),
    ]
    in_q, in_pixels = [], []
    for config, center in detectors:
        image, good, scattering = _rendered(config, center, wavelength)
        maps = functools.partial(compute_maps, image, center=center, mask=good, q_bins=64,
                                 phi_bins=256, backend="numpy", **settings)  # fmt: skip
        in_q.append(maps(q_range=(0.015, 0.062), scattering=scattering))
        in_pixels.append(maps(r_min=25.0, r_max=120.0))
    scale = np.abs(in_q[0]).max()  # 1 for maxabs; the ring scale's range is [-1, 1]
    assert scale > 0.5
    assert np.abs(in_q[0] - in_q[1]).max() <= 1e-2 * scale
    assert np.abs(in_pixels[0] - in_pixels[1]).max() >= 0.2 * scale


def _first_usable_radius_over_the_whole_grid(good, center, r_max, phi_bins, q_bins, fraction):
    """``r_min="auto"`` by its definition: the whole fine grid's table at once, every usable radius."""
    from ccfkit.polar import _AUTO_STEP, _bilinear_table, min_ring_count

    phi = 2.0 * np.pi * np.arange(phi_bins) / phi_bins
    need = min_ring_count(fraction, phi_bins)

    def usable(radius):
        return _bilinear_table(np.atleast_1d(radius), phi, center, good)[2].sum(axis=1) >= need

    fine = np.arange(0.0, r_max, _AUTO_STEP)
    for r_min in fine[usable(fine)]:
        if usable(r_min + 0.5 * (r_max - r_min) / q_bins)[0]:
            return float(r_min)
    return None


@pytest.mark.parametrize("hole", [0.0, 3.3, 12.7, 12.85, 25.0, 40.2])
@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.9])
def test_auto_r_min_searched_in_blocks_is_the_whole_grid_search(hole, fraction):
    """The first usable radius is the same whichever block of the fine grid it lies in."""
    size, center = 121, (60.4, 59.7)
    yy, xx = np.mgrid[:size, :size]
    good = np.hypot(xx - center[0], yy - center[1]) > hole
    good[:, 90:93] = False  # a panel gap: partial rings further out
    expected = _first_usable_radius_over_the_whole_grid(good, center, 55.0, 64, 24, fraction)
    grid = RingGrid(q_bins=24, phi_bins=64, r_min="auto", r_max=55.0, min_ring_fraction=fraction)
    if expected is None:
        with pytest.raises(ValueError, match="r_min='auto'"):
            make_polar_plan((size, size), center=center, mask=good, grid=grid)
        return
    plan = make_polar_plan((size, size), center=center, mask=good, grid=grid)
    assert plan.r_min == expected
    assert hole <= expected < hole + 2.0


def test_auto_r_min_looks_past_a_narrow_annulus_whose_first_ring_is_masked():
    """A usable annulus (2 to 8.5 px) inside a masked band: the range starts further out."""
    size, center = 129, (64.0, 64.0)
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(xx - center[0], yy - center[1])
    good = ((radius >= 2) & (radius <= 8.5)) | (radius >= 30)
    grid = RingGrid(q_bins=4, phi_bins=128, r_min="auto")
    plan = make_polar_plan((size, size), center=center, mask=good, grid=grid)
    expected = _first_usable_radius_over_the_whole_grid(good, center, plan.r_max, 128, 4,
                                                        grid.min_ring_fraction)  # fmt: skip
    assert expected is not None and plan.r_min == expected
    assert plan.ring_used[0] and plan.radius[0] >= 29.0
    assert plan.r_min > 8.5  # every start inside the small annulus puts its first ring in the band


@given(
    shape=st.tuples(st.integers(2, 40), st.integers(2, 40)),
    centre=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    radii=st.lists(st.one_of(st.floats(0, 60), st.integers(0, 40).map(float)), min_size=1,
                   max_size=12),  # fmt: skip
    phi_bins=st.sampled_from([1, 4, 7, 32]),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_compiled_bilinear_table_equals_the_numpy_reference_bit_for_bit(
    shape, centre, radii, phi_bins, seed
):
    from ccfkit.bilinear import bilinear_table
    from ccfkit.polar import _SNAP, _bilinear_table

    height, width = shape
    centre = (centre[0] * (width - 1), centre[1] * (height - 1))
    if seed % 3 == 0:  # on a pixel: whole-pixel samples along the axes (the snap)
        centre = (float(round(centre[0])), float(round(centre[1])))
    good = np.random.default_rng(seed).random(shape) > 0.2
    radius = np.array(radii)
    phi = 2.0 * np.pi * np.arange(phi_bins) / phi_bins
    expected = _bilinear_table(radius, phi, centre, good)
    got = bilinear_table(radius, phi, centre, good, _SNAP)
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_a_plan_equals_the_one_of_the_numpy_table():
    from ccfkit import polar

    good = np.random.default_rng(5).random((259, 259)) > 0.05
    fast = make_polar_plan((259, 259), center=(130.3, 127.0), mask=good, r_max=170.0,
                           min_ring_fraction=0.6)  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(polar.RegularGrid, "bilinear_table",
                      lambda self, radius, phi, center, good: polar._bilinear_table(
                          radius, phi, center, good))  # fmt: skip
        slow = make_polar_plan((259, 259), center=(130.3, 127.0), mask=good, r_max=170.0,
                               min_ring_fraction=0.6)  # fmt: skip
    for name in ("radius", "phi", "index", "weight", "valid", "ring_used"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))
    assert fast.ring_used.any() and not fast.ring_used.all()


def test_radii_of_q_broadcast_over_geometries_and_name_the_wavelength_beyond_90_degrees():
    from ccfkit.geometry import radius_of_momentum_transfer

    q = np.array([0.02, 0.04])
    wavelengths = np.array([[40.0], [50.0]])  # nm, one geometry per row
    radii = radius_of_momentum_transfer(q, pixel_size=1e-3, distance=0.065,
                                        wavelength_nm=wavelengths)  # fmt: skip
    for row, wavelength in zip(radii, wavelengths[:, 0]):
        one = radius_of_momentum_transfer(q, pixel_size=1e-3, distance=0.065,
                                          wavelength_nm=wavelength)  # fmt: skip
        np.testing.assert_array_equal(row, one)
    with pytest.raises(ValueError, match="at a wavelength of 300 nm"):
        radius_of_momentum_transfer(q, pixel_size=1e-3, distance=0.065,
                                    wavelength_nm=np.array([[40.0], [300.0]]))  # fmt: skip
