"""Rings in momentum transfer at each frame's own wavelength and distance (docs/ccf.md, "One
geometry per input"; ccfkit/frame_geometry.py): grouped plans against each frame alone, one
particle at two wavelengths and distances, the store's record, bad per-frame values."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from conftest import grid, write_cxi

import ccfkit
from ccfkit.cli import main
from ccfkit.frame_geometry import (
    GEOMETRY_TOLERANCE,
    group_geometries,
    ring_momentum_transfer,
)
from ccfkit.geometry import ScatteringGeometry, momentum_transfer

SIZE = 49
CENTER = (24.5, 23.0)
#: The map, named (the build's defaults may change): as compute_maps with MAP.
ARGS = ["--center", f"{CENTER[0]},{CENTER[1]}", "--q-bins", "16", "--phi-bins", "32",
        "--orders", "2", "--min-ring-fraction", "0", "--chunk", "4", "--quiet", "--backend",
        "numpy"]  # fmt: skip
MAP = {"q_bins": 16, "phi_bins": 32, "orders": (2,), "min_ring_fraction": 0.0}
DISTANCE, PIXEL = 0.065, 1e-3
Q_RANGE = (0.015, 0.05)
WAVELENGTH_PATH = "entry_1/instrument_1/source_1/wavelength"
DISTANCE_PATH = "entry_1/instrument_1/detector_1/distance"
#: Per frame, nm: two pairs 2e-5 apart (one group each), the rest far apart.
WAVELENGTHS_NM = np.array([36.0, 36.00072, 38.0, 40.0, 40.0008, 41.0, 42.0, 44.0])


@pytest.fixture(scope="module")
def frames():
    """Eight frames of rings with 0..7-fold angular structure, Poisson counts."""
    r, phi = grid((SIZE, SIZE), CENTER)
    clean = [50 * np.exp(-r / 12) * (1.2 + np.cos(r / 2) * np.cos(m * phi)) for m in range(8)]
    return np.random.default_rng(11).poisson(np.array(clean)).astype(np.float32)


def _cxi(path, frames, wavelength_m, distance=DISTANCE):
    hole = grid((SIZE, SIZE), CENTER)[0] < 4
    write_cxi(path, frames, bitmask=np.where(hole, 128, 0).astype(np.uint16))
    with h5py.File(path, "a") as handle:
        handle[WAVELENGTH_PATH] = wavelength_m
        handle[DISTANCE_PATH] = distance
        handle["entry_1/instrument_1/detector_1/x_pixel_size"] = PIXEL
    return path, ~hole


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _alone(frame, good, wavelength_nm, distance=DISTANCE):
    """The maps of one frame built alone, its rings placed with its own geometry."""
    return ccfkit.compute_maps(
        frame, center=CENTER, mask=good, q_range=Q_RANGE, backend="numpy", **MAP,
        scattering=ScatteringGeometry(PIXEL, distance, wavelength_nm),
    )  # fmt: skip


def test_frames_of_several_wavelengths_give_the_maps_of_each_frame_alone(tmp_path, frames, caplog):
    """Each frame's rings at its own wavelength: the maps of building it alone with it.

    Frames grouped with another (2e-5 apart) are mapped with their group's
    middle frame's wavelength: their rings lie within the measured
    ``max_q_error`` (2e-5) of their q, and their maps within 1e-3 of each
    frame's alone (measured 5.5e-4 and 3.4e-4: Poisson frames of ~50 counts
    are rough from pixel to pixel, so a ring moved by 5e-4 px changes its
    samples that much); the others are their group's middle frame, exact
    (1e-5, float32).
    """
    path, good = _cxi(tmp_path / "geo.cxi", frames, WAVELENGTHS_NM * 1e-9)
    out = tmp_path / "q.zarr"
    result = run("build", path, out, *ARGS, "--q-range", *Q_RANGE)
    assert result.exit_code == 0, result.output
    lines = [r.getMessage() for r in caplog.records if "geometry groups" in r.getMessage()]
    assert len(lines) == 1 and "8 frames in 6 geometry groups" in lines[0]
    store = zarr.open_group(str(out), mode="r")
    record = store.attrs["q_placement"]
    assert record["placement"] == "per-frame" and record["groups"] == 6
    assert record["tolerance"] == GEOMETRY_TOLERANCE and record["plans"] == 3 + 4  # chunks of 4
    assert 0 < record["max_q_error"] < GEOMETRY_TOLERANCE
    table = store["frame_geometry"][:]
    np.testing.assert_allclose(table[:, 0], WAVELENGTHS_NM, rtol=1e-12)
    np.testing.assert_allclose(table[:, 1], DISTANCE, rtol=1e-12)
    np.testing.assert_array_equal(table[:, 2], [0, 0, 1, 2, 2, 3, 4, 5])
    alone = np.array([_alone(f, good, w) for f, w in zip(frames, WAVELENGTHS_NM)])
    single = [2, 5, 6, 7]
    np.testing.assert_allclose(store["ccf"][:][single], alone[single], rtol=0, atol=1e-5)
    assert np.abs(store["ccf"][:] - alone).max() <= 1e-3
    # the store's q and radii are those of the mean wavelength, as a build of one geometry's
    mean = ScatteringGeometry(PIXEL, DISTANCE, WAVELENGTHS_NM.mean())
    np.testing.assert_allclose(store["radius"][:], mean.radius(store["q"][:]), rtol=1e-12)


def test_the_mean_placement_is_one_option_away_and_says_how_far_off_it_is(tmp_path, frames,
                                                                          caplog):  # fmt: skip
    path, good = _cxi(tmp_path / "geo.cxi", frames, WAVELENGTHS_NM * 1e-9)
    out = tmp_path / "mean.zarr"
    result = run("build", path, out, *ARGS, "--q-range", *Q_RANGE, "--q-placement", "mean")
    assert result.exit_code == 0, result.output
    lines = [r.getMessage() for r in caplog.records if "--q-placement mean" in r.getMessage()]
    assert len(lines) == 1 and "up to about 11.0 %" in lines[0]
    store = zarr.open_group(str(out), mode="r")
    assert store.attrs["q_placement"] == {"placement": "mean"}
    assert "frame_geometry" not in store
    mean = WAVELENGTHS_NM.mean()
    expected = np.array([_alone(frame, good, mean) for frame in frames])
    np.testing.assert_allclose(store["ccf"][:], expected, rtol=0, atol=1e-5)
    # --force no longer changes where the rings lie: each frame at its own
    forced = tmp_path / "forced.zarr"
    assert run("build", path, forced, *ARGS, "--q-range", *Q_RANGE, "--force").exit_code == 0
    assert zarr.open_group(str(forced), mode="r").attrs["q_placement"]["placement"] == "per-frame"


def test_frames_of_several_distances_each_at_its_own_with_its_own_centre(tmp_path, frames):
    """Distance per frame and ``--center per-frame``: each frame's own plan for both."""
    distances = np.linspace(0.06, 0.07, len(frames))
    centres = np.array(CENTER) + np.random.default_rng(2).normal(0, 0.7, (len(frames), 2))
    path, good = _cxi(tmp_path / "geo.cxi", frames, 40e-9, distances)
    with h5py.File(path, "a") as handle:
        handle["entry_1/instrument_1/detector_1/beam_center"] = centres
    out = tmp_path / "q.zarr"
    options = [a for a in ARGS if a not in ("--center", f"{CENTER[0]},{CENTER[1]}")]
    result = run("build", path, out, *options, "--center", "per-frame", "--q-range", *Q_RANGE)
    assert result.exit_code == 0, result.output
    store = zarr.open_group(str(out), mode="r")
    expected = [
        ccfkit.compute_maps(frame, center=tuple(centre), mask=good, q_range=Q_RANGE, **MAP,
                            scattering=ScatteringGeometry(PIXEL, d, 40.0), backend="numpy")
        for frame, centre, d in zip(frames, centres, distances)
    ]  # fmt: skip
    np.testing.assert_allclose(store["ccf"][:], np.array(expected), rtol=0, atol=1e-5)
    np.testing.assert_allclose(store["frame_geometry"][:, 1], distances, rtol=1e-12)


def test_groups_keep_every_frames_rings_within_the_tolerance_of_their_q():
    """Continuous draws (the simulator's 19-35 eV and a distance per frame): every frame's
    rings, placed with its group's geometry, see their q within ``tolerance`` (measured
    independently here, ring by ring), and the groups are far fewer than the frames."""
    rng = np.random.default_rng(0)
    n, pixel = 3000, 75e-6
    wavelength_nm = 1239.84198 / rng.uniform(19, 35, n)
    distance = rng.uniform(0.05, 0.06, n)
    q = ring_momentum_transfer((0.01, 0.09), 64)
    for tolerance in (1e-3, 1e-2):
        groups = group_geometries(pixel, wavelength_nm, distance, q, tolerance)
        placed = np.array([g.radius(q) for g in groups.geometries])[groups.group]
        seen = momentum_transfer(placed, pixel_size=pixel, distance=distance[:, None],
                                 wavelength_nm=wavelength_nm[:, None])  # fmt: skip
        error = np.abs(seen / q - 1).max()
        assert error == pytest.approx(groups.max_q_error, rel=1e-9)
        assert 0.2 * tolerance < error <= tolerance
    # one distance (the simulator's default): the groups are the bins that 19-35 eV spans
    groups = group_geometries(pixel, wavelength_nm, np.full(n, 0.05), q)
    outermost = np.log(groups.geometries[-1].radius(q[-1]) / groups.geometries[0].radius(q[-1]))
    assert len(groups.geometries) <= outermost / GEOMETRY_TOLERANCE + 1 < n / 3
    one = group_geometries(pixel, np.full(5, 40.0), np.full(5, 0.05), q)
    assert len(one.geometries) == 1 and one.max_q_error < 1e-12


def test_one_particle_at_two_wavelengths_and_distances_gives_nearly_the_same_q_maps(tmp_path):
    """One prolate spheroid at 49.6 nm and 65 mm, at 80 mm, at 45 nm, at 55 nm and 80 mm.

    One file, one pixel size (292 um), order 2. In q (0.015 to 0.05 1/nm) the
    maps of the first frame and the others differ by 1.8e-4 (another
    distance: interpolation only, as two detectors, docs/ccf.md), 1.2e-3 and
    1.3e-3 (another wavelength: the same q is seen at another scattering
    angle, so the Ewald sphere and the polarisation differ a little) of their
    range; bound 1e-2. On pixel radii (20 to 110 px) they differ by 0.14 to 0.57.
    """
    from test_polar import _rendered

    from ccfkit.simulate.config import SimulationConfig

    images, geometries = [], [(49.6, 0.065), (49.6, 0.08), (45.0, 0.065), (55.0, 0.08)]
    for wavelength, distance in geometries:  # one pixel size: 30 degrees at the edge at 65 mm
        edge = math.degrees(math.atan(0.065 * math.tan(math.radians(30.0)) / distance))
        config = SimulationConfig(size=257, distance=distance, max_angle=edge, hole_radius=8.0,
                                  halo=(0, 0), background=0.0, noise=False, jitter=0.0)  # fmt: skip
        image, good, _ = _rendered(config, (128.0, 128.0), wavelength)
        pixel = config.detector.pixel_size
        images.append(image)
    path = tmp_path / "two.cxi"
    write_cxi(path, np.array(images, dtype=np.float32), bitmask=np.where(good, 0, 128))
    with h5py.File(path, "a") as handle:
        handle[WAVELENGTH_PATH] = np.array([w for w, _ in geometries]) * 1e-9
        handle[DISTANCE_PATH] = np.array([d for _, d in geometries])
        handle["entry_1/instrument_1/detector_1/x_pixel_size"] = pixel
    common = ["--center", "128,128", "--q-bins", "48", "--phi-bins", "128", "--backend",
              "numpy", "--quiet", "--orders", "2"]  # fmt: skip
    result = run("build", path, tmp_path / "q.zarr", *common, "--q-range", 0.015, 0.05)
    assert result.exit_code == 0, result.output
    in_q = zarr.open_group(str(tmp_path / "q.zarr"), mode="r")["ccf"][:]
    assert run("build", path, tmp_path / "r.zarr", *common, "--r-min", 20, "--r-max", 110
               ).exit_code == 0  # fmt: skip
    in_pixels = zarr.open_group(str(tmp_path / "r.zarr"), mode="r")["ccf"][:]
    scale = np.abs(in_q).max()
    assert scale > 0.5
    assert np.abs(in_q[1:] - in_q[0]).max(axis=(1, 2)).max() <= 1e-2 * scale
    assert np.abs(in_pixels[1:] - in_pixels[0]).max(axis=(1, 2)).min() >= 0.1 * scale


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (np.array([40, 41, np.nan, 42, 43, 44, 45, 46]) * 1e-9, "frame 2: nan"),
        (np.array([40, 41, 0, 42, 43, 44, 45, 46]) * 1e-9, "frame 2: 0"),
        (np.array([40, 41, -42, 42, 43, 44, 45, 46]) * 1e-9, "not positive numbers"),
        (np.array([40, 41, 42]) * 1e-9, "3 values for 8 frames"),
        (np.nan, "its one value: nan"),
    ],
)
def test_bad_per_frame_wavelengths_are_refused_in_one_line(tmp_path, frames, values, words):
    path, _ = _cxi(tmp_path / "bad.cxi", frames, values)
    for options in (["--q-range", *Q_RANGE], []):  # whatever the rings
        out = tmp_path / "out.zarr"
        result = run("build", path, out, *ARGS, *options)
        assert result.exit_code != 0 and not out.exists()
        message = result.output.strip()
        assert "\n" not in message and "Traceback" not in message
        assert "/entry_1/instrument_1/source_1/wavelength" in message and words in message


def test_a_ring_beyond_90_degrees_for_some_frame_is_refused_in_one_line(tmp_path, frames):
    wavelengths = WAVELENGTHS_NM.copy()
    wavelengths[3] = 300.0  # q = 0.05 1/nm is 2 theta > 90 degrees at 300 nm
    path, _ = _cxi(tmp_path / "long.cxi", frames, wavelengths * 1e-9)
    out = tmp_path / "q.zarr"
    result = run("build", path, out, *ARGS, "--q-range", *Q_RANGE)
    assert result.exit_code != 0 and not out.exists()
    assert "frame 3: wavelength 300 nm" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_trainer_predict_places_new_frames_as_the_build_does(tmp_path):
    """Frames of the simulator's 19-35 eV: `trainer predict RUN FILES` gives the probabilities
    of the frames built into a store, each frame's rings at its own wavelength."""
    pytest.importorskip("torch")
    import csv

    from ccfkit.simulate import LABELS
    from trainer.cli import main as trainer_main
    from trainer.config import TrainConfig
    from trainer.loop import fit
    from trainer.model import ModelConfig

    def invoke(command, *args):
        result = CliRunner().invoke(command, [str(a) for a in args])
        assert result.exit_code == 0, result.output

    train, new = tmp_path / "train.cxi", tmp_path / "new.cxi"
    for path, n, seed in ((train, 32, 4), (new, 20, 5)):
        invoke(main, "simulate", path, "--n", n, "--size", "48", "--seed", seed, "--quiet")
    options = ["--q-bins", "16", "--phi-bins", "32", "--chunk", "16", "--backend", "numpy",
               "--quiet", "--q-range", "0.02", "0.05"]  # fmt: skip
    invoke(main, "build", train, tmp_path / "train.zarr", *options)
    fit(tmp_path / "run", ModelConfig(num_classes=len(LABELS), width=8),
        TrainConfig(store=str(tmp_path / "train.zarr"), epochs=1, batch_size=16, workers=0,
                    device="cpu"), progress=False)  # fmt: skip
    center = zarr.open_group(str(tmp_path / "train.zarr"), mode="r").attrs["center"]
    invoke(main, "build", new, tmp_path / "new.zarr", *options, "--center",
           ",".join(map(str, center)))  # fmt: skip
    record = zarr.open_group(str(tmp_path / "new.zarr"), mode="r").attrs["q_placement"]
    assert record["placement"] == "per-frame" and record["groups"] > 1
    probabilities = {}
    for name, source, extra in (("store", tmp_path / "new.zarr", []),
                                ("frames", new, ["--backend", "numpy", "--batch-size", "7"])):  # fmt: skip
        out = tmp_path / f"{name}.csv"
        invoke(trainer_main, "predict", tmp_path / "run", source, "-o", out, "--quiet", *extra)
        with open(out, newline="") as handle:
            rows = list(csv.DictReader(handle))
        probabilities[name] = np.array([[float(v) for k, v in row.items() if k.startswith("p_")]
                                        for row in rows])  # fmt: skip
    np.testing.assert_allclose(probabilities["frames"], probabilities["store"], atol=2e-6)
    # the gallery's frames (any rows, in any order) are mapped at their own geometry too
    from ccfsort.frames import FileFrames
    from trainer.inference import load_run

    frames = FileFrames([str(new)], load_run(tmp_path / "run", "best", "cpu")[1], backend="numpy")
    recipe, source = frames.prepared
    every = recipe.inputs(source.reader.read(0, 20), frames._engine, np.arange(20))[:, 0]
    np.testing.assert_array_equal(frames.maps([7, 2]), every[[7, 2]])


def test_resume_refuses_another_placement(tmp_path, frames):
    path, _ = _cxi(tmp_path / "geo.cxi", frames, WAVELENGTHS_NM * 1e-9)
    out = tmp_path / "q.zarr"
    assert run("build", path, out, *ARGS, "--q-range", *Q_RANGE).exit_code == 0
    result = run("build", path, out, *ARGS, "--q-range", *Q_RANGE, "--q-placement", "mean",
                 "--resume")  # fmt: skip
    assert result.exit_code != 0 and "built with another q_placement" in result.output
    assert run("build", path, out, *ARGS, "--q-range", *Q_RANGE, "--resume").exit_code == 0


def test_one_wavelength_written_per_frame_is_one_geometry(tmp_path, frames, caplog):
    """A value per frame that never changes (as `ccfkit simulate` writes) places no ring per frame."""
    path, _ = _cxi(tmp_path / "one.cxi", frames, np.full(len(frames), 40e-9))
    once, _ = _cxi(tmp_path / "once.cxi", frames, 40e-9)
    per_frame = run("build", path, tmp_path / "per_frame.zarr", *ARGS, "--q-range", *Q_RANGE)
    single = run("build", once, tmp_path / "single.zarr", *ARGS, "--q-range", *Q_RANGE)
    assert per_frame.exit_code == 0 and single.exit_code == 0, per_frame.output
    assert "varies" not in caplog.text
    built = zarr.open_group(str(tmp_path / "per_frame.zarr"), mode="r")
    reference = zarr.open_group(str(tmp_path / "single.zarr"), mode="r")
    assert "frame_geometry" not in built
    assert built.attrs["q_placement"] == reference.attrs["q_placement"]
    np.testing.assert_array_equal(built["ccf"][:], reference["ccf"][:])
