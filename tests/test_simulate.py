"""``ccfkit simulate``: the physics, the labels, the CXI file and the command.

Small detectors (65-129 px) and few frames keep this fast. Fixtures stay in
this file (``conftest.py`` belongs to the engine tests).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import ccfkit
import ccfkit.store
from ccfkit import instrument
from ccfkit import simulate as sim
from ccfkit.cli import main
from ccfkit.io import cxi
from ccfkit.io.source import InputError, open_source

FIRST_ZERO = 4.493409457909064  # first root of tan(u) = u: the sphere's first minimum
ZEROS = (FIRST_ZERO, 7.725251836937707, 10.904121659428899)  # the first three


def config(**overrides) -> sim.SimulationConfig:
    """A small, quiet detector: 65 px, no jitter, no background or halo unless asked."""
    base = {
        "size": 65,
        "jitter": 0.0,
        "hole_radius": 4.0,
        "background": 0.0,
        "halo": (0.0, 0.0),
        "radius": (150.0, 300.0),
    }
    base.update(overrides)
    return sim.SimulationConfig(**base)


def one_particle(
    cfg, *, a, c, axis, energy, fluence=1e5, center=None, kind=sim.Kind.PROLATE, **extra
):
    """FrameParameters of a single hand-made particle (``extra``: partner, halo fields)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    center = cfg.detector.nominal_center if center is None else center
    extra = {key: np.asarray([value], dtype=np.float64) for key, value in extra.items()}
    return sim.FrameParameters(
        index=np.array([0]),
        kind=np.array([kind], dtype=np.uint8),
        radius=np.array([(a * a * c) ** (1 / 3)]),
        semi_axes=np.array([[a, c]], dtype=np.float64),
        axis=axis[None, :],
        photon_energy=np.array([energy], dtype=np.float64),
        wavelength=sim.photon_energy_to_wavelength([energy]),
        fluence=np.array([fluence], dtype=np.float64),
        center=np.array([center], dtype=np.float64),
        **extra,
    )


def dip_at(cfg, r_pred, *, along="x", **particle):
    """Expected counts at a pixel placed exactly ``r_pred`` px from the beam centre.

    The beam centre is shifted (sub-pixel) so that the pixel 20 + ceil(r_pred)
    columns (or rows) along +x (or +y) sits at ``r_pred``. Returns the count
    there divided by the brightest count within 8 px of it (on that line), and
    the same ratio one pixel in and one pixel out.
    """
    j = 20 + math.ceil(r_pred)
    offset = j - r_pred
    center = (offset, 64.0) if along == "x" else (64.0, offset)
    params = one_particle(cfg, center=center, **particle)
    image = sim.expected_counts(params, cfg)[0]
    line = image[64, :] if along == "x" else image[:, 64]
    near = line[j - 8 : j + 9].max()
    return line[j] / near, line[j - 1] / near, line[j + 1] / near


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def simulate_file(path, *extra, n=16, size=65):
    result = run("simulate", path, "--n", n, "--size", size, "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def cxi_file(tmp_path_factory):
    """32 frames of every kind, 65 px."""
    path = tmp_path_factory.mktemp("sim") / "frames.cxi"
    return simulate_file(path, "--seed", 3, "--radius", 150, 300, "--fluence", 2e4, 2e5, n=32)


# --------------------------------------------------------------------------
# Physics
# --------------------------------------------------------------------------


def test_form_factor_reference_values():
    u = np.array([0.0, 1e-4, 0.05, 0.1, 0.2, 2.0, FIRST_ZERO, 7.725251836937707])
    f = sim.sphere_form_factor(u)
    assert f[0] == 1.0
    # Series and closed form agree where they meet (u = 0.1), to float64 rounding.
    closed = 3 * (np.sin(0.1) - 0.1 * np.cos(0.1)) / 0.1**3
    assert f[3] == pytest.approx(closed, rel=1e-12)
    assert f[5] == pytest.approx(3 * (math.sin(2) - 2 * math.cos(2)) / 8, rel=1e-14)
    assert abs(f[6]) < 1e-14 and abs(f[7]) < 1e-14  # the first two zeros (tan u = u)
    # Continuous where the series hands over to the closed form.
    below, above = sim.sphere_form_factor([0.1 - 1e-12, 0.1 + 1e-12])
    assert below == pytest.approx(above, rel=1e-10)


def test_pixels_map_to_q_through_the_true_scattering_angle():
    det = config(size=129).detector
    # The half-width subtends max_angle: 2 theta = 30 deg at r = size / 2.
    assert math.degrees(
        math.atan(det.half_width * det.pixel_size / det.distance)
    ) == pytest.approx(30.0, rel=1e-12)
    wavelength = sim.photon_energy_to_wavelength(19.0)
    q = sim.q_vectors(det, (40.0, 64.0), wavelength)
    norm = np.sqrt((q**2).sum(axis=0))
    y, x = np.indices(det.shape)
    r = np.hypot(x - 40.0, y - 64.0)
    np.testing.assert_allclose(norm, sim.momentum_transfer(r, det, wavelength), rtol=1e-12)
    # q lies on the Ewald sphere: |k_in + q| = |k_in| (k_in along +z).
    k = 2 * np.pi / wavelength
    np.testing.assert_allclose(np.sqrt(q[0] ** 2 + q[1] ** 2 + (q[2] + k) ** 2), k, rtol=1e-12)


def scattering_radius(cfg, q_times_r, r_eff, wavelength):
    """Pixels from the centre where |q| r_eff = q_times_r: |q| = 4 pi sin(theta) / lambda,
    2 theta = atan(r p / L) (r_eff may depend on theta: solved by bisection)."""
    det = cfg.detector
    lo, hi = 1e-9, math.pi / 4
    for _ in range(200):
        mid = (lo + hi) / 2
        if 4 * math.pi * math.sin(mid) / wavelength * r_eff(mid) < q_times_r:
            lo = mid
        else:
            hi = mid
    return det.distance * math.tan(2 * lo) / det.pixel_size


@pytest.mark.parametrize("radius, energy", [(150.0, 19.0), (280.0, 35.0), (600.0, 35.0)])
def test_sphere_minima_land_where_qR_predicts(radius, energy):
    """Zeros at q R = 4.4934 (the first minimum) and at the next roots of tan u = u.

    Tolerance: a pixel placed exactly at the predicted radius reads < 1e-6 of the
    fringe's brightest pixel (float32 rounding), while the pixels 1 px in and out
    read > 1e-3, so each simulated zero lies well within 1 px of the prediction.
    """
    cfg = config(size=129, hole_radius=0.0)
    wavelength = sim.photon_energy_to_wavelength(energy)
    predicted = [scattering_radius(cfg, zero, lambda t: radius, wavelength) for zero in ZEROS]
    on_detector = [r for r in predicted if r <= 40]  # dip_at needs 20 + r + 8 < 129 px
    assert on_detector, predicted
    for r_pred in on_detector:
        at, inside, outside = dip_at(
            cfg, r_pred, a=radius, c=radius, axis=(0, 0, 1), energy=energy, kind=sim.Kind.SPHERE
        )
        assert at < 1e-6
        assert min(inside, outside) > 1e-3
    if radius == 150.0:
        # At 2 theta ~ 23 deg the simulated first zero is not where the small-angle
        # shortcut r = L q lambda / (2 pi p) puts it (1.3 px further in).
        det = cfg.detector
        small_angle = (
            det.distance * FIRST_ZERO / radius * wavelength / (2 * math.pi * det.pixel_size)
        )
        sphere = {"a": radius, "c": radius, "axis": (0, 0, 1), "kind": sim.Kind.SPHERE}
        dip = dip_at(cfg, small_angle, energy=energy, **sphere)
        assert dip[0] > 1e-3


def test_spheroid_minima_use_the_3d_q_on_the_ewald_sphere():
    """Prolate spheroids lying along x. Along y, q is perpendicular to the axis: the
    first zero obeys |q| a = 4.493. Along x, q tilts out of the detector plane by theta
    (half the scattering angle), so R_eff^2 = a^2 + (c^2 - a^2) cos^2(theta)."""
    cfg = config(size=129, hole_radius=0.0)
    energy = 19.0
    wavelength = sim.photon_energy_to_wavelength(energy)

    a, c = 150.0, 260.0
    r_y = scattering_radius(cfg, FIRST_ZERO, lambda t: a, wavelength)
    assert dip_at(cfg, r_y, along="y", a=a, c=c, axis=(1, 0, 0), energy=energy)[0] < 1e-6

    a, c = 60.0, 110.0  # small: the zero along x lies at 2 theta ~ 24 deg
    r_eff = lambda t: math.sqrt(a * a + (c * c - a * a) * math.cos(t) ** 2)
    r_x = scattering_radius(cfg, FIRST_ZERO, r_eff, wavelength)
    flat = scattering_radius(cfg, FIRST_ZERO, lambda t: c, wavelength)  # without the tilt
    assert r_x - flat > 0.5
    assert dip_at(cfg, r_x, along="x", a=a, c=c, axis=(1, 0, 0), energy=energy)[0] < 1e-6
    assert dip_at(cfg, flat, along="x", a=a, c=c, axis=(1, 0, 0), energy=energy)[0] > 1e-3


def float64_reference(cfg, params, amplitude):
    """Expected counts in float64 from the 3-D q of every pixel: ``amplitude(q)`` (3, H, W)
    -> (H, W), times the horizontal polarisation factor and the solid angle."""
    det = cfg.detector
    (cx, cy), wavelength = params.center[0], params.wavelength[0]
    q = sim.q_vectors(det, (cx, cy), wavelength)
    y, x = np.indices(det.shape)
    dist = np.sqrt(((x - cx) ** 2 + (y - cy) ** 2) * det.pixel_size**2 + det.distance**2)
    polarization = 1 - ((x - cx) * det.pixel_size / dist) ** 2  # 1 - (n . x_hat)^2
    ref = np.abs(amplitude(q)) ** 2 * polarization * (det.distance / dist) ** 3
    ref *= det.good_pixels()
    return ref * params.fluence[0] / ref.sum()


def test_float32_pattern_matches_a_float64_reference():
    cfg = config(size=97)
    params = one_particle(
        cfg, a=230.0, c=410.0, axis=(0.3, -0.5, 0.8), energy=27.0, center=(47.3, 49.6)
    )
    got = sim.expected_counts(params, cfg)[0]
    axis = params.axis[0]
    ref = float64_reference(
        cfg,
        params,
        lambda q: sim.sphere_form_factor(
            np.sqrt(
                230.0**2 * (q**2).sum(0) + (410.0**2 - 230.0**2) * np.tensordot(axis, q, 1) ** 2
            )
        ),
    )
    # float32 arithmetic: errors of a few 1e-7 of the brightest pixel.
    np.testing.assert_allclose(got, ref, rtol=0, atol=5e-6 * ref.max())


def pixel_mean_cos(cfg, params, separation, n=8):
    """``cos(q . d)`` averaged over ``n x n`` points spread over each pixel (float64)."""
    det, (cx, cy) = cfg.detector, params.center[0]
    total = 0.0
    for dy in (np.arange(n) + 0.5) / n - 0.5:
        for dx in (np.arange(n) + 0.5) / n - 0.5:
            q = sim.q_vectors(det, (cx - dx, cy - dy), params.wavelength[0])
            total = total + np.cos(np.tensordot(separation, q, 1))
    return total / n**2


def test_two_spheres_match_a_float64_coherent_sum():
    """|A|^2 = F1^2 + rho^6 F2^2 + 2 rho^3 F1 F2 <cos(q . d)>_pixel with the 3-D q (z
    included); the fringe term averaged over each pixel's area (64 points)."""
    cfg = config(size=97)
    r1, r2, sep = 260.0, 170.0, np.array([300.0, -2000.0, 900.0])
    params = one_particle(
        cfg, a=r1, c=r1, axis=(0, 0, 1), energy=24.0, center=(48.6, 47.2),
        kind=sim.Kind.ASYMMETRIC, partner_radius=r2, separation=sep,
    )  # fmt: skip
    got = sim.expected_counts(params, cfg)[0]

    def reference(fringes):
        def amplitude(q):
            norm = np.sqrt((q**2).sum(0))
            f1 = sim.sphere_form_factor(norm * r1)
            f2 = (r2 / r1) ** 3 * sim.sphere_form_factor(norm * r2)
            return np.sqrt(f1**2 + f2**2 + 2 * f1 * f2 * fringes)  # |A|

        return float64_reference(cfg, params, amplitude)

    averaged = reference(pixel_mean_cos(cfg, params, sep))
    # float32, and the sinc form of the pixel average (the phase is not exactly
    # linear across a pixel): within 3e-3 of the brightest pixel ...
    np.testing.assert_allclose(got, averaged, rtol=0, atol=3e-3 * averaged.max())
    # ... and 10 times closer to it than the fringes sampled at pixel centres are.
    centres = reference(pixel_mean_cos(cfg, params, sep, n=1))
    assert np.abs(got - averaged).max() < 0.1 * np.abs(centres - averaged).max()


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


def test_newton_rings_sit_where_the_axial_phase_is_a_whole_number_of_turns():
    """Two equal spheres d_z apart along the beam: I = 2 F^2 (1 + cos(q_z d_z)), so the
    pattern is 0 where q_z d_z = (2m + 1) pi, with |q_z| = 2 k sin^2(theta). The
    minima along a line through the centre must sit there (within 1 px)."""
    cfg = config(size=129, hole_radius=0.0)
    det = cfg.detector
    energy, radius, d_z = 22.0, 50.0, 3000.0  # small spheres: their own rings are far out
    params = one_particle(
        cfg, a=radius, c=radius, axis=(0, 0, 1), energy=energy, kind=sim.Kind.NEWTON,
        partner_radius=radius, separation=(0.0, 0.0, d_z),
    )  # fmt: skip
    line = sim.expected_counts(params, cfg)[0][64, 64:].astype(np.float64)
    k = 2 * math.pi / sim.photon_energy_to_wavelength(energy)
    predicted = []
    for m in range(8):
        theta = math.asin(math.sqrt((2 * m + 1) * math.pi / (2 * k * d_z)))
        r = det.distance * math.tan(2 * theta) / det.pixel_size
        if r < 60:
            predicted.append(r)
    assert len(predicted) >= 3, predicted
    for r in predicted:
        j = round(r)
        window = line[j - 2 : j + 3]
        minimum = j - 2 + int(np.argmin(window))
        assert abs(minimum - r) <= 1.0, (minimum, r)
        # a zero between two pixels: each reads ~1 - cos(pi / period) of the maxima
        assert line[minimum] < 0.1 * line[j - 4 : j + 5].max()
    labels = dict(zip(sim.LABELS, sim.assign_labels(params, det)[0]))
    assert labels["newton_rings"] and not labels["asymmetric"]


@pytest.mark.parametrize("d", [1500.0, 6000.0])
def test_double_rings_show_fringes_of_period_2pi_over_the_separation(d):
    """Two equal spheres side by side (d along x): I = 2 F^2 (1 + <cos(q_x d)>_pixel).
    Along y, q . d = 0: no fringes. Along x the fringes repeat every 2 pi / d in
    q_x = k x / D: resolved (and visible) for d = 1.5 um; averaged away by the pixels
    for d = 6 um, which leaves the sum of two ring systems (Double Rings). The
    reference averages cos(q . d) over 64 or 256 points per pixel."""
    cfg = config(size=129, hole_radius=0.0, polarization="none")
    det = cfg.detector
    energy = 30.0
    sphere = {"a": 40, "c": 40, "axis": (0, 0, 1), "energy": energy}
    pair = one_particle(
        cfg, **sphere, kind=sim.Kind.DOUBLE, partner_radius=40, separation=(d, 0.0, 0.0)
    )
    row = sim.expected_counts(pair, cfg)[0][64].astype(np.float64)
    single = sim.expected_counts(one_particle(cfg, **sphere, kind=sim.Kind.SPHERE), cfg)[0]
    modulation = row / single[64]  # the fluence normalisation differs: a constant factor
    points = 8 if d < 3000 else 16  # enough points for ~1 fringe per pixel
    fringes = pixel_mean_cos(cfg, pair, np.array([d, 0.0, 0.0]), n=points)[64]
    expected = 1 + fringes
    scale = modulation.mean() / expected.mean()
    # the sinc form of the pixel average vs many points per pixel: within 0.5 %
    np.testing.assert_allclose(modulation, scale * expected, atol=5e-3 * scale)
    k = 2 * math.pi / sim.photon_energy_to_wavelength(energy)
    period_px = (2 * math.pi / d) / (k * det.pixel_size / det.distance)  # near the centre
    if period_px > 2:
        x = (np.arange(129) - 64) * det.pixel_size
        q_x = k * x / np.hypot(x, det.distance)
        assert np.corrcoef(modulation, np.cos(q_x * d))[0, 1] > 0.9  # the 2 pi / d period
    else:
        # the pixels leave sinc side lobes (|V| < 0.22) of the 1 +- 1 at their centres
        assert np.ptp(modulation) < 0.5 * modulation.mean()
    # Along y: no fringes, only the pixel's width in x (sinc(g_x / 2) < 1).
    column = sim.expected_counts(pair, cfg)[0][:, 64] / single[:, 64]
    along_y = 1 + pixel_mean_cos(cfg, pair, np.array([d, 0.0, 0.0]), n=points)[:, 64]
    np.testing.assert_allclose(column, scale * along_y, atol=5e-3 * scale)
    steps = np.diff(column[64:])  # monotonic from the centre out: no fringes
    assert np.all(steps >= -1e-6) or np.all(steps <= 1e-6)


def test_an_asymmetric_droplet_breaks_centro_symmetry_and_one_sphere_does_not():
    """I(x, y) vs I(-x, -y) about the beam centre: the two lobes differ by
    4 A1 A2 sin(q_perp . d) sin(q_z d_z) (many percent); a sphere, a Newton pair and a
    Double pair are centro-symmetric to float32 rounding."""
    cfg = config(size=129, hole_radius=0.0)
    base = {"axis": (0, 0, 1), "energy": 25.0, "fluence": 1e6}

    def asymmetry(**particle):
        image = sim.expected_counts(one_particle(cfg, **base, **particle), cfg)[0]
        flipped = image[::-1, ::-1]  # the middle (64, 64) is the beam centre
        return np.abs(image - flipped).sum() / image.sum()

    lobes = {"a": 300, "c": 300, "partner_radius": 240}
    tilted = asymmetry(**lobes, kind=sim.Kind.ASYMMETRIC, separation=(300, 0, 420))
    assert tilted > 0.05
    assert asymmetry(a=300, c=300, kind=sim.Kind.SPHERE) < 1e-5
    assert asymmetry(**lobes, kind=sim.Kind.NEWTON, separation=(0, 0, 540)) < 1e-5
    assert asymmetry(**lobes, kind=sim.Kind.DOUBLE, separation=(540, 0, 0)) < 1e-5
    params = one_particle(cfg, **base, **lobes, kind=sim.Kind.ASYMMETRIC, separation=(300, 0, 420))
    assert sim.assign_labels(params, cfg.detector)[0][sim.LABELS.index("asymmetric")]


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


def test_expected_counts_sum_to_the_fluence_plus_background():
    cfg = config(fluence=(3e4, 3e4), background=0.05, halo=(1e3, 1e4))
    det = cfg.detector
    params = sim.draw_parameters(cfg, 0, np.arange(12))
    assert np.all((params.halo >= 1e3) & (params.halo <= 1e4))
    expected = sim.expected_counts(params, cfg)
    good = det.good_pixels()
    sums = expected.sum(axis=(1, 2), dtype=np.float64)
    want = params.fluence + params.halo + cfg.background * good.sum()
    np.testing.assert_allclose(sums, want, rtol=1e-5)  # float32 accumulation


@pytest.mark.parametrize(
    "polarization, solid_angle",
    [("horizontal", True), ("vertical", True), ("unpolarised", False), ("none", True)],
)
def test_fused_kernel_matches_the_numpy_reference_on_random_frames(polarization, solid_angle):
    """The Numba engine against the NumPy formulation: every kind, halo, background,
    a jittered beam centre, 40 random frames per setting."""
    cfg = config(
        size=97, jitter=3.0, background=0.02, halo=(1e3, 2e4), radius=(150.0, 600.0),
        polarization=polarization, solid_angle=solid_angle,
        mix="sphere=1,oblate=1,prolate=1,empty=1,double=1,newton=1,asymmetric=1",
    )  # fmt: skip
    params = sim.draw_parameters(cfg, 11, np.arange(40))
    assert set(params.kind.tolist()) == set(range(len(sim.Kind)))
    fused = sim.expected_counts(params, cfg, engine="numba")
    reference = sim.expected_counts(params, cfg, engine="numpy")
    # The reference computes in float32 (errors up to ~5e-6 of the brightest
    # pixel against float64, test_float32_pattern_matches_a_float64_reference);
    # the fused kernel in float64 per pixel.
    for got, want in zip(fused, reference):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * want.max())
    good = cfg.detector.good_pixels()
    assert np.all(fused[:, ~good] == 0)
    want_sums = params.fluence + params.halo + cfg.background * good.sum()
    np.testing.assert_allclose(fused.sum(axis=(1, 2), dtype=np.float64), want_sums, rtol=1e-6)


def test_an_unknown_engine_is_an_error():
    cfg = config()
    with pytest.raises(ValueError, match="engine"):
        sim.expected_counts(sim.draw_parameters(cfg, 0, [0]), cfg, engine="fortran")


def test_poisson_inversion_is_the_cdf_search():
    """The kernel's count is the number of CDF values (float64) below the uniform
    ``(bits >> 8) 2^-24``, for rates up to its cut; the pixels above are returned and
    left alone."""
    from scipy.stats import poisson

    from ccfkit.simulate_numba import MAX_INVERSION_CUT, invert_poisson

    rng = np.random.default_rng(5)
    cut = MAX_INVERSION_CUT
    lam = np.concatenate(
        [rng.uniform(0, cut, 20_000), rng.exponential(0.2, 20_000), [0.0, cut, cut + 0.5, 40.0]]
    ).astype(np.float32)
    bits = rng.integers(0, 2**32, lam.size, dtype=np.uint32)
    out = np.full(lam.size, -1.0, dtype=np.float32)
    bright = invert_poisson(lam, bits, cut, int(4 * cut + 40), out)
    inside = lam <= cut
    np.testing.assert_array_equal(bright, np.flatnonzero(~inside))
    uniform = (bits >> 8) * 2.0**-24
    cdf = poisson.cdf(np.arange(120)[None, :], lam[inside, None].astype(np.float64))
    want = (cdf < uniform[inside, None]).sum(axis=1)
    np.testing.assert_array_equal(out[inside], want)
    np.testing.assert_array_equal(out[~inside], -1.0)


def test_mean_photon_count_follows_the_requested_fluence(tmp_path):
    fluence = 2e4
    path = simulate_file(
        tmp_path / "f.cxi",
        "--fluence",
        fluence,
        fluence,
        "--background",
        0,
        "--halo",
        0,
        0,
        "--mix",
        "sphere=1,oblate=1,prolate=1",
        n=32,
    )
    with h5py.File(path, "r") as handle:
        totals = handle[cxi.DATA_PATH][()].sum(axis=(1, 2), dtype=np.float64)
        recorded = handle["entry_1/sample_1/fluence"][()]
    np.testing.assert_array_equal(recorded, fluence)
    # A frame's total is Poisson(fluence): each within 5 sigma, and the mean of 32
    # within 5 sigma / sqrt(32).
    z = (totals - fluence) / math.sqrt(fluence)
    assert np.all(np.abs(z) < 5), z
    assert abs(z.mean()) < 5 / math.sqrt(len(z))


def test_fluence_is_log_uniform_over_the_range():
    cfg = config(fluence=(1e4, 1e6), mix="sphere=1")
    fluence = sim.draw_parameters(cfg, 0, np.arange(4000)).fluence
    assert fluence.min() >= 1e4 and fluence.max() <= 1e6
    logs = np.log10(fluence)
    # log10 is uniform on [4, 6]: mean 5, sd 2 / sqrt(12); 5 sigma of the mean of 4000.
    assert logs.mean() == pytest.approx(5.0, abs=5 * (2 / math.sqrt(12)) / math.sqrt(4000))


@pytest.mark.parametrize("lam", [0.0, 0.003, 0.4, 1.7, 2.9, 3.1, 5.5, 8.0, 8.1, 60.0])
def test_poisson_sampler_has_poisson_statistics(lam):
    n = 200_000
    draws = sim.poisson_counts(np.full(n, lam, dtype=np.float32), np.random.default_rng(7))
    assert draws.dtype == np.float32
    assert np.all(draws == np.round(draws)) and draws.min() >= 0
    if lam == 0:
        assert draws.max() == 0
        return
    # mean within 5 standard errors; variance within 5 of its standard errors
    # (var of the sample variance ~ (lam + 2 lam^2) / n for a Poisson).
    assert draws.mean() == pytest.approx(lam, abs=5 * math.sqrt(lam / n))
    assert draws.var() == pytest.approx(lam, abs=5 * math.sqrt((lam + 2 * lam**2) / n))
    # P(0) = exp(-lam) (binomial error).
    p0 = math.exp(-lam)
    assert (draws == 0).mean() == pytest.approx(p0, abs=5 * math.sqrt(p0 * (1 - p0) / n) + 1e-9)


def test_a_frame_depends_only_on_seed_and_index():
    cfg = config()
    all_ = sim.render_frames(sim.draw_parameters(cfg, 5, np.arange(8)), cfg, 5)
    some = sim.render_frames(sim.draw_parameters(cfg, 5, [3, 6]), cfg, 5)
    np.testing.assert_array_equal(some, all_[[3, 6]])


# --------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------


def check_label_rules(labels: np.ndarray, names) -> None:
    col = {name: labels[:, i].astype(bool) for i, name in enumerate(names)}
    top = col["spherical_oblate"].astype(int) + col["prolate"] + col["empty"]
    assert np.all(top == 1), "every frame is exactly one of Spherical/Oblate, Prolate, Empty"
    assert not np.any(col["round"] & col["elliptical"])
    np.testing.assert_array_equal(col["round"] | col["elliptical"], col["spherical_oblate"])
    for child, parent in sim.PARENTS.items():
        assert np.all(col[parent][col[child]]), f"{child} is a {parent} subclass"


def test_labels_obey_the_papers_rules_and_every_class_occurs():
    cfg = sim.SimulationConfig()
    params = sim.draw_parameters(cfg, 1, np.arange(3000))
    labels = sim.assign_labels(params, cfg.detector)
    assert labels.dtype == np.uint8 and labels.shape == (3000, len(sim.LABELS))
    check_label_rules(labels, sim.LABELS)
    assert np.all(labels.sum(axis=0) > 0), dict(zip(sim.LABELS, labels.sum(axis=0)))
    col = dict(zip(sim.LABELS, labels.T.astype(bool)))
    np.testing.assert_array_equal(col["empty"], params.kind == sim.Kind.EMPTY)
    assert not np.any(col["prolate"] & (params.kind != sim.Kind.PROLATE))
    assert np.all(col["round"][params.kind == sim.Kind.SPHERE])


def test_paper_mix_reproduces_table_1_within_two_points():
    cfg = sim.SimulationConfig(mix="paper")
    labels = sim.assign_labels(sim.draw_parameters(cfg, 0, np.arange(6000)), cfg.detector)
    table_1 = {
        "spherical_oblate": 90.7,
        "round": 79.7,
        "elliptical": 11.0,
        "newton_rings": 6.3,
        "prolate": 6.2,
        "asymmetric": 5.1,
        "streak": 3.3,
        "double_rings": 3.0,
        "empty": 3.1,
    }  # percent of 7264 images (Bent and Layered are not simulated)
    got = dict(zip(sim.LABELS, 100 * labels.mean(axis=0)))
    for name, percent in table_1.items():
        assert got[name] == pytest.approx(percent, abs=2.0), name


def test_labels_describe_what_is_visible_not_only_what_was_drawn():
    cfg = sim.SimulationConfig()
    det = cfg.detector

    def labels_of(**kw):
        return dict(zip(sim.LABELS, sim.assign_labels(one_particle(cfg, **kw), det)[0]))

    # A long prolate droplet side-on is a Prolate Streak; end-on it looks round.
    side_on = labels_of(a=250, c=600, axis=(1, 0, 0), energy=30, fluence=3e5)
    end_on = labels_of(a=250, c=600, axis=(0, 0, 1), energy=30, fluence=3e5)
    assert side_on["prolate"] and side_on["streak"]
    assert end_on["spherical_oblate"] and end_on["round"] and not end_on["prolate"]
    # A slightly oblate droplet edge-on: elliptical when its outer rings carry
    # photons, round when only the first rings are bright enough to see.
    bright = labels_of(a=400, c=350, axis=(0, 1, 0), energy=30, fluence=1e6, kind=sim.Kind.OBLATE)
    dim = labels_of(a=400, c=350, axis=(0, 1, 0), energy=30, fluence=3e2, kind=sim.Kind.OBLATE)
    assert bright["elliptical"] and dim["round"]


def test_file_labels_names_and_groups(cxi_file):
    with h5py.File(cxi_file, "r") as handle:
        labels = handle[cxi.LABELS_PATH][()]
        attrs = handle[cxi.LABELS_PATH].attrs
        names = [str(n) for n in attrs["names"]]
        display = [str(n) for n in attrs["display_names"]]
        groups = json.loads(attrs["exclusive_groups"])
        kind = handle["entry_1/sample_1/kind"][()]
    assert names == list(sim.LABELS)
    assert display[names.index("spherical_oblate")] == "Spherical/Oblate"
    assert display[names.index("double_rings")] == "Double Rings"
    assert groups == [list(g) for g in sim.EXCLUSIVE_GROUPS]
    assert labels.dtype == np.uint8 and labels.shape == (32, len(names))
    check_label_rules(labels, names)
    np.testing.assert_array_equal(labels[:, names.index("empty")], kind == sim.Kind.EMPTY)


def test_stored_parameters_reproduce_the_labels(cxi_file):
    """What was drawn is in the file: the labels can be recomputed from it."""
    with h5py.File(cxi_file, "r") as handle:
        sample = handle["entry_1/sample_1"]
        params = sim.FrameParameters(
            index=np.arange(32),
            kind=sample["kind"][()],
            radius=sample["radius"][()] * 1e9,
            semi_axes=sample["semi_axes"][()] * 1e9,
            axis=sample["axis"][()],
            photon_energy=handle["entry_1/instrument_1/source_1/energy"][()] / 1.602176634e-19,
            wavelength=handle["entry_1/instrument_1/source_1/wavelength"][()] * 1e9,
            fluence=sample["fluence"][()],
            center=handle[cxi.CENTER_PATH][()],
            partner_radius=sample["partner_radius"][()] * 1e9,
            separation=sample["separation"][()] * 1e9,
        )
        stored_shift = sample["fringe_shift"][()]
        labels = handle[cxi.LABELS_PATH][()]
        params_json = json.loads(handle.attrs["parameters"])
    cfg = sim.SimulationConfig(size=params_json["size"], hole_radius=params_json["hole_radius_px"])
    np.testing.assert_allclose(
        sim.fringe_shift(params, cfg.detector), stored_shift, rtol=1e-9, atol=1e-9
    )  # spheres: long - short rounds to ~1e-16
    np.testing.assert_array_equal(sim.assign_labels(params, cfg.detector), labels)


# --------------------------------------------------------------------------
# The file
# --------------------------------------------------------------------------


def test_file_layout_units_and_provenance(cxi_file):
    with h5py.File(cxi_file, "r") as handle:
        data = handle[cxi.DATA_PATH]
        assert data.dtype == np.float32 and data.shape == (32, 65, 65)
        assert data.chunks == (1, 65, 65)
        assert handle["entry_1/instrument_1/detector_1/data"].shape == data.shape  # soft link
        det = handle["entry_1/instrument_1/detector_1"]
        assert det["distance"][()] == pytest.approx(0.065)
        pixel = det["x_pixel_size"][()]
        assert pixel == det["y_pixel_size"][()]
        assert pixel == pytest.approx(2 * 0.065 * math.tan(math.radians(30)) / 65)
        wavelength = handle["entry_1/instrument_1/source_1/wavelength"][()]
        energy = handle["entry_1/instrument_1/source_1/energy"][()]
        assert wavelength.shape == (32,)
        # 19-35 eV is 35-65 nm; E = h c / lambda
        assert np.all((wavelength > 35e-9) & (wavelength < 66e-9))
        np.testing.assert_allclose(energy * wavelength, 6.62607015e-34 * 299792458, rtol=1e-9)
        centers = det["beam_center"][()]
        assert centers.shape == (32, 2)
        assert np.all(np.hypot(centers[:, 0] - 32, centers[:, 1] - 32) <= 3.0)  # --jitter 3
        sample = handle["entry_1/sample_1"]
        semi = sample["semi_axes"][()]
        radius = sample["radius"][()]
        hit = radius > 0
        np.testing.assert_allclose(semi[hit, 0] ** 2 * semi[hit, 1], radius[hit] ** 3, rtol=1e-12)
        assert np.all((radius[hit] >= 150e-9) & (radius[hit] <= 300e-9))
        np.testing.assert_allclose(np.linalg.norm(sample["axis"][()], axis=1), 1.0, rtol=1e-12)
        assert handle.attrs["seed"] == 3
        params = json.loads(handle.attrs["parameters"])
        assert params["radius_nm"] == [150.0, 300.0] and params["size"] == 65
        # the instrument physics is in the provenance, with its formulas
        assert params["polarization"] == "horizontal" and params["solid_angle"] is True
        assert params["halo_photons"] == [1e3, 2e4] and params["mcp"] is False
        formulas = json.loads(handle.attrs["formulas"])
        assert {"polarization", "solid_angle", "halo"} <= set(formulas)
        assert handle.attrs["schema"] == "ccfkit-simulate/2"
        halo = sample["halo"][()]
        assert np.all((halo >= 1e3) & (halo <= 2e4))
        assert handle.attrs["ccfkit_version"] == ccfkit.__version__


def test_masked_pixels_are_masked(cxi_file):
    with h5py.File(cxi_file, "r") as handle:
        mask = handle[cxi.MASK_PATH][()]
        assert handle[cxi.MASK_PATH].attrs["convention"] == "cxi"
        data = handle[cxi.DATA_PATH][()]
    y, x = np.indices(mask.shape)
    hole = np.hypot(x - 32, y - 32) < 10  # default --hole 10 around the detector middle
    np.testing.assert_array_equal(mask != 0, hole)
    assert np.all(mask[hole] == cxi.PIXEL_IS_MISSING)
    assert np.all(data[:, hole] == 0)  # nothing is recorded in the hole
    assert np.all(data[:, ~hole].sum(axis=1) > 0)
    # The build's reader sees the same mask.
    source = open_source([cxi_file])
    np.testing.assert_array_equal(source.mask, ~hole)


def test_panel_gaps_and_an_offset_beam_make_partial_rings(tmp_path):
    """Gaps through the detector middle, a beam beside it: rings around the beam are cut."""
    path = simulate_file(tmp_path / "gaps.cxi", "--panel-gap", 3, "--beam-offset", 6, -4,
                         "--jitter", 1, "--seed", 2)  # fmt: skip
    with h5py.File(path, "r") as handle:
        mask = handle[cxi.MASK_PATH][()]
        data = handle[cxi.DATA_PATH][()]
        centres = handle["entry_1/instrument_1/detector_1/beam_center"][()]
    y, x = np.indices(mask.shape)
    gaps = (np.abs(x - 32) < 1.5) | (np.abs(y - 32) < 1.5)  # 3 px wide through the middle
    hole = np.hypot(x - 32, y - 32) < 10
    np.testing.assert_array_equal(mask != 0, gaps | hole)
    assert np.all(data[:, gaps] == 0)
    # every centre lies in the 1 px jitter disc around the offset
    assert np.all(np.hypot(centres[:, 0] - 38, centres[:, 1] - 28) <= 1 + 1e-9)
    # around the mean beam centre, rings keep between 50 % and all of their samples
    plan = ccfkit.make_polar_plan(mask.shape, center=(38.0, 28.0), mask=mask == 0, q_bins=16,
                                  phi_bins=64, r_min="auto")  # fmt: skip
    fraction = plan.valid.mean(axis=1)[plan.ring_used]
    assert np.any((fraction > 0.5) & (fraction < 1)), fraction


def test_the_build_reader_opens_the_file(cxi_file):
    source = open_source([cxi_file])
    assert source.n_frames == 32 and source.frame_shape == (65, 65)
    assert source.label_names == sim.LABELS
    assert source.exclusive_groups == sim.EXCLUSIVE_GROUPS
    assert source.center == pytest.approx((32.0, 32.0), abs=3.0)
    assert source.distance == pytest.approx(0.065)
    with h5py.File(cxi_file, "r") as handle:
        stored = handle[cxi.DATA_PATH][0:4]
    np.testing.assert_array_equal(source.reader[0:4], stored)


def test_the_build_carries_label_display_names_into_the_store(cxi_file, tmp_path):
    store = tmp_path / "maps.zarr"
    result = run("build", cxi_file, store, "--q-bins", 16, "--phi-bins", 32, "--quiet")
    assert result.exit_code == 0, result.output
    labels = ccfkit.store.open_store(store)["labels"]
    assert list(labels.attrs["names"]) == list(sim.LABELS)
    assert list(labels.attrs["display_names"]) == [sim.DISPLAY_NAMES[n] for n in sim.LABELS]


def write_minimal(path, *, labels_at, center_at, center):
    """Frames, labels and a beam centre at the given CXI-like locations."""
    with h5py.File(path, "w") as handle:
        handle["entry_1/data_1/data"] = np.ones((3, 20, 20), dtype=np.float32)
        labels = handle.create_dataset(labels_at, data=np.eye(3, 2, dtype=np.uint8))
        labels.attrs["names"] = ["Round", "Newton rings"]
        handle[center_at] = center


@pytest.mark.parametrize(
    "labels_at", ["entry_1/labels", "entry_1/data_1/labels", "entry_1/sample_1/labels"]
)
@pytest.mark.parametrize(
    "center_at",
    [
        "entry_1/instrument_1/detector_1/beam_center",
        "entry_1/instrument_1/detector_1/center",
        "entry_1/data_1/beam_center",
    ],
)
def test_labels_and_centres_are_found_at_the_cxi_like_locations(tmp_path, labels_at, center_at):
    """Centres are (cx, cy), x = column first: one pair or one per frame (the mean)."""
    path = tmp_path / "in.cxi"
    per_frame = np.array([[8.0, 11.0], [9.0, 12.0], [10.0, 13.0]])
    write_minimal(path, labels_at=labels_at, center_at=center_at, center=per_frame)
    source = open_source([path])
    assert source.label_names == ("Round", "Newton rings")
    np.testing.assert_array_equal(source.labels, np.eye(3, 2, dtype=np.uint8))
    assert source.center == (9.0, 12.0)
    write_minimal(path, labels_at=labels_at, center_at=center_at, center=[7.5, 4.0])
    assert open_source([path]).center == (7.5, 4.0)


def test_a_centre_that_is_not_pairs_is_a_clear_error(tmp_path):
    path = tmp_path / "in.cxi"
    write_minimal(
        path, labels_at="entry_1/labels", center_at="entry_1/instrument_1/detector_1/center",
        center=[1.0, 2.0, 3.0],
    )  # fmt: skip
    with pytest.raises(InputError, match=r"expected \(2,\) or \(N, 2\)"):
        open_source([path])


def test_compute_maps_on_a_frame_of_the_file(cxi_file):
    with h5py.File(cxi_file, "r") as handle:
        kind = handle["entry_1/sample_1/kind"][()]
        centers = handle[cxi.CENTER_PATH][()]
    index = int(np.flatnonzero(kind != sim.Kind.EMPTY)[0])
    source = open_source([cxi_file])
    frame, good = source.reader[index], source.mask
    maps = ccfkit.compute_maps(
        frame, center=tuple(centers[index]), mask=good, q_bins=24, phi_bins=64, backend="numpy"
    )
    assert maps.shape == (24, 24)
    assert np.all(np.isfinite(maps))
    assert np.abs(maps).max() == pytest.approx(1.0)  # maxabs scaling: the maps are not empty


def test_same_seed_gives_the_same_file(tmp_path):
    a = simulate_file(tmp_path / "a.cxi", "--seed", 9, "--workers", 1)
    b = simulate_file(tmp_path / "b.cxi", "--seed", 9, "--workers", 2)
    c = simulate_file(tmp_path / "c.cxi", "--seed", 10)

    def datasets(path):
        out = {}
        with h5py.File(path, "r") as handle:
            handle.visititems(
                lambda name, obj: (
                    out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
                )
            )
        return out

    da, db = datasets(a), datasets(b)
    assert da.keys() == db.keys()
    for name in da:
        assert np.array_equal(da[name], db[name]), name  # bitwise, whatever the threads
    assert a.read_bytes() == b.read_bytes()  # no time stamps in the file either
    assert not np.array_equal(da["entry_1/data_1/data"], datasets(c)["entry_1/data_1/data"])


# --------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--radius", "300", "100"], "exceeds the maximum"),
        (["--radius", "0", "100"], "radius"),
        (["--energy", "-5", "20"], "photon energy"),
        (["--fluence", "1e5", "1e3"], "fluence"),
        (["--mix", "sphere=1,cube=2"], "unknown kind 'cube'"),
        (["--mix", "sphere=-1"], ">= 0"),
        (["--mix", "sphere=0"], "no positive weight"),
        (["--oblate-ratio", "0.5", "1.5"], "oblate ratio"),
        (["--jitter", "-1"], "jitter"),
        (["--hole", "40"], "hole radius"),
        (["--size", "8"], "size"),
        (["--n", "0"], "--n"),
        (["--seed", "-1"], "--seed"),
        (["--radius", "100"], "--radius"),
        (["--halo", "0", "100"], "halo: the minimum must be > 0"),
        (["--halo-width", "5", "2"], "halo width"),
        (["--gain-spread", "-1"], "gain spread"),
        (["--polarization", "circular"], "--polarization"),
        (["--panel-gap", "-2"], "panel gap"),
        (["--beam-offset", "15", "0"], "beam offset plus the jitter"),
    ],
)
def test_bad_input_is_a_one_line_error_and_leaves_no_file(tmp_path, args, message):
    out = tmp_path / "bad.cxi"
    result = run("simulate", out, "--size", 65, "--n", 4, *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_needs_overwrite_and_missing_directory_is_an_error(tmp_path):
    out = simulate_file(tmp_path / "x.cxi", n=2)
    before = out.read_bytes()
    result = run("simulate", out, "--n", 2, "--size", 65, "--seed", 1)
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert out.read_bytes() == before
    result = run("simulate", out, "--n", 2, "--size", 65, "--seed", 1, "--overwrite", "--quiet")
    assert result.exit_code == 0 and out.read_bytes() != before
    result = run("simulate", tmp_path / "nowhere" / "x.cxi", "--n", 2, "--size", 65)
    assert result.exit_code == 1 and "does not exist" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.cxi"]


def test_a_failure_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    calls = []

    def failing(params, cfg, seed, good=None):
        calls.append(len(params))
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if Ctrl-C arrived mid-way
        return np.zeros((len(params), *cfg.detector.shape), dtype=np.float32)

    monkeypatch.setattr(sim, "render_frames", failing)
    result = run("simulate", tmp_path / "x.cxi", "--n", 40, "--size", 65, "--workers", 1)
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == []


def test_simulate_reports_and_writes_atomically(tmp_path):
    out = tmp_path / "ok.cxi"
    result = run("simulate", out, "--n", 6, "--size", 65, "--no-noise", "--quiet")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "frames/s" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.cxi"]
    with h5py.File(out, "r") as handle:
        data = handle[cxi.DATA_PATH][()]
        assert handle[cxi.DATA_PATH].attrs["units"] == "expected photons"
    assert np.any(data != np.round(data))  # expected counts, not Poisson draws


def test_simulate_examples_draws_a_png(tmp_path):
    out = tmp_path / "grid.png"
    result = run("simulate-examples", out, "--size", 129)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for title in ("Elliptical", "Prolate", "Streak", "Empty", "Double Rings", "Newton rings",
                  "Asymmetric"):  # fmt: skip
        assert title in result.output
