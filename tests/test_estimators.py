"""Usable rings, r_min="auto", the order-n estimators, the scalings and extra orders.

docs/ccf.md states the definitions; the literal formulas below (loops over
every lag) are the float64 oracle of the FFT-based reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SACLA_DIR, isotropic, make_cpu_backend, random_mask
from hypothesis import given
from hypothesis import strategies as st

from ccfkit import compute_maps, make_polar_plan
from ccfkit.backends import Backend
from ccfkit.backends.array import NumpyBackend
from ccfkit.ccf import (
    MapSettings,
    assemble_maps,
    full_map_reference,
    order_maps_mask_corrected_reference,
)
from ccfkit.fourier import fourier_reference
from ccfkit.polar import min_ring_count


def literal_mask_corrected(values, valid, order):
    """``Re (1/P) sum_d e^{-2 pi i n d / P} C_d`` with ``C_d`` from Eq. 13 by loops.

    A lag without a valid pair takes the mean of ``C_d`` over the lags with one.
    """
    batch, q_bins, phi_bins = values.shape
    out = np.zeros((batch, q_bins, q_bins))
    for b in range(batch):
        correlation = np.zeros((phi_bins, q_bins, q_bins))
        measured = np.zeros((phi_bins, q_bins, q_bins), bool)
        for d in range(phi_bins):
            shifted_values = np.roll(values[b], -d, axis=-1)
            shifted_valid = np.roll(valid[b], -d, axis=-1).astype(float)
            numerator = values[b] @ shifted_values.T
            pairs = valid[b].astype(float) @ shifted_valid.T
            measured[d] = pairs > 0
            correlation[d] = np.where(measured[d], numerator / np.where(measured[d], pairs, 1), 0)
        lags = measured.sum(axis=0)
        mean = correlation.sum(axis=0) / np.maximum(lags, 1)
        for d in range(phi_bins):
            filled = np.where(measured[d], correlation[d], mean)
            out[b] += np.cos(2 * np.pi * order * d / phi_bins) * filled / phi_bins
    return out


def _random_polar(seed, batch, q_bins, phi_bins, bad):
    rng = np.random.default_rng(seed)
    valid = rng.random((batch, q_bins, phi_bins)) >= bad
    values = np.where(valid, rng.gamma(2.0, 1.0, valid.shape), 0.0)
    return values, valid


def _anisotropic_masks(shape, center):
    """An off-centre hole, panel gaps (SACLA-like) and 30 % random bad pixels.

    30 % bad pixels leave ~24 % of the bilinear samples (four good neighbours
    each): usable only with ``min_ring_fraction`` below that.
    """
    height, width = shape
    y, x = np.mgrid[:height, :width]
    hole = np.hypot(x - center[0] - 3.5, y - center[1] + 2.0) > 7
    gaps = np.ones(shape, bool)
    gaps[:, int(center[0]) - 2 : int(center[0]) + 1] = False
    gaps[int(center[1]) + 5 : int(center[1]) + 8, :] = False
    pixels = random_mask(np.random.default_rng(3), shape, 0.3)
    return {"hole": hole, "gaps": gaps & hole, "pixels": pixels}


# --------------------------------------------------------------------------
# The mask-corrected estimator
# --------------------------------------------------------------------------


@given(
    batch=st.integers(1, 2),
    q_bins=st.integers(1, 5),
    half_p=st.integers(2, 12),
    bad=st.sampled_from([0.0, 0.3, 0.7]),
    order=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_mask_corrected_reference_is_the_formula(batch, q_bins, half_p, bad, order, seed):
    values, valid = _random_polar(seed, batch, q_bins, 2 * half_p, bad)
    result = order_maps_mask_corrected_reference(values, valid, [order])[:, 0]
    # float64 FFTs of <= 24 samples against direct sums: round-off only
    np.testing.assert_allclose(
        result, literal_mask_corrected(values, valid, order), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("mask_name", ["hole", "gaps", "pixels"])
def test_constant_rings_have_no_mask_corrected_order_map(mask_name):
    """A pure radial profile under an anisotropic mask: no angular structure at all.

    The ring estimator (Eq. 15 normalised by the valid count) turns the mask's
    own angular shape into order-n signal; the test documents that leakage.
    Every ring with a valid sample takes part, also those with lags without
    a valid pair (the half-valid ring at the hole's edge has none at P/2).
    """
    shape, center = (61, 67), (31.3, 29.6)
    plan = make_polar_plan(
        shape, center=center, mask=_anisotropic_masks(shape, center)[mask_name], q_bins=16,
        phi_bins=64, r_min=2.0, min_ring_fraction=0.0,
    )  # fmt: skip
    profile = 5.0 + np.cos(plan.radius / 3.0)  # the same value all around each ring
    valid = plan.valid[None]
    values = np.where(valid, profile[:, None], 0.0)
    assert (valid.sum(-1) < plan.phi_bins).any()  # partial rings are there to leak
    scale = profile.max() ** 2
    corrected = order_maps_mask_corrected_reference(values, valid, [2, 8])
    assert np.abs(corrected).max() <= 1e-9 * scale
    coefficients = fourier_reference(values, valid, [2, 8])
    ring = np.abs(coefficients[..., :, None, :] * coefficients[..., None, :, :].conj()).max()
    assert ring > 1e-3 * scale  # the leakage of the ring estimator


def test_without_a_mask_the_estimators_agree():
    rng = np.random.default_rng(5)
    images = rng.gamma(2.0, 1.0, (3, 41, 45))
    kw = {"q_bins": 12, "phi_bins": 48, "orders": (8, 2, 3), "scale": "none", "backend": "numpy"}
    ring = compute_maps(images, estimator="ring", **kw)
    corrected = compute_maps(images, estimator="mask-corrected", **kw)
    np.testing.assert_allclose(corrected, ring, rtol=0, atol=1e-12 * np.abs(ring).max())


def test_fast_mask_corrected_path_is_the_definition():
    """Eq. 14 between complete rings, all lags for partial ones: the same maps."""
    rng = np.random.default_rng(6)
    shape = (45, 47)
    images = rng.gamma(2.0, 1.0, (4, *shape))
    images[2, 20, 30] = np.nan  # one image with rings of its own
    mask = _anisotropic_masks(shape, (23.0, 22.0))["hole"]
    plan = make_polar_plan(shape, center=(23.0, 22.0), mask=mask, q_bins=14, phi_bins=40)
    assert (plan.valid.sum(-1) == 40).any() and (plan.valid.sum(-1) < 40).any()
    reference = NumpyBackend(batch_size=3)
    batch = reference.as_batch(images, shape)
    for scale in ("none", "maxabs", "ring"):
        settings = MapSettings(orders=(8, 2), estimator="mask-corrected", scale=scale)
        fast = reference.merged_maps(batch, plan, settings)
        chain = Backend.merged_maps(reference, batch, plan, settings)
        # float32 output of the same float64 numbers: float32 rounding only
        np.testing.assert_allclose(fast, chain, rtol=0, atol=3e-7 * np.abs(chain).max())


@pytest.mark.skipif(
    not (SACLA_DIR / "test_mask.npy").is_file(), reason="the SACLA frame is not beside the repo"
)
def test_radial_profile_under_the_sacla_mask():
    """On the real detector, the isotropic leakage next to the real frame's order-8 signal.

    Measured (Q = 64, P = 256, usable rings): ring estimator 1.1e-2 of the
    real frame's largest order-8 entry, mask-corrected 1.7e-6 (what bilinear
    interpolation of a steep profile leaves).
    """
    image = np.load(SACLA_DIR / "test_img.npy").astype(np.float64)
    mask = np.load(SACLA_DIR / "test_mask.npy")
    center = (152.0, 151.0)
    y, x = np.mgrid[: image.shape[0], : image.shape[1]]
    r = np.hypot(x - center[0], y - center[1])
    radial = 1e3 * np.exp(-r / 30) + 50 / (1 + (r / 40) ** 2)
    upper = np.triu(np.ones((64, 64), bool), 1)
    leakage = {}
    for estimator in ("ring", "mask-corrected"):
        kw = {"center": center, "mask": mask, "q_bins": 64, "phi_bins": 256, "scale": "none",
              "estimator": estimator, "backend": "numpy"}  # fmt: skip
        real = compute_maps(image, **kw)[upper]
        leakage[estimator] = np.abs(compute_maps(radial, **kw)[upper]).max() / np.abs(real).max()
    assert leakage["mask-corrected"] < 1e-4
    assert leakage["ring"] > 100 * leakage["mask-corrected"]


# --------------------------------------------------------------------------
# Usable rings and r_min="auto"
# --------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["ring", "mask-corrected"])
@pytest.mark.parametrize("scale", ["none", "maxabs", "ring"])
def test_unused_rings_are_exactly_zero(estimator, scale):
    shape, center = (61, 67), (31.3, 29.6)
    mask = _anisotropic_masks(shape, center)["gaps"]
    plan = make_polar_plan(shape, center=center, mask=mask, q_bins=24, phi_bins=64)
    fraction = make_polar_plan(
        shape, center=center, mask=mask, q_bins=24, phi_bins=64, min_ring_fraction=0.0
    ).valid.mean(axis=1)
    np.testing.assert_array_equal(plan.ring_used, fraction >= 0.5)
    unused = ~plan.ring_used
    assert unused.any() and plan.ring_used.any()
    images = np.random.default_rng(1).gamma(2.0, 1.0, (2, *shape))
    maps = compute_maps(
        images, center=center, mask=mask, q_bins=24, phi_bins=64, orders=(8, 2),
        estimator=estimator, scale=scale, backend="numpy",
    )  # fmt: skip
    assert np.all(maps[:, :, unused, :] == 0) and np.all(maps[:, :, :, unused] == 0)
    assert np.all(np.abs(maps[:, :, plan.ring_used][..., plan.ring_used]).max(axis=(-2, -1)) > 0)


@pytest.mark.parametrize("name", ["numpy64", "numpy32", "numba1", "numba2"])
def test_nan_pixels_can_drop_a_ring_in_one_frame(name):
    shape = (41, 41)
    plan_kw = {"q_bins": 10, "phi_bins": 32, "min_ring_fraction": 0.5}
    plan = make_polar_plan(shape, **plan_kw)
    images = np.random.default_rng(2).gamma(2.0, 1.0, (2, *shape))
    # NaN over three quarters of an annulus: its rings keep under half their samples
    y, x = np.mgrid[:41, :41]
    annulus = (np.hypot(x - 20, y - 20) > 9) & (np.hypot(x - 20, y - 20) < 13)
    images[1][annulus & ((x > 18) | (y > 18))] = np.nan
    backend = make_cpu_backend(name)
    polar = backend.resample(backend.as_batch(images, shape), plan)
    counts = np.asarray(polar.valid).sum(axis=-1)
    dropped = counts[1] == 0
    assert dropped.any() and not dropped.all()  # some rings fell below 16 samples
    np.testing.assert_array_equal(counts[0], 32)
    assert np.all((counts[1] == 0) | (counts[1] >= min_ring_count(0.5, 32)))
    maps = np.asarray(backend.to_numpy(backend.merged_maps(backend.as_batch(images, shape), plan)))
    assert np.all(maps[1, dropped] == 0) and np.all(maps[1, :, dropped] == 0)
    assert np.all(maps[0, dropped].any(axis=-1))  # the other frame keeps those rings


def test_auto_r_min_skips_a_central_hole():
    shape, center = (101, 101), (50.0, 50.0)
    y, x = np.mgrid[:101, :101]
    hole = np.hypot(x - 50, y - 50) > 12
    plan = make_polar_plan(shape, center=center, mask=hole, q_bins=40, phi_bins=128, r_min="auto")
    assert plan.ring_used.all() and 11.0 < plan.r_min < 13.5
    earlier = make_polar_plan(
        shape, center=center, mask=hole, q_bins=40, phi_bins=128, r_min=plan.r_min - 1.0
    )
    assert not earlier.ring_used[0]  # a range starting 1 px further in begins unusable
    # no mask: nothing to skip
    assert make_polar_plan(shape, q_bins=40, phi_bins=128, r_min="auto").r_min == 0.0


def test_auto_r_min_refuses_a_mask_without_usable_rings():
    with pytest.raises(ValueError, match="r_min='auto'"):
        make_polar_plan((31, 31), mask=np.zeros((31, 31), bool), r_min="auto", q_bins=8)


# --------------------------------------------------------------------------
# Scalings and channels
# --------------------------------------------------------------------------


def test_ring_scale_of_constant_rings_is_zero():
    """The normalised CCF removes the radial profile: nothing is left of it."""
    q_bins, phi_bins = 12, 32
    profile = 1e4 * (1 + np.arange(q_bins)) ** -4.0  # q^-4: eight decades would dominate
    values = np.broadcast_to(profile[None, :, None], (1, q_bins, phi_bins)).copy()
    valid = np.ones(values.shape, bool)
    full = full_map_reference(values, valid)
    orders = order_maps_mask_corrected_reference(values, valid, [8, 2])
    means = fourier_reference(values, valid, [0])[..., 0].real
    maps = assemble_maps(full, orders, means, "ring")
    np.testing.assert_allclose(maps, 0.0, atol=1e-12)


def test_ring_scale_of_an_isotropic_image_is_small():
    shape, center = (81, 81), (40.0, 40.0)
    image = isotropic(shape, center, lambda r: 1e3 / (1 + (r / 5) ** 4))
    maps = compute_maps(
        image, q_bins=16, phi_bins=64, r_min=3.0, orders=(8, 2), scale="ring", backend="numpy"
    )
    # bilinear interpolation of a steep profile leaves per-ring variations of ~1e-3,
    # where the paper's scale shows the profile itself (its triangles span decades)
    assert np.abs(maps).max() < 1e-2
    raw = compute_maps(image, q_bins=16, phi_bins=64, r_min=3.0, scale="none", backend="numpy")
    lower = np.tril(np.ones((16, 16), bool))
    assert raw[lower].max() / raw[lower].min() > 1e3


def test_extra_orders_are_channels_of_their_order_maps():
    rng = np.random.default_rng(7)
    images = rng.gamma(2.0, 1.0, (2, 41, 45))
    kw = {"q_bins": 12, "phi_bins": 48, "backend": "numpy", "scale": "maxabs"}
    several = compute_maps(images, orders=(8, 2, 4), **kw)
    assert several.shape == (2, 3, 12, 12)
    np.testing.assert_array_equal(several[:, 0], compute_maps(images, order=8, **kw))
    for channel, order in ((1, 2), (2, 4)):
        merged = compute_maps(images, order=order, **kw)
        upper = np.triu(np.ones((12, 12), bool), 1)
        # the channel is the order map scaled as a whole; its upper triangle is
        # the merged map's upper triangle up to the factor of the diagonal
        ratio = several[:, channel][:, upper] / np.where(
            merged[:, upper] != 0, merged[:, upper], 1
        )
        np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1], ratio.shape), rtol=1e-5)
        np.testing.assert_allclose(several[:, channel], np.swapaxes(several[:, channel], -1, -2))
        assert np.abs(several[:, channel]).max(axis=(-2, -1)) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"orders": ()}, "at least one"),
        ({"orders": (8, 8)}, "repeat"),
        ({"orders": (-1,)}, "non-negative"),
        ({"estimator": "best"}, "best"),
        ({"scale": "log"}, "log"),
    ],
)
def test_map_settings_refuse_bad_values(fields, message):
    with pytest.raises(ValueError, match=message):
        MapSettings(**fields)


def test_estimator_figure_command_draws_a_png(tmp_path):
    from click.testing import CliRunner

    from ccfkit.cli import main

    frame = np.random.default_rng(0).gamma(2.0, 1.0, (65, 65))
    np.save(tmp_path / "frame.npy", frame)
    out = tmp_path / "estimators.png"
    result = CliRunner().invoke(
        main, ["estimator-figure", str(out), "--frame", str(tmp_path / "frame.npy"),
               "--q-bins", "16", "--phi-bins", "32"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.save(tmp_path / "mask.npy", np.ones((10, 10), bool))
    result = CliRunner().invoke(
        main, ["estimator-figure", str(tmp_path / "x.png"), "--frame", str(tmp_path / "frame.npy"),
               "--mask", str(tmp_path / "mask.npy")],
    )  # fmt: skip
    assert result.exit_code != 0 and "differ in shape" in result.output
    assert not (tmp_path / "x.png").exists()
