"""Detector geometry: from pixels to scattering angle and momentum transfer.

One convention throughout (docs/ccf.md, "Rings in momentum transfer"): a flat
detector normal to the beam at distance ``L``, square pixels of pitch ``p``;
a pixel ``r`` pixels from the beam centre sees the scattering angle
``2 theta = atan(r p / L)`` and the momentum transfer
``|q| = 4 pi sin(theta) / lambda`` (1/nm, wavelength in nm: the "4 pi sin
theta / lambda" convention, ``|q| = 2 pi / d`` for Bragg spacing ``d``). No
small-angle shortcut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ScatteringGeometry",
    "momentum_transfer",
    "radius_of_momentum_transfer",
    "ring_momentum_transfer",
]


def ring_momentum_transfer(q_range, q_bins: int) -> np.ndarray:
    """``q_k = QMIN + (k + 0.5)(QMAX - QMIN)/Q``, (Q,) float64, 1/nm (docs/ccf.md)."""
    q_min, q_max = q_range
    return q_min + (np.arange(q_bins) + 0.5) * (q_max - q_min) / q_bins


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


def radius_of_momentum_transfer(q, *, pixel_size: float, distance, wavelength_nm):
    """The inverse of :func:`momentum_transfer`: pixels from the beam centre at ``|q|``.

    ``2 theta = 2 arcsin(q lambda / 4 pi)``, ``r = L tan(2 theta) / p``.

    Parameters
    ----------
    q : array_like
        Momentum transfer, 1/nm, ``>= 0``.
    pixel_size : float
        Metres.
    distance : float or array_like
        Metres (arrays broadcast with ``q``: one geometry per row, for instance).
    wavelength_nm : float or array_like
        Nanometres (broadcast likewise).

    Returns
    -------
    ndarray of float64, pixels

    Raises
    ------
    ValueError
        A negative ``q``, or one scattered at ``2 theta >= 90`` degrees (no
        flat detector normal to the beam sees it).
    """
    q = np.asarray(q, dtype=np.float64)
    sin_theta = q * wavelength_nm / (4 * np.pi)
    if np.any(q < 0):
        raise ValueError(f"momentum transfer must be >= 0, got {float(q.min())} 1/nm")
    beyond = sin_theta >= math.sin(math.pi / 4)
    if np.any(beyond):
        wavelength = float(np.broadcast_to(wavelength_nm, beyond.shape)[beyond][0])
        q_right_angle = 4 * np.pi * math.sin(math.pi / 4) / wavelength
        raise ValueError(
            f"q = {float(q.max()):g} 1/nm scatters at 2 theta >= 90 degrees at a wavelength of "
            f"{wavelength:g} nm (a flat detector sees q < {q_right_angle:.4g} 1/nm)"
        )
    return distance * np.tan(2 * np.arcsin(sin_theta)) / pixel_size


@dataclass(frozen=True)
class ScatteringGeometry:
    """What turns a detector's pixel radii into momentum transfer.

    Attributes
    ----------
    pixel_size : float
        Pixel pitch, metres (square pixels).
    distance : float
        Sample-detector distance, metres.
    wavelength_nm : float
        Wavelength of the beam, nanometres.

    Raises
    ------
    ValueError
        A quantity that is not a positive finite number.
    """

    pixel_size: float
    distance: float
    wavelength_nm: float

    def __post_init__(self):
        for name in ("pixel_size", "distance", "wavelength_nm"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")
            object.__setattr__(self, name, value)

    def momentum_transfer(self, radius_px) -> np.ndarray:
        """``|q|`` in 1/nm at ``radius_px`` pixels (:func:`momentum_transfer`)."""
        return momentum_transfer(
            radius_px,
            pixel_size=self.pixel_size,
            distance=self.distance,
            wavelength_nm=self.wavelength_nm,
        )

    def radius(self, q) -> np.ndarray:
        """Pixels from the beam centre at ``|q|`` 1/nm (:func:`radius_of_momentum_transfer`)."""
        return radius_of_momentum_transfer(
            q,
            pixel_size=self.pixel_size,
            distance=self.distance,
            wavelength_nm=self.wavelength_nm,
        )
