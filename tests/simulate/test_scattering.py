"""``ccfkit.simulate.scattering``: form factors and patterns against float64 references and
the positions of their zeros."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ccfkit import simulate as sim

from .helpers import config, one_particle

FIRST_ZERO = 4.493409457909064  # first root of tan(u) = u: the sphere's first minimum

ZEROS = (FIRST_ZERO, 7.725251836937707, 10.904121659428899)  # the first three


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
