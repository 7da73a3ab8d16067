"""The simulated detector: a flat, square pixel array normal to the beam, and the
momentum transfer each pixel sees.

Conventions (``docs/simulate.md``): images are ``I[y, x]`` (row ``y``, column
``x``) with pixel centres at integer coordinates; the beam centre is ``(cx,
cy)`` in pixels; lab axes are ``x`` along columns, ``y`` along rows, ``z``
along the beam. A pixel at ``(x, y)`` metres from the beam centre on a detector
at distance ``L`` sees the scattering angle ``2 theta = atan(sqrt(x^2 + y^2) /
L)`` and ``q = k (n - z_hat)`` with ``n = (x, y, L) / D``, ``D = sqrt(x^2 +
y^2 + L^2)``: no small-angle shortcut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import geometry

__all__ = ["Detector", "momentum_transfer", "q_vectors"]


@dataclass(frozen=True)
class Detector:
    """A square flat detector perpendicular to the beam.

    Attributes
    ----------
    shape : (int, int)
        ``(H, W)`` pixels.
    distance : float
        Sample-detector distance in m.
    pixel_size : float
        Pixel pitch in m (square pixels).
    hole_radius : float
        Radius in pixels of the central hole, centred on :attr:`nominal_center`.
    panel_gap : float
        Width in pixels of the masked bands between four panels, through
        :attr:`nominal_center`; 0 for one panel.
    """

    shape: tuple[int, int]
    distance: float
    pixel_size: float
    hole_radius: float
    panel_gap: float = 0.0

    @classmethod
    def from_config(cls, config) -> Detector:
        """The detector of a :class:`~ccfkit.simulate.config.SimulationConfig`."""
        size = int(config.size)
        pixel = 2 * config.distance * math.tan(math.radians(config.max_angle)) / size
        return cls((size, size), float(config.distance), pixel, float(config.hole_radius),
                   float(config.panel_gap))  # fmt: skip

    @property
    def nominal_center(self) -> tuple[float, float]:
        """The detector's middle ``(cx, cy)`` in pixels: the hole's centre."""
        return ((self.shape[1] - 1) / 2, (self.shape[0] - 1) / 2)

    @property
    def half_width(self) -> float:
        """Distance in pixels from the middle to the detector edge (``min(H, W) / 2``)."""
        return min(self.shape) / 2

    def good_pixels(self) -> np.ndarray:
        """(H, W) bool mask, True = good: every pixel outside the central hole and the gaps."""
        cx, cy = self.nominal_center
        y, x = np.ogrid[: self.shape[0], : self.shape[1]]
        good = (x - cx) ** 2 + (y - cy) ** 2 >= self.hole_radius**2
        half_gap = self.panel_gap / 2
        return good & (np.abs(x - cx) >= half_gap) & (np.abs(y - cy) >= half_gap)


def momentum_transfer(r_px, detector: Detector, wavelength_nm):
    """``|q|`` in 1/nm at ``r_px`` pixels from the beam centre (wide angle).

    ``2 theta = atan(r p / L)``, ``|q| = 4 pi sin(theta) / lambda``.

    Parameters
    ----------
    r_px : array_like
        Distances from the beam centre, pixels.
    detector : Detector
    wavelength_nm : array_like
        Broadcast against ``r_px``.

    Returns
    -------
    ndarray of float64, 1/nm
    """
    return geometry.momentum_transfer(
        r_px, pixel_size=detector.pixel_size, distance=detector.distance,
        wavelength_nm=wavelength_nm,
    )  # fmt: skip


def q_vectors(detector: Detector, center: tuple[float, float], wavelength_nm: float) -> np.ndarray:
    """The 3-D momentum transfer of every pixel (Ewald sphere), float64 reference.

    Returns
    -------
    (3, H, W) float64
        ``(qx, qy, qz)`` in 1/nm, ``q = k (n - z_hat)``; ``qz <= 0``.
    """
    height, width = detector.shape
    x = (np.arange(width) - center[0]) * detector.pixel_size
    y = (np.arange(height) - center[1]) * detector.pixel_size
    x, y = np.meshgrid(x, y)
    dist = np.sqrt(x**2 + y**2 + detector.distance**2)
    k = 2 * np.pi / wavelength_nm
    return np.stack([k * x / dist, k * y / dist, k * (detector.distance / dist - 1)])
