"""Simulated module stacks (``ccfkit simulate --geometry``) against the flat simulator.

The oracle is the flat detector's own rendering
(:func:`ccfkit.simulate.expected_counts`, NumPy reference) of the same
particles: the stack, built with its geometry, and the flat frames, built
with the geometry's gaps as their mask, must give nearly the same maps (the
stack samples the pattern at the modules' true pixel positions, the flat
frame on its own grid, so they agree to a correlation, not bit for bit).
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from ccfkit.build_config import BuildConfig
from ccfkit.io.source import open_source
from ccfkit.pipeline import build
from ccfkit.simulate import SimulationConfig, draw_parameters, expected_counts

extra_geom = pytest.importorskip("extra_geom")

#: A flat detector that holds the whole AGIPD 1M (pixels from -630 to 625 of its middle).
SIDE = 1300
GRID = {"q_bins": 48, "phi_bins": 128, "r_min": 60.0, "r_max": 400.0, "min_ring_fraction": 0.3}


def maps(source, out, **options):
    config = BuildConfig.from_parameters(GRID)
    build(source, str(out), config, backend="numpy", progress=False, workers=1, **options)
    return zarr.open_group(str(out), mode="r")["ccf"][:]


def test_an_agipd_stack_gives_the_maps_of_the_same_particles_simulated_flat(tmp_path):
    from ccfkit.simulate.stack import write_simulated_stack

    # no halo or background: the particle's pattern alone, whose scale the maps do not see
    config = SimulationConfig(size=SIDE, noise=False, halo=(0, 0), background=0.0, jitter=0.0)
    report = write_simulated_stack(tmp_path / "agipd.h5", config, 6, 3, "agipd")
    assert report["stack_shape"] == (16, 512, 128)
    geom = tmp_path / "agipd.geom"
    assert geom.is_file()
    stack = open_source([tmp_path / "agipd.h5"], geometry=geom)
    assert stack.pixels.detector == "AGIPD_1MGeometry"

    params = draw_parameters(config, 3, np.arange(6))
    flat = expected_counts(params, config, np.ones((SIDE, SIDE), bool), engine="numpy")
    middle = (SIDE - 1) / 2
    y, x = np.mgrid[:SIDE, :SIDE] - middle
    *_, inside = stack.pixels._tile_coordinates(x.ravel(), y.ravel())
    gaps_masked = inside.reshape(SIDE, SIDE)
    with h5py.File(tmp_path / "flat.h5", "w") as handle:
        handle["entry_1/data_1/data"] = flat
    flat_source = open_source([tmp_path / "flat.h5"], mask=gaps_masked, mask_origin="gaps")

    on_stack = maps(stack, tmp_path / "stack.zarr")
    on_flat = maps(flat_source, tmp_path / "flat.zarr", center=(middle, middle))
    a, b = on_stack.reshape(6, -1), on_flat.reshape(6, -1)
    correlation = np.array([np.corrcoef(p, q)[0, 1] for p, q in zip(a, b)])
    print("correlations, stack against flat:", np.round(correlation, 5))
    assert np.median(correlation) >= 0.99, correlation
    # the particles' labels are the flat simulation's
    with h5py.File(tmp_path / "agipd.h5", "r") as handle:
        assert handle["entry_1/data_1/data"].shape == (6, 16, 512, 128)
        assert handle["entry_1/labels"].shape[0] == 6


def test_simulate_writes_the_stack_and_its_geometry_and_touches_nothing_else(tmp_path):
    from ccfkit.cli import main

    out = tmp_path / "pnccd.h5"
    args = ["simulate", str(out), "--n", "2", "--geometry", "pnccd", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as handle:
        assert handle["entry_1/data_1/data"].shape == (2, 2, 512, 1024)
    source = open_source([out], geometry=tmp_path / "pnccd.geom")  # read as the build reads it
    assert source.pixels.detector == "PNCCDGeometry" and source.n_frames == 2
    # a different file where the geometry would go is not replaced, and nothing is written
    other = tmp_path / "other.h5"
    (tmp_path / "other.geom").write_text("mine\n")
    result = CliRunner().invoke(main, ["simulate", str(other), "--n", "1", "--geometry", "agipd"])
    assert result.exit_code == 1 and "exists with other content" in result.output
    assert (tmp_path / "other.geom").read_text() == "mine\n" and not other.exists()
    result = CliRunner().invoke(main, ["simulate", str(other), "--geometry", "lpd2"])
    assert result.exit_code == 1 and "nor a built-in detector" in result.output


def test_a_generic_two_panel_file_round_trips_simulate_to_build(tmp_path):
    """simulate --geometry FILE, build --geometry FILE: a 2-panel generic file stays generic.

    Two modules of 200 x 400 pixels (ss along x, fs along y), 20 pixels apart
    around the beam: read as pnCCD, its 512 x 1024 modules would be simulated.
    The maps of the stack are compared with those of the same frames assembled
    by extra-geom (``position_modules``; ``--center`` its centre, ``--mask``
    its gaps).
    """
    from ccfkit.cli import main
    from ccfkit.cli_inputs import open_frames
    from ccfkit.io.geometry_file import assemble

    pixel = 75e-6
    corners = [np.array([-210.0, -200.0, 0.0]) * pixel, np.array([10.0, -200.0, 0.0]) * pixel]
    geometry = extra_geom.GenericGeometry.from_simple_description(
        pixel, 200, 400, corner_coordinates=corners
    )
    geom = tmp_path / "two.geom"
    geometry.write_crystfel_geom(str(geom))
    out = tmp_path / "two.h5"
    simulate = ["simulate", str(out), "--n", "6", "--seed", "3", "--geometry", str(geom),
                "--no-noise", "--background", "0", "--jitter", "0", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(main, simulate)
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as handle:
        stack = handle["entry_1/data_1/data"][:]
    assert stack.shape == (6, 2, 200, 400)
    # the predict's reader (trainer predict --geometry) chooses by the same rule
    pixels = open_frames([str(out)], geometry=str(geom)).pixels
    assert pixels.detector == "GenericGeometry"

    images, centre = geometry.position_modules(stack)
    # the galleries' assembly (by the class the rule chose) is extra-geom's own
    np.testing.assert_array_equal(assemble(pixels, stack.reshape(6, 400, 400)), images)
    good = ~np.isnan(images[0])
    with h5py.File(tmp_path / "flat.h5", "w") as handle:
        handle["entry_1/data_1/data"] = np.nan_to_num(images).astype(np.float32)
    np.save(tmp_path / "gaps.npy", good)
    grid = ["--q-bins", "32", "--phi-bins", "128", "--r-min", "30", "--r-max", "180",
            "--min-ring-fraction", "0.3", "--quiet"]  # fmt: skip
    for arguments in (
        [out, tmp_path / "stack.zarr", "--geometry", geom],
        [tmp_path / "flat.h5", tmp_path / "flat.zarr", "--center",
         f"{centre[1]},{centre[0]}", "--mask", tmp_path / "gaps.npy"],
    ):  # fmt: skip
        result = CliRunner().invoke(main, ["build", *map(str, arguments), *grid])
        assert result.exit_code == 0, result.output
    on_stack = zarr.open_group(str(tmp_path / "stack.zarr"), mode="r")
    on_flat = zarr.open_group(str(tmp_path / "flat.zarr"), mode="r")
    assert on_stack.attrs["input"]["geometry"]["detector"] == "GenericGeometry"
    a = on_stack["ccf"][:].reshape(6, -1)
    b = on_flat["ccf"][:].reshape(6, -1)
    correlation = np.array([np.corrcoef(p, q)[0, 1] for p, q in zip(a, b)])
    print("correlations, stack against extra-geom's assembly:", np.round(correlation, 5))
    assert np.median(correlation) >= 0.99, correlation
    assert (correlation >= 0.995).all(), correlation  # measured 0.997-0.9995


@pytest.mark.parametrize("name", ["agipd", "jungfrau", "pnccd"])
def test_each_built_in_detectors_file_reads_back_as_its_class(tmp_path, name):
    """The file a built-in detector writes is read by its own class, at the simulated pixels."""
    from ccfkit.io.geometry_file import read_geometry
    from ccfkit.simulate.stack import DETECTORS, detector_geometry

    positions, path, text, _ = detector_geometry(name, tmp_path / "s.h5", SimulationConfig())
    path.write_text(text)
    read = read_geometry(path)
    assert type(read).__name__ == DETECTORS[name][0]
    expected = read.get_pixel_positions()[..., :2] / read.pixel_size
    np.testing.assert_allclose(positions, expected.reshape(positions.shape), atol=1e-9)
