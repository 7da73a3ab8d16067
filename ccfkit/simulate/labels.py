"""The labels of a simulated frame: the paper's taxonomy and the rules that assign it.

The labels describe what a pattern *shows* (paper §2, Table 1, Fig. 2), not
only what was drawn (:class:`ccfkit.simulate.config.Kind`): a prolate droplet
seen end-on looks round, and rings that carry no photons show no ellipticity.
The rules (:func:`assign_labels`) use the features computed here (how far out
the rings are visible, by how many fringes the pattern's axes are out of step,
what two spheres show) and the thresholds below; ``docs/simulate.md`` explains
them.
"""

from __future__ import annotations

import math

import numpy as np

from .. import geometry
from .config import Kind
from .detector import Detector, momentum_transfer
from .parameters import FrameParameters
from .scattering import sphere_form_factor

__all__ = [
    "ASYMMETRY_MIN_PHASE",
    "DISPLAY_NAMES",
    "DOUBLE_MIN_DRIFT",
    "EMPTY_BELOW_PHOTONS",
    "EXCLUSIVE_GROUPS",
    "LABELS",
    "MIN_FRINGE_CONTRAST",
    "NEWTON_MIN_FRINGES",
    "PARENTS",
    "PARTNER_MIN_INTENSITY",
    "PROLATE_MIN_ASPECT",
    "STREAK_MIN_ASPECT",
    "VISIBLE_FRINGE_SHIFT",
    "VISIBLE_PHOTONS",
    "assign_labels",
    "fringe_shift",
    "label_rules",
    "partner_features",
    "projected_semi_axes",
    "visible_radius",
]

#: Label names (machine names, snake_case), in the column order of the label array:
#: the paper's Table 1 order, without Bent and Layered (not simulated, docs/simulate.md).
LABELS = (
    "spherical_oblate",
    "round",
    "elliptical",
    "newton_rings",
    "prolate",
    "asymmetric",
    "streak",
    "double_rings",
    "empty",
)
#: The paper's names of the labels (Table 1, Fig. 2), stored beside the machine names.
DISPLAY_NAMES = {
    "spherical_oblate": "Spherical/Oblate",
    "round": "Round",
    "elliptical": "Elliptical",
    "newton_rings": "Newton rings",
    "prolate": "Prolate",
    "asymmetric": "Asymmetric",
    "streak": "Streak",
    "double_rings": "Double Rings",
    "empty": "Empty",
}

#: Groups of labels of which a frame carries at most one (paper §2, Fig. 2). The
#: first is also exhaustive: every frame is exactly one of them.
EXCLUSIVE_GROUPS = (("spherical_oblate", "prolate", "empty"), ("round", "elliptical"))

#: Subclass -> superordinate class: a frame with the subclass has the parent too.
PARENTS = {
    "round": "spherical_oblate",
    "elliptical": "spherical_oblate",
    "double_rings": "spherical_oblate",
    "streak": "prolate",
}

#: Below this many scattered photons a frame is labelled Empty (nothing to see).
EMPTY_BELOW_PHOTONS = 100.0
#: A pattern looks elliptical when, out to its last visible ring, its rings along
#: the long and the short axis are out of step by at least this many fringes.
VISIBLE_FRINGE_SHIFT = 0.5
#: Rings are visible out to where their maxima expect this many photons per pixel.
VISIBLE_PHOTONS = 1.0
#: A prolate particle is labelled Prolate when its projection is at least this
#: elongated (long / short semi-axis) *and* the elongation is visible.
PROLATE_MIN_ASPECT = 1.15
#: A Prolate pattern is a Streak when its projection is at least this elongated.
STREAK_MIN_ASPECT = 1.8
#: Two ring systems are told apart (Double Rings) when, out to the visible
#: radius, they drift apart by at least this many fringes ...
DOUBLE_MIN_DRIFT = 1.0
#: ... and the partner's rings carry at least this fraction of the droplet's
#: intensity (the envelope ratio ``(R2 / R1)^2``).
PARTNER_MIN_INTENSITY = 0.1
#: Interference between the two spheres is visible when its fringe contrast
#: ``2 rho / (1 + rho^2)`` (``rho = R2 / R1``, the amplitude ratio) is at least this.
MIN_FRINGE_CONTRAST = 0.5
#: Newton rings: at least this many axial fringes (``|q_z d_z| / 2 pi``) inside
#: the visible radius, resolved (>= 2 px apart), and at most half as many
#: transverse ones (``q |d_perp| / 2 pi``), so that the fringes are rings.
NEWTON_MIN_FRINGES = 1.5
#: Asymmetric: both the axial and the transverse phase of the two lobes reach
#: at least this (radians) inside the visible radius; the pattern then differs
#: between ``(x, y)`` and ``(-x, -y)`` by ``4 A1 A2 sin(q_perp . d) sin(q_z d_z)``.
ASYMMETRY_MIN_PHASE = math.pi / 2


def projected_semi_axes(params: FrameParameters) -> np.ndarray:
    """Semi-axes of the particle's shadow on the detector plane (projection along z).

    A spheroid ``(a, a, c)`` whose axis makes the angle ``beta`` with the beam
    projects onto an ellipse with semi-axes ``a`` and
    ``sqrt(a^2 cos^2 beta + c^2 sin^2 beta)``. In the small-angle limit the
    pattern is that ellipse's Fourier transform: elongated the other way, by
    the same ratio.

    Returns
    -------
    (N, 2) float64
        ``(long, short)`` semi-axes in nm.
    """
    a, c = params.semi_axes[:, 0], params.semi_axes[:, 1]
    cos2 = params.axis[:, 2] ** 2
    b = np.sqrt(a**2 * cos2 + c**2 * (1 - cos2))
    return np.stack([np.maximum(a, b), np.minimum(a, b)], axis=1)


def visible_radius(params: FrameParameters, detector: Detector, *, chunk: int = 4096):
    """How far out (pixels from the beam centre) the rings carry >= 1 photon per pixel.

    An estimate for the labels, from a sphere of the projection's mean radius
    ``R_s = sqrt(long * short)``: the expected counts at a ring maximum are
    ``fluence * (9 / u^4) cos^3(2 theta) / Z`` (the envelope of ``|F|^2``
    times the solid angle), with ``Z`` the sum of ``|F|^2 cos^3(2 theta)``
    over the annulus between the hole and the detector half-width. The
    result is the largest radius where that reaches ``VISIBLE_PHOTONS``,
    between the hole radius and the half-width.

    Returns
    -------
    (N,) float64
        Pixels; the hole radius for empty frames.
    """
    inner = max(detector.hole_radius, 0.5)
    radius = np.linspace(inner, detector.half_width, 512)
    ring = 2 * np.pi * radius * np.gradient(radius)  # pixels per radial step
    long_short = projected_semi_axes(params)
    mean_radius = np.sqrt(long_short[:, 0] * long_short[:, 1])
    out = np.full(len(params), inner)
    for lo in range(0, len(params), chunk):
        rows = slice(lo, lo + chunk)
        distance = detector.distance if params.distance is None else params.distance[rows, None]
        two_theta = np.arctan(radius * detector.pixel_size / distance)  # (G,) or (n, G)
        s = 2 * np.sin(two_theta / 2)  # |q| / k
        cos3 = np.cos(two_theta) ** 3
        k = 2 * np.pi / params.wavelength[rows]
        u = (k * mean_radius[rows])[:, None] * s  # (n, G)
        total = (sphere_form_factor(u) ** 2 * cos3 * ring).sum(axis=1)  # Z
        with np.errstate(divide="ignore", invalid="ignore"):
            peak = params.fluence[rows, None] * 9 / np.maximum(u, 1e-9) ** 4 * cos3
            peak /= total[:, None]
        bright = peak >= VISIBLE_PHOTONS
        last = np.where(
            bright.any(axis=1), len(radius) - 1 - np.argmax(bright[:, ::-1], axis=1), 0
        )
        out[rows] = np.where(total > 0, radius[last], inner)
    return out


def fringe_shift(params: FrameParameters, detector: Detector, visible=None) -> np.ndarray:
    """By how many fringes the rings along the pattern's two axes are out of step.

    ``q_vis (long - short) / pi``: along ``|q|`` the fringes of a radius
    ``R`` are ``pi / R`` apart, so out to ``q_vis`` the directions of the
    projection's long and short semi-axes count ``q_vis R / pi`` fringes each.
    ``q_vis`` is ``|q|`` at :func:`visible_radius`: rings that carry no
    photons show no ellipticity.

    Parameters
    ----------
    params : FrameParameters
    detector : Detector
    visible : (N,) array, optional
        :func:`visible_radius`, when already computed.

    Returns
    -------
    (N,) float64
    """
    long_short = projected_semi_axes(params)
    visible = visible_radius(params, detector) if visible is None else visible
    q_vis = _momentum_transfer(visible, params, detector)
    return q_vis * (long_short[:, 0] - long_short[:, 1]) / np.pi


def partner_features(params: FrameParameters, detector: Detector, visible=None) -> dict:
    """What the two spheres of a two-sphere frame show, out to the visible radius.

    With ``rho = R2 / R1``, ``q_vis = |q|`` at :func:`visible_radius` and
    ``|q_z| = q^2 / (2 k)`` there (the Ewald sphere's depth):

    * ``drift = q_vis (R1 - R2) / pi``: by how many fringes the two ring
      systems drift apart (Double Rings when >= ``DOUBLE_MIN_DRIFT``);
    * ``contrast = 2 rho / (1 + rho^2)``: contrast of their interference;
    * ``axial_fringes = |q_z d_z| / 2 pi``: rings from the separation along the
      beam (Newton rings), counted only out to where they are >= 2 px apart
      (the phase grows by ``|d_z| k sin 2theta cos^2 2theta p / L`` per pixel);
    * ``transverse_fringes = q_vis |d_perp| / 2 pi``: straight fringes from the
      separation across the beam;
    * ``axial_phase = |q_z d_z|``, ``transverse_phase = q_vis |d_perp|`` (radians).

    Returns
    -------
    dict of str -> (N,) float64
        All 0 for frames without a partner.
    """
    visible = visible_radius(params, detector) if visible is None else visible
    has = params.partner_radius > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(has, params.partner_radius / np.where(has, params.radius, 1.0), 0.0)
    k = 2 * np.pi / params.wavelength
    q_vis = _momentum_transfer(visible, params, detector)
    d_perp = np.hypot(params.separation[:, 0], params.separation[:, 1])
    d_z = np.abs(params.separation[:, 2])
    with np.errstate(divide="ignore"):
        resolved = _resolved_angle(np.pi / np.maximum(d_z * k, 1e-300), params, detector)
    q_resolved = 2 * k * np.sin(resolved / 2)
    q_axial = np.minimum(q_vis, q_resolved)
    axial_phase = d_z * q_vis**2 / (2 * k)
    return {
        "drift": np.where(has, q_vis * (params.radius - params.partner_radius) / np.pi, 0.0),
        "contrast": 2 * rho / (1 + rho**2),
        "axial_fringes": d_z * q_axial**2 / (2 * k) / (2 * np.pi),
        "transverse_fringes": q_vis * d_perp / (2 * np.pi),
        "axial_phase": axial_phase,
        "transverse_phase": q_vis * d_perp,
        "intensity_ratio": rho**2,
    }


def _momentum_transfer(radius_px, params: FrameParameters, detector: Detector):
    """``|q|`` (1/nm) at ``radius_px`` of each frame, with its own distance where drawn."""
    if params.distance is None:
        return momentum_transfer(radius_px, detector, params.wavelength)
    return geometry.momentum_transfer(
        radius_px, pixel_size=detector.pixel_size, distance=params.distance,
        wavelength_nm=params.wavelength,
    )  # fmt: skip


def _resolved_angle(phase_ratio, params: FrameParameters, detector: Detector):
    """Largest 2theta (radians) of each frame out to which the axial fringes are >= 2 px
    apart: where ``sin 2t cos^2 2t (p / L)``, the phase per pixel over ``|d_z| k``,
    reaches ``phase_ratio`` (it increases up to 35.3 deg), at most the half-width's angle.
    """
    if params.distance is None:
        # the phase per pixel increases up to 35 deg (beyond the half-width)
        grid = np.linspace(
            0.0, math.atan(detector.half_width * detector.pixel_size / detector.distance)
        )
        slope = np.sin(grid) * np.cos(grid) ** 2 * detector.pixel_size / detector.distance
        return np.interp(phase_ratio, slope, grid)
    edge = np.arctan(detector.half_width * detector.pixel_size / params.distance)
    grid = np.linspace(0.0, min(float(edge.max()), math.atan(math.sqrt(0.5))))
    target = phase_ratio / (detector.pixel_size / params.distance)
    slope = np.sin(grid) * np.cos(grid) ** 2
    resolved = np.interp(target, slope, grid)
    # beyond the largest phase per pixel the fringes are resolved out to the edge
    return np.where(target >= slope[-1], edge, np.minimum(resolved, edge))


def assign_labels(
    params: FrameParameters, detector: Detector, shift=None, partners: dict | None = None
) -> np.ndarray:
    """Labels of what each pattern shows, with the paper's rules (§2, Fig. 2).

    Rules (thresholds are module constants):

    * ``empty``: no particle, or fewer than ``EMPTY_BELOW_PHOTONS`` scattered
      photons expected.
    * ``prolate``: a prolate particle whose projection is elongated by at
      least ``PROLATE_MIN_ASPECT`` *and* visibly so (``fringe_shift >=
      VISIBLE_FRINGE_SHIFT``). A prolate particle seen nearly end-on looks
      round and is not labelled prolate.
    * ``spherical_oblate``: every other non-empty frame.
    * ``elliptical``: spherical_oblate with a visible ellipticity
      (``fringe_shift >= VISIBLE_FRINGE_SHIFT``); ``round`` otherwise.
    * ``streak``: prolate with a projection elongated by at least
      ``STREAK_MIN_ASPECT``.
    * Two-sphere frames (:func:`partner_features`): ``double_rings`` when the
      partner's rings are bright enough (``intensity_ratio >=
      PARTNER_MIN_INTENSITY``) and drift apart from the droplet's (``drift >=
      DOUBLE_MIN_DRIFT``); ``newton_rings`` when ``contrast >=
      MIN_FRINGE_CONTRAST``, ``axial_fringes >= NEWTON_MIN_FRINGES`` and
      ``transverse_fringes <= axial_fringes / 2``; ``asymmetric`` when
      ``contrast >= MIN_FRINGE_CONTRAST`` and both phases reach
      ``ASYMMETRY_MIN_PHASE``.

    So spherical_oblate, prolate and empty are exclusive and exhaustive, and
    round and elliptical are exclusive (:data:`EXCLUSIVE_GROUPS`).

    Parameters
    ----------
    params : FrameParameters
    detector : Detector
    shift : (N,) array, optional
        :func:`fringe_shift`, when already computed.
    partners : dict, optional
        :func:`partner_features`, when already computed.

    Returns
    -------
    (N, C) uint8
        Columns in the order of :data:`LABELS`.
    """
    long_short = projected_semi_axes(params)
    with np.errstate(divide="ignore", invalid="ignore"):
        aspect = np.where(long_short[:, 1] > 0, long_short[:, 0] / long_short[:, 1], 1.0)
    if shift is None or partners is None:
        visible = visible_radius(params, detector)
        shift = fringe_shift(params, detector, visible) if shift is None else shift
        partners = partner_features(params, detector, visible) if partners is None else partners
    visible = shift >= VISIBLE_FRINGE_SHIFT
    empty = (params.kind == Kind.EMPTY) | (params.fluence < EMPTY_BELOW_PHOTONS)
    prolate = ~empty & (params.kind == Kind.PROLATE) & (aspect >= PROLATE_MIN_ASPECT) & visible
    spherical = ~empty & ~prolate
    pair = ~empty & (params.partner_radius > 0)
    contrast = partners["contrast"] >= MIN_FRINGE_CONTRAST
    columns = {
        "spherical_oblate": spherical,
        "round": spherical & ~visible,
        "elliptical": spherical & visible,
        "newton_rings": pair
        & contrast
        & (partners["axial_fringes"] >= NEWTON_MIN_FRINGES)
        & (partners["transverse_fringes"] <= partners["axial_fringes"] / 2),
        "prolate": prolate,
        "asymmetric": pair
        & contrast
        & (partners["axial_phase"] >= ASYMMETRY_MIN_PHASE)
        & (partners["transverse_phase"] >= ASYMMETRY_MIN_PHASE),
        "streak": prolate & (aspect >= STREAK_MIN_ASPECT),
        "double_rings": pair
        & spherical
        & (partners["intensity_ratio"] >= PARTNER_MIN_INTENSITY)
        & (partners["drift"] >= DOUBLE_MIN_DRIFT),
        "empty": empty,
    }
    return np.stack([columns[name] for name in LABELS], axis=1).astype(np.uint8)


def label_rules() -> str:
    """The labelling rules of :func:`assign_labels` in one paragraph (stored in files)."""
    return (
        f"empty: no particle, or < {EMPTY_BELOW_PHOTONS:g} scattered photons. "
        f"prolate: a prolate particle whose projection has aspect >= {PROLATE_MIN_ASPECT:g} "
        f"and fringe_shift >= {VISIBLE_FRINGE_SHIFT:g}. spherical_oblate: every other "
        f"non-empty frame; elliptical if fringe_shift >= {VISIBLE_FRINGE_SHIFT:g}, else round. "
        f"streak: prolate with projected aspect >= {STREAK_MIN_ASPECT:g}. fringe_shift = "
        "q_vis (long - short) / pi, q_vis = |q| out to where ring maxima expect "
        f">= {VISIBLE_PHOTONS:g} photon per pixel. Two spheres (radii R1 >= R2, rho = R2/R1, "
        f"separation d): double_rings if rho^2 >= {PARTNER_MIN_INTENSITY:g} and "
        f"q_vis (R1 - R2) / pi >= {DOUBLE_MIN_DRIFT:g}; newton_rings if 2 rho / (1 + rho^2) >= "
        f"{MIN_FRINGE_CONTRAST:g}, |q_z d_z| / 2pi >= {NEWTON_MIN_FRINGES:g} (fringes >= 2 px "
        "apart) and q_vis |d_perp| / 2pi <= half of that; asymmetric if 2 rho / (1 + rho^2) >= "
        f"{MIN_FRINGE_CONTRAST:g} and |q_z d_z| and q_vis |d_perp| both >= "
        f"{ASYMMETRY_MIN_PHASE:.4g} rad."
    )
