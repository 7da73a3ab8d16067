"""A real detector frame: SACLA MPCCD, 300 x 300, masked and off-centre.

``shared/data/sacla/`` (beside the repository root) holds ``test_img.npy``
(float32) and ``test_mask.npy`` (bool, True = good); its README gives the beam
centre (x, y) = (152, 151). No one here made this frame, so it checks the
engine on data with real panel gaps, a beam stop and noise.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SACLA_DIR, expected_validity, make_cpu_backend, triangle_relative_errors

from ccfkit import compute_maps, make_polar_plan
from ccfkit.backends.array import NumpyBackend

CENTER = (152.0, 151.0)
#: float32 against the float64 reference, per triangle (docs/ccf.md, backends and precision).
RTOL = 1e-5
#: A real frame at the spec's default grid: Q = 224 rings, P = 512 angles.
GRID = {"center": CENTER, "q_bins": 224, "phi_bins": 512, "order": 8}


@pytest.fixture(scope="module")
def frame():
    image_path, mask_path = SACLA_DIR / "test_img.npy", SACLA_DIR / "test_mask.npy"
    if not (image_path.is_file() and mask_path.is_file()):
        pytest.skip(f"the SACLA test frame is not at {SACLA_DIR} (shared/ beside the repository)")
    image, mask = np.load(image_path), np.load(mask_path)
    assert image.shape == (300, 300) and image.dtype == np.float32
    assert mask.shape == (300, 300) and mask.dtype == bool
    return image, mask


@pytest.fixture(scope="module")
def reference_maps(frame):
    image, mask = frame
    return {
        scale: compute_maps(image, mask=mask, scale=scale, backend=NumpyBackend(), **GRID)
        for scale in ("maxabs", "none")
    }


def test_geometry(frame):
    image, mask = frame
    plan = make_polar_plan(image.shape, mask=mask, center=CENTER, q_bins=224, phi_bins=512)
    # The largest full circle around (152, 151) on 300 x 300: min(152, 151, 147, 148).
    assert plan.r_max == 147.0
    assert 0.3 < plan.valid.mean() < 0.9  # a third of the pixels is bad (70 % valid samples)
    # The beam stop swallows the innermost rings, and panel gaps leave under
    # half of the outermost rings: both are unused, their map rows and
    # columns exactly 0 (no valid sample, no valid pair), never NaN.
    fraction = make_polar_plan(
        image.shape, mask=mask, center=CENTER, q_bins=224, phi_bins=512, min_ring_fraction=0.0
    ).valid.mean(axis=1)
    np.testing.assert_array_equal(plan.ring_used, fraction >= 0.5)
    empty = ~plan.valid.any(axis=1)
    np.testing.assert_array_equal(empty, ~plan.ring_used)
    assert empty[:3].all() and empty[-1] and not empty[20:200].any()
    maps = compute_maps(image, mask=mask, scale="none", backend="numba", **GRID)
    np.testing.assert_array_equal(maps[empty], 0.0)  # exact: defined as 0
    np.testing.assert_array_equal(maps[:, empty], 0.0)


def test_validity_uses_only_good_pixels(frame):
    image, mask = frame
    # A coarser grid keeps the brute force quick; same centre and mask.
    plan = make_polar_plan(
        image.shape, mask=mask, center=CENTER, q_bins=48, phi_bins=96, min_ring_fraction=0.0
    )
    expected, ambiguous = expected_validity(plan, mask)
    # Yes/no decisions: exact wherever rounding cannot decide.
    np.testing.assert_array_equal(plan.valid[~ambiguous], expected[~ambiguous])


@pytest.mark.parametrize("name", ["numpy32", "numba1", "numba2"])
@pytest.mark.parametrize("scale", ["maxabs", "none"])
def test_cpu_backends_agree_with_reference(frame, reference_maps, name, scale):
    image, mask = frame
    maps = compute_maps(image, mask=mask, scale=scale, backend=make_cpu_backend(name), **GRID)
    expected = reference_maps[scale]
    assert maps.shape == (224, 224) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    lower, upper = triangle_relative_errors(maps, expected)
    # The contract of docs/ccf.md, backends and precision, per triangle.
    assert lower <= RTOL and upper <= RTOL


def test_reference_maps_are_finite_and_scaled(reference_maps):
    maps = reference_maps["maxabs"]
    assert np.isfinite(maps).all()
    lower = np.tril(np.ones(maps.shape, dtype=bool))
    # maxabs: each triangle reaches 1 (float32 rounding) and stays in [-1, 1].
    assert np.max(np.abs(maps[lower])) == pytest.approx(1.0, abs=1e-6)
    assert np.max(np.abs(maps[~lower])) == pytest.approx(1.0, abs=1e-6)
    # The full map of a non-negative frame is non-negative.
    assert np.min(maps[lower]) >= 0.0


@pytest.mark.parametrize("name", ["numpy64", "numpy32", "numba1"])
@pytest.mark.parametrize("bad_value", [np.nan, 1e30])
def test_masked_pixels_never_enter(frame, name, bad_value):
    image, mask = frame
    backend = make_cpu_backend(name)
    poisoned = image.copy()
    poisoned[~mask] = bad_value
    for scale in ("none", "maxabs"):
        clean = compute_maps(image, mask=mask, scale=scale, backend=backend, **GRID)
        dirty = compute_maps(poisoned, mask=mask, scale=scale, backend=backend, **GRID)
        assert np.isfinite(dirty).all()
        # Same good pixels, same arithmetic: equal up to BLAS reordering in
        # float32; a masked pixel entering would give NaN, or dwarf the maps
        # (values ~1e6) with 1e30.
        np.testing.assert_allclose(dirty, clean, rtol=0, atol=1e-6 * np.max(np.abs(clean)))
