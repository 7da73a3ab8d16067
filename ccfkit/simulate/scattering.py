"""What a particle scatters: the form factors and the far-field patterns (NumPy reference).

The model (details, units and limits in ``docs/simulate.md``):

* A homogeneous sphere or spheroid (semi-axes ``a, a, c``, symmetry axis
  ``c_hat`` in any direction) scatters in the first Born (Rayleigh-Gans)
  approximation: the amplitude is ``V F(q)`` with
  ``F(q) = 3 (sin u - u cos u) / u^3`` and ``u = |q| R_eff(q_hat)``,
  ``R_eff^2 = a^2 (1 - (q_hat . c_hat)^2) + c^2 (q_hat . c_hat)^2``.
* ``q`` is the full 3-D momentum transfer on the Ewald sphere
  (:mod:`ccfkit.simulate.detector`): no small-angle shortcut anywhere.
* Two spheres (a droplet and its partner: Double Rings, Newton rings, an
  irregular two-lobed droplet) scatter coherently:
  ``A = F(q R1) + rho^3 F(q R2) exp(i q . d)``.

The functions here are the readable float32 formulation, the reference that
the fused kernel (:mod:`ccfkit.simulate.kernels`) is tested against. Lengths in
nm; pixel offsets enter as ratios to the detector distance ``L``.
"""

from __future__ import annotations

import numpy as np

from .parameters import FrameParameters

__all__ = ["fringe_visibility", "particle_intensity", "sphere_form_factor"]


def sphere_form_factor(u):
    """``3 (sin u - u cos u) / u^3``, 1 at ``u = 0``; float64, stable for small ``u``."""
    u = np.asarray(u, dtype=np.float64)
    small = np.abs(u) < 0.1
    safe = np.where(small, 1.0, u)
    exact = 3 * (np.sin(safe) - safe * np.cos(safe)) / safe**3
    u2 = u * u
    series = 1 - u2 / 10 + u2 * u2 / 280 - u2**3 / 15120
    return np.where(small, series, exact)


def particle_intensity(
    x_over_l, y_over_l, one: FrameParameters, pixel_over_l: float, out: np.ndarray
) -> np.ndarray:
    """Scattered intensity ``|A(q)|^2`` of one frame's particle(s), up to a constant.

    The amplitude is the Born (Rayleigh-Gans) one on the Ewald sphere:
    ``A = F(u)`` for a spheroid (``u`` as in the module docstring), and
    ``A = F(q R1) + rho^3 F(q R2) exp(i q . d)`` for two spheres of radii
    ``R1`` and ``R2 = rho R1`` with centres ``d`` apart (volumes ``R^3``), so
    ``|A|^2 = F1^2 + rho^6 F2^2 + 2 rho^3 F1 F2 V cos(q . d)``, where ``V``
    (:func:`fringe_visibility`) averages the fringes over the pixel's area: a
    pixel integrates fringes finer than itself to their mean. ``F`` is the
    sphere's form factor divided by 3 (1/3 at ``q = 0``).

    With ``n = (x, y, L) / D`` and ``q / k = n - z_hat``:

    * ``|q/k|^2 = 2 (1 - L/D) = 2 t (L/D) / (D/L + 1)`` with ``t = (x^2 + y^2) / L^2``
      (the second form does not cancel near the beam centre),
    * ``(q/k) . c_hat = (x c_x + y c_y + L c_z) / D - c_z``,
    * ``u^2 = k^2 (a^2 |q/k|^2 + (c^2 - a^2) ((q/k) . c_hat)^2)``,
    * ``(q/k) . d = (x d_x + y d_y) / D - (1 - L/D) d_z``.

    The spheroid's difference cancels in float32 near the centre for ``c_z ~
    1``, which moves ``u`` there by ~1e-5 relative: far below anything visible.

    Parameters
    ----------
    x_over_l : (W,) float64
        Pixel offsets from the beam centre along x over the distance ``L``.
    y_over_l : (H, 1) float64
        The same along y.
    one : FrameParameters
        One frame.
    pixel_over_l : float
        Pixel size over the detector distance.
    out : (H, W) float32
        Receives ``|A|^2``.

    Returns
    -------
    (H, W) float32
        ``L / D = cos 2theta`` of each pixel (computed on the way).
    """
    f32 = np.float32
    k = 2 * np.pi / float(one.wavelength[0])
    t = np.add(f32(x_over_l) ** 2, f32(y_over_l) ** 2, dtype=np.float32)
    d_over_l = np.add(t, f32(1), out=out)
    np.sqrt(d_over_l, out=d_over_l)
    nz = np.reciprocal(d_over_l)  # L / D
    d_over_l += f32(1)
    s2 = t  # |q/k|^2 / 2 = 1 - L / D
    s2 *= nz
    s2 /= d_over_l
    # d_over_l (in out) is no longer needed: out is scratch space from here
    if one.partner_radius[0] > 0:
        _two_spheres_intensity(x_over_l, y_over_l, one, k * pixel_over_l, nz, s2, out)
    else:
        _spheroid_intensity(x_over_l, y_over_l, one, nz, s2, out)
    return nz


def _two_spheres_intensity(x_over_l, y_over_l, one: FrameParameters, k_pixel, nz, s2, out):
    """``|A|^2 = F1^2 + rho^6 F2^2 + 2 rho^3 F1 F2 V cos(q . d)`` into ``out`` (H, W) float32.

    ``k_pixel = k p / L``; ``nz = L / D`` and ``s2 = |q/k|^2 / 2`` are
    :func:`particle_intensity`'s (H, W) float32 arrays; ``s2`` is overwritten.
    """
    f32 = np.float32
    k = 2 * np.pi / float(one.wavelength[0])
    r1, r2 = float(one.radius[0]), float(one.partner_radius[0])
    rho3 = f32((r2 / r1) ** 3)
    sep = one.separation[0]
    u1 = np.multiply(s2, f32(2 * (k * r1) ** 2), dtype=np.float32)
    np.sqrt(u1, out=u1)
    u2 = u1 * f32(r2 / r1)
    phase = np.add(f32(x_over_l * (k * sep[0])), f32(y_over_l * (k * sep[1])), dtype=np.float32)
    phase *= nz
    s2 *= f32(k * sep[2])
    phase -= s2
    np.cos(phase, out=phase)
    phase *= fringe_visibility(x_over_l, y_over_l, nz, k_pixel, sep)
    f1 = _form_factor32(u1, scratch=s2)
    f2 = _form_factor32(u2, scratch=s2)
    f2 *= rho3
    cross = np.multiply(f1, f2, out=s2)
    cross *= phase
    cross *= f32(2)
    f1 *= f1
    f2 *= f2
    np.add(f1, f2, out=out)
    out += cross


def _spheroid_intensity(x_over_l, y_over_l, one: FrameParameters, nz, s2, out):
    """``|A|^2 = F(u)^2`` of a spheroid into ``out`` (H, W) float32.

    ``nz`` and ``s2`` as in :func:`_two_spheres_intensity` (``s2`` overwritten).
    """
    f32 = np.float32
    k = 2 * np.pi / float(one.wavelength[0])
    a, c = (float(v) for v in one.semi_axes[0])
    axis = one.axis[0]
    # dot = (x c_x / L + y c_y / L + c_z) * (L / D) - c_z
    dot = np.add(f32(x_over_l * axis[0] + axis[2]), f32(y_over_l * axis[1]), out=out)
    dot *= nz
    dot -= f32(axis[2])
    dot *= dot
    # u^2 / (2 (k a)^2) = |q/k|^2 / 2 + ((c/a)^2 - 1) dot^2 / 2
    dot *= f32((c * c - a * a) / (2 * a * a))
    u = s2
    u += dot
    u *= f32(2 * (k * a) ** 2)
    np.maximum(u, 0, out=u)  # c < a can round u^2 a hair below 0 at the centre
    np.sqrt(u, out=u)
    f = _form_factor32(u, scratch=out)
    np.multiply(f, f, out=out)


def fringe_visibility(x_over_l, y_over_l, nz, k_pixel, separation) -> np.ndarray:
    """Pixel average of ``cos(q . d)`` over the cosine at the pixel centre, ``V``.

    Across a square pixel the phase ``phi = q . d`` changes by the gradient
    ``g`` (radians per pixel); the mean of ``cos(phi0 + g . u)`` over
    ``u in [-1/2, 1/2]^2`` is ``cos(phi0) sinc(g_x / 2) sinc(g_y / 2)``
    (``sinc z = sin z / z``). With ``w = (L/D)^2 (x d_x / L + y d_y / L + d_z)``:
    ``g_x = k (p / L) (L / D) (d_x - (x / L) w)``, ``g_y`` the same with ``y``.

    Parameters
    ----------
    x_over_l : (W,) float64
    y_over_l : (H, 1) float64
    nz : (H, W) float32
        ``L / D``.
    k_pixel : float
        ``k p / L`` (1/nm).
    separation : (3,) float64
        ``d`` in nm.

    Returns
    -------
    (H, W) float32
        In ``(-0.22, 1]``: 1 where the fringes are much wider than a pixel.
    """
    f32 = np.float32
    d_x, d_y, d_z = (float(v) for v in separation)
    w = np.add(f32(x_over_l * d_x + d_z), f32(y_over_l * d_y), dtype=np.float32)
    w *= nz
    w *= nz
    half = f32(k_pixel / (2 * np.pi))  # / pi: numpy's sinc takes z / pi
    g_x = np.multiply(w, f32(-x_over_l), dtype=np.float32)
    g_x += f32(d_x)
    g_x *= nz
    g_x *= half
    g_y = np.multiply(w, f32(-y_over_l), out=w)
    g_y += f32(d_y)
    g_y *= nz
    g_y *= half
    visibility = np.sinc(g_x)  # numpy's sinc(z) = sin(pi z) / (pi z)
    visibility *= np.sinc(g_y)
    return visibility


def _form_factor32(u, scratch):
    """``(sin u - u cos u) / u^3`` (the form factor / 3) in float32, in place of ``u``.

    ``u >= 0``; a series replaces the cancelling difference below 0.3.
    """
    small = np.flatnonzero(u.ravel() < 0.3)
    small_u2 = u.ravel()[small].astype(np.float64) ** 2
    cube = np.multiply(u, u, out=scratch)
    cube *= u
    cos = np.cos(u)
    cos *= u
    np.sin(u, out=u)
    u -= cos
    with np.errstate(divide="ignore", invalid="ignore"):
        u /= cube
    if small.size:
        u.ravel()[small] = (1 - small_u2 / 10 + small_u2**2 / 280 - small_u2**3 / 15120) / 3
    return u
