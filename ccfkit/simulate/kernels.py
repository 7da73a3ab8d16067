"""GIL-free Numba kernels of the simulator: a frame's expected counts in one fused
pass, and the Poisson sampler's CDF inversion.

Imported only when frames are rendered (:mod:`ccfkit.simulate.rendering`), so
that the configuration and the command line load without Numba. The NumPy
formulation in :mod:`ccfkit.simulate.scattering` (``particle_intensity``,
``fringe_visibility``, ``_form_factor32``) and :mod:`ccfkit.simulate.instrument`
is the readable reference; :func:`expected_frame` computes the same expected
photons per pixel (every formula as there, in float64 per pixel, stored as
float32) without whole-image temporaries, and is tested against it on random
parameters (``tests/simulate/test_kernels.py``). Conventions as in
:mod:`ccfkit.simulate.detector`: images ``I[y, x]``, pixel centres at integer
coordinates, beam centre ``(cx, cy)`` in pixels, ``n = (x, y, L) / D``.

``sin`` and ``cos`` are evaluated by :func:`_sincos` (a Cody-Waite reduction
to ``[-pi/4, pi/4]`` and the minimax polynomials of Cephes' ``sin.c``), pure
arithmetic that LLVM vectorises; without Intel's SVML the library ``sin`` and
``cos`` would be scalar calls.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["EMPTY", "SPHEROID", "TWO_SPHERES", "expected_frame", "invert_poisson"]

#: What :func:`expected_frame` draws (its ``mode``).
EMPTY, SPHEROID, TWO_SPHERES = 0, 1, 2

_THIRD = 1.0 / 3
_TWO_OVER_PI = 2 / np.pi
_PIO2_HI = 1.5707963267341256  # pi / 2 = _PIO2_HI + _PIO2_LO (33 + 53 bits)
_PIO2_LO = 6.077100506506192e-11
# Cephes sin.c / cos.c on [-pi/4, pi/4], highest power first.
_SIN = (
    1.58962301576546568060e-10, -2.50507477628578072866e-8, 2.75573136213857245213e-6,
    -1.98412698295895385996e-4, 8.33333333332211858878e-3, -1.66666666666666307295e-1,
)  # fmt: skip
_COS = (
    -1.13585365213876817300e-11, 2.08757008419747316778e-9, -2.75573141792967388112e-7,
    2.48015872888517045348e-5, -1.38888888888730564116e-3, 4.16666666666665929218e-2,
)  # fmt: skip


@numba.njit(inline="always")
def _sincos(x):
    """``(sin x, cos x)`` of a float64, ``|x| < 1e5`` (absolute error < 1e-15)."""
    n = np.floor(x * _TWO_OVER_PI + 0.5)
    r = (x - n * _PIO2_HI) - n * _PIO2_LO  # x - n pi / 2, in [-pi/4, pi/4]
    z = r * r
    s = r + r * z * (((((_SIN[0] * z + _SIN[1]) * z + _SIN[2]) * z + _SIN[3]) * z + _SIN[4]) * z
                     + _SIN[5])  # fmt: skip
    c = 1.0 - 0.5 * z + z * z * (((((_COS[0] * z + _COS[1]) * z + _COS[2]) * z + _COS[3]) * z
                                  + _COS[4]) * z + _COS[5])  # fmt: skip
    quadrant = n - 4.0 * np.floor(n * 0.25)  # n mod 4 as a float: no int64 casts (no AVX2 form)
    odd = quadrant == 1.0 or quadrant == 3.0
    sin_x = c if odd else s
    cos_x = s if odd else c
    sin_x = -sin_x if quadrant >= 2.0 else sin_x
    cos_x = -cos_x if (quadrant == 1.0 or quadrant == 2.0) else cos_x
    return sin_x, cos_x


@numba.njit(inline="always")
def _rsqrt(v):
    """``1 / sqrt(v)`` of a float64 ``v`` in ``[1e-30, 1e30]``, relative error ~1e-14.

    A float32 estimate refined by two Newton steps in float64: this machine's
    float64 ``sqrt`` and division are several times slower than float32 ones,
    and under ``arcp`` LLVM may make the estimate a 12-bit ``rsqrt`` (two
    steps: 2e-4 -> 9e-8 -> 1e-14).
    """
    y = np.float64(np.float32(1) / np.sqrt(np.float32(v)))
    y *= 1.5 - 0.5 * v * y * y
    return y * (1.5 - 0.5 * v * y * y)


@numba.njit(inline="always")
def _reciprocal(v):
    """``1 / v`` of a float64 ``v`` (``|v|`` in ``[1e-30, 1e30]``), relative error ~1e-14:
    a float32 estimate and two Newton steps (as :func:`_rsqrt`)."""
    y = np.float64(np.float32(1) / np.float32(v))
    y *= 2.0 - v * y
    return y * (2.0 - v * y)


@numba.njit(inline="always")
def _form_factor(u, inv_u):
    """``(sin u - u cos u) / u^3`` (the sphere's form factor / 3), ``u >= 0``;
    ``inv_u = 1 / u``. A series below 0.3, where the difference cancels (as
    ``_form_factor32``)."""
    s, c = _sincos(u)
    u2 = u * u
    # 1/3 - u^2/30 + u^4/840 - u^6/45360, Horner with multiplications (a division is slow)
    series = _THIRD + u2 * (-1.0 / 30 + u2 * (1.0 / 840 - u2 * (1.0 / 45360)))
    exact = (s - u * c) * (inv_u * inv_u * inv_u)
    return series if u < 0.3 else exact


@numba.njit(inline="always")
def _sinc(z):
    """``sin z / z`` (1 at 0)."""
    s, _ = _sincos(z)
    return 1.0 - z * z * (1.0 / 6) if abs(z) < 1e-4 else s * _reciprocal(z)


@numba.njit(inline="always")
def _row_sum(row):
    """Float64 sum of a float32 row in four interleaved partial sums (fixed order)."""
    s0 = s1 = s2 = s3 = 0.0
    n4 = row.shape[0] // 4 * 4
    for j in range(0, n4, 4):
        s0 += row[j]
        s1 += row[j + 1]
        s2 += row[j + 2]
        s3 += row[j + 3]
    for j in range(n4, row.shape[0]):
        s0 += row[j]
    return (s0 + s1) + (s2 + s3)


@numba.njit(inline="always")
def _geometry(x, y):
    """``(nz, s2)`` of the pixel at ``(x, y)`` (over ``L``): ``nz = L / D``, ``s2 = 1 - L / D``.

    In float64 the difference keeps ~10 digits even one pixel from the beam
    centre (``s2 ~ 1e-6``; the float32 reference needs another form).
    """
    nz = _rsqrt(1.0 + x * x + y * y)
    return nz, 1.0 - nz


@numba.njit(inline="always")
def _spheroid_row(row, good_row, xs, y, particle, weight):
    """``F(u)^2 P Omega`` of a spheroid along one image row, in place of ``row``.

    ``xs``: the row's pixel offsets over ``L``; ``y`` the row's; ``particle``
    and ``weight`` as in :func:`expected_frame` (inlined there: its fastmath
    flags apply).
    """
    p0, px, py, pz = weight[0], weight[1], weight[2], weight[3]
    solid = weight[4] != 0
    ka, e, c_x, c_y, c_z = particle[0], particle[1], particle[2], particle[3], particle[4]
    inv_ka = 1.0 / ka
    for j in range(xs.shape[0]):
        x = xs[j]
        nz, s2 = _geometry(x, y)
        dot = (x * c_x + y * c_y + c_z) * nz - c_z
        v = max(2.0 * (s2 + e * dot * dot), 1e-30)  # (u / k a)^2
        inv_root = _rsqrt(v)
        f = _form_factor(ka * v * inv_root, inv_root * inv_ka)
        xn, yn = x * nz, y * nz
        pol = p0 + px * xn * xn + py * yn * yn + pz * nz * nz
        omega = nz * nz * nz if solid else 1.0
        row[j] = f * f * pol * omega * good_row[j]


@numba.njit(inline="always")
def _two_spheres_row(row, good_row, xs, y, particle, weight):
    """``(F1^2 + F2^2 + 2 F1 F2 V cos(phase)) P Omega`` along one image row, in place of
    ``row`` (arguments as :func:`_spheroid_row`)."""
    p0, px, py, pz = weight[0], weight[1], weight[2], weight[3]
    solid = weight[4] != 0
    kr1, rho, rho3, kd_x, kd_y, kd_z, h_p = (
        particle[0], particle[1], particle[2], particle[3], particle[4], particle[5],
        particle[6],
    )  # fmt: skip
    inv_kr1, inv_kr2 = 1.0 / kr1, 1.0 / (rho * kr1)
    for j in range(xs.shape[0]):
        x = xs[j]
        nz, s2 = _geometry(x, y)
        v = max(2.0 * s2, 1e-30)  # (u1 / k R1)^2
        inv_root = _rsqrt(v)
        u1 = kr1 * v * inv_root
        f1 = _form_factor(u1, inv_root * inv_kr1)
        f2 = rho3 * _form_factor(rho * u1, inv_root * inv_kr2)
        _, cos_phase = _sincos((x * kd_x + y * kd_y) * nz - s2 * kd_z)
        m = nz * nz * (x * kd_x + y * kd_y + kd_z)
        vis = _sinc(h_p * nz * (kd_x - x * m)) * _sinc(h_p * nz * (kd_y - y * m))
        xn, yn = x * nz, y * nz
        pol = p0 + px * xn * xn + py * yn * yn + pz * nz * nz
        omega = nz * nz * nz if solid else 1.0
        intensity = f1 * f1 + f2 * f2 + 2.0 * f1 * f2 * vis * cos_phase
        row[j] = intensity * pol * omega * good_row[j]


@numba.njit(inline="always")
def _halo_profile(good, cx, cy, halo, halo_width):
    """``(h, sum_good(h))``: the halo profile ``good (1 + r^2 / w^2)^(-3/2)`` in float32,
    ``(H, W)``, or one row of zeros without halo (``halo <= 0``)."""
    height, width = good.shape
    profile = np.zeros((height, width) if halo > 0 else (1, width), dtype=np.float32)
    inv_width2 = np.float32(1.0 / (halo_width * halo_width))
    sum_h = 0.0
    dxs = (np.arange(width) - cx).astype(np.float32)
    for i in range(height if halo > 0 else 0):
        dy = np.float32(i - cy)
        row, good_row = profile[i], good[i]
        for j in range(width):
            dx = dxs[j]
            v = np.float32(1) + (dx * dx + dy * dy) * inv_width2  # (1 + r^2 / w^2)
            row[j] = good_row[j] / (v * np.sqrt(v))
        sum_h += _row_sum(row)
    return profile, sum_h


#: LLVM may use reciprocals (``x / c`` as ``x * (1 / c)``, ``1 / sqrt`` as a refined
#: ``rsqrt``) and fused multiply-adds: rounding-level changes only (no reassociation,
#: which would undo the two-part reduction in :func:`_sincos`).
_FASTMATH = {"arcp", "contract", "nsz"}


@numba.njit(nogil=True, cache=True, error_model="numpy", fastmath=_FASTMATH)
def expected_frame(
    out, good, center, pixel_over_l, mode, particle, weight, fluence, halo, halo_width, background
):
    """Expected photons per pixel of one frame, in place of ``out``.

    ``E = good (fluence w / sum_good(w) + halo h / sum_good(h) + background)``
    with ``w = |A|^2 P Omega``, ``h`` the halo profile (as
    ``ccfkit.simulate.rendering.expected_counts``). ``|A|^2`` is, with ``x, y`` the
    pixel's offsets over ``L``, ``nz = L / D``, ``s2 = 1 - L / D`` and ``F``
    the form factor / 3:

    * spheroid: ``F(u)^2``, ``u^2 = 2 (k a)^2 (s2 + e dot^2)``,
      ``dot = (x c_x + y c_y + c_z) nz - c_z``;
    * two spheres: ``F1^2 + F2^2 + 2 F1 F2 V cos(phase)``, ``F1 = F(u1)``,
      ``u1 = k R1 sqrt(2 s2)``, ``F2 = rho^3 F(rho u1)``,
      ``phase = (x kd_x + y kd_y) nz - s2 kd_z``, ``V = sinc(g_x) sinc(g_y)``,
      ``g_x = h_p nz (kd_x - x m)``, ``m = nz^2 (x kd_x + y kd_y + kd_z)``
      (``g_y`` alike; ``h_p = (p / L) / 2``: half the pixel's change of
      ``phase``).

    ``P Omega = (p0 + px (x nz)^2 + py (y nz)^2 + pz nz^2) Omega``, ``Omega = nz^3``
    with the solid angle, 1 without.

    Parameters
    ----------
    out : (H, W) float32
        Receives the expected counts (its contents are not read).
    good : (H, W) float32
        1 on good pixels, 0 on masked ones.
    center : (2,) float64
        Beam centre ``(cx, cy)``, pixels.
    pixel_over_l : float
        Pixel size over the detector distance ``p / L``.
    mode : int
        :data:`EMPTY`, :data:`SPHEROID` or :data:`TWO_SPHERES`.
    particle : (7,) float64
        Spheroid: ``(k a, e, c_x, c_y, c_z, 0, 0)`` with
        ``e = (c^2 - a^2) / (2 a^2)``, ``k`` in 1/nm, ``a, c`` in nm, ``c_hat``
        a unit vector. Two spheres: ``(k R1, rho, rho^3, kd_x, kd_y, kd_z,
        h_p)`` (``kd = k d``, radians; ``rho = R2 / R1``). Unused when empty.
    weight : (5,) float64
        ``(p0, px, py, pz, solid)``: the polarisation factor's coefficients
        (horizontal ``(1, -1, 0, 0)``, vertical ``(1, 0, -1, 0)``, unpolarised
        ``(0.5, 0, 0, 0.5)``, none ``(1, 0, 0, 0)``), and 1 to weight by the
        solid angle ``cos^3 2theta`` (0: not).
    fluence, halo : float
        Scattered and stray-light photons on the good pixels (halo 0: none).
    halo_width : float
        Halo width ``w``, pixels.
    background : float
        Flat photons per good pixel.

    Returns
    -------
    (H, W) float32
        ``out``.
    """
    height, width = out.shape
    cx, cy = center[0], center[1]
    xs = (np.arange(width) - cx) * pixel_over_l  # float64: no int64 -> float casts per pixel
    sum_w = 0.0
    if mode == EMPTY or fluence <= 0:
        out[:, :] = 0
    for i in range(height if mode != EMPTY and fluence > 0 else 0):
        y = (i - cy) * pixel_over_l
        if mode == SPHEROID:
            _spheroid_row(out[i], good[i], xs, y, particle, weight)
        else:
            _two_spheres_row(out[i], good[i], xs, y, particle, weight)
        sum_w += _row_sum(out[i])
    profile, sum_h = _halo_profile(good, cx, cy, halo, halo_width)
    scale_w = fluence / sum_w if sum_w > 0 else 0.0
    scale_h = halo / sum_h if sum_h > 0 else 0.0
    for i in range(height):
        row, halo_row, good_row = out[i], profile[i if halo > 0 else 0], good[i]
        for j in range(width):
            row[j] = (row[j] * scale_w + halo_row[j] * scale_h + background) * good_row[j]
    return out


#: The largest ``cut`` of :func:`invert_poisson` (where :func:`_exp_neg` is exact).
MAX_INVERSION_CUT = 16.0
_RECIPROCALS = 1.0 / np.arange(1, 4 * int(MAX_INVERSION_CUT) + 42)  # 1 / k, k = 1, 2, ...


@numba.njit(inline="always")
def _exp_neg(rate):
    """``exp(-rate)`` for ``0 <= rate <= 16`` (relative error < 1e-11): ``(e^(-rate/64))^64``,
    the inner one by its Taylor series to degree 10; vectorisable, unlike ``np.exp``."""
    y = rate * (-1.0 / 64)  # in [-0.25, 0]
    e = 1.0 + y * (1.0 + y * (1.0 / 2 + y * (1.0 / 6 + y * (1.0 / 24 + y * (1.0 / 120 + y * (
        1.0 / 720 + y * (1.0 / 5040 + y * (1.0 / 40320 + y * (1.0 / 362880
        + y * (1.0 / 3628800))))))))))  # fmt: skip
    e *= e
    e *= e
    e *= e
    e *= e
    e *= e
    e *= e
    return e


_FIRST_TERMS = 4  # CDF terms of invert_poisson's vectorised pass
_UNIFORM_24 = 2.0**-24  # a 24-bit uniform: (32-bit word >> 8) * 2^-24, as NumPy's float32


@numba.njit(nogil=True, cache=True, error_model="numpy")
def invert_poisson(lam, bits, cut, limit, out):
    """``out[i]`` = the Poisson count whose CDF interval holds the uniform of ``bits[i]``,
    where ``lam[i] <= cut``; returns the pixels above ``cut`` (left as they are).

    The uniform is ``(bits[i] >> 8) 2^-24`` (NumPy's float32 uniforms from the
    same 32-bit words). The CDF ``sum_j<=k lam^j exp(-lam) / j!`` is summed in
    float64 (``exp`` from :func:`_exp_neg`). A vectorised, branch-free first
    pass counts the first :data:`_FIRST_TERMS` CDF values the uniform exceeds,
    which settles every pixel whose count is below that; the others are summed
    on, one by one, up to ``limit`` terms. The count is the same as a
    sequential search from 0.

    Parameters
    ----------
    lam : (M,) float32
        Expected counts, >= 0.
    bits : (M,) uint32
        Random words (e.g. ``bit_generator.random_raw(...).view(np.uint32)``).
    cut : float
        <= :data:`MAX_INVERSION_CUT`.
    limit : int
        < ``len(_RECIPROCALS)``: the most terms summed (``4 cut + 40``: the
        Poisson tail beyond is < 1e-14).
    out : (M,) float32

    Returns
    -------
    (B,) int64
        The indices of the pixels with ``lam > cut``, ascending.
    """
    n_pixels = lam.shape[0]
    unsettled = np.zeros(n_pixels, dtype=np.uint8)  # 1: summed on, 2: above the cut
    for i in range(n_pixels):  # vectorised
        rate = np.float64(lam[i])
        u = np.float64(np.int32(bits[i] >> 8)) * _UNIFORM_24
        term = _exp_neg(min(rate, cut))
        cdf = term
        count = 0.0
        for k in range(1, _FIRST_TERMS + 1):  # unrolled: k, 1 / k are constants
            count += 1.0 if u > cdf else 0.0
            term *= rate * (1.0 / k)
            cdf += term
        inside = rate <= cut
        out[i] = count if inside else out[i]
        unsettled[i] = (1 if count == _FIRST_TERMS else 0) if inside else 2
    n_bright = 0
    for i in range(n_pixels):
        if unsettled[i] == 0:
            continue
        if unsettled[i] == 2:
            n_bright += 1
            continue
        rate = np.float64(lam[i])
        u = np.float64(np.int32(bits[i] >> 8)) * _UNIFORM_24
        term = _exp_neg(rate)
        cdf = term
        k = 0
        while u > cdf and k < limit:
            k += 1
            term *= rate * _RECIPROCALS[k - 1]
            cdf += term
        out[i] = k
    bright = np.empty(n_bright, dtype=np.int64)
    n_bright = 0
    for i in range(n_pixels if bright.size else 0):
        if unsettled[i] == 2:
            bright[n_bright] = i
            n_bright += 1
    return bright
