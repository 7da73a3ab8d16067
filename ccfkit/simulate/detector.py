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
        Width in pixels of the masked bands between the panels of
        :attr:`panel_grid`; 0 for one panel.
    panel_grid : (int, int)
        ``(rows, columns)`` of equal panels; the gaps lie at the panels'
        borders (for 2 x 2, through :attr:`nominal_center`).
    beam_stop : str
        Shape of the masked stop around :attr:`stop_center`: ``"round"`` (a
        disc of radius :attr:`hole_radius`) or ``"rectangle"`` (half-width
        :attr:`hole_radius`, half-height ``hole_radius * stop_aspect``).
    stop_aspect : float
        Half-height over half-width of a rectangular stop.
    holder_angle : float or None
        Direction (radians, from +x towards +y) of the stop's holder arm, a
        masked bar from :attr:`stop_center` to the detector edge; None: no arm.
    holder_width : float
        Width of the holder arm, pixels.
    offset : (float, float)
        ``(dx, dy)`` pixels from the detector middle to :attr:`stop_center`.
    """

    shape: tuple[int, int]
    distance: float
    pixel_size: float
    hole_radius: float
    panel_gap: float = 0.0
    panel_grid: tuple[int, int] = (2, 2)
    beam_stop: str = "round"
    stop_aspect: float = 1.0
    holder_angle: float | None = None
    holder_width: float = 0.0
    offset: tuple[float, float] = (0.0, 0.0)

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

    @property
    def stop_center(self) -> tuple[float, float]:
        """``(cx, cy)`` of the beam stop (the hole), pixels: the middle plus :attr:`offset`."""
        cx, cy = self.nominal_center
        return (cx + self.offset[0], cy + self.offset[1])

    def good_pixels(self) -> np.ndarray:
        """(H, W) bool mask, True = good: every pixel outside the beam stop (the central
        hole), its holder arm and the gaps between panels."""
        cx, cy = self.stop_center
        y, x = np.ogrid[: self.shape[0], : self.shape[1]]
        if self.beam_stop == "rectangle":
            half_height = self.hole_radius * self.stop_aspect
            good = (np.abs(x - cx) >= self.hole_radius) | (np.abs(y - cy) >= half_height)
        else:
            good = (x - cx) ** 2 + (y - cy) ** 2 >= self.hole_radius**2
        if self.holder_angle is not None:
            good = good & ~_holder_arm(x - cx, y - cy, self.holder_angle, self.holder_width)
        return good & self._outside_gaps(x, y)

    def _outside_gaps(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True off the gaps between the panels of :attr:`panel_grid` (broadcast ``x + y``)."""
        half_gap = self.panel_gap / 2
        good = np.ones(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
        for coord, n_panels, side in ((x, self.panel_grid[1], self.shape[1]),
                                      (y, self.panel_grid[0], self.shape[0])):  # fmt: skip
            for j in range(1, n_panels):
                border = j * side / n_panels - 0.5  # between pixels: centres at integers
                good = good & (np.abs(coord - border) >= half_gap)
        return good


def _holder_arm(dx: np.ndarray, dy: np.ndarray, angle: float, width: float) -> np.ndarray:
    """True on a bar of ``width`` pixels from the stop centre outwards along ``angle``."""
    along = dx * math.cos(angle) + dy * math.sin(angle)
    across = -dx * math.sin(angle) + dy * math.cos(angle)
    return (along >= 0) & (np.abs(across) <= width / 2)


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
