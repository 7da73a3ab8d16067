"""`trainer study` (docs/study.md): the plan, the split, the verdicts, the smoke preset end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import drop_label

from ccfsort.study_plan import PlanError, apply_override, build_config, load_config, make_plan
from ccfsort.study_report import verdict_line
from ccfsort.verdicts import (
    NO,
    ONE_SEED,
    UNRESOLVED,
    YES,
    compare,
    frame_counts,
    metric_of_counts,
    verdict,
)
from trainer.cli import main as trainer_main
from trainer.config import TrainConfig
from trainer.data import load_split, save_split, split_three_ways, subsample
from trainer.inference import evaluate_run
from trainer.run_dir import run_split

# --------------------------------------------------------------------------
# The split
# --------------------------------------------------------------------------


def test_three_way_split_is_disjoint_complete_and_seeded():
    split = split_three_ways(200, 0.15, 0.2, seed=5)
    sizes = {k: len(v) for k, v in split.items()}
    assert sizes == {"train": 200 - 30 - 40, "validation": 30, "test": 40}
    together = np.concatenate(list(split.values()))
    assert np.array_equal(np.sort(together), np.arange(200))  # disjoint and complete
    for rows in split.values():
        assert np.all(np.diff(rows) > 0)  # sorted, for chunk-friendly reads
    again = split_three_ways(200, 0.15, 0.2, seed=5)
    assert all(np.array_equal(split[k], again[k]) for k in split)
    assert not np.array_equal(split_three_ways(200, 0.15, 0.2, seed=6)["test"], split["test"])
    # Without a test set it is the two-way split trainer fit has always made.
    two = split_three_ways(200, 0.15, 0.0, seed=5)
    order = np.random.default_rng(5).permutation(200)  # the two-way split as it was made
    assert np.array_equal(two["train"], np.sort(order[:170]))
    assert np.array_equal(two["validation"], np.sort(order[170:]))
    with pytest.raises(ValueError, match="no training frame"):
        split_three_ways(10, 0.5, 0.5, seed=0)


def test_subsets_nest_and_split_files_round_trip(tmp_path):
    rows = np.arange(0, 300, 3)
    quarter, half = subsample(rows, 0.25, seed=2), subsample(rows, 0.5, seed=2)
    assert len(quarter) == 25 and len(half) == 50
    assert set(quarter) <= set(half) <= set(rows)  # Table 5's nested training sets
    split = split_three_ways(60, 0.2, 0.2, seed=1)
    save_split(tmp_path / "s.npz", split, seed=1)
    loaded = load_split(tmp_path / "s.npz")
    assert all(np.array_equal(loaded[k], split[k]) for k in split)
    # A run given the saved split keeps validation and test, and trains on a subset.
    cfg = TrainConfig(store="", split_file=str(tmp_path / "s.npz"), train_fraction=0.5, seed=4)
    used = run_split(cfg, 60)
    assert np.array_equal(used["validation"], split["validation"])
    assert np.array_equal(used["test"], split["test"])
    assert len(used["train"]) == 18 and set(used["train"]) <= set(split["train"])


# --------------------------------------------------------------------------
# The verdicts
# --------------------------------------------------------------------------


def _counts(rng, truth, error_rate, seeds=3):
    """(S, N, 4) counts of predictions that flip each label with ``error_rate``."""
    out = []
    for _ in range(seeds):
        flips = rng.random(truth.shape) < error_rate
        out.append(frame_counts(truth, truth ^ flips))
    return np.stack(out)


def test_verdict_on_a_clear_win_a_tie_and_a_loss():
    rng = np.random.default_rng(0)
    truth = rng.random((400, 6)) < 0.3
    good, bad = _counts(rng, truth, 0.05), _counts(rng, truth, 0.25)
    win = compare(good, bad, "accuracy", resamples=500)
    assert win["verdict"] == YES
    # accuracy is 1 - error rate: the difference is about 0.25 - 0.05
    assert win["delta"] == pytest.approx(0.20, abs=0.02)
    assert win["ci"][0] > 0.15 and win["ci"][1] < 0.25
    assert all(d > 0 for d in win["per_seed"]) and win["t_test"]["p_greater"] < 0.05
    loss = compare(bad, good, "accuracy", resamples=500)
    assert loss["verdict"] == NO and loss["delta"] == pytest.approx(-win["delta"])
    # Two arms of the same quality: the interval covers 0.
    tie = compare(_counts(rng, truth, 0.1), _counts(rng, truth, 0.1), "accuracy", resamples=500)
    assert tie["verdict"] == UNRESOLVED and tie["ci"][0] < 0 < tie["ci"][1]
    # One seed can never give a verdict: no p-value is made up, and the report says why.
    one = compare(good[:1], bad[:1], "accuracy", resamples=200)
    assert one["verdict"] == ONE_SEED and one["n_seeds"] == 1
    assert np.isnan(one["t_test"]["p_greater"]) and np.isnan(one["t_test"]["p_less"])
    line = verdict_line({"text": "A beats B", **one})
    assert "no verdict possible with one seed" in line and "p =" not in line
    assert f"{one['delta']:+.3f}" in line


def test_metric_of_counts_is_the_micro_metric():
    from trainer.metrics import compute_metrics

    rng = np.random.default_rng(1)
    truth, predicted = rng.random((50, 4)) < 0.4, rng.random((50, 4)) < 0.5
    pooled = frame_counts(truth, predicted).sum(0)
    reference = compute_metrics(truth, predicted)
    for metric in ("accuracy", "precision", "recall"):
        assert metric_of_counts(pooled, metric) == pytest.approx(getattr(reference, metric))
    assert metric_of_counts(np.zeros(4), "precision") == 0.0


# --------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------


def _config(**tables):
    config = load_config("smoke")
    config["tables"] = tables
    config["claims"] = []
    return config


def test_equal_recipes_are_one_arm_and_build_keys_pass_through():
    config = _config(
        a={"vary": {"train": {"input": ["ccf", "images"]}}},
        # alpha 0.2 is the default: the same recipe as table a's images arm
        b={"set": {"train": {"input": "images"}}, "arms": [{"model": {"alpha": 0.2}}]},
        maps={"vary": {"build": {"orders": [[2], [8]], "scale": ["maxabs", "none"]}}},
    )
    plan = make_plan(config)
    # orders [8] with maxabs scaling is the default map: the same arm as table a's ccf arm
    assert len(plan.arms) == 2 + 0 + 3
    assert plan.tables[1].columns[0].arm == plan.tables[0].columns[1].arm
    maps = plan.tables[2]
    assert maps.columns[2].arm == plan.tables[0].columns[0].arm
    assert [c.label for c in maps.columns][:2] == ["orders=[2], scale=maxabs",
                                                   "orders=[2], scale=none"]  # fmt: skip
    arm = plan.arms[maps.columns[1].arm]
    assert arm.build["orders"] == [2] and arm.build["scale"] == "none"
    # a list is a tuple for the build (several orders: several channels)
    assert build_config({"orders": [2, 8]}).maps.orders == (2, 8)
    assert make_plan(config, ["maps"]).tables[0].name == "maps"


def test_plan_errors_are_one_line_and_come_before_anything_runs():
    bad_key = _config(t={"vary": {"build": {"no_such_parameter": [1, 2]}}})
    with pytest.raises(PlanError, match="unknown build parameter 'no_such_parameter'"):
        make_plan(bad_key)
    bad_value = _config(t={"vary": {"build": {"noise": ["loud"]}}})
    with pytest.raises(PlanError, match="table t"):
        make_plan(bad_value)
    no_images = _config(t={"set": {"build": {"image_size": None}},
                           "vary": {"train": {"input": ["images"]}}})  # fmt: skip
    no_images["build"].pop("image_size")
    with pytest.raises(PlanError, match="image_size"):
        make_plan(no_images)
    claim = _config(t={"vary": {"train": {"input": ["ccf", "images"]}}})
    claim["claims"] = [{"text": "x", "table": "t", "a": {"train": {"input": "ccf"}}, "b": {}}]
    with pytest.raises(PlanError, match="matches 2 columns"):
        make_plan(claim)
    with pytest.raises(PlanError, match="no such study file or preset"):
        load_config("no-such-preset")


def test_a_label_table_is_not_a_study_setting():
    """An arm trained on a label table's frames and labels would not be scored like the others."""
    in_a_table = _config(t={"set": {"train": {"labels": "labels.csv"}},
                            "vary": {"train": {"input": ["ccf", "images"]}}})  # fmt: skip
    with pytest.raises(PlanError, match="train.labels is set by the study itself"):
        make_plan(in_a_table)
    in_the_defaults = _config(t={"vary": {"train": {"input": ["ccf", "images"]}}})
    in_the_defaults["train"] = {**in_the_defaults.get("train", {}), "labels": "labels.csv"}
    with pytest.raises(PlanError, match=r"\[train\] labels is set by the study itself"):
        make_plan(in_the_defaults)


def test_overrides_are_toml_values():
    config = {"train": {"epochs": 2}}
    apply_override(config, "train.epochs=5")
    apply_override(config, "seeds=[0, 1, 2]")
    apply_override(config, "build.noise=max")
    assert config == {"train": {"epochs": 5}, "seeds": [0, 1, 2], "build": {"noise": "max"}}
    with pytest.raises(PlanError):
        apply_override(config, "novalue")


@pytest.mark.parametrize(
    "name", ["cpu", "cpu-maps", "cpu-gaps", "paper", "detector", "transfer-inputs"]
)
def test_shipped_presets_expand(name):
    from ccfkit.simulate import SimulationConfig

    config = load_config(name)
    plan = make_plan(config)
    assert len(plan.seeds) >= 3 and plan.claims and plan.tables
    for arm in plan.arms.values():
        build_config(arm.build)  # every arm's build is one ccfkit accepts
    spec = {k: v for k, v in config["data"].get("simulate", {}).items() if k not in ("n", "seed")}
    SimulationConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


def test_the_transfer_preset_draws_a_round_centred_stop_without_gaps():
    """At max noise a non-round mask kept the randomised set at the constant classifier
    (docs/study.md, "The max-noise collapse of the randomised set"): the preset's drawn
    detector has a round 10 px stop at the middle and one panel; the per-frame draws stay."""
    from ccfkit.simulate import SimulationConfig
    from ccfkit.simulate.randomization import draw_frame_randomization, file_detector

    simulate = load_config("transfer")["data"]["simulate"]
    spec = {k: v for k, v in simulate.items() if k not in ("n", "seed")}
    config = SimulationConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
    )
    for seed in (0, 1, 7):
        detector = file_detector(config, seed)
        assert (detector.beam_stop, detector.hole_radius) == ("round", 10.0)
        assert detector.offset == (0.0, 0.0) and detector.panel_grid == (1, 1)
        good = detector.good_pixels()
        # round and centred, no gaps: the mask is its own mirror image and transpose
        assert np.array_equal(good, good.T) and np.array_equal(good, good[::-1, ::-1])
        assert (~good).sum() == np.count_nonzero(
            np.hypot(*np.meshgrid(np.arange(129) - 64, np.arange(129) - 64)) < 10
        )
    drawn = draw_frame_randomization(config, 0, np.arange(50), file_detector(config, 0))
    for values in (drawn.distance, drawn.gain, drawn.polarization_degree, drawn.read_noise):
        assert values is not None and np.ptp(values) > 0


# --------------------------------------------------------------------------
# The smoke preset end to end
# --------------------------------------------------------------------------


def _study(args):
    result = CliRunner().invoke(trainer_main, ["study", *map(str, args)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_smoke_study_end_to_end_then_resumes(tmp_path):
    out = tmp_path / "study"
    printed = _study(["smoke", "-o", out, "--quiet"])
    assert "CCF maps beat images at max noise:" in printed
    for name in ("report.md", "report.json", "table6.png", "split.npz", "study.json"):
        assert (out / name).is_file(), name
    assert (out / "table6.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((out / "report.json").read_text())
    study_split = load_split(out / "split.npz")
    assert {k: len(v) for k, v in study_split.items()} == {"train": 32, "validation": 16,
                                                            "test": 16}  # fmt: skip
    parts = [set(rows) for rows in study_split.values()]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    runs = sorted((out / "runs").glob("*/seed-*"))
    assert len(runs) == 4  # two arms x two seeds, each a trainer fit run directory
    for run in runs:
        # the one split, identical for every arm and seed
        run_split_ = load_split(run / "split.npz")
        assert all(np.array_equal(run_split_[k], study_split[k]) for k in study_split)
        for name in ("config.json", "best.pt", "report.md", "metrics.csv", "test.npz"):
            assert (run / name).is_file()
    # Table cells are the mean over seeds of each run's test metrics.
    for arm in report["arms"].values():
        seeds = arm["seeds"]
        assert sorted(seeds) == ["0", "1"]
        for key in ("accuracy", "precision", "recall"):
            values = [seeds[s][key] for s in seeds]
            assert arm["summary"][key]["mean"] == pytest.approx(np.mean(values))
            assert arm["summary"][key]["std"] == pytest.approx(np.std(values, ddof=1))
            assert (
                f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
                in (out / "report.md").read_text()
            )
    run = runs[0]
    run_report = json.loads((run / "report.json").read_text())
    metrics, extra = evaluate_run(run, subset="test")
    assert metrics.accuracy == pytest.approx(run_report["test"]["accuracy"])
    assert extra["epoch"] == run_report["test"]["epoch"]
    # One verdict line, consistent with its numbers.
    (claim,) = report["claims"]
    assert claim["n_seeds"] == 2
    assert claim["verdict"] == verdict(claim["t_test"], tuple(claim["ci"]))
    base = report["baselines"]
    assert base["all-negative"]["precision"] == 0.0
    assert base["best constant"]["accuracy"] >= base["all-negative"]["accuracy"]
    md = (out / "report.md").read_text()
    for text in ("## Verdicts", "Baseline all-negative", "Baseline best constant",
                 "per class", "![table6](table6.png)"):  # fmt: skip
        assert text in md, text

    # A rerun skips every finished run and leaves its files alone; with --eval-source it
    # scores every run on all frames of another simulated file, built the same way.
    from ccfkit.simulate import SimulationConfig
    from ccfkit.simulate.cxi_file import write_simulated

    other = tmp_path / "other.cxi"
    write_simulated(other, SimulationConfig(size=64), 24, seed=11, progress=False)
    stamps = {run: (run / "best.pt").stat().st_mtime_ns for run in runs}
    _study(["smoke", "-o", out, "--quiet", "--eval-source", other])
    again = json.loads((out / "report.json").read_text())
    assert set(again["provenance"]["runs"].values()) == {"skipped"}
    assert stamps == {run: (run / "best.pt").stat().st_mtime_ns for run in runs}
    assert again["claims"][0]["delta"] == pytest.approx(claim["delta"])
    for name, arm in again["arms"].items():
        scored = arm["eval_sources"][str(other.resolve())]
        assert sorted(scored["seeds"]) == ["0", "1"]
        accuracies = [scored["seeds"][s]["accuracy"] for s in ("0", "1")]
        assert scored["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
        assert all(m["n_frames"] == 24 for m in scored["seeds"].values()), name
        violations = [scored["seeds"][s]["violation_rate"] for s in ("0", "1")]
        assert scored["summary"]["violation_rate"]["mean"] == pytest.approx(np.mean(violations))
    assert "On every frame of" in (out / "report.md").read_text()

    # A run that stopped before its test score is resumed, here as a task of a Dask cluster.
    from distributed import Client, LocalCluster

    (runs[1] / "test.npz").unlink()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster, \
            Client(cluster):  # fmt: skip
        _study(["smoke", "-o", out, "--quiet", "--scheduler", cluster.scheduler_address])
    outcomes = json.loads((out / "report.json").read_text())["provenance"]["runs"]
    assert outcomes[str(runs[1])] == "resumed"
    assert sorted(outcomes.values()) == ["resumed", "skipped", "skipped", "skipped"]
    assert (runs[1] / "test.npz").is_file()

    # A map-variant table added from the command line: two orders, a 2-channel input,
    # on the same data and split (one more store, one run).
    _study(["smoke", "-o", out, "--quiet", "--set", "tables.maps.vary.build.orders=[[2, 8]]",
            "--tables", "maps", "--seeds", "0"])  # fmt: skip
    (two_channel,) = (out / "runs").glob("maps-*/seed-0")
    config = json.loads((two_channel / "config.json").read_text())
    assert config["model"]["in_channels"] == 2 and (two_channel / "test.npz").is_file()
    assert len(list((out / "stores").glob("simulated-*.zarr"))) == 2

    # Plain trainer fit with a held-out test split on the study's store.
    store = json.loads((runs[0] / "config.json").read_text())["store"]["path"]
    fit_dir = tmp_path / "fit"
    result = CliRunner().invoke(trainer_main, [
        "fit", store, "--test-fraction", "0.25", "--eval-fraction", "0.25", "--epochs", "1",
        "--width", "4", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--threads",
        "1", "--run-dir", str(fit_dir), "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "test split (16 frames" in result.output
    fit_split = load_split(fit_dir / "split.npz")
    # same fractions and seed 0: the study's split (made by the same function)
    assert all(np.array_equal(fit_split[k], study_split[k]) for k in study_split)
    assert np.array_equal(np.load(fit_dir / "test.npz")["rows"], study_split["test"])
    assert "## Test split (16 frames)" in (fit_dir / "report.md").read_text()

    # The same directory with other data is refused, in one line, before anything runs.
    result = CliRunner().invoke(
        trainer_main, ["study", "smoke", "-o", str(out), "--set", "split.seed=9", "--quiet"]
    )
    assert result.exit_code == 1 and "other parameters" in result.output
    result = CliRunner().invoke(trainer_main, ["study", "smoke", "-o", str(tmp_path / "none"),
                                               "--report-only"])  # fmt: skip
    assert result.exit_code == 1 and "nothing to report" in result.output


# --------------------------------------------------------------------------
# A strict study file
# --------------------------------------------------------------------------

SMOKE_EXTENDED = 'extends = "smoke"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tarin]\nepochs = 2\n", "the study file: unknown key 'tarin'; did you mean 'train'?"),
        ("seed = [0, 1]\n", "the study file: unknown key 'seed'; did you mean 'seeds'?"),
        ("[split]\ntset = 0.2\n", "[split]: unknown key 'tset'; did you mean 'test'?"),
        (
            "[statistics]\nbootstrapp = 10\n",
            "[statistics]: unknown key 'bootstrapp'; did you mean 'bootstrap'?",
        ),
        (
            "[build_options]\nchunk_frame = 8\n",
            "[build_options]: unknown key 'chunk_frame'; did you mean 'chunk_frames'?",
        ),
        ("[train]\nepoch = 3\n", "[train]: unknown key 'epoch'; did you mean 'epochs'?"),
        (
            "[data]\nsimulate = { n = 64, seed = 3, szie = 64 }\n",
            "[data] simulate: unknown key 'szie'; did you mean 'size'?",
        ),
        (
            "[tables.table6]\ntitel = 'x'\nvary.train.input = ['ccf']\n",
            "[tables.table6]: unknown key 'titel'; did you mean 'title'?",
        ),
        (
            "[tables.table6]\nvary.build.noize = ['max']\n",
            "table table6: unknown build parameter 'noize'; did you mean 'noise'?",
        ),
        (
            "[tables.table6]\nvary.tarin.input = ['ccf']\n",
            "table table6: 'tarin.input' is not in build, model, train, data; did you mean 'train'?",
        ),
        (
            "[[claims]]\ntext = 'c'\ntable = 'table6'\nmetirc = 'accuracy'\n",
            "claim 2: unknown key 'metirc'; did you mean 'metric'?",
        ),
        (
            "[[claims]]\ntext = 'c'\ntable = 'table6'\nonn = 'eval-source'\n",
            "claim 2: unknown key 'onn'; did you mean 'on'?",
        ),
        (
            "[[claims]]\ntext = 'c'\ntable = 'table6'\non = 'held-out'\n",
            "claim 'c': on must be one of ('test', 'eval-source'), got 'held-out'",
        ),
        (
            "[[claims]]\ntext = 'c'\ntable = 'tabel6'\n",
            "claim 2: no table 'tabel6'; did you mean 'table6'?",
        ),
        ("seeds = [0, -1]\n", "seeds must be an integer >= 0 (below 2**63), got -1"),
        ("[split]\nseed = -3\n", "[split] seed must be an integer >= 0"),
    ],
)
def test_a_misspelt_or_bad_study_file_is_one_line_and_creates_nothing(tmp_path, text, message):
    study_file = tmp_path / "mine.toml"
    # the claims of smoke are kept by extends: a [[claims]] here replaces them
    claims = (
        ""
        if "[[claims]]" not in text
        else (
            "[[claims]]\ntext = 'ok'\ntable = 'table6'\na = { train.input = 'ccf' }\n"
            "b = { train.input = 'images' }\n"
        )
    )
    study_file.write_text(SMOKE_EXTENDED + claims + text)
    out = tmp_path / "study"
    result = CliRunner().invoke(trainer_main, ["study", str(study_file), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"Error: {message}" or (
        result.output.startswith(f"Error: {message}") and result.output.count("\n") == 1
    ), result.output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["mine.toml"]


def test_negative_seeds_from_the_command_line_leave_no_directory(tmp_path):
    out = tmp_path / "study"
    for args in (["--seeds", "-1"], ["--set", "split.seed=-2"], ["--set", "seeds=[0, 0]"]):
        result = CliRunner().invoke(trainer_main, ["study", "smoke", "-o", str(out), *args])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert "seed" in result.output and not out.exists()


def test_a_refused_source_leaves_no_study_directory(tmp_path):
    not_frames = tmp_path / "notes.cxi"
    not_frames.write_text("not an HDF5 file")
    out = tmp_path / "study"
    result = CliRunner().invoke(
        trainer_main, ["study", "smoke", "-o", str(out), "--source", str(not_frames)]
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "notes.cxi" in result.output and not out.exists()
    # a directory that was there before is left as it was
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    result = CliRunner().invoke(
        trainer_main, ["study", "smoke", "-o", str(out), "--source", str(not_frames)]
    )
    assert result.exit_code == 1 and sorted(p.name for p in out.iterdir()) == ["mine.txt"]


# --------------------------------------------------------------------------
# The classical baseline: an RBF SVM on ring features
# --------------------------------------------------------------------------


def _pattern(shape, center, radial, harmonics, angle=0.0):
    """I(r, phi) = radial(r) * (1 + sum_n a_n cos(n (phi - angle))) on a detector."""
    y, x = np.indices(shape, dtype=np.float64)
    r = np.hypot(x - center[0], y - center[1])
    phi = np.arctan2(y - center[1], x - center[0])
    modulation = 1 + sum(a * np.cos(n * (phi - angle)) for n, a in harmonics.items())
    return radial(r) * modulation


def test_ring_features_are_the_radial_profile_and_harmonics_of_a_known_pattern():
    from ccfkit import make_polar_plan
    from ccfsort.study_baseline import ORDERS, feature_vectors, ring_harmonics

    shape, center = (97, 97), (48.0, 48.0)
    radial = lambda r: 50.0 + 2.0 * r  # smooth: bilinear interpolation is near exact
    harmonics = {2: 0.4, 5: 0.2}
    image = _pattern(shape, center, radial, harmonics, angle=0.3)
    mask = np.ones(shape, bool)
    mask[40:57, 40:57] = False  # a beam stop: the inner rings, not whole, are unused
    plan = make_polar_plan(shape, center=center, mask=mask, q_bins=12, phi_bins=64,
                           r_min=0.0, r_max=40.0, min_ring_fraction=1.0)  # fmt: skip
    got = ring_harmonics(image[None], plan)[0]
    assert got.shape == (12, len(ORDERS))
    # NumPy: the same pattern evaluated on the polar grid, its angular FFT / P
    polar = radial(plan.radius)[:, None] * (
        1 + sum(a * np.cos(n * (plan.phi[None] - 0.3)) for n, a in harmonics.items())
    )
    reference = np.abs(np.fft.fft(polar, axis=1) / polar.shape[1])[:, : len(ORDERS)]
    used = plan.ring_used
    assert 0 < used.sum() < 12
    np.testing.assert_allclose(got[used], reference[used], rtol=0.02, atol=0.02 * 50)
    # the radial profile is F_0; F_2 and F_5 are a_n / 2 of it; the other orders vanish
    np.testing.assert_allclose(got[used, 0], radial(plan.radius[used]), rtol=0.01)
    np.testing.assert_allclose(got[used, 2] / got[used, 0], 0.2, atol=0.01)
    np.testing.assert_allclose(got[used, 5] / got[used, 0], 0.1, atol=0.01)
    assert np.all(got[used][:, [1, 3, 4, 6, 7, 8]] < 0.01 * got[used, :1])
    # the feature vector: used rings, divided by the mean radial profile, log1p
    features = feature_vectors(got[None], used)
    expected = np.log1p(got[used] / got[used, 0].mean()).reshape(-1)
    np.testing.assert_allclose(features[0], expected, rtol=1e-6)
    assert features.shape == (1, used.sum() * len(ORDERS)) and features.dtype == np.float32
    # rotation does not change the features (moduli), brightness neither (per-frame scale)
    turned = ring_harmonics(3 * _pattern(shape, center, radial, harmonics, 1.1)[None], plan)
    np.testing.assert_allclose(feature_vectors(turned, used), features, atol=0.02)


def test_the_svm_beats_the_constant_on_separable_frames():
    from ccfkit import make_polar_plan
    from ccfsort.study_baseline import feature_vectors, fit_and_predict, ring_harmonics
    from trainer.data import split_three_ways
    from trainer.metrics import compute_metrics

    rng = np.random.default_rng(0)
    shape, center, n = (65, 65), (32.0, 32.0), 160
    # label 0: a two-fold pattern (an elongated droplet), label 1: a five-fold one; both
    # under noise, random orientations and brightness
    labels = np.stack([rng.random(n) < 0.5, rng.random(n) < 0.3], axis=1)
    frames = np.stack([
        rng.uniform(0.5, 2.0) * _pattern(shape, center, lambda r: 200.0 / (1 + r),
                                         {2: 0.5 * a, 5: 0.5 * b}, rng.uniform(0, np.pi))
        + rng.uniform(0, 15.0, shape)
        for a, b in labels
    ])  # fmt: skip
    plan = make_polar_plan(shape, center=center, q_bins=16, phi_bins=64, r_max=30.0)
    features = feature_vectors(ring_harmonics(frames, plan), plan.ring_used)
    split = split_three_ways(n, 0.2, 0.3, seed=1)
    predicted, info = fit_and_predict(features, labels, split)
    truth = labels[split["test"]]
    svm = compute_metrics(truth, predicted)
    constant = compute_metrics(truth, np.broadcast_to(labels[split["train"]].mean(0) >= 0.5,
                                                      truth.shape))  # fmt: skip
    assert svm.accuracy >= 0.95 and svm.recall >= 0.9
    assert svm.accuracy > constant.accuracy + 0.25
    assert info["C"] in (1.0, 10.0) and set(info["validation_accuracy"]) == {"1.0", "10.0"}
    # deterministic: the same fit gives the same predictions
    again, _ = fit_and_predict(features, labels, split)
    assert np.array_equal(again, predicted)


# --------------------------------------------------------------------------
# Several --tables runs into one directory, one seed, the SVM row, the run's groups
# --------------------------------------------------------------------------

TWO_TABLES = """extends = "smoke"
seeds = [0]
[train]
epochs = 1
[tables.t1]
title = "T1: input"
vary.train.input = ["ccf", "images"]
[tables.t2]
title = "T2: images again"
set.train.input = "images"
arms = [{ model.alpha = 0.2 }]
labels = ["images, other label"]
[[claims]]
text = "CCF beats images"
table = "t1"
a = { train.input = "ccf" }
b = { train.input = "images" }
"""


def test_tables_run_apart_share_arms_and_one_report(tmp_path):
    study_file = tmp_path / "two.toml"
    study_file.write_text(TWO_TABLES)
    out = tmp_path / "study"
    printed = _study([study_file, "-o", out, "--quiet", "--tables", "t1"])
    assert "CCF beats images: no verdict (one seed)" in printed
    first = json.loads((out / "report.json").read_text())
    assert [t["name"] for t in first["tables"]] == ["t1"]
    # t2's only column is t1's images recipe under another label: trained once
    _study([study_file, "-o", out, "--quiet", "--tables", "t2"])
    assert len(list((out / "runs").glob("*/seed-0"))) == 2
    second = json.loads((out / "report.json").read_text())
    assert set(second["provenance"]["runs"].values()) == {"skipped"}
    (images,) = [c["arm"] for c in first["tables"][0]["columns"] if "images" in c["label"]]
    assert second["tables"][1]["columns"][0]["arm"] == images
    # one report for both tables; the claim of t1 kept, with no made-up p-value
    assert [t["name"] for t in second["tables"]] == ["t1", "t2"]
    assert [c["text"] for c in second["claims"]] == ["CCF beats images"]
    md = (out / "report.md").read_text()
    assert md.count("\n## T1: input\n") == 1 and md.count("\n## T2: images again\n") == 1
    assert "no verdict possible with one seed" in md and "p = 1.000" not in md
    study = json.loads((out / "study.json").read_text())
    assert [i["tables"] for i in study["invocations"]] == [["t1"], ["t2"]]
    # t1 again: its section is replaced, t2's kept, and t1's earlier command dropped
    _study([study_file, "-o", out, "--quiet", "--tables", "t1"])
    md = (out / "report.md").read_text()
    assert md.count("\n## T1: input\n") == 1 and md.count("\n## T2: images again\n") == 1
    study = json.loads((out / "study.json").read_text())
    assert [i["tables"] for i in study["invocations"]] == [["t2"], ["t1"]]

    # The SVM row: its numbers are its cached test predictions scored against the store
    from trainer.data import open_store
    from trainer.metrics import compute_metrics

    report = json.loads((out / "report.json").read_text())
    (cache,) = (out / "baselines").glob("svm-*.npz")  # one noise level: one SVM
    store = json.loads((out / "runs" / images / "seed-0" / "config.json").read_text())
    labels = open_store(store["store"]["path"])["labels"][:].astype(bool)
    test = load_split(out / "split.npz")["test"]
    expected = compute_metrics(labels[test], np.load(cache)["predicted"])
    for table in report["tables"]:
        for column in table["svm"]["columns"]:
            assert column["summary"]["accuracy"] == pytest.approx(expected.accuracy)
            assert column["summary"]["recall"] == pytest.approx(expected.recall)
        assert table["svm"]["comparison"]["verdict"] == ONE_SEED
    assert f"| Accuracy, RBF SVM (ring features) | {expected.accuracy:.3f} |" in md
    # it saw the frames the network saw: resized, they are the store's images (the same
    # noise), and its features from the fast backend are the NumPy reference's
    from ccfkit.io.source import open_source
    from ccfkit.resize import resize_images
    from ccfkit.store import open_store as open_group
    from ccfsort.study_baseline import store_features, store_frames

    frames = open_source([str(out / "data" / "simulated.cxi")])
    group = open_group(store["store"]["path"])
    assert group.attrs["noise"]["bound"] > 0
    noisy = store_frames(group, frames, 0, frames.n_frames)
    np.testing.assert_allclose(
        resize_images(noisy, 16, group["mask"][:]), group["images"][:], rtol=1e-5, atol=1e-3
    )
    np.testing.assert_allclose(
        store_features(store["store"]["path"], frames, backend="numba"),
        store_features(store["store"]["path"], frames, backend="numpy"),
        atol=1e-5,
    )
    assert "beats the RBF SVM (ring features): **no verdict possible with one seed**" in md

    # trainer evaluate: the printed epoch count is the JSON's; violations with the run's
    # groups on a store whose labels declare none (every label on: every group violated)
    import shutil

    import h5py

    from ccfkit.simulate import SimulationConfig
    from ccfkit.simulate.cxi_file import write_simulated

    run = tmp_path / "run"
    shutil.copytree(out / "runs" / images / "seed-0", run)
    config = json.loads((run / "config.json").read_text())
    assert config["store"]["exclusive_groups"]
    config["train"]["threshold"] = 1e-9
    (run / "config.json").write_text(json.dumps(config))
    other = tmp_path / "other.cxi"
    write_simulated(other, SimulationConfig(size=64), 12, seed=5, progress=False)
    with h5py.File(other, "r+") as handle:
        del handle["entry_1/labels"].attrs["exclusive_groups"]
    from ccfkit.io.source import open_source
    from ccfkit.pipeline import build

    assert not open_source([str(other)]).exclusive_groups
    build(open_source([str(other)]), str(tmp_path / "o.zarr"),
          build_config(load_config("smoke")["build"]),  # the run's recipe
          backend="numpy", progress=False)  # fmt: skip
    result = CliRunner().invoke(trainer_main, ["evaluate", str(run), str(tmp_path / "o.zarr"),
                                               "--json", str(tmp_path / "e.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "e.json").read_text())
    assert "checkpoint (after 1 epoch)" in result.output and scores["epochs_trained"] == 1
    assert scores["epoch"] == 0 and scores["n_frames"] == 12
    assert scores["violation_rate"] == 1.0


# --------------------------------------------------------------------------
# Transfer: trained on randomised detectors, scored on another source
# --------------------------------------------------------------------------

TRANSFER_TINY = """
extends = "transfer"
name = "transfer-tiny"
seeds = [0]

[split]
validation = 0.25
test = 0.25

[data]
simulate = { n = 48, seed = 1, size = 64, randomize = true }

[build]
q_bins = 16
phi_bins = 64
image_size = 16

[build_options]
backend = "numpy"
chunk_frames = 16

[model]
width = 4

[train]
epochs = 1
batch_size = 8
lr_step = 1

[statistics]
bootstrap = 200
"""


def test_transfer_study_judges_and_tabulates_the_eval_source(tmp_path):
    from ccfkit.simulate import SimulationConfig
    from ccfkit.simulate.cxi_file import write_simulated
    from ccfsort.verdicts import frame_counts

    # the other source: a fixed (not randomised) detector of another size, without "streak"
    other = tmp_path / "held-out.cxi"
    write_simulated(other, SimulationConfig(size=48, hole_radius=4.0), 20, seed=5, progress=False)
    drop_label(other, "streak")
    study_file = tmp_path / "tiny.toml"
    study_file.write_text(TRANSFER_TINY)
    out = tmp_path / "study"
    printed = _study([study_file, "-o", out, "--quiet", "--eval-source", other])

    simulated = json.loads((out / "data" / "simulated.json").read_text())
    assert simulated["options"]["randomize"] is True
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    source = str(other.resolve())
    # noise none / max x images / CCF maps, and CCF maps with the per-frame bound (max-frame)
    assert len(report["arms"]) == 5
    assert {arm["build"]["noise"] for arm in report["arms"].values()} == {
        "none",
        "max",
        "max-frame",
    }
    # Every arm scored on all 20 frames; per-class rows and the unscorable label kept.
    for name, arm in report["arms"].items():
        scored = arm["eval_sources"][source]
        seed = scored["seeds"]["0"]
        assert seed["n_frames"] == 20 and scored["unscored_labels"] == ["streak"], name
        assert [row["name"] for row in seed["per_class"]] == list(scored["per_class"])
        assert "streak" not in scored["per_class"]
        for row in seed["per_class"]:
            assert scored["per_class"][row["name"]]["precision"]["mean"] == row["precision"]
            assert scored["per_class"][row["name"]]["recall"]["mean"] == row["recall"]
        # the cached per-frame counts are the run's predictions on those frames
        (run,) = (out / "runs" / name).glob("seed-0")
        (counts_file,) = (out / "scores" / name / "seed-0").glob("*.npz")
        with np.load(counts_file) as saved:
            counts = saved["counts"]
        metrics, extra = evaluate_run(run, scored["seeds"]["0"]["store"], subset="all",
                                      predictions=True)  # fmt: skip
        assert np.array_equal(counts, frame_counts(extra["truth"], extra["predicted"]))
        assert metric_of_counts(counts.sum(axis=0), "accuracy") == pytest.approx(seed["accuracy"])
        assert metrics.accuracy == pytest.approx(seed["accuracy"])
    assert f"per class (precision / recall, every frame of `{source}`)" in md
    assert "per class (precision / recall, test split)" in md
    assert "does not have, not scored: streak;" in md
    # The claims on the other source name it and are judged on its frames (one seed: no
    # verdict, and the difference is that of the two arms' scores there).
    on_source = [c for c in report["claims"] if c.get("on") == "eval-source"]
    assert len(on_source) == 3 and all("held-out.cxi" in c["text"] for c in on_source)
    by_name = report["arms"]
    for claim in on_source:
        assert claim["verdict"] == ONE_SEED and claim["n_frames"] == 20
        a = by_name[claim["a"]]["eval_sources"][source]["seeds"]["0"]
        b = by_name[claim["b"]]["eval_sources"][source]["seeds"]["0"]
        assert claim["delta"] == pytest.approx(a["accuracy"] - b["accuracy"])
        assert "frames of the source" in verdict_line(claim)
        assert claim["text"] in printed
    (on_test,) = [c for c in report["claims"] if "on" not in c]
    assert on_test["verdict"] == ONE_SEED and on_test["n_frames"] == 12
    assert "no verdict possible with one seed" in md
    # The SVM of the max-frame column sees the frames the network saw: each with its own bound.
    from ccfkit.io.source import open_source
    from ccfkit.resize import resize_images
    from ccfkit.store import open_store as open_group
    from ccfsort.study_baseline import store_frames

    (per_frame,) = [n for n, arm in report["arms"].items() if arm["build"]["noise"] == "max-frame"]
    config = json.loads((out / "runs" / per_frame / "seed-0" / "config.json").read_text())
    group = open_group(config["store"]["path"])
    assert group.attrs["noise"]["level"] == "max-frame"
    frames = open_source([str(out / "data" / "simulated.cxi")])
    noisy = store_frames(group, frames, 0, frames.n_frames)
    np.testing.assert_allclose(
        resize_images(noisy, 16, group["mask"][:]), group["images"][:], rtol=1e-5, atol=1e-3
    )
    # Without an eval source, the claims on one are not run, and say why.
    _study([study_file, "-o", out, "--quiet", "--report-only"])
    again = json.loads((out / "report.json").read_text())
    missing = [c for c in again["claims"] if c.get("on") == "eval-source"]
    assert len(missing) == 3 and {c["verdict"] for c in missing} == {"not run"}
    assert "no --eval-source scored" in (out / "report.md").read_text()
