"""Detector geometry: from pixels to scattering angle and momentum transfer."""

from __future__ import annotations

import numpy as np

__all__ = ["momentum_transfer"]


def momentum_transfer(radius_px, *, pixel_size: float, distance: float, wavelength_nm):
    """``|q| = 4 pi sin(theta) / lambda`` in 1/nm at ``radius_px`` pixels from the beam.

    The scattering angle is ``2 theta = atan(r * pixel_size / distance)`` on a
    flat detector normal to the beam: wide angles included, no small-angle
    shortcut.

    Parameters
    ----------
    radius_px : array_like
        Distances from the beam centre, pixels.
    pixel_size, distance : float
        Metres.
    wavelength_nm : array_like
        Nanometres; broadcast against ``radius_px``.

    Returns
    -------
    ndarray of float64, 1/nm
    """
    two_theta = np.arctan(np.asarray(radius_px, dtype=np.float64) * pixel_size / distance)
    return 4 * np.pi * np.sin(two_theta / 2) / np.asarray(wavelength_nm, dtype=np.float64)
