"""`trainer study` (docs/study.md): the plan, the split, the verdicts, the smoke preset end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ccfsort.study_plan import PlanError, apply_override, build_config, load_config, make_plan
from ccfsort.verdicts import NO, UNRESOLVED, YES, compare, frame_counts, metric_of_counts, verdict
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
    # Consistent seeds but an interval that covers 0 is still not resolved, and one seed
    # can never give a verdict.
    assert compare(good[:1], bad[:1], "accuracy", resamples=200)["verdict"] == UNRESOLVED


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
    with pytest.raises(PlanError, match="unknown build parameter.*no_such_parameter"):
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


def test_overrides_are_toml_values():
    config = {"train": {"epochs": 2}}
    apply_override(config, "train.epochs=5")
    apply_override(config, "seeds=[0, 1, 2]")
    apply_override(config, "build.noise=max")
    assert config == {"train": {"epochs": 5}, "seeds": [0, 1, 2], "build": {"noise": "max"}}
    with pytest.raises(PlanError):
        apply_override(config, "novalue")


@pytest.mark.parametrize("name", ["cpu", "cpu-maps", "cpu-gaps", "paper"])
def test_shipped_presets_expand(name):
    from ccfkit.simulate import SimulationConfig

    config = load_config(name)
    plan = make_plan(config)
    assert len(plan.seeds) >= 3 and plan.claims and plan.tables
    for arm in plan.arms.values():
        build_config(arm.build)  # every arm's build is one ccfkit accepts
    spec = {k: v for k, v in config["data"].get("simulate", {}).items() if k not in ("n", "seed")}
    SimulationConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


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
