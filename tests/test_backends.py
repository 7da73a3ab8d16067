"""Backends (docs/ccf.md, backends and precision): selection, and every backend against the NumPy reference.

The contract: in float32, every stage of every backend agrees with the
float64 NumPy reference to ``max |fast - ref| <= 1e-5 * max |ref|`` per map
(per triangle for merged maps), on random detector shapes, off-centre
centres, masks, NaN pixels, separations ``delta``, orders 0..8, both scalings
and batches of 1..5 images. float32 carries 6e-8 relative rounding per
operation; sums over P <= 64 samples and Q <= 24 rings stay an order of
magnitude below 1e-5 (measured worst case over 3000 random cases: 1.3e-6), so
the bound is tight enough to catch a wrong index, weight, sign or
normalisation and loose enough for float32.

One limit of float32 itself (not of a backend): the upper triangle of a merged
map is ``Re(conj F_i F_j)`` scaled by its own largest value. When the order-n
coefficients are tiny next to the ring intensities (rings of 1-2 px radius, a
2 x 2 map whose single upper entry is a cancellation), the 6e-8 rounding of
the float32 polar values alone exceeds 1e-5 of that triangle; NumPy float32
and Numba both do. The main contract therefore draws geometries with
``Q >= 6`` rings out to ``r_max >= 6`` px; tiny geometries get their own test
with a bound scaled by the ring intensities (:func:`_upper_floor`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import (
    AVAILABLE,
    make_cpu_backend,
    relative_error,
    triangle_relative_errors,
    triangles,
)
from hypothesis import example, given
from hypothesis import strategies as st

import ccfkit
from ccfkit import compute_maps, make_polar_plan
from ccfkit.backends import Backend, BackendUnavailableError, get_backend
from ccfkit.backends.array import ArrayBackend, NumpyBackend
from ccfkit.backends.numba import NumbaBackend
from ccfkit.ccf import Estimator, MapSettings, Scale
from ccfkit.geometry import ScatteringGeometry

#: The contract's bound: float32 against float64, relative to each map's max.
RTOL = 1e-5

CUDA = pytest.mark.skipif(
    "cupy" not in AVAILABLE, reason="CuPy with a usable CUDA device is not available"
)


# --------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------


def test_unknown_backend_name_raises_value_error():
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        get_backend("nope")


@pytest.mark.skipif("cupy" in AVAILABLE, reason="CUDA is usable here")
def test_cupy_unavailable_raises_backend_unavailable():
    with pytest.raises(BackendUnavailableError):
        get_backend("cupy")
    assert issubclass(BackendUnavailableError, RuntimeError)


@pytest.mark.skipif("cupy" in AVAILABLE, reason="CUDA is usable here: auto picks cupy")
def test_auto_picks_numba_without_gpu():
    backend = get_backend("auto")
    assert isinstance(backend, NumbaBackend) and backend.name == "numba"
    assert isinstance(get_backend(), NumbaBackend)  # "auto" is the default


@pytest.mark.cuda
@CUDA
def test_auto_picks_cupy_with_gpu():
    assert get_backend("auto").name == "cupy"


def test_available_backends_lists_cpu_backends():
    names = ccfkit.available_backends()
    assert "numpy" in names and "numba" in names
    assert set(names) <= {"numpy", "numba", "cupy"}


@pytest.mark.parametrize("name, cls", [("numpy", NumpyBackend), ("NUMBA", NumbaBackend)])
def test_names_resolve_to_their_backends(name, cls):
    backend = get_backend(name)
    assert isinstance(backend, cls) and backend.name == name.lower()


def test_backend_instances_pass_through():
    backend = NumbaBackend(threads=1)
    assert get_backend(backend) is backend


def test_reference_is_float64_and_numba_float32():
    assert get_backend("numpy").asarray([1.0]).dtype == np.float64
    assert get_backend("numba").asarray([1.0]).dtype == np.float32


# --------------------------------------------------------------------------
# The contract, one class over all backends
# --------------------------------------------------------------------------


def _make(name) -> Backend:
    return get_backend("cupy") if name == "cupy" else make_cpu_backend(name)


BACKENDS = [
    "numpy32",
    "numba1",
    "numba2",
    pytest.param("cupy", marks=[pytest.mark.cuda, CUDA]),
]


@st.composite
def cases(draw, tiny=False):
    """A random detector batch with its geometry and CCF parameters.

    ``tiny``: 9..24 px detectors and 2..5 rings (ill-conditioned, see above);
    otherwise 25..61 px (odd sizes like 37 x 53 included) and 6..24 rings.
    """
    sizes = st.integers(9, 24) if tiny else st.integers(25, 61)
    height = draw(sizes)
    width = draw(sizes)
    batch = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    cx = draw(st.floats(0.25, 0.75)) * (width - 1)
    cy = draw(st.floats(0.25, 0.75)) * (height - 1)
    if draw(st.booleans()):  # integer centres put samples on pixel centres
        cx, cy = float(round(cx)), float(round(cy))
    # r_max: the default, or larger (samples fall off the detector).
    r_max = None if draw(st.booleans()) else draw(st.floats(1.0, 1.5)) * max(height, width) / 2
    bad = draw(st.sampled_from([0.0, 0.0, 0.1, 0.3]))
    mask = rng.random((height, width)) >= bad if bad else None
    # Intensities: positive speckle on a background, like diffraction.
    images = rng.gamma(2.0, 1.0, (batch, height, width)) + draw(st.sampled_from([0.0, 5.0]))
    for _ in range(draw(st.integers(0, 3))):  # unmasked NaN/inf pixels
        images[rng.integers(batch), rng.integers(height), rng.integers(width)] = draw(
            st.sampled_from([np.nan, np.inf])
        )
    half_p = draw(st.sampled_from([4, 8, 16, 32]))
    case = {
        "images": images,
        "mask": mask,
        "center": (cx, cy),
        "r_max": r_max,
        "q_bins": draw(st.integers(2, 5) if tiny else st.integers(6, 24)),
        "phi_bins": 2 * half_p,
        "order": draw(st.integers(0, min(8, half_p))),
        "delta": draw(st.floats(-np.pi, np.pi)),
        "scale": draw(st.sampled_from(["none", "maxabs"])),
        # the settings of docs/ccf.md beyond the paper's (test_merged_maps_settings)
        "min_ring_fraction": draw(st.sampled_from([0.0, 0.5])),
        # every member of the enums: a new mode is in the contract without a new line here
        "estimator": draw(st.sampled_from(list(Estimator))),
        "map_scale": draw(st.sampled_from(list(Scale))),
        "extra_orders": draw(st.sampled_from([(), (2,), (1, 3)])),
    }
    if not tiny and draw(st.booleans()):  # rings at equal steps in q (docs/ccf.md)
        case.update(_q_placed(draw, height, width))
    return case


def _q_placed(draw, height, width) -> dict:
    """A grid in momentum transfer on a wide-angle detector (L = 30 px: 2 theta = 45
    degrees at 30 px), so that its rings are far from equally spaced in pixels; from
    a radius inside the smaller half-side out to 0.8-1.5 times the larger one."""
    scattering = ScatteringGeometry(pixel_size=1e-4, distance=3e-3, wavelength_nm=1.0)
    r_inner = draw(st.floats(0.0, 0.3)) * min(height, width) / 2
    r_outer = draw(st.floats(0.8, 1.5)) * max(height, width) / 2
    q_range = tuple(float(q) for q in scattering.momentum_transfer([r_inner, r_outer]))
    return {"r_max": None, "q_range": q_range, "scattering": scattering}


def _fixed_case():
    """The hard case, always run: 37 x 53, off-centre, masked, NaN
    and inf pixels, delta != 0, order 8, a batch of 5."""
    rng = np.random.default_rng(37)
    images = rng.gamma(2.0, 1.0, (5, 37, 53))
    images[1, 20, 30], images[3, 5, 7] = np.nan, np.inf
    return {
        "images": images,
        "mask": rng.random((37, 53)) >= 0.2,
        "center": (30.25, 16.5),
        "r_max": None,
        "q_bins": 16,
        "phi_bins": 64,
        "order": 8,
        "delta": 0.9,
        "scale": "maxabs",
        "min_ring_fraction": 0.5,
        "estimator": "mask-corrected",
        "map_scale": "ring",
        "extra_orders": (2,),
    }


FIXED = _fixed_case()


def _plan(case):
    return make_polar_plan(
        case["images"].shape[1:],
        center=case["center"],
        mask=case["mask"],
        q_bins=case["q_bins"],
        phi_bins=case["phi_bins"],
        r_max=case["r_max"],
        min_ring_fraction=case["min_ring_fraction"],
        q_range=case.get("q_range"),
        scattering=case.get("scattering"),
    )


def _upper_floor(reference, polar, order, scale):
    """Per image, the float32 error scale of a merged map's upper triangle.

    Rounding a polar value ``v`` to float32 moves it by ~6e-8 ``|v|``, so
    ``F_k`` moves by up to ~6e-8 ``A_k`` (``A_k`` the largest ``|v|`` on ring
    ``k``) and ``Re(conj F_i F_j)`` by ~6e-8 ``(|F_i| A_j + A_i |F_j|)``. The
    largest such term over ``i < j`` is returned, in the units of the merged
    map (divided by the raw triangle's max for ``"maxabs"``).
    """
    coefficients = reference.fourier(polar.values, polar.valid, [order])[..., 0]
    magnitude = np.abs(coefficients)
    largest = np.max(np.abs(polar.values), axis=-1)
    cross = (
        magnitude[:, :, None] * largest[:, None, :] + largest[:, :, None] * magnitude[:, None, :]
    )
    _, upper = triangles(magnitude.shape[-1])
    floor = np.max(np.where(upper, cross, 0), axis=(-2, -1))
    if scale == "maxabs":
        raw = np.max(np.abs(np.where(upper, reference.order_map(coefficients), 0)), axis=(-2, -1))
        # A triangle whose largest value is below its own float32 error scale is
        # rounding noise: scaled to [-1, 1] any pattern is as right as another.
        floor = np.where(raw > floor, floor / np.where(raw > floor, raw, 1), np.inf)
    return floor


def _check_settings(backend, reference, case):
    """``case``'s estimator, scaling and extra orders on ``backend`` against ``reference``."""
    plan = _plan(case)
    settings = MapSettings(
        orders=(case["order"], *(n for n in case["extra_orders"] if n != case["order"])),
        delta=case["delta"],
        estimator=case["estimator"],
        scale=case["map_scale"],
    )
    expected = reference.merged_maps(
        reference.as_batch(case["images"], plan.shape), plan, settings
    )
    fast = np.asarray(
        backend.to_numpy(
            backend.merged_maps(backend.as_batch(case["images"], plan.shape), plan, settings)
        )
    )
    assert fast.shape == expected.shape and np.isfinite(fast).all()
    if settings.channels == 1:
        fast, expected = fast[:, None], expected[:, None]
    lower, upper = triangle_relative_errors(fast[:, 0], expected[:, 0])
    if settings.scale == "ring":
        # C / (m_i m_j) - 1 cancels against 1, the natural unit of a
        # normalised CCF: float32 rounds it to ~1e-7 of 1, whatever the
        # triangle's own largest entry (0.04 for the speckle drawn here)
        largest = np.max(np.abs(np.tril(expected[:, 0])), axis=(-2, -1))
        lower = lower * largest / np.maximum(largest, 1.0)
    # An order map rounds like the intensities squared it is made of (~1e-7 of the
    # full map's entries, absolute): one much smaller than the full map (a nearly
    # isotropic ring) is, relative to itself, worse conditioned by that ratio.
    unscaled = reference.merged_maps(
        reference.as_batch(case["images"], plan.shape), plan,
        dataclasses.replace(settings, scale="none"),
    )  # fmt: skip
    if settings.channels == 1:
        unscaled = unscaled[:, None]
    full_scale = np.max(np.abs(np.tril(unscaled[:, 0])), axis=(-2, -1))

    def conditioning(order_map):
        floor = np.maximum(np.max(np.abs(order_map), axis=(-2, -1)), 1e-3 * full_scale)
        return np.maximum(1.0, full_scale / np.where(floor > 0, floor, 1.0))

    assert np.all(lower <= RTOL)
    # the upper triangle: to 1e-5 of its largest entry, or of its float32 error
    # scale where that is larger (an order near P/2 on rings of a pixel or two,
    # whose coefficient is float32 rounding of the ring's intensities)
    polar = reference.resample(reference.as_batch(case["images"], plan.shape), plan)
    shown = np.max(np.abs(np.triu(unscaled[:, 0], 1)), axis=(-2, -1))
    floor = _upper_floor(reference, polar, settings.orders[0], "none")
    assert np.all(upper <= RTOL * np.maximum(1.0, floor / np.where(shown > 0, shown, np.inf)))
    # Unscaled, every extra order to 1e-5 of the full map's scale, absolute (or of its own,
    # where no pair of samples is valid at the lag and the full map is 0); scaled, relative
    # to its own where that is at least 1e-3 of the full map's (an order that vanishes on
    # the rings, |F_n| = 0 up to rounding, has no scale of its own to be relative to).
    fast_unscaled = np.asarray(
        backend.to_numpy(
            backend.merged_maps(
                backend.as_batch(case["images"], plan.shape), plan,
                dataclasses.replace(settings, scale="none"),
            )
        )
    )  # fmt: skip
    if settings.channels == 1:
        fast_unscaled = fast_unscaled[:, None]
    for channel in range(1, settings.channels):
        absolute = np.max(np.abs(fast_unscaled[:, channel] - unscaled[:, channel]), axis=(-2, -1))
        own = np.max(np.abs(unscaled[:, channel]), axis=(-2, -1))
        assert np.all(absolute <= RTOL * np.where(full_scale > 0, full_scale, own))
        sized = own >= 1e-3 * full_scale
        error = relative_error(fast[:, channel], expected[:, channel])
        assert np.all(error[sized] <= RTOL * conditioning(unscaled[:, channel])[sized])
    unused = ~plan.ring_used
    assert np.all(fast[:, :, unused] == 0) and np.all(fast[:, :, :, unused] == 0)


@pytest.mark.parametrize("name", BACKENDS)
class TestBackendContract:
    """Each stage of ``name`` against :class:`NumpyBackend` in float64."""

    reference = NumpyBackend()

    @staticmethod
    def host(backend, array):
        return np.asarray(backend.to_numpy(array))

    def reference_polar(self, case):
        plan = _plan(case)
        return plan, self.reference.resample(
            self.reference.as_batch(case["images"], plan.shape), plan
        )

    @given(case=cases())
    @example(case=FIXED)
    def test_resample(self, name, case):
        backend = _make(name)
        plan, ref = self.reference_polar(case)
        fast = backend.resample(backend.as_batch(case["images"], plan.shape), plan)
        valid = self.host(backend, fast.valid)
        values = self.host(backend, fast.values)
        # Validity is a yes/no decision and must be identical.
        np.testing.assert_array_equal(valid, ref.valid)
        assert values.dtype == np.float32 and np.isfinite(values).all()
        np.testing.assert_array_equal(values[~valid], 0.0)
        assert np.all(relative_error(values, ref.values) <= RTOL)

    @given(case=cases(), all_orders=st.booleans())
    @example(case=FIXED, all_orders=True)
    def test_fourier(self, name, case, all_orders):
        backend = _make(name)
        _, ref = self.reference_polar(case)
        orders = None if all_orders else sorted({0, case["order"], case["phi_bins"] // 2})
        expected = self.reference.fourier(ref.values, ref.valid, orders)
        fast = backend.fourier(
            backend.asarray(ref.values.astype(np.float32)),
            backend.xp.asarray(ref.valid),
            orders,
        )
        fast = self.host(backend, fast)
        assert fast.shape == expected.shape
        # Per image, relative to its largest coefficient.
        assert np.all(relative_error(fast, expected, axes=(-2, -1)) <= RTOL)

    @given(case=cases())
    @example(case=FIXED)
    def test_full_map(self, name, case):
        backend = _make(name)
        _, ref = self.reference_polar(case)
        expected = self.reference.full_map(ref.values, ref.valid, case["delta"])
        fast = backend.full_map(
            backend.asarray(ref.values.astype(np.float32)),
            backend.xp.asarray(ref.valid),
            case["delta"],
        )
        assert np.all(relative_error(self.host(backend, fast), expected) <= RTOL)

    @given(case=cases())
    @example(case=FIXED)
    def test_order_map(self, name, case):
        backend = _make(name)
        _, ref = self.reference_polar(case)
        coefficients = self.reference.fourier(ref.values, ref.valid, [case["order"]])[..., 0]
        expected = self.reference.order_map(coefficients)
        fast = backend.order_map(backend.xp.asarray(coefficients.astype(np.complex64)))
        assert np.all(relative_error(self.host(backend, fast), expected) <= RTOL)

    @given(case=cases())
    @example(case=FIXED)
    def test_merge_maps(self, name, case):
        backend = _make(name)
        _, ref = self.reference_polar(case)
        coefficients = self.reference.fourier(ref.values, ref.valid, [case["order"]])[..., 0]
        full = self.reference.full_map(ref.values, ref.valid, case["delta"])
        order = self.reference.order_map(coefficients)
        expected = self.reference.merge_maps(full, order, case["scale"])
        fast = backend.merge_maps(
            backend.asarray(full.astype(np.float32)),
            backend.asarray(order.astype(np.float32)),
            case["scale"],
        )
        lower, upper = triangle_relative_errors(self.host(backend, fast), expected)
        assert np.all(lower <= RTOL) and np.all(upper <= RTOL)

    @given(case=cases())
    @example(case=FIXED)
    def test_merged_maps(self, name, case):
        backend = _make(name)
        plan = _plan(case)
        kw = {"order": case["order"], "delta": case["delta"], "scale": case["scale"]}
        expected = self.reference.merged_maps(
            self.reference.as_batch(case["images"], plan.shape), plan, **kw
        )
        fast = self.host(
            backend, backend.merged_maps(backend.as_batch(case["images"], plan.shape), plan, **kw)
        )
        assert fast.dtype == np.float32 and np.isfinite(fast).all()
        lower, upper = triangle_relative_errors(fast, expected)
        assert np.all(lower <= RTOL) and np.all(upper <= RTOL)
        if case["scale"] == "maxabs":
            assert np.all(np.abs(fast) <= 1 + 1e-6)  # [-1, 1] up to float32 rounding

    @given(case=cases())
    @example(case=FIXED)
    def test_merged_maps_settings(self, name, case):
        """Estimators, scalings and extra order channels: each channel and triangle."""
        _check_settings(_make(name), self.reference, case)

    @pytest.mark.parametrize("estimator", list(Estimator))
    @pytest.mark.parametrize("scale", list(Scale))
    def test_every_mode(self, name, scale, estimator):
        """Every member of :class:`Scale` and :class:`Estimator`, each on the fixed case."""
        case = {**FIXED, "estimator": estimator, "map_scale": scale}
        _check_settings(_make(name), self.reference, case)

    @given(case=cases(tiny=True))
    def test_merged_maps_tiny_geometry(self, name, case):
        """Rings of a few px and 2..5 rings: the full map keeps the contract;
        the order triangle is held to 1e-5 of its float32 error scale."""
        backend = _make(name)
        plan, polar = self.reference_polar(case)
        kw = {"order": case["order"], "delta": case["delta"], "scale": case["scale"]}
        expected = self.reference.merged_maps(
            self.reference.as_batch(case["images"], plan.shape), plan, **kw
        ).astype(np.float64)
        fast = self.host(
            backend, backend.merged_maps(backend.as_batch(case["images"], plan.shape), plan, **kw)
        )
        assert np.isfinite(fast).all()
        lower_error, _ = triangle_relative_errors(fast, expected)
        assert np.all(lower_error <= RTOL)
        _, upper = triangles(plan.q_bins)
        difference = np.max(np.abs(np.where(upper, fast - expected, 0)), axis=(-2, -1))
        shown = np.max(np.abs(np.where(upper, expected, 0)), axis=(-2, -1))
        # RTOL (~170 float32 ulps) of the larger of the triangle's max and its
        # float32 error scale: loose for rounding, tight for any real mistake.
        floor = _upper_floor(self.reference, polar, case["order"], case["scale"])
        assert np.all(difference <= RTOL * np.maximum(shown, floor))
        noise = ~np.isfinite(floor)
        if noise.any():
            # "maxabs" on a triangle below its own float32 error scale: the bound
            # above is void for those images. Check what still means something:
            # the unscaled order map, to its float32 error scale, and the scaling.
            kw["scale"] = "none"
            raw_expected = self.reference.merged_maps(
                self.reference.as_batch(case["images"], plan.shape), plan, **kw
            )[noise]
            raw_fast = self.host(
                backend,
                backend.merged_maps(backend.as_batch(case["images"], plan.shape), plan, **kw),
            )[noise]
            raw_floor = _upper_floor(self.reference, polar, case["order"], "none")[noise]
            raw_difference = np.max(np.abs(np.where(upper, raw_fast - raw_expected, 0)), (-2, -1))
            raw_shown = np.max(np.abs(np.where(upper, raw_expected, 0)), axis=(-2, -1))
            assert np.all(raw_difference <= RTOL * np.maximum(raw_shown, raw_floor))
            # scaled: the largest |value| is 1 (0 for an all-zero triangle), as in the reference
            np.testing.assert_allclose(
                np.max(np.abs(np.where(upper, fast, 0)), axis=(-2, -1))[noise],
                shown[noise],
                rtol=0,
                atol=1e-6,
            )


@pytest.mark.parametrize(
    "name", ["numpy", "numba", pytest.param("cupy", marks=[pytest.mark.cuda, CUDA])]
)
@given(case=cases())
@example(case=FIXED)
def test_compute_maps_of_one_image_with_default_arguments(name, case):
    """What compute_maps adds to merged_maps: a backend chosen by name, one (H, W)
    image giving one (Q, Q) map, and its defaults (centre, mask, r_min, r_max,
    order 8, delta 0, "maxabs")."""
    image = case["images"][0]
    q_bins, phi_bins = case["q_bins"], max(case["phi_bins"], 16)  # the default order 8 <= P/2
    maps = np.asarray(compute_maps(image, q_bins=q_bins, phi_bins=phi_bins, backend=name))
    assert maps.shape == (q_bins, q_bins) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    reference = NumpyBackend()
    plan = make_polar_plan(image.shape, q_bins=q_bins, phi_bins=phi_bins)
    expected = reference.merged_maps(
        reference.as_batch(image[None], plan.shape), plan, order=8, delta=0.0, scale="maxabs"
    )[0]
    lower, upper = triangle_relative_errors(maps, expected)
    assert lower <= RTOL and upper <= RTOL  # the contract's bound
    assert np.abs(maps).max() <= 1 + 1e-6  # "maxabs": [-1, 1] up to float32 rounding


@pytest.mark.cuda
@CUDA
def test_cupy_keeps_cupy_input_on_the_gpu():
    import cupy

    images = cupy.asarray(np.random.default_rng(0).random((2, 33, 35)))
    maps = compute_maps(images, q_bins=8, phi_bins=16, backend="cupy")
    assert isinstance(maps, cupy.ndarray) and maps.shape == (2, 8, 8)
    expected = compute_maps(images.get(), q_bins=8, phi_bins=16, backend="numpy")
    lower, upper = triangle_relative_errors(maps.get(), expected)
    assert np.all(lower <= RTOL) and np.all(upper <= RTOL)  # the contract's bound


@given(case=cases())
@example(case=FIXED)
def test_reference_merged_maps_is_the_chain_of_stages(case):
    """The reference's batched merged_maps (plan pair counts for images without
    NaN/inf samples) gives exactly the maps of the chain that defines it."""
    plan = _plan(case)
    kw = {"order": case["order"], "delta": case["delta"], "scale": case["scale"]}
    for reference in (NumpyBackend(), NumpyBackend(np.float32, batch_size=2)):
        images = reference.as_batch(case["images"], plan.shape)
        fast = reference.merged_maps(images, plan, **kw)
        chain = [
            Backend.merged_maps(reference, images[start : start + 2], plan, **kw)
            for start in range(0, len(images), 2)
        ]
        if reference.batch_size != 2:
            chain = [Backend.merged_maps(reference, images, plan, **kw)]
        np.testing.assert_array_equal(fast, np.concatenate(chain))


def test_array_backend_keeps_the_tables_of_the_last_plans():
    backend = NumpyBackend(np.float32)
    plans = [make_polar_plan((33, 35), q_bins=4 + n, phi_bins=16) for n in range(6)]
    first = backend._tables_of(plans[0])
    assert backend._tables_of(plans[0]) is first  # reused, not rebuilt per batch
    assert first.pairs(3) is first.pairs(3)  # pair counts once per shift
    for plan in plans:
        backend.merged_maps(backend.as_batch(np.ones((1, 33, 35)), plan.shape), plan)
    assert list(backend._tables) == plans[-ArrayBackend._PLANS_KEPT :]  # bounded, newest kept


@pytest.mark.parametrize("name", ["numba1", "numba2"])
def test_one_plan_many_orders_and_separations(name):
    # Backends cache tables per plan, per (plan, order) and per (plan, shift):
    # reusing one plan with changing parameters must never serve stale tables.
    backend, reference = _make(name), NumpyBackend()
    rng = np.random.default_rng(8)
    images = rng.gamma(2.0, 1.0, (3, 37, 53))
    images[2, 18, 26] = np.nan
    plan = make_polar_plan(
        (37, 53), center=(26.0, 18.0), mask=rng.random((37, 53)) > 0.1, q_bins=12, phi_bins=32
    )
    for order, delta in [(8, 0.0), (2, 0.0), (8, 1.0), (2, 1.0), (8, 0.0), (0, -2.0)]:
        for scale in ("none", "maxabs"):
            kw = {"order": order, "delta": delta, "scale": scale}
            fast = backend.merged_maps(backend.as_batch(images, plan.shape), plan, **kw)
            expected = reference.merged_maps(reference.as_batch(images, plan.shape), plan, **kw)
            lower, upper = triangle_relative_errors(fast, expected)
            assert np.all(lower <= RTOL) and np.all(upper <= RTOL)  # the contract's bound
        polar = backend.resample(backend.as_batch(images, plan.shape), plan)
        np.testing.assert_array_equal(polar.valid[:2], np.broadcast_to(plan.valid, (2, 12, 32)))


@pytest.mark.skipif("numba" not in AVAILABLE, reason="Numba not installed")
def test_nan_in_masked_pixels_keeps_the_numba_fast_path():
    """NaN where no valid sample looks (masked pixels) invalidates nothing: the fast path.

    A non-zero count sends an image down the path of images with invalid samples
    (the exact gather and a second product); the maps are the same either way.
    """
    from ccfkit.backends.numba import _padded_scratch, _polar_image, _sanitize, _tables_for

    rng = np.random.default_rng(2)
    mask = rng.random((41, 37)) > 0.2
    mask[20, 21] = True  # near the detector middle (the default centre): samples use it
    plan = ccfkit.make_polar_plan((41, 37), mask=mask, q_bins=12, phi_bins=24)
    image = rng.poisson(5, (41, 37)).astype(np.float32)
    clean = image.copy()
    image[~mask] = np.nan
    tables = _tables_for(plan)
    padded = _padded_scratch(tables)
    values = np.empty(plan.valid.size, np.float32)
    valid = np.zeros(plan.valid.size, bool)
    assert _sanitize(image.ravel(), tables.used, padded) == 0
    assert _polar_image(image.ravel(), tables, padded, values, valid, True) == 0
    np.testing.assert_array_equal(valid, plan.valid.ravel())
    expected = ccfkit.get_backend("numpy").resample(clean[None].astype(float), plan).values
    np.testing.assert_allclose(values, expected.ravel(), rtol=1e-6, atol=1e-5)
    image[20, 21] = np.nan  # a good pixel that valid samples use: now it counts
    assert _sanitize(image.ravel(), tables.used, padded) == 1
    invalidated = _polar_image(image.ravel(), tables, padded, values, valid, False)
    assert invalidated == plan.valid.sum() - valid.sum() > 0
    assert (valid <= plan.valid.ravel()).all()
    assert np.isfinite(values).all() and (values[~valid] == 0).all()


@pytest.mark.skipif("numba" not in AVAILABLE, reason="Numba not installed")
def test_numba_sends_huge_pixels_to_the_exact_path_which_drops_their_samples():
    """Pixels at or beyond HUGE_PIXEL (a float32-max sentinel) are unusable, as NaN is."""
    from ccfkit.backends.numba import _padded_scratch, _sanitize, _tables_for

    plan = ccfkit.make_polar_plan((21, 21), q_bins=6, phi_bins=16)
    image = np.full((1, 21, 21), 3e38, np.float32)
    image[0, ::2] = -3e38  # neighbouring rows of opposite sign: (b - a) would overflow
    tables = _tables_for(plan)
    assert _sanitize(image.ravel(), tables.used, _padded_scratch(tables)) == tables.used.sum()
    for name in ("numba", "numpy"):
        polar = ccfkit.get_backend(name).resample(image, plan)
        assert not polar.valid.any() and (polar.values == 0).all(), name
    # just below the limit the pixel is a number like any other
    image = np.full((1, 21, 21), np.float32(ccfkit.polar.HUGE_PIXEL) * 0.99, np.float32)
    assert _sanitize(image.ravel(), tables.used, _padded_scratch(tables)) == 0
    np.testing.assert_array_equal(ccfkit.get_backend("numba").resample(image, plan).valid[0],
                                  plan.valid)  # fmt: skip
    # a huge pixel that no valid sample weighs (a corner outside r_max) changes nothing
    image = np.ones((1, 21, 21), np.float32)
    image[0, 0, 0] = 3e38
    assert not tables.used[0]
    assert _sanitize(image.ravel(), tables.used, _padded_scratch(tables)) == 0
    np.testing.assert_allclose(ccfkit.get_backend("numba").resample(image, plan).values[0],
                               np.where(plan.valid, 1.0, 0.0), rtol=1e-6)  # fmt: skip


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("huge", [1e19, 3.4e38, -3.4e38, 2.0**56])
def test_a_huge_pixel_is_masked_in_its_frame_as_nan_is(name, huge):
    """A pixel whose products would overflow float32 is unusable: no NaN map, the reference's.

    The reference (float64 NumPy) defines it: the frame's maps are those of
    the same frame with NaN at that pixel, and every backend agrees with them.
    """
    rng = np.random.default_rng(7)
    images = rng.poisson(50, (3, 33, 35)).astype(np.float32)
    images[0, 16, 20] = huge  # on used rings of the default centre
    images[1, 10, 12] = huge
    images[1, 17, 17] = np.inf
    with_nan = np.where(np.abs(images) >= ccfkit.polar.HUGE_PIXEL, np.nan, images)
    orders, plan = (8, 2), make_polar_plan((33, 35), q_bins=12, phi_bins=32)
    settings = MapSettings(orders=orders)
    reference = get_backend("numpy").merged_maps(with_nan.astype(np.float64), plan, settings)
    also = get_backend("numpy").merged_maps(images.astype(np.float64), plan, settings)
    np.testing.assert_array_equal(also, reference)
    backend = _make(name)
    maps = backend.to_numpy(backend.merged_maps(backend.as_batch(images, plan.shape), plan,
                                                settings))  # fmt: skip
    assert np.isfinite(maps).all()
    scale = np.abs(reference).max(axis=(-2, -1), keepdims=True)
    assert np.all(np.abs(maps - reference) <= RTOL * np.maximum(scale, 1e-30) + 1e-6)
