"""The SVM baseline of stores whose rings are placed per frame (docs/study.md, "The classical baseline").

Frames of several photon energies have their rings in q placed at each
frame's own geometry (in groups, ``ccfkit.frame_geometry``); the SVM's ring
features must come from the same plans, and its cache must keep such a
store's predictions apart from those of a store of the same frames whose
rings sit at the mean geometry. Module stacks: tests/test_study_detector.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import drop_label

from ccfkit.build_config import BuildConfig
from ccfkit.frame_geometry import group_geometries, ring_momentum_transfer
from ccfkit.geometry import momentum_transfer
from ccfkit.io.source import open_source
from ccfkit.pipeline import build
from ccfkit.polar import make_polar_plan
from ccfkit.simulate import SimulationConfig
from ccfkit.simulate.cxi_file import write_simulated
from ccfkit.store import open_store
from ccfsort.study import baselines
from ccfsort.study_baseline import (
    ORDERS,
    feature_vectors,
    fit_and_predict,
    ring_harmonics,
    store_features,
    store_frames,
    svm_baseline,
)
from ccfsort.study_eval import source_content
from trainer.data import inspect_store, split_three_ways

N = 40
Q_RANGE = (0.012, 0.04)


@pytest.fixture(scope="module")
def energies(tmp_path_factory):
    """Frames of 19-35 eV photons (one energy per frame), their stores: per frame, at the mean."""
    folder = tmp_path_factory.mktemp("energies")
    frames = folder / "frames.cxi"
    write_simulated(frames, SimulationConfig(size=48, hole_radius=4.0), N, seed=5, progress=False)
    source = open_source([frames])
    config = BuildConfig.from_parameters({"q_bins": 12, "phi_bins": 32, "r_min": 0.0,
                                          "min_ring_fraction": 0.0, "q_range": Q_RANGE,
                                          "noise": "max", "seed": 4})  # fmt: skip
    stores = {}
    for placement in ("per-frame", "mean"):
        stores[placement] = str(folder / f"{placement}.zarr")
        build(source, stores[placement], config, backend="numpy", progress=False,
              q_placement=placement)  # fmt: skip
    return source, config, stores


def _direct(group, source, frame: int, geometry) -> np.ndarray:
    """One frame's features from a plan made here with ``geometry``: (D,) float32."""
    plan = make_polar_plan(source.frame_shape, center=tuple(group.attrs["center"]),
                           mask=group["mask"][:], q_bins=12, phi_bins=32, r_min=0.0,
                           min_ring_fraction=0.0, q_range=Q_RANGE, scattering=geometry)  # fmt: skip
    harmonics = ring_harmonics(store_frames(group, source, frame, frame + 1), plan)
    harmonics[:, ~plan.ring_used] = 0.0
    return feature_vectors(harmonics, group["ring_used"][:])[0]


def test_per_frame_q_rings_give_each_frame_its_groups_plan(energies):
    source, _, stores = energies
    wavelength_nm = source.geometry_per_frame["wavelength"] * 1e9
    assert np.ptp(wavelength_nm) / wavelength_nm.mean() > 0.2  # the energies do vary
    group = open_store(stores["per-frame"])
    features = store_features(stores["per-frame"], source, backend="numpy")
    assert features.shape == (N, int(group["ring_used"][:].sum()) * len(ORDERS))
    assert np.isfinite(features).all()
    distance = np.full(N, source.distance)
    q = ring_momentum_transfer(Q_RANGE, 12)
    groups = group_geometries(source.pixel_size, wavelength_nm, distance, q)
    np.testing.assert_array_equal(group["frame_geometry"][:, 2], groups.group)
    mean = store_features(stores["mean"], source, backend="numpy")
    # the frames of the shortest and longest wavelength, and one in between
    for frame in (int(np.argmin(wavelength_nm)), int(np.argmax(wavelength_nm)), 7):
        geometry = groups.geometries[groups.group[frame]]
        np.testing.assert_allclose(features[frame], _direct(group, source, frame, geometry),
                                   rtol=1e-6, atol=1e-6)  # fmt: skip
        # its plan places the rings at their q for this frame's own wavelength
        plan = make_polar_plan(source.frame_shape, center=tuple(group.attrs["center"]),
                               q_bins=12, phi_bins=32, r_min=0.0, q_range=Q_RANGE,
                               scattering=geometry)  # fmt: skip
        seen = momentum_transfer(plan.radius, pixel_size=source.pixel_size,
                                 distance=source.distance, wavelength_nm=wavelength_nm[frame])  # fmt: skip
        np.testing.assert_allclose(seen, q, rtol=2e-3)
    # at the mean geometry the extreme frames' rings lie elsewhere: other features
    extreme = int(np.argmax(wavelength_nm))
    assert not np.allclose(features[extreme], mean[extreme], atol=1e-3)
    np.testing.assert_allclose(mean[extreme],
                               _direct(group, source, extreme, _mean_geometry(source)),
                               rtol=1e-6, atol=1e-6)  # fmt: skip


def _mean_geometry(source):
    from ccfkit.frame_geometry import scattering_geometry

    return scattering_geometry(source, Q_RANGE)


def test_the_cache_keeps_each_placement_its_own_predictions(energies, tmp_path):
    source, config, stores = energies
    split = split_three_ways(N, 0.25, 0.25, seed=0)
    results = {p: svm_baseline(tmp_path, store, source, split, config, backend="numpy")
               for p, store in stores.items()}  # fmt: skip
    caches = sorted((tmp_path / "baselines").glob("svm-*.npz"))
    assert len(caches) == 2  # one per placement, though frames, build and split are the same
    for placement, store in stores.items():
        truth = open_store(store)["labels"][:].astype(bool)
        predicted, _ = fit_and_predict(store_features(store, source, backend="numpy"), truth,
                                       split)  # fmt: skip
        own = [c for c in caches if np.array_equal(np.load(c)["predicted"], predicted)]
        assert own, placement  # the cache holds what this store's own features give
        # and a second call reads it back: the same numbers
        again = svm_baseline(tmp_path, store, source, split, config, backend="numpy")
        assert again["summary"] == results[placement]["summary"]
    assert len(list((tmp_path / "baselines").glob("svm-*.npz"))) == 2


def test_a_store_whose_groups_differ_is_refused(energies, tmp_path):
    """Frames grouped otherwise than the store's (another input): one line, no wrong features."""
    import shutil

    import zarr

    source, _, stores = energies
    copy = tmp_path / "copy.zarr"
    shutil.copytree(stores["per-frame"], copy)
    group = zarr.open_group(str(copy), mode="r+")
    table = group["frame_geometry"][:]
    table[:, 2] = table[::-1, 2]
    if np.array_equal(table[:, 2], group["frame_geometry"][:, 2]):
        table[0, 2] = table[:, 2].max() + 1
    group["frame_geometry"][:] = table
    with pytest.raises(ValueError, match="geometry groups are not those made here"):
        store_features(str(copy), source, backend="numpy")


def test_the_svm_scores_another_source_with_the_rings_of_its_store(energies, tmp_path):
    """Its own frames as the "other" source: the other-source predictions of the test rows
    are the test predictions (same features, the same SVM)."""
    source, config, stores = energies
    split = split_three_ways(N, 0.25, 0.25, seed=0)
    store = stores["per-frame"]
    own = {str(source.reader.files[0]): (store, source, source_content(source))}
    result = svm_baseline(tmp_path, store, source, split, config, backend="numpy",
                          eval_sources=own)  # fmt: skip
    (eval_cache,) = (tmp_path / "baselines").glob("svm-eval-*.npz")
    (test_cache,) = set((tmp_path / "baselines").glob("svm-*.npz")) - {eval_cache}
    with np.load(eval_cache) as on_source, np.load(test_cache) as on_test:
        assert on_source["predicted"].shape == (N, on_test["predicted"].shape[1])
        np.testing.assert_array_equal(on_source["predicted"][split["test"]], on_test["predicted"])
        truth = open_store(store)["labels"][:].astype(bool)
        scored = result["eval_sources"][str(source.reader.files[0])]
        assert scored["summary"]["accuracy"] == pytest.approx(
            (on_source["predicted"] == truth).mean()
        )
    assert scored["unscored_labels"] == [] and scored["summary"]["n_frames"] == N
    # the best constant is the training split's majority, scored on every frame
    majority = truth[split["train"]].mean(axis=0) >= 0.5
    constants = baselines(store, split, on=store)
    assert constants["best constant"]["accuracy"] == pytest.approx((truth == majority).mean())
    assert constants["all-negative"]["accuracy"] == pytest.approx((~truth).mean())
    assert constants["best constant"]["n_frames"] == N
    on_test = baselines(store, split)  # the test split's, as before
    assert on_test["best constant"]["accuracy"] == pytest.approx(
        (truth[split["test"]] == majority).mean()
    )
    # the source's content, known already, keys its predictions (its frames are not read again)
    from ccfsort.study_baseline import _key, cache_record, eval_cache_record

    record = cache_record(store, source, split, config)
    keyed = [eval_cache_record(record, store, source, config, content) for content in "ab"]
    assert [k["eval_source"]["input"] for k in keyed] == ["a", "b"]
    assert _key(keyed[0]) != _key(keyed[1]) and "path" not in keyed[0]["eval_source"]
    # the rings of another grid cannot be the features' rings
    with pytest.raises(ValueError, match="rings"):
        store_features(store, source, backend="numpy", ring_used=np.ones(5, dtype=bool))


def _eval_caches(out, source: str) -> dict:
    """The SVM's cached predictions on ``source``: cache file -> (N, C) bool array."""
    import json

    found = {}
    for path in (out / "baselines").glob("svm-eval-*.npz"):
        with np.load(path) as saved:
            if json.loads(str(saved["meta"]))["eval_source"] == source:
                found[path.name] = saved["predicted"]
    return found


def _accuracy_on(path, predicted, run_names) -> float:
    """Micro accuracy of ``predicted`` (run label columns) on the labels ``path`` has."""
    from trainer.labels import match_labels

    frames = open_source([path])
    match = match_labels(run_names, frames.label_names)
    truth = np.asarray(frames.labels)[:, match.store_columns].astype(bool)
    return float((predicted[:, match.run_columns] == truth).mean())


def test_the_study_reports_the_svm_on_every_eval_source_from_its_own_cache(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from trainer.cli import main as trainer_main

    def study(*args) -> dict:
        result = CliRunner().invoke(trainer_main, ["study", "smoke", "-o", str(out), "--quiet",
                                                   "--seeds", "0", *map(str, args)])  # fmt: skip
        assert result.exit_code == 0, result.output + repr(result.exception)
        (table,) = json.loads((out / "report.json").read_text())["tables"]
        return table

    out = tmp_path / "study"
    first, second = tmp_path / "first.cxi", tmp_path / "second.cxi"
    write_simulated(first, SimulationConfig(size=48, hole_radius=4.0), 20, seed=5, progress=False)
    write_simulated(second, SimulationConfig(size=64), 24, seed=11, progress=False)
    drop_label(first, "streak")
    table = study("--eval-source", first, "--eval-source", second)
    config = next((out / "runs").glob("*/seed-0/config.json"))
    run_names = json.loads(config.read_text())["store"]["label_names"]
    md = (out / "report.md").read_text()
    for path, n in ((first, 20), (second, 24)):
        key = str(path.resolve())
        (predicted,) = _eval_caches(out, key).values()  # one SVM: both arms share a store
        assert predicted.shape == (n, len(run_names))
        accuracy = _accuracy_on(path, predicted, run_names)
        for column in table["svm"]["columns"]:
            scored = column["eval_sources"][key]
            assert scored["summary"]["n_frames"] == n
            assert scored["summary"]["accuracy"] == pytest.approx(accuracy)
            assert scored["unscored_labels"] == (["streak"] if path == first else [])
        comparison = table["svm"]["eval_source_comparisons"][key]
        assert comparison["n_frames"] == n and path.name in comparison["text"]
        section = md.split(f"On every frame of `{key}`")[1].split("On every frame")[0]
        row = f"| Accuracy, RBF SVM (ring features) | {accuracy:.3f} | {accuracy:.3f} |"
        assert row in section
        assert "Baseline best constant" in section
        assert f"beats the RBF SVM (ring features) on every frame of `{path.name}`" in section

    # The same path with other frames: a cache of its own, never the old frames' predictions.
    before = _eval_caches(out, str(first.resolve()))
    write_simulated(first, SimulationConfig(size=48, hole_radius=4.0), 20, seed=6,
                    progress=False, overwrite=True)  # fmt: skip
    table = study("--eval-source", first)
    after = _eval_caches(out, str(first.resolve()))
    (fresh,) = set(after) - set(before)
    scored = table["svm"]["columns"][0]["eval_sources"][str(first.resolve())]
    assert scored["summary"]["accuracy"] == pytest.approx(
        _accuracy_on(first, after[fresh], run_names)
    )
    assert scored["unscored_labels"] == []  # the new file has every label
    assert str(second.resolve()) not in table["svm"]["eval_source_comparisons"]

    # No SVM at all (its rings refused): the constants on the source keep their lines.
    def refused(*args, **kwargs):
        raise ValueError("the rings resampled here are not the store's")

    monkeypatch.setattr("ccfsort.study_baseline.svm_baseline", refused)
    table = study("--eval-source", second)
    assert table["svm"]["columns"] == [None, None]
    key = str(second.resolve())
    constants = json.loads((out / "report.json").read_text())["baselines"]["eval_sources"][key]
    assert constants["best constant"]["n_frames"] == 24
    section = (out / "report.md").read_text().split(f"On every frame of `{key}`")[1]
    for name, m in constants.items():
        assert f"Baseline {name}: accuracy {m['accuracy']:.3f}" in section


def _plain_svms(features, labels, split, c: float, weight) -> dict:
    """Validation and test predictions of scikit-learn's own RBF SVC per label (the oracle)."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    scaler = StandardScaler().fit(features[split["train"]])
    rows = {k: scaler.transform(features[split[k]]) for k in ("train", "validation", "test")}
    out = {"validation": [], "test": []}
    for j in range(labels.shape[1]):
        svm = SVC(kernel="rbf", C=c, gamma="scale", class_weight=weight)
        svm.fit(rows["train"], labels[split["train"], j])
        for k, guesses in out.items():
            guesses.append(svm.predict(rows[k]).astype(bool))
    return {k: np.stack(v, axis=1) for k, v in out.items()}


def test_a_label_of_rare_overlapping_positives_is_fitted_without_balanced_weights():
    """Balanced weights call many frames of a rare, overlapping label positive and lose
    accuracy on validation: that label is fitted unweighted, a common separable one takes
    the weight more accurate there (balanced on a tie), and the baseline is on validation at
    least as accurate as either weight for every label."""
    rng = np.random.default_rng(3)
    n = 400
    rare = rng.random(n) < 0.07  # rare positives, barely shifted: no separating them
    common = rng.random(n) < 0.5  # half positive, well apart
    features = rng.normal(size=(n, 6))
    features[:, :3] += 0.8 * rare[:, None]
    features[:, 3:] += 3.0 * common[:, None]
    labels = np.stack([rare, common], axis=1)
    split = split_three_ways(n, 0.25, 0.25, seed=2)
    predicted, info = fit_and_predict(features, labels, split)
    truth = labels[split["validation"]]
    plain = {(c, w): _plain_svms(features, labels, split, c, w)
             for c in (1.0, 10.0) for w in ("balanced", None)}  # fmt: skip
    per_label = {key: (p["validation"] == truth).mean(axis=0) for key, p in plain.items()}
    best = info["C"]
    # the construction: balanced weights cost the rare label accuracy on validation
    assert per_label[best, "balanced"][0] < per_label[best, None][0]
    assert info["class_weight"][0] == "none"
    assert info["class_weight"][1] == (
        "none" if per_label[best, None][1] > per_label[best, "balanced"][1] else "balanced"
    )
    weights = [None if w == "none" else w for w in info["class_weight"]]
    np.testing.assert_allclose(info["label_validation_accuracy"]["balanced"],
                               per_label[best, "balanced"])  # fmt: skip
    chosen = np.array([per_label[best, w][j] for j, w in enumerate(weights)])
    assert info["validation_accuracy"][str(best)] == pytest.approx(chosen.mean())
    # never worse on validation than one class weight for every label, at any C
    assert info["validation_accuracy"][str(best)] >= max(a.mean() for a in per_label.values())
    assert info["validation_accuracy"][str(best)] > per_label[best, "balanced"].mean()
    # the test predictions are those of scikit-learn's SVC with each label's weight
    expected = np.stack([plain[best, w]["test"][:, j] for j, w in enumerate(weights)], axis=1)
    np.testing.assert_array_equal(predicted, expected)


def test_a_label_of_one_class_in_training_is_a_constant():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(80, 4))
    labels = np.stack([features[:, 0] > 0, np.zeros(80, dtype=bool)], axis=1)
    predicted, info = fit_and_predict(features, labels, split_three_ways(80, 0.25, 0.25, seed=0))
    assert info["class_weight"][1] == "constant" and not predicted[:, 1].any()
    assert info["class_weight"][0] in ("balanced", "none")


def test_a_cache_made_before_the_class_weight_choice_is_not_read(energies, tmp_path):
    """A cache of balanced weights only (its key without the rule) is left unread: the
    predictions come from a fit with the rule, recorded per label."""
    from ccfsort.study_baseline import _key, cache_record

    source, config, stores = energies
    store = stores["per-frame"]
    split = split_three_ways(N, 0.25, 0.25, seed=0)
    record = cache_record(store, source, split, config)
    assert record["class_weight"]["tried"] == ["balanced", "none"]
    # what places the rings keys every record, set or not
    assert record["geometry"] is None and record["q_placement"]["placement"] == "per-frame"
    assert record["build"]["q_range"] == list(Q_RANGE)
    old = {k: v for k, v in record.items() if k != "class_weight"}
    truth = open_store(store)["labels"][:].astype(bool)
    stale = ~truth[split["test"]]  # every prediction wrong: it must not be read
    (tmp_path / "baselines").mkdir()
    np.savez(tmp_path / "baselines" / f"svm-{_key(old)}.npz", predicted=stale,
             meta='{"C": 1.0, "features": 1}')  # fmt: skip
    result = svm_baseline(tmp_path, store, source, split, config, backend="numpy")
    assert (tmp_path / "baselines" / f"svm-{_key(record)}.npz").is_file()
    assert _key(record) != _key(old)
    assert result["summary"]["accuracy"] > 0.0
    predicted, info = fit_and_predict(store_features(store, source, backend="numpy"), truth,
                                      split)  # fmt: skip
    assert result["summary"]["accuracy"] == pytest.approx(
        (predicted == truth[split["test"]]).mean()
    )
    names = inspect_store(store).label_names
    assert result["class_weight"] == dict(zip(names, info["class_weight"]))


@pytest.mark.parametrize("noise", ["max", "max-frame"])
def test_the_baselines_frames_are_the_frames_the_builds_maps_were_made_from(tmp_path, noise):
    """store_frames re-draws the build's noise, each frame's bound from the stored statistics."""
    from ccfkit.noise import add_noise, frame_bounds

    frames = tmp_path / "frames.cxi"
    write_simulated(frames, SimulationConfig(size=32, hole_radius=3.0), 6, seed=2, progress=False)
    source = open_source([frames])
    config = BuildConfig.from_parameters({"q_bins": 8, "phi_bins": 16, "noise": noise,
                                          "seed": 9})  # fmt: skip
    build(source, str(tmp_path / "s.zarr"), config, backend="numpy", progress=False)
    group = open_store(str(tmp_path / "s.zarr"))
    raw = source.reader.read(0, 6)
    bounds = frame_bounds(raw, noise, group.attrs["noise"]["bound"], group["mask"][:])
    expected = add_noise(raw, np.arange(6), bounds, 9)
    assert (bounds > 0).all() and (noise == "max") == (np.ptp(bounds) == 0)
    np.testing.assert_array_equal(store_frames(group, source, 0, 6), expected)


def test_each_groups_plan_is_made_once_for_all_batches(energies, monkeypatch):
    """Many geometry groups and many batches: every plan built once, the same features."""
    import ccfkit.polar
    import ccfsort.study_baseline

    source, _, stores = energies
    whole = store_features(stores["per-frame"], source, backend="numpy")
    n_groups = len(np.unique(open_store(stores["per-frame"])["frame_geometry"][:, 2]))
    assert n_groups > 4  # more than PlanSpec.plan keeps
    made = []
    real = ccfkit.polar.make_polar_plan
    monkeypatch.setattr(
        ccfkit.polar, "make_polar_plan", lambda *a, **k: made.append(1) or real(*a, **k)
    )
    monkeypatch.setattr(ccfsort.study_baseline, "BATCH_FRAMES", 4)
    ccfkit.polar._plan_of.cache_clear()
    batched = store_features(stores["per-frame"], source, backend="numpy")
    np.testing.assert_array_equal(batched, whole)
    assert len(made) <= n_groups + 1  # each group's, and the store's radii checked once


def test_each_plan_is_kept_until_the_last_batch_of_its_frames():
    """Plans are dropped after their last batch; a plan no frame has is never needed."""
    from ccfsort.study_baseline import last_batches

    which = np.array([0, 2, 0, 0, 2, 2, 0, 3, 2])  # batches of 4: [0 2 0 0] [2 2 0 3] [2]
    np.testing.assert_array_equal(last_batches(which, 5, 4), [1, -1, 2, 1, -1])
    np.testing.assert_array_equal(last_batches(which, 4, 100), [0, -1, 0, 0])
    np.testing.assert_array_equal(last_batches(which, 4, 1), [6, -1, 8, 7])
    assert last_batches(np.zeros(0, dtype=np.int64), 2, 4).tolist() == [-1, -1]


def test_each_labels_class_weight_is_chosen_by_name_and_index():
    """The first of the most accurate weights per label; a label of one class is "constant"."""
    from ccfsort.study_baseline import choose_class_weights

    accuracy = {"balanced": np.array([0.9, 0.5, 0.7]), None: np.array([0.8, 0.6, 0.7])}
    y_train = np.array([[1, 0, 1], [0, 1, 1], [1, 0, 1]], dtype=bool)  # label 2 always on
    names, chosen, best = choose_class_weights(accuracy, y_train)
    assert names == ["balanced", "none", "constant"]
    np.testing.assert_array_equal(chosen, [0, 1, 0])  # a tie keeps the first
    np.testing.assert_allclose(best, [0.9, 0.6, 0.7])


def test_a_stores_q_placement_is_read_as_the_build_places_rings(energies, tmp_path):
    from ccfkit.store.recipe import read_q_placement

    source, _, stores = energies
    assert read_q_placement(stores["per-frame"]) == "per-frame"
    assert read_q_placement(open_store(stores["mean"])) == "mean"
    pixels = str(tmp_path / "pixels.zarr")  # rings in pixels: no placement in q recorded
    build(source, pixels, BuildConfig.from_parameters({"q_bins": 4, "phi_bins": 8}),
          backend="numpy", progress=False)  # fmt: skip
    assert open_store(pixels).attrs.get("q_placement", {}).get("placement") != "mean"
    assert read_q_placement(pixels) == "per-frame"
