"""What the instrument adds to a scattered intensity: polarisation, pixel solid angle,
stray light, and the response of an MCP + phosphor detector.

Formulas and the reasons for each default are in ``docs/simulate.md`` ("Physics
of the instrument"). Conventions: a flat detector normal to the beam at distance
``L``; a pixel's offset from the beam centre is ``(x, y)``; ``D = sqrt(x^2 + y^2
+ L^2)``; the outgoing direction is ``n = (x, y, L) / D``, so ``cos 2theta = L /
D``. Lab axes: ``x`` along columns, ``y`` along rows, ``z`` along the beam.
Functions take the ratios ``x / L``, ``y / L`` (dimensionless) and return
float32 arrays, 1 on the beam axis.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = [
    "Polarization",
    "cos_two_theta",
    "mcp_response",
    "polarization_coefficients",
    "polarization_factor",
    "solid_angle_factor",
    "stray_light_halo",
]


class Polarization(str, enum.Enum):
    """The incident beam's polarisation (FERMI's undulators: linear, horizontal)."""

    HORIZONTAL = "horizontal"  # electric field along x (the detector's columns)
    VERTICAL = "vertical"  # along y (rows)
    UNPOLARISED = "unpolarised"
    NONE = "none"  # no factor at all (the model before polarisation was added)


def cos_two_theta(x_over_l, y_over_l) -> np.ndarray:
    """``L / D = cos 2theta`` of each pixel: (H, W) float32 (``x + y`` broadcast)."""
    t = np.add(np.float32(x_over_l) ** 2, np.float32(y_over_l) ** 2, dtype=np.float32)
    t += np.float32(1)
    np.sqrt(t, out=t)
    return np.reciprocal(t, out=t)


def polarization_factor(
    x_over_l,
    y_over_l,
    polarization: Polarization | str,
    cos2t: np.ndarray | None = None,
    degree: float | None = None,
) -> np.ndarray:
    """Thomson polarisation factor ``P`` of each pixel (1 on the beam axis).

    ``P = 1 - (n . e)^2`` for a beam linearly polarised along the unit vector
    ``e``: ``1 - (x / D)^2`` horizontal, ``1 - (y / D)^2`` vertical;
    ``(1 + cos^2 2theta) / 2`` unpolarised; 1 for ``"none"``. A partly
    polarised beam (``degree`` d < 1, horizontal or vertical) is the mix
    ``(1 + d) / 2`` along ``e`` and ``(1 - d) / 2`` across it:
    ``P = 1 - (1 + d) / 2 (x / D)^2 - (1 - d) / 2 (y / D)^2`` (horizontal),
    unpolarised at ``d = 0`` (:func:`polarization_coefficients`).

    Parameters
    ----------
    x_over_l : (W,) or (H, W) array_like
        Pixel offsets along x over the detector distance.
    y_over_l : (H, 1) or (H, W) array_like
        The same along y.
    polarization : Polarization or str
    cos2t : (H, W) float32, optional
        :func:`cos_two_theta`, when already computed (not modified).
    degree : float, optional
        Degree of linear polarisation in [0, 1]; None: 1 (as ``polarization`` says).

    Returns
    -------
    (H, W) float32
    """
    polarization = Polarization(polarization)
    cos2t = cos_two_theta(x_over_l, y_over_l) if cos2t is None else cos2t
    if degree is not None:
        p0, px, py, _ = polarization_coefficients(polarization, degree)
        x_d = np.multiply(cos2t, np.float32(x_over_l), dtype=np.float32)  # x / D
        y_d = np.multiply(cos2t, np.float32(y_over_l), dtype=np.float32)
        return np.float32(p0) + np.float32(px) * x_d * x_d + np.float32(py) * y_d * y_d
    if polarization is Polarization.NONE:
        return np.ones_like(cos2t)
    if polarization is Polarization.UNPOLARISED:
        factor = np.multiply(cos2t, cos2t, dtype=np.float32)
        factor += np.float32(1)
        factor *= np.float32(0.5)
        return factor
    along = x_over_l if polarization is Polarization.HORIZONTAL else y_over_l
    component = np.multiply(cos2t, np.float32(along), dtype=np.float32)  # n . e = x / D
    component *= component
    return np.subtract(np.float32(1), component, out=component)


def polarization_coefficients(
    polarization: Polarization | str, degree: float | None = None
) -> tuple[float, ...]:
    """``(p0, px, py, pz)`` with ``P = p0 + px (x/D)^2 + py (y/D)^2 + pz (L/D)^2``.

    The factors of :func:`polarization_factor` as one formula, for kernels
    that evaluate ``P`` pixel by pixel: horizontal ``(1, -1, 0, 0)``, vertical
    ``(1, 0, -1, 0)``, unpolarised ``(1/2, 0, 0, 1/2)``, none ``(1, 0, 0, 0)``.
    With a ``degree`` d of linear polarisation (horizontal or vertical only):
    ``(1, -(1 + d)/2, -(1 - d)/2, 0)`` horizontal, the two swapped vertical.
    """
    if degree is not None:
        along, across = -(1 + degree) / 2, -(1 - degree) / 2
        if Polarization(polarization) is Polarization.HORIZONTAL:
            return (1.0, along, across, 0.0)
        if Polarization(polarization) is Polarization.VERTICAL:
            return (1.0, across, along, 0.0)
        raise ValueError("a polarisation degree needs a horizontal or vertical polarisation")
    return {
        Polarization.HORIZONTAL: (1.0, -1.0, 0.0, 0.0),
        Polarization.VERTICAL: (1.0, 0.0, -1.0, 0.0),
        Polarization.UNPOLARISED: (0.5, 0.0, 0.0, 0.5),
        Polarization.NONE: (1.0, 0.0, 0.0, 0.0),
    }[Polarization(polarization)]


def solid_angle_factor(x_over_l, y_over_l, cos2t: np.ndarray | None = None) -> np.ndarray:
    """Solid angle of a flat-detector pixel relative to one on the beam axis.

    A pixel of area ``p^2`` at distance ``D`` whose normal makes the angle
    ``2theta`` with the line of sight subtends ``p^2 cos(2theta) / D^2 =
    (p^2 / L^2) cos^3 2theta``: the inverse square law and the obliquity
    together give ``cos^3 2theta``.

    Parameters
    ----------
    x_over_l, y_over_l : array_like
        As in :func:`polarization_factor`.
    cos2t : (H, W) float32, optional
        :func:`cos_two_theta`, when already computed (not modified).

    Returns
    -------
    (H, W) float32
    """
    cos2t = cos_two_theta(x_over_l, y_over_l) if cos2t is None else cos2t
    cube = np.multiply(cos2t, cos2t, dtype=np.float32)
    cube *= cos2t
    return cube


def stray_light_halo(r2_px: np.ndarray, width_px: float, good: np.ndarray, photons: float):
    """A smooth, centred halo of stray light holding ``photons`` on the good pixels.

    Profile ``h(r) = (1 + r^2 / w^2)^(-3/2)``: flat within ``w`` of the beam
    centre, falling as ``r^-3`` beyond (the 2-D profile of a Lorentzian
    spot, whose integral over the plane is finite, ``2 pi w^2``).

    Parameters
    ----------
    r2_px : (H, W) float32
        Squared distance from the beam centre, pixels^2.
    width_px : float
        ``w``, pixels (> 0).
    good : (H, W) float32 or bool
        1 on good pixels, 0 on masked ones.
    photons : float
        Expected halo photons summed over the good pixels.

    Returns
    -------
    (H, W) float32
        Expected photons per pixel, 0 on masked pixels.
    """
    halo = np.multiply(r2_px, np.float32(1 / (width_px * width_px)), dtype=np.float32)
    halo += np.float32(1)
    root = np.sqrt(halo)
    halo *= root
    np.reciprocal(halo, out=halo)
    halo *= good
    total = float(halo.sum(dtype=np.float64))
    halo *= np.float32(photons / total) if total > 0 else np.float32(0)
    return halo


def mcp_response(
    counts: np.ndarray,
    rng: np.random.Generator,
    *,
    gain_spread: float,
    blur_px: float,
    good: np.ndarray,
) -> np.ndarray:
    """Detector values of an MCP + phosphor screen for photon ``counts`` of one frame.

    Each detected photon starts an electron avalanche of random gain: the
    gains of the events are i.i.d. Gamma with mean 1 and relative standard
    deviation ``gain_spread`` (the MCP's pulse-height distribution), so a
    pixel with ``n`` events reads ``Gamma(n k, 1 / k)`` with
    ``k = 1 / gain_spread^2`` (mean ``n``, variance ``n gain_spread^2``).
    The phosphor spreads each spot over a Gaussian of ``blur_px`` pixels
    (standard deviation); masked pixels read 0. The mean signal stays in
    photons: a value of 1 is one photon's mean signal.

    Parameters
    ----------
    counts : (H, W) float32
        Whole photon counts (or expected counts, for a blur without gain noise).
    rng : numpy.random.Generator
        Only consumed when ``gain_spread > 0``.
    gain_spread : float
        >= 0; 0 leaves the counts as they are.
    blur_px : float
        >= 0; 0 is no blur.
    good : (H, W) bool

    Returns
    -------
    (H, W) float32
    """
    from scipy.ndimage import gaussian_filter

    out = np.array(counts, dtype=np.float32)
    if gain_spread > 0:
        hit = np.flatnonzero(out.ravel() > 0)
        k = 1.0 / (gain_spread * gain_spread)
        out.ravel()[hit] = rng.gamma(out.ravel()[hit].astype(np.float64) * k, 1.0 / k)
    if blur_px > 0:
        out = gaussian_filter(out, blur_px, mode="constant", truncate=3.0)
    out *= good
    return out
