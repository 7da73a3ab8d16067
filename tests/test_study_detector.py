"""Study arms that see the same simulated particles through a module-stacked detector.

An arm's ``data.geometry`` (docs/study.md, "A real detector's gaps") makes
the study simulate its frames again as module stacks of that detector
(``ccfkit simulate --geometry``) and build them with the geometry; the
split, the labels and everything else stay the study's. And the SVM
baseline of a store whose rings are placed in q (docs/study.md, "Inputs
that mean the same on every source").
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from ccfsort.study_plan import PlanError, load_config, make_plan
from trainer.cli import main as trainer_main

pytest.importorskip("extra_geom")


def _config(geometry, **tables):
    config = load_config("smoke")
    config["data"]["simulate"] = {"n": 48, "seed": 3, "size": 48}
    config["build"].update({"r_max": 20.0, "noise": "none"})
    config["build"].pop("image_size")  # module stacks store no images
    config["tables"] = tables or {"detector": {"vary": {"data": {"geometry": ["none", geometry]}}}}
    config["claims"] = [{
        "text": "the flat detector beats the panels", "table": "detector",
        "a": {"data": {"geometry": "none"}}, "b": {"data": {"geometry": geometry}},
    }]  # fmt: skip
    return config


def test_flat_arms_keep_their_keys_and_bad_data_keys_are_one_line():
    geometry = "agipd"
    plan = make_plan(_config(geometry))
    flat, stacked = (plan.arms[c.arm] for c in plan.tables[0].columns)
    assert flat.geometry is None and stacked.geometry == geometry
    assert plan.claims[0].a == flat.key and plan.claims[0].b == stacked.key
    # the flat arm is the arm a table without data.geometry makes (its directory is reused)
    plain = _config(geometry, detector={"arms": [{}]})
    plain["claims"] = []
    assert next(iter(make_plan(plain).arms)) == flat.key
    misspelt = _config(geometry, detector={"vary": {"data": {"geometri": ["agipd"]}}})
    misspelt["claims"] = []
    with pytest.raises(
        PlanError, match="unknown data parameter 'geometri'; did you mean 'geometry'"
    ):
        make_plan(misspelt)
    files = _config(geometry)
    files["data"] = {"sources": ["frames.cxi"]}
    with pytest.raises(PlanError, match=r"data.geometry .* needs \[data\] simulate"):
        make_plan(files)


def _study(args):
    return CliRunner().invoke(trainer_main, ["study", *map(str, args)])


STUDY = """
name = "panels"
seeds = [0]
threads = 1
[split]
validation = 0.25
test = 0.25
[data]
simulate = {{ n = 32, seed = 3, size = 96 }}
[build]
q_bins = 16
phi_bins = 64
r_min = 0.0
r_max = 40.0
min_ring_fraction = 0.0
orders = [2]
[build_options]
backend = "numpy"
[model]
width = 4
[train]
epochs = 1
batch_size = 8
workers = 0
device = "cpu"
[statistics]
bootstrap = 200
[tables.detector]
vary.data.geometry = ["none", "{geometry}"]
[[claims]]
text = "the flat detector beats the panels"
table = "detector"
a = {{ data.geometry = "none" }}
b = {{ data.geometry = "{geometry}" }}
"""


def test_a_geometry_arm_trains_on_module_stacks_of_the_same_particles(tmp_path):
    geometry = "pnccd"  # a built-in detector: two 512 x 1024 halves with a gap between them
    study_file = tmp_path / "panels.toml"
    study_file.write_text(STUDY.format(geometry=geometry))
    out = tmp_path / "study"
    result = _study([study_file, "-o", out, "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)

    stacks = sorted((out / "data").glob("simulated-*.json"))
    assert len(stacks) == 1
    record = json.loads(stacks[0].read_text())
    assert record["geometry"] == geometry and record["n"] == 32
    stores = [zarr.open_group(str(p), mode="r") for p in sorted((out / "stores").glob("*.zarr"))]
    assert len(stores) == 2
    stacked = [g for g in stores if "geometry" in g.attrs["input"]]
    flat = [g for g in stores if "geometry" not in g.attrs["input"]]
    assert len(stacked) == len(flat) == 1
    stacked, flat = stacked[0], flat[0]
    assert stacked.attrs["input"]["geometry"]["stack_shape"] == [2, 512, 1024]
    assert stacked.attrs["input"]["geometry"]["detector"] == "PNCCDGeometry"
    # the same particles: the same labels, frame for frame; other pixels: other maps
    np.testing.assert_array_equal(stacked["labels"][:], flat["labels"][:])
    assert not np.allclose(stacked["ccf"][:], flat["ccf"][:])
    report = json.loads((out / "report.json").read_text())
    assert len(report["tables"][0]["columns"]) == 2
    assert [a.get("data") for a in report["arms"].values()] == [
        {"geometry": "none"},
        {"geometry": geometry},
    ]
    assert "the flat detector beats the panels" in (out / "report.md").read_text()
    _check_the_svm_of_the_stacks(out, report, stacked, flat)

    # a rerun makes nothing again; --source cannot stand in for simulated stacks
    made = stacks[0].stat().st_mtime_ns
    rerun = _study([study_file, "-o", out, "--quiet"])
    assert rerun.exit_code == 0, rerun.output
    assert stacks[0].stat().st_mtime_ns == made
    refused = _study([study_file, "-o", out, "--quiet", "--source",
                      out / "data" / "simulated.cxi"])  # fmt: skip
    assert refused.exit_code != 0
    assert "data.geometry simulates its frames; --source cannot replace them" in refused.output


def _path_of(out, group) -> str:
    """The study's store whose attributes are ``group``'s."""
    (path,) = [p for p in (out / "stores").glob("*.zarr")
               if zarr.open_group(str(p), mode="r").attrs["input"] == group.attrs["input"]]  # fmt: skip
    return str(path)


def _check_the_svm_of_the_stacks(out, report, stacked, flat):
    """Both arms have an SVM row, each from its own frames' plan and its own cache."""
    from ccfkit.io.source import open_source
    from ccfkit.polar import make_polar_plan
    from ccfkit.store import read_recipe
    from ccfsort.study_baseline import (
        feature_vectors,
        ring_harmonics,
        store_features,
        store_frames,
    )

    (table,) = report["tables"]
    columns = table["svm"]["columns"]
    assert len(columns) == 2 and all(c is not None for c in columns)
    assert "| Accuracy, RBF SVM (ring features) |" in (out / "report.md").read_text()
    assert "—" not in next(line for line in (out / "report.md").read_text().splitlines()
                           if line.startswith("| Accuracy, RBF SVM"))  # fmt: skip
    caches = sorted((out / "baselines").glob("svm-*.npz"))
    assert len(caches) == 2  # the same build and split, other frames: two caches
    (cxi,) = (out / "data").glob("simulated-*.cxi")
    source = open_source([str(cxi)], geometry=str(cxi.with_suffix(".geom")))
    assert source.pixels is not None
    store = _path_of(out, stacked)
    features = store_features(store, source, backend="numpy")
    assert features.shape[1] == columns[1]["features"] == int(stacked["ring_used"][:].sum()) * 9
    plan = make_polar_plan(source.frame_shape, center=tuple(stacked.attrs["center"]),
                           mask=stacked["mask"][:], grid=read_recipe(stacked).resolved_grid,
                           pixels=source.pixels)  # fmt: skip
    np.testing.assert_allclose(plan.radius, stacked["radius"][:])
    for frame in (0, 13, 31):
        frames = store_frames(stacked, source, frame, frame + 1)
        expected = feature_vectors(ring_harmonics(frames, plan), stacked["ring_used"][:])
        np.testing.assert_allclose(features[frame], expected[0], rtol=1e-6, atol=1e-6)
    # the flat frames resampled as a flat image, with the flat store's plan: other features
    # than the stacks'
    flat_source = open_source([str(out / "data" / "simulated.cxi")])
    assert flat_source.pixels is None
    flat_features = store_features(_path_of(out, flat), flat_source, backend="numpy")
    assert flat_features.shape == (len(features), int(flat["ring_used"][:].sum()) * 9)
    flat_plan = make_polar_plan(flat_source.frame_shape, center=tuple(flat.attrs["center"]),
                                mask=flat["mask"][:], grid=read_recipe(flat).resolved_grid)  # fmt: skip
    np.testing.assert_allclose(flat_plan.radius, flat["radius"][:])
    for frame in (0, 13, 31):
        frames = store_frames(flat, flat_source, frame, frame + 1)
        expected = feature_vectors(ring_harmonics(frames, flat_plan), flat["ring_used"][:])
        np.testing.assert_allclose(flat_features[frame], expected[0], rtol=1e-6, atol=1e-6)
    assert flat_features.shape != features.shape or not np.allclose(flat_features, features)


def test_the_svm_of_a_q_ring_store_resamples_its_own_rings(tmp_path):
    """Rings in q key the SVM's cache and are placed with the frames' geometry, as the build did."""
    from ccfkit.build_config import BuildConfig
    from ccfkit.frame_geometry import scattering_geometry
    from ccfkit.io.source import open_source
    from ccfkit.pipeline import build
    from ccfkit.polar import make_polar_plan
    from ccfkit.simulate import SimulationConfig
    from ccfkit.simulate.cxi_file import write_simulated
    from ccfkit.store import read_recipe
    from ccfsort.study_baseline import (
        ORDERS,
        feature_vectors,
        ring_harmonics,
        store_features,
        store_frames,
        svm_baseline,
    )
    from trainer.data import split_three_ways

    frames = tmp_path / "frames.cxi"
    config = SimulationConfig(size=48, hole_radius=4.0, photon_energy=(27.0, 27.0))
    write_simulated(frames, config, 40, seed=2, progress=False)
    source = open_source([frames])
    common = {"q_bins": 12, "phi_bins": 32, "r_min": 0.0, "min_ring_fraction": 0.0}
    builds = {"px": BuildConfig.from_parameters({**common, "r_max": 20.0}),
              "q": BuildConfig.from_parameters({**common, "q_range": (0.015, 0.05)})}  # fmt: skip
    split = split_three_ways(40, 0.25, 0.25, seed=0)
    features = {}
    for name, config in builds.items():
        store = tmp_path / f"{name}.zarr"
        build(source, str(store), config, backend="numpy", progress=False)
        features[name] = store_features(str(store), source, backend="numpy")
        used = int(zarr.open_group(str(store), mode="r")["ring_used"][:].sum())
        assert features[name].shape == (40, used * len(ORDERS))
        result = svm_baseline(tmp_path, str(store), source, split, config, backend="numpy")
        assert result["features"] == used * len(ORDERS)
    q_store = zarr.open_group(str(tmp_path / "q.zarr"), mode="r")
    radii = q_store["radius"][:]
    assert radii[0] > 4.0 and not np.allclose(np.diff(radii), np.diff(radii)[0])  # placed in q
    # the SVM's features are those of the build's rings, in q at the input's geometry
    plan = make_polar_plan(source.frame_shape, center=tuple(q_store.attrs["center"]),
                           mask=q_store["mask"][:], grid=read_recipe(q_store).resolved_grid,
                           scattering=scattering_geometry(source))  # fmt: skip
    np.testing.assert_allclose(plan.radius, radii)
    for frame in (0, 17, 39):
        frames = store_frames(q_store, source, frame, frame + 1)
        expected = feature_vectors(ring_harmonics(frames, plan), q_store["ring_used"][:])
        np.testing.assert_allclose(features["q"][frame], expected[0], rtol=1e-6, atol=1e-6)
    assert len(list((tmp_path / "baselines").glob("svm-*.npz"))) == 2  # one cache each
    # frames of one photon energy cannot stand in for a store's frames of several
    varied = tmp_path / "energies.cxi"
    write_simulated(varied, SimulationConfig(size=48, hole_radius=4.0), 40, seed=2, progress=False)
    build(open_source([varied]), str(tmp_path / "per-frame.zarr"), builds["q"], backend="numpy",
          progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="the rings resampled here are not the store's"):
        store_features(str(tmp_path / "per-frame.zarr"), source, backend="numpy")
