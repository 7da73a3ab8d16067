"""Module stacks with a CrystFEL geometry (extra-geom), compressed HDF5, per-frame centres.

The oracle for module stacks is extra-geom's own assembly: the same frames
assembled by ``position_modules`` and built as plain images (``--center``
its centre, ``--mask`` its gaps) must give nearly the same maps; the pixel
grid of the assembly is snapped to whole pixels per tile, so the maps agree
to a correlation, not bit for bit.
"""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import zarr

from ccfkit.build_config import BuildConfig
from ccfkit.detector_geometry import DetectorGeometry, Tile, tiles_from_positions
from ccfkit.geometry import momentum_transfer
from ccfkit.io.source import InputError, open_source
from ccfkit.pipeline import build
from ccfkit.polar import make_polar_plan

extra_geom = pytest.importorskip("extra_geom")
hdf5plugin = pytest.importorskip("hdf5plugin")

#: AGIPD 1M quadrant positions (mm), as extra-geom's documentation gives them.
QUAD_POS = [(-525, 625), (-550, -10), (520, -160), (542.5, 475)]
STACK_PATH = "entry_1/data_1/data"
#: A small grid keeps the tests quick; the radial range is the same for both builds.
CONFIG = {"q_bins": 48, "phi_bins": 128, "r_min": 60.0, "r_max": 400.0, "min_ring_fraction": 0.3}


@pytest.fixture(scope="module")
def agipd(tmp_path_factory):
    """An AGIPD 1M geometry written by extra-geom, and 8 module-stacked frames."""
    folder = tmp_path_factory.mktemp("agipd")
    geometry = extra_geom.AGIPD_1MGeometry.from_quad_positions(quad_pos=QUAD_POS)
    geom_file = folder / "agipd.geom"
    geometry.write_crystfel_geom(str(geom_file), clen=0.7, photon_energy=9300.0)
    positions = geometry.get_pixel_positions()[..., :2] / geometry.pixel_size
    stack = speckle_frames(positions, n_frames=8, seed=1)
    return geometry, geom_file, stack


def speckle_frames(positions: np.ndarray, n_frames: int, seed: int) -> np.ndarray:
    """(n, modules, ss, fs) float32 far-field speckle of random real objects at ``positions``.

    ``|FFT(object)|^2`` of a real object is centro-symmetric (Friedel's law), as
    a diffraction pattern is; it is sampled at the pixel positions (pixels from
    the beam) by bilinear interpolation of a fine grid.
    """
    from scipy.ndimage import map_coordinates

    rng = np.random.default_rng(seed)
    side = 1536
    yy, xx = np.mgrid[:side, :side] - side // 2
    support = np.hypot(xx, yy) < 24
    frames = []
    for _ in range(n_frames):
        obj = np.where(support, rng.random((side, side)), 0.0)
        far = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(obj)))) ** 2
        far *= np.exp(-np.hypot(xx, yy) / 250.0)
        coords = [positions[..., 1].ravel() + side // 2, positions[..., 0].ravel() + side // 2]
        sampled = map_coordinates(far, coords, order=1, mode="constant")
        frames.append(sampled.reshape(positions.shape[:-1]))
    return np.asarray(frames, dtype=np.float32)


def write_frames(path, frames, **options):
    with h5py.File(path, "w") as handle:
        handle.create_dataset(STACK_PATH, data=frames, **options)
    return str(path)


def write_with_unknown_filter(path) -> str:
    """Frames stored through filter 32767, which no HDF5 plugin here provides."""
    with h5py.File(path, "w") as handle:
        handle.create_dataset(
            STACK_PATH, data=np.ones((2, 16, 16), np.float32), chunks=(1, 16, 16),
            compression=32767, allow_unknown_filter=True,
        )  # fmt: skip
    return str(path)


def maps_of(source, out, **options):
    config = BuildConfig.from_parameters({**CONFIG, **options.pop("config", {})})
    build(source, str(out), config, backend="numpy", progress=False, workers=1, **options)
    return zarr.open_group(str(out), mode="r")


def correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)])


def assembled(geometry, stack):
    """extra-geom's assembly: frames, the good-pixel mask (its gaps bad), the centre (x, y)."""
    images, centre = geometry.position_modules(stack)
    good = ~np.isnan(images[0])
    return np.nan_to_num(images).astype(np.float32), good, (float(centre[1]), float(centre[0]))


def assert_tiles_place_every_pixel(tiles, positions):
    """Every pixel of every tile lies where the tile's origin and steps put it."""
    covered = np.zeros(positions.shape[:-1], dtype=int)
    for tile in tiles:
        ss, fs = np.mgrid[: tile.ss_stop - tile.ss_start, : tile.fs_stop - tile.fs_start]
        placed = (
            np.asarray(tile.origin)
            + ss[..., None] * np.asarray(tile.ss_step)
            + fs[..., None] * np.asarray(tile.fs_step)
            + ((tile.ss_start + ss[..., None]) % 2) * np.asarray(tile.row_shift)
        )
        where = (
            tile.module,
            slice(tile.ss_start, tile.ss_stop),
            slice(tile.fs_start, tile.fs_stop),
        )
        np.testing.assert_allclose(placed, positions[where], atol=1e-6)
        covered[where] += 1
    assert (covered == 1).all()  # the tiles cover each pixel once


def test_tiles_found_from_pixel_positions_are_extra_geoms(agipd):
    geometry, _, _ = agipd
    positions = geometry.get_pixel_positions()[..., :2] / geometry.pixel_size
    tiles = tiles_from_positions(positions)
    assert len(tiles) == 16 * 8
    assert {(t.ss_stop - t.ss_start, t.fs_stop - t.fs_start) for t in tiles} == {(64, 128)}
    assert_tiles_place_every_pixel(tiles, positions)


def test_geometry_plan_samples_the_true_pixel_positions():
    """One tile placed at an offset, rotated: each sample's neighbours and weights are exact."""
    angle = 0.3
    ss_step = (-np.sin(angle), np.cos(angle))
    fs_step = (np.cos(angle), np.sin(angle))
    tile = Tile(0, 0, 40, 0, 50, (-20.0, -15.0), ss_step, fs_step)
    layout = DetectorGeometry(stack_shape=(1, 40, 50), tiles=(tile,))
    rng = np.random.default_rng(0)
    a_coef, b_coef, c_coef = rng.normal(size=3)

    def linear(x, y):  # bilinear interpolation reproduces a linear function exactly
        return a_coef * x + b_coef * y + c_coef

    ss, fs = np.mgrid[:40, :50]
    x = tile.origin[0] + ss * ss_step[0] + fs * fs_step[0]
    y = tile.origin[1] + ss * ss_step[1] + fs * fs_step[1]
    image = linear(x, y)
    plan = make_polar_plan(
        layout.shape, center=(3.0, 4.0), q_bins=8, phi_bins=16, r_max=12.0, pixels=layout
    )
    values = (plan.weight * image.ravel()[plan.index]).sum(axis=-1)
    px = 3.0 + plan.radius[:, None] * np.cos(plan.phi)
    py = 4.0 + plan.radius[:, None] * np.sin(plan.phi)
    assert plan.valid.all()
    np.testing.assert_allclose(values, linear(px, py), atol=1e-9)


def test_hexagonal_pixels_are_sampled_at_their_true_positions():
    """DSSC: odd rows half a pixel aside; a linear function is interpolated exactly."""
    geometry = DETECTOR_MAKERS["DSSC_1MGeometry"][0]()
    positions = geometry.get_pixel_positions()[..., :2] / geometry.pixel_size
    tiles = tiles_from_positions(positions)
    assert len(tiles) == 32
    for tile in tiles:  # half a pixel along fs
        np.testing.assert_allclose(np.abs(tile.row_shift), (0.5, 0.0), atol=1e-9)
        np.testing.assert_allclose(np.abs(tile.fs_step), (1.0, 0.0), atol=1e-9)
    assert_tiles_place_every_pixel(tiles, positions)
    layout = DetectorGeometry(stack_shape=(16, 128, 512), tiles=tiles)
    a_coef, b_coef, c_coef = np.random.default_rng(3).normal(size=3)
    image = a_coef * positions[..., 0] + b_coef * positions[..., 1] + c_coef
    plan = make_polar_plan(
        layout.shape, center=(0.0, 0.0), q_bins=32, phi_bins=128, r_min=100.0, r_max=400.0,
        pixels=layout,
    )  # fmt: skip
    values = (plan.weight * image.reshape(-1)[plan.index]).sum(axis=-1)
    px = plan.radius[:, None] * np.cos(plan.phi)
    py = plan.radius[:, None] * np.sin(plan.phi)
    expected = a_coef * px + b_coef * py + c_coef
    np.testing.assert_allclose(values[plan.valid], expected[plan.valid], atol=1e-9)
    assert plan.valid.mean() > 0.80  # measured 0.81; regular tiles of two rows gave 0.016


def test_stack_with_geometry_matches_extra_geoms_assembly(agipd, tmp_path):
    """On the command line: --geometry against --center its centre, --mask its gaps."""
    from click.testing import CliRunner

    from ccfkit.cli import main

    geometry, geom_file, stack = agipd
    stack_file = write_frames(tmp_path / "stack.h5", stack)
    source = open_source([stack_file], geometry=geom_file)
    assert source.frame_shape == (16 * 512, 128)
    assert source.center_origin.startswith("geometry origin")
    images, good, centre = assembled(geometry, stack)
    flat_file = write_frames(tmp_path / "assembled.h5", images)
    np.save(tmp_path / "gaps.npy", good)
    grid = ["--q-bins", "48", "--phi-bins", "128", "--r-min", "60", "--r-max", "400",
            "--min-ring-fraction", "0.3", "--quiet"]  # fmt: skip
    for arguments in (
        [stack_file, tmp_path / "stack.zarr", "--geometry", geom_file],
        [flat_file, tmp_path / "flat.zarr", "--center", "{},{}".format(*centre),
         "--mask", tmp_path / "gaps.npy"],
    ):  # fmt: skip
        result = CliRunner().invoke(main, ["build", *map(str, arguments), *grid])
        assert result.exit_code == 0, result.output
    stack_maps = zarr.open_group(str(tmp_path / "stack.zarr"), mode="r")
    flat_maps = zarr.open_group(str(tmp_path / "flat.zarr"), mode="r")
    assert stack_maps["ccf"].shape[0] == 8

    r = correlations(stack_maps["ccf"][:], flat_maps["ccf"][:])
    assert np.median(r) >= 0.99, r
    attrs = stack_maps.attrs.asdict()
    assert attrs["input"]["geometry"]["detector"] == "AGIPD_1MGeometry"
    assert attrs["input"]["geometry"]["text"] == geom_file.read_text()
    assert attrs["center"] == [0.0, 0.0]
    wavelength_nm = 1.239841984e-6 / 9300.0 * 1e9  # the geometry's photon energy and clen
    q = momentum_transfer(
        stack_maps["radius"][:], pixel_size=2e-4, distance=0.7, wavelength_nm=wavelength_nm
    )
    np.testing.assert_allclose(stack_maps["q"][:], q)


def test_bitshuffle_lz4_frames_give_the_same_maps_bit_for_bit(agipd, tmp_path):
    geometry, _, stack = agipd
    images, good, centre = assembled(geometry, stack[:3])
    plain = write_frames(tmp_path / "plain.h5", images)
    packed = write_frames(
        tmp_path / "packed.h5", images, chunks=(1, *images.shape[1:]),
        **hdf5plugin.Bitshuffle(cname="lz4"),
    )  # fmt: skip
    with h5py.File(packed, "r") as handle:  # really compressed
        assert handle[STACK_PATH].id.get_create_plist().get_nfilters() == 1
    results = []
    for name in (plain, packed):
        source = open_source([name], mask=good, mask_origin="gaps")
        results.append(maps_of(source, tmp_path / f"{len(results)}.zarr", center=centre))
    np.testing.assert_array_equal(results[0]["ccf"][:], results[1]["ccf"][:])
    assert results[0]["ccf"][:].any()


@pytest.mark.parametrize("compression", ["zstd", "lz4", "blosc"])
def test_other_hdf5plugin_filters_read(tmp_path, compression):
    frames = np.random.default_rng(2).random((3, 16, 16)).astype(np.float32)
    options = {
        "zstd": hdf5plugin.Zstd(),
        "lz4": hdf5plugin.LZ4(),
        "blosc": hdf5plugin.Blosc(cname="zstd"),
    }[compression]
    name = write_frames(tmp_path / "f.h5", frames, chunks=(1, 16, 16), **options)
    np.testing.assert_array_equal(open_source([name]).reader[0:3], frames)


def test_a_filter_nobody_provides_is_named_in_one_line(tmp_path):
    name = write_with_unknown_filter(tmp_path / "odd.h5")
    with pytest.raises(InputError, match="HDF5 filter 32767") as error:
        open_source([name])
    assert "\n" not in str(error.value)


def test_geometry_that_disagrees_with_the_data_is_refused(agipd, tmp_path):
    _, geom_file, stack = agipd
    eight_modules = write_frames(tmp_path / "eight.h5", stack[:2, :8])
    with pytest.raises(InputError, match="16 modules of 512 x 128 pixels.*8 modules"):
        open_source([eight_modules], geometry=geom_file)
    wrong_shape = write_frames(tmp_path / "shape.h5", stack[:2, :, :256])
    with pytest.raises(InputError, match="512 x 128.*16 modules of 256 x 128"):
        open_source([wrong_shape], geometry=geom_file)
    not_geometry = tmp_path / "not.geom"
    not_geometry.write_text("this is not a geometry\n")
    with pytest.raises(InputError, match="not.geom"):
        open_source([write_frames(tmp_path / "s.h5", stack[:1])], geometry=not_geometry)


def test_a_module_stack_without_geometry_is_refused(agipd, tmp_path):
    _, _, stack = agipd
    with pytest.raises(InputError, match="module stack.*--geometry"):
        open_source([write_frames(tmp_path / "s.h5", stack[:1])])


def test_each_frame_is_resampled_at_its_own_centre(tmp_path, caplog):
    """Jittered centres: the maps are those of each frame built alone at its centre."""
    rng = np.random.default_rng(3)
    frames = rng.random((5, 40, 40)).astype(np.float32)
    centres = np.array([[19.5, 19.5]]) + rng.normal(0, 1.8, size=(5, 2))
    centres[3] = centres[1]  # two frames share a centre (and a plan)
    name = tmp_path / "c.h5"
    with h5py.File(name, "w") as handle:
        handle[STACK_PATH] = frames
        handle["entry_1/instrument_1/detector_1/beam_center"] = centres
    grid = {"config": {"r_min": 2.0, "r_max": 12.0, "q_bins": 16, "phi_bins": 32}}
    source = dataclasses.replace(open_source([str(name)]), center_per_frame=True)
    together = maps_of(source, tmp_path / "all.zarr", chunk_frames=2, **grid)
    np.testing.assert_array_equal(together["frame_center"][:], centres)
    recorded = together.attrs["input"]["center_per_frame"]
    assert recorded["count"] == 5 and recorded["resampled_per_frame"]
    for k in range(5):
        alone = write_frames(tmp_path / f"{k}.h5", frames[k : k + 1])
        out = maps_of(
            open_source([alone]), tmp_path / f"{k}.zarr", center=tuple(centres[k]), **grid
        )
        np.testing.assert_array_equal(together["ccf"][k], out["ccf"][0])
    # by default every frame uses their mean, and the build says so in one line
    with caplog.at_level("WARNING"):
        mean = maps_of(open_source([str(name)]), tmp_path / "mean.zarr", **grid)
    assert "one beam centre per frame in the input: every frame uses their mean" in caplog.text
    assert "frame_center" not in mean
    assert mean.attrs["center"] == pytest.approx(centres.mean(axis=0).tolist())
    spread = np.hypot(*(centres - centres.mean(axis=0)).T)
    recorded = mean.attrs["input"]["center_per_frame"]
    assert recorded["max_px"] == pytest.approx(spread.max())
    assert not recorded["resampled_per_frame"]
    assert not np.array_equal(mean["ccf"][0], together["ccf"][0])


def test_centres_for_another_number_of_frames_are_refused(tmp_path):
    name = tmp_path / "c.h5"
    with h5py.File(name, "w") as handle:
        handle[STACK_PATH] = np.ones((3, 32, 32), np.float32)
        handle["entry_1/instrument_1/detector_1/beam_center"] = np.full((2, 2), 15.5)
    for center_use in ("agree", "per-frame"):  # refused as the file is opened
        with pytest.raises(InputError, match="c.h5 gives 2 beam centres for 3 frames"):
            open_source([str(name)], center_use=center_use)
    source = dataclasses.replace(  # and by the build, given such a source
        open_source([str(name)], center_use="ignore"),
        center=(15.5, 15.5),
        centers=np.full((2, 2), 15.5),
        center_per_frame=True,
    )
    with pytest.raises(InputError, match="2 beam centres for 3 frames"):
        maps_of(source, tmp_path / "c.zarr", config={"r_min": 1.0, "r_max": 10.0})
    assert not (tmp_path / "c.zarr").exists()


def test_bad_inputs_give_one_line_on_the_command_line_and_write_nothing(agipd, tmp_path):
    from click.testing import CliRunner

    from ccfkit.cli import main

    _, geom_file, stack = agipd
    odd = write_with_unknown_filter(tmp_path / "odd.h5")
    cases = {
        "HDF5 filter 32767": [odd],
        "describes 16 modules": [
            write_frames(tmp_path / "e.h5", stack[:1, :8]),
            "--geometry",
            geom_file,
        ],
        "give its geometry with --geometry": [write_frames(tmp_path / "s.h5", stack[:1])],
    }
    for message, arguments in cases.items():
        out = tmp_path / "out.zarr"
        result = CliRunner().invoke(main, ["build", *map(str, arguments), str(out)])
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not out.exists()


def test_center_per_frame_on_the_command_line(tmp_path):
    from click.testing import CliRunner

    from ccfkit.cli import main

    rng = np.random.default_rng(4)
    centres = 15.5 + rng.normal(0, 1.0, size=(3, 2))
    name = tmp_path / "c.h5"
    with h5py.File(name, "w") as handle:
        handle[STACK_PATH] = rng.random((3, 32, 32)).astype(np.float32)
        handle["entry_1/instrument_1/detector_1/beam_center"] = centres
    plain = write_frames(tmp_path / "plain.h5", np.ones((3, 32, 32), np.float32))
    grid = ["--r-min", "1", "--r-max", "10", "--q-bins", "8", "--phi-bins", "16", "--quiet"]
    for source, out in ((name, "per.zarr"), (plain, "none.zarr")):
        args = ["build", str(source), str(tmp_path / out), "--center", "per-frame", *grid]
        result = CliRunner().invoke(main, args)
        if source == name:
            assert result.exit_code == 0, result.output
            stored = zarr.open_group(str(tmp_path / out), mode="r")
            np.testing.assert_array_equal(stored["frame_center"][:], centres)
        else:
            assert result.exit_code == 1
            assert "gives no beam centre per frame" in result.output
            assert not (tmp_path / out).exists()


def test_resume_refuses_another_way_of_using_the_centres(tmp_path):
    from ccfkit.store import StoreError

    rng = np.random.default_rng(5)
    name = tmp_path / "c.h5"
    with h5py.File(name, "w") as handle:
        handle[STACK_PATH] = rng.random((3, 32, 32)).astype(np.float32)
        handle["entry_1/instrument_1/detector_1/beam_center"] = 15.5 + rng.normal(size=(3, 2))
    grid = {"config": {"r_min": 1.0, "r_max": 10.0, "q_bins": 8, "phi_bins": 16}}
    source = dataclasses.replace(open_source([str(name)]), center_per_frame=True)
    maps_of(source, tmp_path / "c.zarr", **grid)
    with pytest.raises(StoreError, match="center_per_frame differs"):
        maps_of(open_source([str(name)]), tmp_path / "c.zarr", resume=True, **grid)


#: Each of extra-geom's detector classes, made by its own constructor: (maker, tiles found).
DETECTOR_MAKERS = {
    "AGIPD_1MGeometry": (lambda: extra_geom.AGIPD_1MGeometry.from_quad_positions(QUAD_POS), 128),
    "AGIPD_500K2GGeometry": (lambda: extra_geom.AGIPD_500K2GGeometry.from_origin(), 64),
    "LPD_1MGeometry": (
        lambda: extra_geom.LPD_1MGeometry.from_quad_positions(
            [(11.4, 299), (-11.5, 8), (254.5, -16), (278.5, 275)]
        ),
        256,
    ),
    "DSSC_1MGeometry": (
        lambda: extra_geom.DSSC_1MGeometry.from_quad_positions(
            [(-124.1, 3.1), (-133.04, -110.2), (0.6, -117.98), (4.02, -5.58)]
        ),
        32,  # hexagonal pixels: odd rows half a pixel aside (row_shift)
    ),
    "JUNGFRAUGeometry": (
        lambda: extra_geom.JUNGFRAUGeometry.from_module_positions(
            offsets=[(-1100, -600), (-1100, 100), (100, -600), (100, 100)],
            orientations=[(-1, -1), (-1, -1), (1, 1), (1, 1)],
        ),
        32,
    ),
    "PNCCDGeometry": (lambda: extra_geom.PNCCDGeometry.from_relative_positions(), 2),
    "Epix100Geometry": (lambda: extra_geom.Epix100Geometry.from_origin(), 4),
    "Epix10KGeometry": (lambda: extra_geom.Epix10KGeometry.from_origin(), 4),
}


@pytest.mark.parametrize("name", list(DETECTOR_MAKERS))
def test_each_detector_class_reads_back_its_own_file_and_places_every_pixel(tmp_path, name):
    """extra-geom writes the detector's file; the rule finds its class and its pixel positions."""
    from ccfkit.io.geometry_file import load_geometry, read_geometry

    if not hasattr(extra_geom, name):
        pytest.skip(f"this extra-geom has no {name}")
    make, tiles = DETECTOR_MAKERS[name]
    geometry = make()
    path = tmp_path / f"{name}.geom"
    geometry.write_crystfel_geom(str(path))
    read = read_geometry(path)
    assert type(read).__name__ == name
    assert_same_positions(read, geometry)
    stack_shape = tuple(int(n) for n in read.expected_data_shape)
    stack_shape = stack_shape if len(stack_shape) == 3 else (1, *stack_shape)
    layout = load_geometry(path, stack_shape)
    assert layout.detector == name and len(layout.tiles) == tiles
    positions = geometry.get_pixel_positions()[..., :2] / geometry.pixel_size
    assert_tiles_place_every_pixel(layout.tiles, positions.reshape(*stack_shape, 2))


def assert_same_positions(read, made):
    """extra-geom's pixel positions (metres) of the geometry read back and of the one written."""
    np.testing.assert_allclose(read.get_pixel_positions(), made.get_pixel_positions(), atol=1e-12)


def generic_file(folder, modules, ss, fs, tiles=1, tile_vec=None, name="generic.geom"):
    """A generic geometry made and written by extra-geom: modules in a row along x, 0.5 mm gaps."""
    corners = [np.array([m * (fs * 75e-6 + 5e-4), -ss * 37e-6, 0.1]) for m in range(modules)]
    geometry = extra_geom.GenericGeometry.from_simple_description(
        75e-6, ss, fs, corner_coordinates=corners, n_tiles_per_module=tiles, tile_vec=tile_vec
    )
    path = folder / name
    geometry.write_crystfel_geom(str(path))
    return geometry, path


@pytest.mark.parametrize(
    "modules, ss, fs, tiles, tile_vec",
    [
        (1, 64, 64, 1, None),
        (1, 40, 96, 3, None),
        (2, 100, 80, 1, None),
        (2, 64, 48, 2, None),
        (2, 30, 20, 2, [0, 1, 0]),
        (4, 32, 48, 1, None),
        (4, 512, 256, 1, None),
    ],
)
def test_generic_geometries_extra_geom_wrote_read_back(tmp_path, modules, ss, fs, tiles, tile_vec):
    """1, 2 and 4 modules of several shapes: the generic geometry, pixel for pixel."""
    from ccfkit.io.geometry_file import load_geometry, read_geometry

    geometry, path = generic_file(tmp_path, modules, ss, fs, tiles, tile_vec)
    read = read_geometry(path)
    assert type(read).__name__ == "GenericGeometry"
    assert tuple(read.expected_data_shape) == tuple(geometry.expected_data_shape)
    assert_same_positions(read, geometry)
    assert read.pixel_size == pytest.approx(75e-6)
    stack_shape = tuple(int(n) for n in geometry.expected_data_shape)
    layout = load_geometry(path, stack_shape)
    assert layout.detector == "GenericGeometry" and len(layout.tiles) == modules * tiles
    positions = geometry.get_pixel_positions()[..., :2] / geometry.pixel_size
    assert_tiles_place_every_pixel(layout.tiles, positions)
    wrong = (modules + 1, *stack_shape[1:])
    with pytest.raises(InputError, match=f"describes {modules} module.*GenericGeometry"):
        load_geometry(path, wrong)


def test_files_of_two_dimensional_data_are_split_into_the_datas_modules(tmp_path):
    """Modules one under the other along ss (``dims=(frame, ss, fs)``): split as the data are."""
    from ccfkit.io.geometry_file import load_geometry, read_geometry

    agipd = extra_geom.AGIPD_1MGeometry.from_quad_positions(QUAD_POS)
    agipd.write_crystfel_geom(str(tmp_path / "agipd.geom"), dims=("frame", "ss", "fs"))
    assert load_geometry(tmp_path / "agipd.geom", (16, 512, 128)).detector == "AGIPD_1MGeometry"
    generic, _ = generic_file(tmp_path, 2, 50, 60)
    generic.write_crystfel_geom(str(tmp_path / "flat.geom"), dims=("frame", "ss", "fs"))
    alone = read_geometry(tmp_path / "flat.geom")  # no data: one module of 100 x 60
    assert type(alone).__name__ == "GenericGeometry" and alone.expected_data_shape == (1, 100, 60)
    split = read_geometry(tmp_path / "flat.geom", (2, 50, 60))
    assert_same_positions(split, generic)
    assert len(load_geometry(tmp_path / "flat.geom", (2, 50, 60)).tiles) == 2


def test_a_class_that_reads_panels_of_another_size_is_not_chosen(tmp_path):
    """Two panels of 100 x 80: pnCCD's reader takes them into its 512 x 1024 modules; generic."""
    from ccfkit.io.geometry_file import read_geometry

    _, small = generic_file(tmp_path, 2, 100, 80, name="small.geom")
    assert extra_geom.PNCCDGeometry.from_crystfel_geom(str(small)).expected_data_shape[1] == 512
    assert type(read_geometry(small)).__name__ == "GenericGeometry"
    # two panels of pnCCD's own size and layout fit pnCCD exactly: it is chosen
    _, halves = generic_file(tmp_path, 2, 512, 1024, name="halves.geom")
    assert type(read_geometry(halves)).__name__ == "PNCCDGeometry"


def test_a_file_that_fits_no_class_nor_the_generic_geometry_is_refused(tmp_path):
    """Panels of two sizes in one module: one line naming why, on the command line too."""
    from click.testing import CliRunner

    from ccfkit.cli import main
    from ccfkit.io.geometry_file import read_geometry

    _, path = generic_file(tmp_path, 1, 64, 64, tiles=2, name="odd.geom")
    text = path.read_text().replace("p0a1/max_fs = 63", "p0a1/max_fs = 31")
    path.write_text(text)
    with pytest.raises(InputError, match="nor its generic geometry: panels of 2 sizes") as error:
        read_geometry(path)
    assert "\n" not in str(error.value)
    frames = write_frames(tmp_path / "s.h5", np.ones((1, 1, 128, 64), np.float32))
    out = tmp_path / "out.zarr"
    for arguments in (
        ["build", frames, str(out), "--geometry", str(path)],
        ["simulate", str(tmp_path / "sim.h5"), "--n", "1", "--geometry", str(path)],
    ):
        result = CliRunner().invoke(main, arguments)
        assert result.exit_code == 1, result.output
        assert "nor its generic geometry" in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "sim.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.geom", "s.h5"]


def test_show_refuses_a_store_of_module_stacks_in_one_line(agipd, tmp_path):
    from click.testing import CliRunner

    from ccfkit.cli import main

    _, geom_file, stack = agipd
    source = open_source([write_frames(tmp_path / "s.h5", stack[:1])], geometry=geom_file)
    maps_of(source, tmp_path / "s.zarr")
    result = CliRunner().invoke(main, ["show", str(tmp_path / "s.zarr"), "-o", "x.png"])
    assert result.exit_code == 1
    assert "module stacks (AGIPD_1MGeometry)" in result.output


@pytest.mark.parametrize(("clen", "coffset"), [(0.1, 0.0), (0.1, 0.05), (0.7, -0.02)])
def test_the_distance_is_the_camera_length_plus_its_offset(tmp_path, clen, coffset):
    from ccfkit.io.geometry_file import load_geometry

    geom = tmp_path / "one.geom"
    geom.write_text(
        f"photon_energy = 9300\nclen = {clen}\ncoffset = {coffset}\nres = 10000\n"
        "adu_per_eV = 1\n\np0/min_fs = 0\np0/max_fs = 63\np0/min_ss = 0\np0/max_ss = 63\n"
        "p0/fs = +1.0x\np0/ss = +1.0y\np0/corner_x = -32\np0/corner_y = -32\n"
    )
    assert load_geometry(geom, (1, 64, 64)).distance == pytest.approx(clen + coffset)


def test_a_distance_read_from_the_data_files_is_not_taken_from_the_geometry(tmp_path):
    from ccfkit.io.geometry_file import load_geometry

    geom = tmp_path / "one.geom"
    geom.write_text(
        "photon_energy = 9300\nclen = /LPD/detector_distance\ncoffset = 0.1\nres = 10000\n"
        "adu_per_eV = 1\n\np0/min_fs = 0\np0/max_fs = 63\np0/min_ss = 0\np0/max_ss = 63\n"
        "p0/fs = +1.0x\np0/ss = +1.0y\np0/corner_x = -32\np0/corner_y = -32\n"
    )
    assert load_geometry(geom, (1, 64, 64)).distance is None
