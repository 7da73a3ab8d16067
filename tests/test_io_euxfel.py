"""European XFEL run directories through extra-data, on the mock runs extra-data ships.

The mock writers (``extra_data.tests.mockdata``) make the files of a run of
corrected AGIPD 1M data; their frames are filled with the module stacks of
``tests/test_io_geometry.py`` (simulated speckle), so the run's maps can be
compared with the maps of the same stack read from one file.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from ccfkit.cli import main
from ccfkit.io.euxfel import open_run, parse_pulses, read_plan
from ccfkit.io.source import InputError

extra_data = pytest.importorskip("extra_data")
extra_geom = pytest.importorskip("extra_geom")
mockdata = pytest.importorskip("extra_data.tests.mockdata")
from extra_data.tests.mockdata import write_file
from extra_data.tests.mockdata.detectors import AGIPDModule
from test_io_geometry import QUAD_POS, correlations, speckle_frames

DETECTOR = "SPB_DET_AGIPD1M-1"
TRAINS, PULSES = 4, 2
GRID = ["--q-bins", "48", "--phi-bins", "128", "--r-min", "60", "--r-max", "400",
        "--min-ring-fraction", "0.3", "--backend", "numpy", "--workers", "1", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def geometry_and_stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("geometry")
    geometry = extra_geom.AGIPD_1MGeometry.from_quad_positions(quad_pos=QUAD_POS)
    geom_file = folder / "agipd.geom"
    geometry.write_crystfel_geom(str(geom_file))
    positions = geometry.get_pixel_positions()[..., :2] / geometry.pixel_size
    return geom_file, speckle_frames(positions, n_frames=TRAINS * PULSES, seed=1)


def write_run(folder, stack, *, modules=range(16), bad_pixel=None, first_train=10000):
    """A corrected AGIPD run: one file per module, frame k = train k // 2, pulse k % 2."""
    folder.mkdir(parents=True, exist_ok=True)
    for module in modules:
        path = folder / f"CORR-R0001-AGIPD{module:02}-S00000.h5"
        source = f"{DETECTOR}/CORR/{module}CH0"
        device = AGIPDModule(source, raw=False, frames_per_train=PULSES, channel_name="output")
        write_file(str(path), [device], ntrains=TRAINS, firsttrain=first_train)
        with h5py.File(path, "r+") as handle:
            image = handle[f"INSTRUMENT/{source}:output/image"]
            image["data"][:] = stack[:, module]
            if bad_pixel is not None and module == bad_pixel[0]:
                mask = image["mask"][:]
                mask[:, bad_pixel[1], bad_pixel[2]] = 1
                image["mask"][:] = mask
    return folder


def build(*args):
    return CliRunner().invoke(main, ["build", *map(str, args), *GRID])


def test_run_gives_the_stacks_maps_with_train_and_pulse_ids(geometry_and_stack, tmp_path):
    geom_file, stack = geometry_and_stack
    run = write_run(tmp_path / "r0001", stack)
    stack_file = tmp_path / "stack.h5"
    with h5py.File(stack_file, "w") as handle:
        handle["entry_1/data_1/data"] = stack
    result = build(run, tmp_path / "run.zarr", "--detector", DETECTOR, "--geometry", geom_file)
    assert result.exit_code == 0, result.output
    result = build(stack_file, tmp_path / "stack.zarr", "--geometry", geom_file)
    assert result.exit_code == 0, result.output
    from_run = zarr.open_group(str(tmp_path / "run.zarr"), mode="r")
    from_stack = zarr.open_group(str(tmp_path / "stack.zarr"), mode="r")
    assert from_run["ccf"].shape[0] == TRAINS * PULSES
    np.testing.assert_array_equal(from_run["train_id"][:], np.repeat(10000 + np.arange(4), 2))
    np.testing.assert_array_equal(from_run["pulse_id"][:], np.tile([0, 1], 4))
    assert from_run["train_id"].dtype == np.uint64 and from_run["pulse_id"].dtype == np.uint64
    assert from_run["train_id"].metadata.dimension_names == ("frame",)
    r = correlations(from_run["ccf"][:], from_stack["ccf"][:])
    assert np.median(r) >= 0.999, r


def test_pulses_select_by_index_within_each_train(geometry_and_stack, tmp_path):
    geom_file, stack = geometry_and_stack
    run = write_run(tmp_path / "r0002", stack)
    source = open_run(run, DETECTOR, geometry=geom_file, pulses=parse_pulses("1:2"))
    np.testing.assert_array_equal(source.frame_ids["pulse_id"][0], [1, 1, 1, 1])
    first = source.reader[0].reshape(16, 512, 128)
    np.testing.assert_array_equal(first, stack[1])  # train 0, pulse 1


def test_missing_module_trains_are_skipped_or_masked(geometry_and_stack, tmp_path):
    geom_file, stack = geometry_and_stack
    run = write_run(tmp_path / "r0003", stack, modules=range(15))
    with pytest.raises(InputError, match="no train .* all 16 modules"):
        open_run(run, DETECTOR, geometry=geom_file)
    source = open_run(run, DETECTOR, geometry=geom_file, incomplete="mask")
    frame = source.reader[0].reshape(16, 512, 128)
    assert np.isnan(frame[15]).all()
    np.testing.assert_array_equal(frame[:15], stack[0, :15])


def test_the_detectors_mask_is_honoured(geometry_and_stack, tmp_path):
    geom_file, stack = geometry_and_stack
    run = write_run(tmp_path / "r0004", stack, bad_pixel=(3, 100, 50))
    frame = open_run(run, DETECTOR, geometry=geom_file).reader[2].reshape(16, 512, 128)
    assert np.isnan(frame[3, 100, 50])
    assert np.isfinite(np.delete(frame.ravel(), 3 * 512 * 128 + 100 * 128 + 50)).all()


def test_bad_runs_give_one_line_and_write_nothing(geometry_and_stack, tmp_path):
    geom_file, stack = geometry_and_stack
    run = write_run(tmp_path / "r0005", stack[:, :], modules=range(16))
    not_a_run = tmp_path / "plain"
    not_a_run.mkdir()
    (not_a_run / "notes.txt").write_text("x")
    incomplete = write_run(tmp_path / "r0006", stack, modules=range(15))
    raw = tmp_path / "r0007"
    raw.mkdir()
    for module in range(16):  # raw data: (data, gain) per pixel
        device = AGIPDModule(f"{DETECTOR}/DET/{module}CH0", raw=True, frames_per_train=PULSES)
        write_file(str(raw / f"RAW-R0007-AGIPD{module:02}-S00000.h5"), [device], ntrains=TRAINS)
    cases = {
        "no detector OTHER_DET_AGIPD1M-1": (run, "OTHER_DET_AGIPD1M-1"),
        "not a European XFEL run": (not_a_run, DETECTOR),
        "no train of SPB_DET_AGIPD1M-1 has data from all 16 modules": (incomplete, DETECTOR),
        "raw data? give the corrected run": (raw, DETECTOR),
    }
    for message, (folder, detector) in cases.items():
        out = tmp_path / "out.zarr"
        result = build(folder, out, "--detector", detector, "--geometry", geom_file)
        assert result.exit_code == 1, result.output
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not out.exists()


def test_jungfrau_run_frames_are_its_memory_cells(tmp_path):
    """JUNGFRAU keeps a train's memory cells in one entry: --pulses picks cells by index."""
    from extra_data.tests.mockdata.jungfrau import JUNGFRAUModule

    geometry = extra_geom.JUNGFRAUGeometry.from_module_positions(
        offsets=[(-515, 5), (-515, -520)], orientations=[(1, 1), (1, 1)]
    )
    geom_file = tmp_path / "jf.geom"
    geometry.write_crystfel_geom(str(geom_file))
    positions = geometry.get_pixel_positions()[..., :2] / geometry.pixel_size
    cells = speckle_frames(positions, n_frames=4, seed=2)  # cells 0..3 of the one train
    run = tmp_path / "r0010"
    run.mkdir()
    for module in (1, 2):
        source = f"FXE_XAD_JF1M/DET/JNGFR{module:02}"
        path = run / f"CORR-R0010-JNGFR{module:02}-S00000.h5"
        write_file(str(path), [JUNGFRAUModule(source, raw=False)], ntrains=1)
        with h5py.File(path, "r+") as handle:
            handle[f"INSTRUMENT/{source}:daqOutput/data/adc"][0, :4] = cells[:, module - 1]
    source = open_run(run, "FXE_XAD_JF1M", geometry=geom_file, pulses=parse_pulses("1:4:2"))
    np.testing.assert_array_equal(source.frame_ids["pulse_id"][0], [1, 3])
    assert source.pixels.detector == "JUNGFRAUGeometry"
    frames = source.reader[0:2].reshape(2, 2, 512, 1024)
    np.testing.assert_array_equal(frames, cells[[1, 3]])
    np.testing.assert_array_equal(source.reader[1].reshape(2, 512, 1024), cells[3])


def test_read_plan_reads_whole_trains_together_and_cut_trains_alone():
    trains = np.repeat(np.arange(100, 105, dtype=np.uint64), 3)  # 5 trains of 3 frames
    assert read_plan(trains, 0, 15) == [([100, 101, 102, 103, 104], (0, 3, 3))]
    assert read_plan(trains, 2, 13) == [
        ([100], (2, 3, 3)), ([101, 102, 103], (0, 3, 3)), ([104], (0, 1, 3))
    ]  # fmt: skip
    assert read_plan(trains, 4, 5) == [([101], (1, 2, 3))]


def test_any_frame_range_reads_only_its_pulses_across_sequence_files(tmp_path):
    """5 pulses per train, trains 0-1 in sequence 0 and train 2 in sequence 1; --pulses 1::2."""
    geometry = extra_geom.AGIPD_1MGeometry.from_quad_positions(quad_pos=QUAD_POS)
    geom_file = tmp_path / "agipd.geom"
    geometry.write_crystfel_geom(str(geom_file))
    stack = np.random.default_rng(0).random((15, 16, 512, 128), dtype=np.float32)
    run = tmp_path / "r0011"
    run.mkdir()
    for module in range(16):
        source = f"{DETECTOR}/CORR/{module}CH0"
        for sequence, (first, trains) in enumerate([(0, 2), (2, 1)]):
            path = run / f"CORR-R0011-AGIPD{module:02}-S{sequence:05}.h5"
            device = AGIPDModule(source, raw=False, frames_per_train=5, channel_name="output")
            write_file(str(path), [device], ntrains=trains, firsttrain=10000 + first)
            with h5py.File(path, "r+") as handle:
                frames = stack[5 * first : 5 * (first + trains), module]
                handle[f"INSTRUMENT/{source}:output/image/data"][:] = frames
    reader = open_run(run, DETECTOR, geometry=geom_file, pulses=parse_pulses("1::2")).reader
    expected = stack[[1, 3, 6, 8, 11, 13]]  # pulses 1 and 3 of each train
    np.testing.assert_array_equal(reader.frame_train, np.repeat(10000 + np.arange(3), 2))
    for start in range(6):
        for stop in range(start + 1, 7):
            got = reader.read(start, stop).reshape(stop - start, 16, 512, 128)
            np.testing.assert_array_equal(got, expected[start:stop], err_msg=f"{start}:{stop}")


def test_a_short_read_is_an_error_not_unwritten_rows(geometry_and_stack, tmp_path, monkeypatch):
    from ccfkit.io import euxfel
    from ccfkit.io.errors import InputError

    geom_file, stack = geometry_and_stack
    run = write_run(tmp_path / "r0001", stack)
    reader = open_run(run, DETECTOR, geometry=geom_file).reader
    real = euxfel._trains_frames

    def one_frame_short(*args):
        return real(*args)[:, :-1]

    monkeypatch.setattr(euxfel, "_trains_frames", one_frame_short)
    with pytest.raises(InputError, match="the run's index promises"):
        reader.read(0, reader.shape[0])
