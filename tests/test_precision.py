"""``precision="bf16"``: the full map's product with bfloat16 inputs and float32 sums.

The tolerance is docs/ccf.md's ("Precision"): each input rounds to 8
significant bits (relative error <= u = 2^-8), a product of two to <= 2u, and
a sum of non-negative terms keeps that bound; the CPU product returns
bfloat16, one more rounding of u. So every entry of the full map of
non-negative images lies within ``BF16_FULL_MAP = 3u`` of the float64 value,
relatively. The order maps and pair counts do not use the product.

This machine need not have bf16 hardware: the tests that run the bf16 path
declare it present (``bf16_hardware``) and PyTorch emulates it, with the same
rounding.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from conftest import make_cpu_backend, random_mask, write_cxi
from hypothesis import given, settings
from hypothesis import strategies as st

import ccfkit
from ccfkit.backends import _bf16

pytest.importorskip("torch")  # the bf16 product is PyTorch's
from ccfkit.backends.array import NumpyBackend
from ccfkit.ccf import Precision, lag_product
from ccfkit.cli import main as ccfkit_main

#: Largest relative error of a full-map entry of non-negative images (module docstring).
BF16_FULL_MAP = 3 * 2.0**-8

GRID = {"q_bins": 24, "phi_bins": 64}

CUDA = pytest.mark.skipif(
    "cupy" not in ccfkit.backends.available_backends(),
    reason="CuPy with a usable CUDA device is not available",
)


def backend_named(name):
    """A CPU backend by test id, or the GPU's."""
    return ccfkit.backends.get_backend("cupy") if name == "cupy" else make_cpu_backend(name)


@pytest.fixture
def bf16_hardware(monkeypatch):
    """Declare bf16 matrix hardware present: the bf16 path runs (emulated by PyTorch here)."""
    monkeypatch.setattr(_bf16, "_bf16_missing", lambda device: False)


@pytest.fixture
def no_bf16_hardware(monkeypatch):
    monkeypatch.setattr(_bf16, "_bf16_missing", lambda device: True)


def full_triangle_relative_error(fast, ref):
    """Largest |fast - ref| / |ref| over the full map's triangle (``i >= j``) of (B, Q, Q) maps."""
    lower = np.tril(np.ones(ref.shape[-2:], dtype=bool))
    fast, ref = np.asarray(fast, np.float64)[..., lower], np.asarray(ref, np.float64)[..., lower]
    scale = np.where(ref != 0, np.abs(ref), 1.0)
    return float(np.max(np.abs(fast - ref) / scale))


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    q_bins=st.integers(1, 12),
    phi_bins=st.integers(2, 40),
    shift=st.integers(-50, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_the_bf16_product_keeps_the_rounding_bound(batch, q_bins, phi_bins, shift, seed):
    rng = np.random.default_rng(seed)
    rows = rng.gamma(2.0, 3.0, (batch, q_bins, phi_bins)).astype(np.float32)
    rows[rng.random(rows.shape) < 0.2] = 0  # invalid samples are 0
    shift %= phi_bins
    product = _bf16.lag_product_bf16(rows, shift, np)
    exact = lag_product(rows.astype(np.float64), shift)
    assert product.dtype == np.float32 and product.shape == (batch, q_bins, q_bins)
    assert full_triangle_relative_error(np.tril(product), np.tril(exact)) <= BF16_FULL_MAP


def test_the_bf16_product_is_not_float32(rng):
    """The inputs are rounded: on values with more than 8 significant bits the product differs."""
    rows = (1 + rng.random((2, 8, 64))).astype(np.float32)
    bf16 = _bf16.lag_product_bf16(rows, 0, np)
    exact = lag_product(rows.astype(np.float64), 0)
    assert full_triangle_relative_error(bf16, exact) > 1e-5  # float32 would give ~1e-7


@pytest.mark.usefixtures("bf16_hardware")
@pytest.mark.parametrize(
    "name", ["numpy32", "numba1", "numba2", pytest.param("cupy", marks=[pytest.mark.cuda, CUDA])]
)
@pytest.mark.parametrize("delta", [0.0, 0.5])
def test_bf16_maps_lie_within_the_tolerance_of_the_reference(name, delta, rng):
    images = rng.poisson(30.0, (5, 57, 61)).astype(np.float32)
    images[1, 10:14, 20:30] = np.nan  # one image with invalid samples of its own
    mask = random_mask(rng, images.shape[1:], 0.1)
    common = dict(mask=mask, orders=(8, 2), delta=delta, scale="none", **GRID)
    reference = ccfkit.compute_maps(images, backend=NumpyBackend(), **common)
    bf16 = ccfkit.compute_maps(images, backend=backend_named(name), precision="bf16", **common)
    # channel 0's full triangle: the bf16 product; the order maps: untouched
    assert full_triangle_relative_error(bf16[:, 0], reference[:, 0]) <= BF16_FULL_MAP
    assert full_triangle_relative_error(bf16[:, 0], reference[:, 0]) > 1e-6  # bf16 did run
    upper = np.triu(np.ones(reference.shape[-2:], dtype=bool), 1)
    scale = np.abs(reference[:, 0][:, upper]).max()
    np.testing.assert_allclose(bf16[:, 0][:, upper], reference[:, 0][:, upper], atol=1e-5 * scale)
    np.testing.assert_allclose(
        bf16[:, 1], reference[:, 1], atol=1e-5 * np.abs(reference[:, 1]).max()
    )


def test_numba_rounds_to_bf16_as_pytorch_does(rng):
    """The kernel's rounding (nearest, ties to even) gives PyTorch's bfloat16 bits, rolled too."""
    import torch

    from ccfkit.backends.numba import _round_to_bf16

    values = rng.gamma(2.0, 3.0, (6, 32)).astype(np.float32)
    values[0, :4] = [0, 1 + 2.0**-8, 1 + 3 * 2.0**-8, 3e38]  # 0, two ties (down, up), near max
    values[1, :3] = [2.0**-140, 1e-38, 123.456]  # subnormal, tiny
    left = np.empty(values.shape, np.uint16)
    right = np.empty(values.shape, np.uint16)
    expected = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy()
    _round_to_bf16(values, 5, left, right)
    np.testing.assert_array_equal(left, expected.view(np.uint16))
    np.testing.assert_array_equal(right, np.roll(left, -5, axis=-1))


@pytest.mark.usefixtures("bf16_hardware")
@pytest.mark.parametrize("name", ["numba1", "numba2"])
@pytest.mark.parametrize("delta", [0.0, 0.7])
def test_bf16_maps_of_several_blocks_per_thread(name, delta, rng):
    """Batches longer than a block (``_BF16_BLOCK``), a last block cut short, NaN pixels in a
    later block, each extra channel: the reference's bound, image by image."""
    from ccfkit.backends.numba import _BF16_BLOCK

    images = rng.poisson(30.0, (2 * _BF16_BLOCK + 3, 57, 61)).astype(np.float32)
    images[_BF16_BLOCK + 1, 10:14, 20:30] = np.nan
    common = dict(orders=(8, 2), delta=delta, scale="none", **GRID)
    reference = ccfkit.compute_maps(images, backend=NumpyBackend(), **common)
    bf16 = ccfkit.compute_maps(images, backend=backend_named(name), precision="bf16", **common)
    for fast, ref in zip(bf16, reference):
        assert 1e-6 < full_triangle_relative_error(fast[:1], ref[:1]) <= BF16_FULL_MAP
        np.testing.assert_allclose(fast[1], ref[1], atol=1e-5 * np.abs(ref[1]).max())
    empty = ccfkit.compute_maps(images[:0], backend=backend_named(name), precision="bf16",
                                **common)  # fmt: skip
    assert empty.shape == (0, 2, GRID["q_bins"], GRID["q_bins"])


@pytest.mark.usefixtures("bf16_hardware")
def test_the_stage_chain_takes_the_bf16_product_too(rng):
    """``Backend.merged_maps`` (the definition) gives the fused array path's bf16 maps."""
    from ccfkit.backends import Backend
    from ccfkit.ccf import MapSettings

    images = rng.poisson(30.0, (3, 57, 61)).astype(np.float32)
    plan = ccfkit.make_polar_plan(images.shape[1:], **GRID)
    backend = NumpyBackend(dtype=np.float32)
    settings = MapSettings(orders=(8, 2), scale="none", precision="bf16")
    fused = backend.merged_maps(images, plan, settings)
    chain = Backend.merged_maps(backend, images, plan, settings)
    float32 = Backend.merged_maps(backend, images, plan, MapSettings(orders=(8, 2), scale="none"))
    np.testing.assert_allclose(chain, fused, rtol=0, atol=1e-6 * np.abs(fused).max())
    assert full_triangle_relative_error(chain[:, 0], float32[:, 0]) > 1e-6  # bf16 did run


@pytest.mark.usefixtures("bf16_hardware")
def test_scaled_bf16_maps_stay_close_to_float32_maps(rng):
    """maxabs-scaled maps lie in [-1, 1]: bf16 moves an entry by at most twice the bound."""
    images = rng.poisson(30.0, (4, 57, 61)).astype(np.float32)
    float32 = ccfkit.compute_maps(images, backend="numba", **GRID)
    bf16 = ccfkit.compute_maps(images, backend="numba", precision="bf16", **GRID)
    assert np.max(np.abs(bf16 - float32)) <= 2 * BF16_FULL_MAP


def test_without_bf16_hardware_the_maps_are_float32_and_it_is_said(no_bf16_hardware, rng, caplog):
    images = rng.poisson(30.0, (3, 57, 61)).astype(np.float32)
    float32 = ccfkit.compute_maps(images, backend="numba", **GRID)
    asked = ccfkit.compute_maps(images, backend="numba", precision="bf16", **GRID)
    np.testing.assert_array_equal(asked, float32)
    assert ccfkit.backends.get_backend("numba").product_precision("bf16") is Precision.FLOAT32


@pytest.mark.parametrize("name", ["numpy32", "numba1"])
def test_bf16_emulated_rounds_on_any_hardware_as_bf16_does(monkeypatch, name, rng):
    monkeypatch.setattr(_bf16, "_bf16_missing", lambda device: True)
    images = rng.poisson(30.0, (3, 57, 61)).astype(np.float32)
    backend = make_cpu_backend(name)
    assert backend.product_precision("bf16-emulated") is Precision.BF16_EMULATED
    emulated = ccfkit.compute_maps(images, backend=backend, precision="bf16-emulated", **GRID)
    float32 = ccfkit.compute_maps(images, backend=backend, **GRID)
    assert 0 < np.max(np.abs(emulated - float32)) <= 2 * BF16_FULL_MAP
    monkeypatch.setattr(_bf16, "_bf16_missing", lambda device: False)
    hardware = ccfkit.compute_maps(images, backend=backend, precision="bf16", **GRID)
    np.testing.assert_array_equal(emulated, hardware)  # the same roundings, the same code


def test_the_missing_hardware_is_named_once(monkeypatch, caplog):
    monkeypatch.setattr(_bf16, "hardware_reason", lambda device: "no bf16 units in this test")
    _bf16._bf16_missing.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="ccfkit.backends._bf16"):
            for _ in range(3):
                assert _bf16.effective_precision("bf16", "cpu") is Precision.FLOAT32
        assert [r.getMessage() for r in caplog.records] == [
            "precision bf16 asked, but no bf16 units in this test: the product runs in float32"
        ]
        assert _bf16.effective_precision("float32", "cpu") is Precision.FLOAT32
    finally:
        _bf16._bf16_missing.cache_clear()


@pytest.mark.parametrize(
    "flags, available",
    [({"avx2", "fma"}, False), ({"avx2", "avx512_bf16"}, True), ({"amx_bf16", "amx_tile"}, True)],
)
def test_cpu_bf16_hardware_is_read_from_the_cpu_flags(monkeypatch, flags, available):
    monkeypatch.setattr(_bf16, "_cpu_flags", lambda: frozenset(flags))
    assert (_bf16.hardware_reason("cpu") is None) is available


@pytest.mark.cuda
@CUDA
def test_the_gpu_has_bf16_and_its_product_keeps_the_bound(rng):
    """On the GPU the product runs on tensor cores, with float32 output: within 2u."""
    import cupy

    assert _bf16.hardware_reason("cuda") is None
    rows = rng.gamma(2.0, 3.0, (4, 32, 128)).astype(np.float32)
    product = cupy.asnumpy(_bf16.lag_product_bf16(cupy.asarray(rows), 3, cupy))
    exact = lag_product(rows.astype(np.float64), 3)
    assert full_triangle_relative_error(np.tril(product), np.tril(exact)) <= 2 * 2.0**-8


def _build(*args):
    result = CliRunner().invoke(ccfkit_main, ["build", *map(str, args)])
    return result


def test_a_bf16_build_records_its_precision_and_resume_keeps_it(tmp_path, bf16_hardware, rng):
    frames = rng.poisson(20.0, (12, 41, 41)).astype(np.float32)
    cxi = write_cxi(tmp_path / "in.cxi", frames)
    common = ["--q-bins", "12", "--phi-bins", "32", "--chunk", "4", "--backend", "numba",
              "--quiet"]  # fmt: skip
    out = tmp_path / "bf16.zarr"
    result = _build(cxi, out, *common, "--precision", "bf16")
    assert result.exit_code == 0, result.output
    store = zarr.open_group(str(out), mode="r")
    assert store.attrs["parameters"]["precision"] == "bf16"
    float32 = ccfkit.compute_maps(frames, q_bins=12, phi_bins=32, orders=(2,),  # the build's
                                  min_ring_fraction=0.0, backend="numba")  # fmt: skip
    difference = np.abs(store["ccf"][:] - float32)
    assert 0 < difference.max() <= 2 * BF16_FULL_MAP
    # a finished bf16 store is not "resumed" into float32
    result = _build(cxi, out, *common, "--resume")
    assert result.exit_code != 0 and "was built with another" in result.output


def test_a_build_asking_bf16_without_the_hardware_records_float32(tmp_path, no_bf16_hardware, rng):
    frames = rng.poisson(20.0, (4, 41, 41)).astype(np.float32)
    cxi = write_cxi(tmp_path / "in.cxi", frames)
    out = tmp_path / "out.zarr"
    result = _build(cxi, out, "--q-bins", "12", "--phi-bins", "32", "--quiet", "--precision",
                    "bf16")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert zarr.open_group(str(out), mode="r").attrs["parameters"]["precision"] == "float32"
