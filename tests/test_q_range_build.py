"""Rings placed in momentum transfer through the build (docs/ccf.md, "Rings in momentum
transfer"; docs/store-layout.md, ``q``): the option, the store's axis, its recipe, resume."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from conftest import grid, write_cxi

import ccfkit
from ccfkit.cli import main
from ccfkit.geometry import ScatteringGeometry
from ccfkit.store import read_recipe

SIZE = 49
CENTER = (24.5, 23.0)
ARGS = ["--center", f"{CENTER[0]},{CENTER[1]}", "--q-bins", "16", "--phi-bins", "32",
        "--chunk", "4", "--quiet"]  # fmt: skip
#: The input's geometry: 40 nm, 65 mm, 1 mm pixels (2 theta = 20 degrees at 24 px).
WAVELENGTH_M, DISTANCE, PIXEL = 40e-9, 0.065, 1e-3
Q_RANGE = (0.015, 0.05)  # 1/nm: from outside the 4 px hole to inside the detector's edge
#: The build's default map besides the grid (docs/ccf.md, "Defaults"), for the library's reference.
BUILD_MAP = {"orders": (2,), "min_ring_fraction": 0.0}


@pytest.fixture(scope="module")
def frames():
    """Eight frames of rings with 0..7-fold angular structure, Poisson counts."""
    r, phi = grid((SIZE, SIZE), CENTER)
    clean = [50 * np.exp(-r / 12) * (1.2 + np.cos(r / 2) * np.cos(m * phi)) for m in range(8)]
    return np.random.default_rng(11).poisson(np.array(clean)).astype(np.float32)


def _cxi(path, frames, geometry=True):
    hole = grid((SIZE, SIZE), CENTER)[0] < 4
    write_cxi(path, frames, bitmask=np.where(hole, 128, 0).astype(np.uint16))
    if geometry:
        with h5py.File(path, "a") as handle:
            handle["entry_1/instrument_1/source_1/wavelength"] = WAVELENGTH_M
            handle["entry_1/instrument_1/detector_1/distance"] = DISTANCE
            handle["entry_1/instrument_1/detector_1/x_pixel_size"] = PIXEL
    return path, ~hole


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_a_build_in_momentum_transfer_stores_its_axis_its_recipe_and_the_maps(tmp_path, frames):
    path, good = _cxi(tmp_path / "geo.cxi", frames)
    out = tmp_path / "q.zarr"
    result = run("build", path, out, *ARGS, "--q-range", *Q_RANGE, "--backend", "numpy")
    assert result.exit_code == 0, result.output
    store = zarr.open_group(str(out), mode="r")
    step = (Q_RANGE[1] - Q_RANGE[0]) / 16
    np.testing.assert_allclose(store["q"][:], Q_RANGE[0] + (np.arange(16) + 0.5) * step,
                               rtol=1e-12)  # fmt: skip
    assert dict(store["q"].attrs) == {"units": "1/nm", "ring_axis": "q"}
    assert store.attrs["parameters"]["q_range"] == list(Q_RANGE)
    recipe = read_recipe(out)
    assert recipe.grid.q_range == Q_RANGE and recipe.grid.ring_axis == "q"
    assert recipe.resolved_grid == recipe.grid  # its radii follow from each detector
    scattering = ScatteringGeometry(PIXEL, DISTANCE, WAVELENGTH_M * 1e9)
    assert recipe.scattering == scattering  # read from the store's input
    np.testing.assert_allclose(store["radius"][:], scattering.radius(store["q"][:]), rtol=1e-12)
    expected = ccfkit.compute_maps(
        frames, center=CENTER, mask=good, q_bins=16, phi_bins=32, q_range=Q_RANGE,
        scattering=scattering, backend="numpy", **BUILD_MAP,
    )  # fmt: skip
    np.testing.assert_allclose(store["ccf"][:], expected, rtol=0, atol=1e-5)


def test_a_build_in_pixels_says_so_on_its_q_axis(tmp_path, frames):
    path, _ = _cxi(tmp_path / "geo.cxi", frames)
    out = tmp_path / "r.zarr"
    assert run("build", path, out, *ARGS).exit_code == 0
    store = zarr.open_group(str(out), mode="r")
    assert store["q"].attrs["ring_axis"] == "radius"
    assert store.attrs["parameters"]["q_range"] is None
    assert read_recipe(out).grid.ring_axis == "radius"
    # a store written before q_range existed reads as rings in pixels
    old = zarr.open_group(str(out), mode="r+")
    parameters = dict(old.attrs["parameters"])
    del parameters["q_range"]
    old.attrs["parameters"] = parameters
    assert read_recipe(out).grid.q_range is None


def test_q_range_without_the_geometry_is_refused_in_one_line(tmp_path, frames):
    path, _ = _cxi(tmp_path / "plain.cxi", frames, geometry=False)
    out = tmp_path / "q.zarr"
    result = run("build", path, out, *ARGS, "--q-range", *Q_RANGE)
    assert result.exit_code != 0 and not out.exists()
    message = result.output.strip()
    assert "\n" not in message and "Traceback" not in message
    for missing in ("detector distance", "pixel size", "wavelength"):
        assert missing in message


@pytest.mark.parametrize("pixels", [["--r-max", "20"], ["--r-min", "auto"], ["--r-min", "3"]])
def test_q_range_and_a_pixel_range_exclude_each_other(tmp_path, frames, pixels):
    path, _ = _cxi(tmp_path / "geo.cxi", frames)
    result = run("build", path, tmp_path / "q.zarr", *ARGS, "--q-range", *Q_RANGE, *pixels)
    assert result.exit_code != 0 and "give --q-range or --r-" in result.output


def test_resume_refuses_another_q_range(tmp_path, frames):
    path, _ = _cxi(tmp_path / "geo.cxi", frames)
    out = tmp_path / "q.zarr"
    assert run("build", path, out, *ARGS, "--q-range", *Q_RANGE).exit_code == 0
    result = run("build", path, out, *ARGS, "--q-range", 0.02, 0.05, "--resume")
    assert result.exit_code != 0 and "built with another q_range (" in result.output
    result = run("build", path, out, *ARGS, "--resume")  # in pixels now
    assert result.exit_code != 0 and "q_range" in result.output
    assert run("build", path, out, *ARGS, "--q-range", *Q_RANGE, "--resume").exit_code == 0


def test_each_frame_at_its_own_centre_keeps_the_rings_in_momentum_transfer(tmp_path, frames):
    """--center per-frame: every frame's plan is the q grid moved to its centre."""
    path, good = _cxi(tmp_path / "geo.cxi", frames)
    centres = np.array(CENTER) + np.random.default_rng(2).normal(0, 0.7, (len(frames), 2))
    with h5py.File(path, "a") as handle:
        handle["entry_1/instrument_1/detector_1/beam_center"] = centres
    out = tmp_path / "q.zarr"
    per_frame = [a for a in ARGS if a not in ("--center", f"{CENTER[0]},{CENTER[1]}")]
    result = run("build", path, out, *per_frame, "--center", "per-frame", "--q-range", *Q_RANGE,
                 "--backend", "numpy")  # fmt: skip
    assert result.exit_code == 0, result.output
    store = zarr.open_group(str(out), mode="r")
    scattering = ScatteringGeometry(PIXEL, DISTANCE, WAVELENGTH_M * 1e9)
    expected = [
        ccfkit.compute_maps(frame, center=tuple(centre), mask=good, q_bins=16, phi_bins=32,
                            q_range=Q_RANGE, scattering=scattering, backend="numpy", **BUILD_MAP)
        for frame, centre in zip(frames, centres)
    ]  # fmt: skip
    np.testing.assert_allclose(store["ccf"][:], np.array(expected), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(store["frame_center"][:], centres)
    assert store["q"].attrs["ring_axis"] == "q"


def test_a_study_table_or_recipe_reads_q_range_as_the_build_option_does():
    from ccfkit.build_config import BuildConfig

    config = BuildConfig.from_parameters({"q_range": [0.1, 0.4]})  # TOML/JSON give lists
    assert config.grid.q_range == (0.1, 0.4) and config.grid.ring_axis == "q"
    assert config.grid.r_min == 0.0  # the radii follow from q_range
    with pytest.raises(ccfkit.io.source.InputError, match="not both"):
        BuildConfig.from_parameters({"q_range": [0.1, 0.4], "r_max": 30.0})
