"""`trainer predict RUN FILES`: frames -> maps -> model, the same as build + predict on a store."""

from __future__ import annotations

import csv

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from ccfkit.cli import main as ccfkit_main
from ccfkit.simulate import LABELS as SIMULATED_LABELS
from trainer.cli import main as trainer_main
from trainer.config import TrainConfig
from trainer.loop import fit
from trainer.model import ModelConfig

pytestmark = pytest.mark.usefixtures("torch_one_thread")

GRID = ["--q-bins", "16", "--phi-bins", "32", "--chunk", "16", "--backend", "numpy", "--quiet"]


def _invoke(main, *args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Two simulated files: one to train on, one to sort."""
    root = tmp_path_factory.mktemp("frames")
    train, new = root / "train.cxi", root / "new.cxi"
    _invoke(ccfkit_main, "simulate", train, "--n", "32", "--size", "48", "--seed", "4", "--quiet")
    _invoke(ccfkit_main, "simulate", new, "--n", "20", "--size", "48", "--seed", "5", "--quiet")
    return train, new


@pytest.fixture(scope="module")
def one_energy(tmp_path_factory):
    """Two such files at one photon energy: rings in q are placed with one wavelength."""
    root = tmp_path_factory.mktemp("one_energy")
    files = root / "train.cxi", root / "new.cxi"
    for path, n, seed in zip(files, (32, 20), (4, 5)):
        _invoke(ccfkit_main, "simulate", path, "--n", n, "--size", "48", "--seed", seed,
                "--energy", "25", "25", "--quiet")  # fmt: skip
    return files


def _probabilities(path):
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [key[2:] for key in rows[0] if key.startswith("p_")]
    return np.array([[float(row[f"p_{n}"]) for n in names] for row in rows]), rows


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--orders", "8,2", "--estimator", "mask-corrected", "--scale", "ring", "--r-min", "0"],
        ["--scale", "none", "--min-ring-fraction", "0"],
        ["--precision", "bf16-emulated"],
        ["--q-range", "0.03", "0.06"],  # rings in momentum transfer (docs/ccf.md)
        ["--center", "per-frame", "--r-min", "3", "--r-max", "20"],  # each frame at its own
    ],
)
def test_frames_give_the_probabilities_of_their_store(tmp_path, frames, options, request):
    train_cxi, new_cxi = (
        request.getfixturevalue("one_energy") if "--q-range" in options else frames
    )
    store, new_store = tmp_path / "train.zarr", tmp_path / "new.zarr"
    _invoke(ccfkit_main, "build", train_cxi, store, *GRID, *options)
    fit(tmp_path / "run", ModelConfig(num_classes=len(SIMULATED_LABELS), width=8),
        TrainConfig(store=str(store), epochs=1, batch_size=16, workers=0, device="cpu"),
        progress=False)  # fmt: skip
    # the reference: the new frames built into a store with the same options
    center = zarr.open_group(str(store), mode="r").attrs["center"]
    at = [] if "--center" in options else ["--center", ",".join(map(str, center))]
    _invoke(ccfkit_main, "build", new_cxi, new_store, *GRID, *options, *at)
    _invoke(trainer_main, "predict", tmp_path / "run", new_store, "-o", tmp_path / "store.csv")
    result = _invoke(
        trainer_main,
        "predict",
        tmp_path / "run",
        new_cxi,
        "-o",
        tmp_path / "frames.csv",
        "--backend",
        "numpy",
        "--batch-size",
        "7",
        "--quiet",
    )
    assert "20 frames" in result.output
    expected, _ = _probabilities(tmp_path / "store.csv")
    got, rows = _probabilities(tmp_path / "frames.csv")
    assert [int(r["index"]) for r in rows] == list(range(20))
    np.testing.assert_allclose(got, expected, atol=2e-6)  # both CSVs keep 6 decimals


@pytest.fixture(scope="module")
def run(tmp_path_factory, frames):
    root = tmp_path_factory.mktemp("run")
    _invoke(ccfkit_main, "build", frames[0], root / "train.zarr", *GRID)
    fit(root / "run", ModelConfig(num_classes=len(SIMULATED_LABELS), width=8),
        TrainConfig(store=str(root / "train.zarr"), epochs=1, batch_size=16, workers=0,
                    device="cpu"), progress=False)  # fmt: skip
    return root


def test_hdf5_and_zarr_outputs_hold_the_csv_values(run, frames, tmp_path):
    outputs = {suffix: tmp_path / f"p{suffix}" for suffix in (".csv", ".h5", ".zarr")}
    for out in outputs.values():
        _invoke(trainer_main, "predict", run / "run", frames[1], "-o", out, "--quiet")
    expected, rows = _probabilities(outputs[".csv"])
    labels = np.array([[int(row[key]) for key in row if key not in ("index",)
                        and not key.startswith("p_")] for row in rows])  # fmt: skip
    with h5py.File(outputs[".h5"], "r") as handle:
        np.testing.assert_allclose(handle["probabilities"][:], expected, atol=1e-6)
        np.testing.assert_array_equal(handle["labels"][:], labels)
        np.testing.assert_array_equal(handle["index"][:], np.arange(20))
        names = list(handle["labels"].attrs["names"])
    group = zarr.open_group(str(outputs[".zarr"]), mode="r")
    np.testing.assert_allclose(group["probabilities"][:], expected, atol=1e-6)
    assert group["labels"].attrs["names"] == names and len(names) == len(SIMULATED_LABELS)


def test_a_run_whose_store_is_gone_is_refused_with_one_line(run, frames, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    config = (copy / "run" / "config.json").read_text()
    (copy / "run" / "config.json").write_text(
        config.replace(str(run / "train.zarr"), str(tmp_path / "gone.zarr"))
    )
    result = CliRunner().invoke(
        trainer_main, ["predict", str(copy / "run"), str(frames[1]), "-o", str(tmp_path / "p.csv")]
    )
    assert result.exit_code != 0 and "cannot recover how the run's maps were made" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "p.csv").exists()


def test_frames_of_another_detector_are_refused(run, tmp_path):
    other = tmp_path / "other.cxi"
    _invoke(ccfkit_main, "simulate", other, "--n", "4", "--size", "40", "--seed", "1", "--quiet")
    result = CliRunner().invoke(
        trainer_main, ["predict", str(run / "run"), str(other), "-o", str(tmp_path / "p.csv")]
    )
    assert result.exit_code != 0 and "(40, 40)" in result.output
    assert not (tmp_path / "p.csv").exists()


STACK_GRID = ["--q-bins", "16", "--phi-bins", "32", "--r-min", "60", "--r-max", "400",
              "--min-ring-fraction", "0.3", "--chunk", "8", "--backend", "numpy", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def agipd_run(tmp_path_factory):
    """A run fitted one epoch on AGIPD 1M module stacks built with their geometry."""
    extra_geom = pytest.importorskip("extra_geom")
    from test_io_geometry import QUAD_POS, speckle_frames

    root = tmp_path_factory.mktemp("agipd")
    geometry = extra_geom.AGIPD_1MGeometry.from_quad_positions(quad_pos=QUAD_POS)
    geom_file = root / "agipd.geom"
    geometry.write_crystfel_geom(str(geom_file))
    positions = geometry.get_pixel_positions()[..., :2] / geometry.pixel_size
    stacks = speckle_frames(positions, n_frames=24, seed=2)
    labels = np.random.default_rng(2).integers(0, 2, size=(16, 3)).astype(np.uint8)
    with h5py.File(root / "train.h5", "w") as handle:
        handle["entry_1/data_1/data"] = stacks[:16]
        handle["entry_1/labels"] = labels
        handle["entry_1/labels"].attrs["names"] = ["a", "b", "c"]
    with h5py.File(root / "new.h5", "w") as handle:
        handle["entry_1/data_1/data"] = stacks[16:]
    _invoke(ccfkit_main, "build", root / "train.h5", root / "train.zarr", *STACK_GRID,
            "--geometry", geom_file)  # fmt: skip
    fit(root / "run", ModelConfig(num_classes=3, width=8),
        TrainConfig(store=str(root / "train.zarr"), epochs=1, batch_size=8, workers=0,
                    device="cpu"), progress=False)  # fmt: skip
    return root, geom_file, stacks[16:]


def stack_inputs(agipd_run, tmp_path) -> dict:
    """The new stacks as ``trainer predict`` takes them: a stack file, a European XFEL run."""
    from test_io_euxfel import DETECTOR, write_run

    root, _, new = agipd_run
    run_dir = write_run(tmp_path / "r0001", new)
    return {"stack": [root / "new.h5"], "run": [run_dir, "--detector", DETECTOR]}


def test_module_stacks_give_the_probabilities_of_their_store(agipd_run, tmp_path):
    """A stack with --geometry, and a European XFEL run with --detector, as build + predict."""
    root, geom_file, _ = agipd_run
    for name, inputs in stack_inputs(agipd_run, tmp_path).items():
        store = tmp_path / f"{name}.zarr"
        _invoke(ccfkit_main, "build", *inputs, store, *STACK_GRID, "--geometry", geom_file)
        _invoke(trainer_main, "predict", root / "run", store, "-o", tmp_path / f"{name}-s.csv")
        result = _invoke(trainer_main, "predict", root / "run", *inputs, "--geometry", geom_file,
                         "-o", tmp_path / f"{name}-f.csv", "--backend", "numpy", "--batch-size",
                         "3", "--quiet")  # fmt: skip
        assert "8 frames" in result.output
        expected, _ = _probabilities(tmp_path / f"{name}-s.csv")
        got, _ = _probabilities(tmp_path / f"{name}-f.csv")
        np.testing.assert_allclose(got, expected, atol=2e-6, err_msg=name)


def test_module_stacks_need_the_geometry_of_the_runs_store(agipd_run, tmp_path):
    root, _, _ = agipd_run
    extra_geom = pytest.importorskip("extra_geom")
    from test_io_geometry import QUAD_POS

    other = tmp_path / "other.geom"
    moved = [(x + 2.0, y) for x, y in QUAD_POS]
    extra_geom.AGIPD_1MGeometry.from_quad_positions(quad_pos=moved).write_crystfel_geom(str(other))
    result = CliRunner().invoke(trainer_main, [
        "predict", str(root / "run"), str(root / "new.h5"), "--geometry", str(other),
        "-o", str(tmp_path / "p.csv"), "--quiet"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "is not the geometry the run's maps were made with" in result.output
    assert not (tmp_path / "p.csv").exists()


def test_without_geometry_the_stores_recorded_geometry_gives_the_same_labels(
    agipd_run, tmp_path, caplog
):
    """Module stacks (a file, a run directory) without --geometry: placed by the store's record."""
    root, geom_file, _ = agipd_run
    for name, inputs in stack_inputs(agipd_run, tmp_path).items():
        common = [root / "run", *inputs, "--backend", "numpy", "--quiet"]
        _invoke(
            trainer_main, "predict", *common, "--geometry", geom_file, "-o", tmp_path / "g.csv"
        )
        caplog.clear()
        _invoke(trainer_main, "predict", *common, "-o", tmp_path / "recorded.csv")
        said = [r.getMessage() for r in caplog.records if "store recorded" in r.getMessage()]
        assert len(said) == 1 and "agipd.geom" in said[0], caplog.text
        given, _ = _probabilities(tmp_path / "g.csv")
        recorded, rows = _probabilities(tmp_path / "recorded.csv")
        np.testing.assert_array_equal(recorded, given, err_msg=name)
        assert len(rows) == 8 and geom_file.exists()


def test_stacks_without_geometry_for_a_store_of_images_are_refused(run, tmp_path):
    stacks = tmp_path / "stacks.h5"
    with h5py.File(stacks, "w") as handle:
        handle["entry_1/data_1/data"] = np.ones((4, 2, 24, 48), np.float32)
    result = CliRunner().invoke(trainer_main, [
        "predict", str(run / "run"), str(stacks), "-o", str(tmp_path / "p.csv"), "--quiet"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "the run's store records no geometry" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "p.csv").exists()


def test_images_for_a_run_of_module_stacks_are_refused_naming_the_recorded_geometry(
    agipd_run, frames, tmp_path
):
    root, geom_file, _ = agipd_run
    result = CliRunner().invoke(trainer_main, [
        "predict", str(root / "run"), str(frames[1]), "-o", str(tmp_path / "p.csv"), "--quiet"])  # fmt: skip
    assert result.exit_code == 1, result.output
    assert f"{geom_file.resolve()} (recorded in the run's store)" in result.output
    assert "1 module of 48 x 48 pixels" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "p.csv").exists()


@pytest.fixture(scope="module")
def own_centres_run(tmp_path_factory, frames):
    """A run trained on a store built with --center per-frame (each frame at its own centre)."""
    root = tmp_path_factory.mktemp("own_centres")
    store = root / "train.zarr"
    _invoke(ccfkit_main, "build", frames[0], store, *GRID, "--center", "per-frame")
    fit(root / "run", ModelConfig(num_classes=len(SIMULATED_LABELS), width=4),
        TrainConfig(store=str(store), epochs=1, batch_size=16, workers=0, device="cpu"),
        progress=False)  # fmt: skip
    return root / "run"


def _one_frame_of(path, out, k):
    """A copy of the CXI file ``path`` at ``out`` that holds only its frame ``k``."""
    import shutil

    shutil.copy(path, out)
    with h5py.File(out, "r+") as handle:
        n = handle["entry_1/data_1/data"].shape[0]
        per_frame = []
        handle.visititems(lambda name, item: per_frame.append(name) if isinstance(
            item, h5py.Dataset) and item.ndim and item.shape[0] == n else None)  # fmt: skip
        for name in per_frame:
            data, attrs = handle[name][k : k + 1], dict(handle[name].attrs)
            del handle[name]
            handle.create_dataset(name, data=data).attrs.update(attrs)
    return out


def test_one_frame_is_sorted_at_its_own_centre_for_a_store_of_own_centres(
    own_centres_run, frames, tmp_path
):
    """One frame gives one centre (no centre per frame): it is mapped at it, as among others."""
    k = 3
    one = _one_frame_of(frames[1], tmp_path / "one.cxi", k)
    with h5py.File(one, "r") as handle:  # the file is one frame, its own centre
        assert handle["entry_1/data_1/data"].shape == (1, 48, 48)
        assert handle["entry_1/instrument_1/detector_1/beam_center"].shape == (1, 2)
    options = ["--backend", "numpy", "--quiet"]
    _invoke(trainer_main, "predict", own_centres_run, frames[1], "-o", tmp_path / "all.csv",
            *options)  # fmt: skip
    result = _invoke(trainer_main, "predict", own_centres_run, one, "-o", tmp_path / "one.csv",
                     *options)  # fmt: skip
    assert "1 frame" in result.output, result.output
    among, _ = _probabilities(tmp_path / "all.csv")
    alone, rows = _probabilities(tmp_path / "one.csv")
    assert [int(r["index"]) for r in rows] == [0]
    np.testing.assert_allclose(alone, among[k : k + 1], atol=2e-6)  # both CSVs keep 6 decimals


def test_frames_without_a_centre_each_are_refused_for_a_store_of_own_centres(
    own_centres_run, frames, tmp_path
):
    """A store built with --center per-frame maps each frame at its own centre: frames that give
    none cannot be mapped as its frames were (the files' reader refuses them, in one line)."""
    import shutil

    bare = tmp_path / "bare.cxi"
    shutil.copy(frames[1], bare)
    with h5py.File(bare, "r+") as handle:
        del handle["entry_1/instrument_1/detector_1/beam_center"]
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(trainer_main, ["predict", str(own_centres_run), str(bare), "-o",
                                               str(out), "--backend", "numpy", "--quiet"])  # fmt: skip
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "bare.cxi gives no beam centre per frame" in lines[0], result.output
    assert not out.exists()


def test_a_source_without_any_centre_is_refused_by_the_recipe_of_own_centres(
    own_centres_run, frames
):
    """Frames opened without their centres (neither one per frame nor one for all) are refused by
    the recipe itself; a source with one centre for all has it for each frame."""
    import dataclasses
    import json

    from ccfkit.cli_inputs import open_frames
    from ccfsort.sorting import MapRecipe
    from trainer.data import DataError

    recipe = MapRecipe.of_run(json.loads((own_centres_run / "config.json").read_text()))
    assert recipe.own_centers
    source = open_frames([str(frames[1])], mask=recipe.plan.mask, center_use="ignore")
    assert source.center is None and source.centers is None
    with pytest.raises(DataError, match="these frames give no centre per frame"):
        recipe.for_source(source)
    one_for_all = dataclasses.replace(source, center=(23.25, 24.0))
    centres = recipe.for_source(one_for_all).frame_centers
    np.testing.assert_array_equal(centres, np.tile([23.25, 24.0], (source.n_frames, 1)))
