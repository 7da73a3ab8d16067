"""``ccfkit.simulate.detector``: pixels, their scattering angles and momentum transfer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ccfkit import simulate as sim

from .helpers import config


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
