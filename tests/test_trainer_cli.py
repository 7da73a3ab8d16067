"""End to end through the command lines: simulate -> build -> fit -> evaluate -> predict -> explain."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner
from test_trainer import read_csv

from ccfkit.cli import main as ccfkit_main
from trainer.cli import main as trainer_main
from trainer.explain import grad_cam_pp
from trainer.model import ModelConfig, build_model

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def invoke(main, args):
    return CliRunner().invoke(main, [str(a) for a in args])


def run(main, args):
    result = invoke(main, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_end_to_end(tmp_path):
    cxi, store, run_dir = tmp_path / "sim.cxi", tmp_path / "maps.zarr", tmp_path / "run"
    run(ccfkit_main, ["simulate", cxi, "--n", "48", "--size", "64", "--seed", "2", "--quiet"])
    run(ccfkit_main, ["build", cxi, store, "--q-bins", "32", "--phi-bins", "64", "--keep-images",
                      "--image-size", "32", "--chunk", "16", "--backend", "numpy", "--quiet"])  # fmt: skip
    out = run(trainer_main, ["fit", store, "--epochs", "2", "--width", "8", "--batch-size", "16",
                             "--workers", "0", "--device", "cpu", "--run-dir", run_dir, "--quiet"])  # fmt: skip
    assert "final accuracy" in out
    for name in ("config.json", "split.npz", "metrics.csv", "best.pt", "last.pt", "report.json",
                 "report.md", "loss.png", "metrics.png"):  # fmt: skip
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["arch"] == 18 and config["model"]["alpha"] == 0.2
    assert config["train"]["batch_size"] == 16 and config["train"]["lr"] == 0.1
    split = np.load(run_dir / "split.npz")
    assert len(split["eval"]) == round(0.15 * 48) and len(split["train"]) == 48 - 7
    rows = read_csv(run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"]
    report = json.loads((run_dir / "report.json").read_text())
    best = report["best_checkpoint"]
    # The final metrics are those of the last epoch's evaluation.
    for key in ("accuracy", "precision", "recall", "violation_rate"):
        assert report["final"][key] == pytest.approx(float(rows[-1][key]), abs=1e-12), key

    # evaluate: the best checkpoint on the run's eval split reproduces the report.
    out = run(
        trainer_main, ["evaluate", run_dir, "--device", "cpu", "--json", tmp_path / "e.json"]
    )
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["subset"] == "eval" and evaluated["n_frames"] == 7
    for key in ("accuracy", "precision", "recall", "violation_rate", "tp", "fp", "fn", "tn"):
        assert evaluated[key] == pytest.approx(best[key]), key
    assert "spherical_oblate" in out

    # predict: one row per frame, probabilities in [0, 1], labels = p >= 0.5.
    run(trainer_main, ["predict", run_dir, store, "-o", tmp_path / "p.csv", "--device", "cpu"])
    table = read_csv(tmp_path / "p.csv")
    names = config["store"]["label_names"]
    assert len(table) == 48
    index = zarr.open_group(str(store), mode="r")["index"][:]
    assert [int(r["index"]) for r in table] == index.tolist()
    for r in table:
        for n in names:
            p = float(r[f"p_{n}"])
            assert 0 <= p <= 1 and int(r[n]) == int(p >= 0.5)

    # explain: a PNG.
    out = run(trainer_main, ["explain", run_dir, store, "--index", "3", "-o", tmp_path / "h.png"])
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"

    # resume to 3 epochs, then clear one-line errors.
    run(trainer_main, ["fit", store, "--run-dir", run_dir, "--resume", "--epochs", "3",
                       "--workers", "0", "--quiet"])  # fmt: skip
    assert len(read_csv(run_dir / "metrics.csv")) == 3
    # Options not given on --resume keep the saved values.
    resumed = json.loads((run_dir / "config.json").read_text())["train"]
    assert resumed == {**config["train"], "epochs": 3}
    bad = invoke(trainer_main, ["fit", tmp_path / "nope.zarr"])
    assert bad.exit_code == 1 and "no such store" in bad.output
    bad = invoke(trainer_main, ["fit", store, "--run-dir", run_dir, "--workers", "0"])
    assert bad.exit_code == 1 and "not empty" in bad.output
    bad = invoke(
        trainer_main, ["explain", run_dir, store, "--index", "99", "-o", tmp_path / "x.png"]
    )
    assert bad.exit_code == 1 and "outside" in bad.output
    zarr.open_group(str(store), mode="a").attrs["status"] = "incomplete"
    bad = invoke(trainer_main, ["evaluate", run_dir, store])
    assert bad.exit_code == 1 and "not 'complete'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_grad_cam_pp_shape_and_linear_case():
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=3, width=8)).eval()
    x = torch.randn(1, 1, 64, 64)
    heat, p = grad_cam_pp(model, x, 1)
    assert heat.shape == (64, 64) and 0 < p < 1
    assert heat.min() == pytest.approx(0.0) and heat.max() == pytest.approx(1.0)
    # With global average pooling and a linear head, dS/dA^k = c_k = w_k / (h w) is
    # constant over the map: alpha^k = c^2 / (2 c^2 + sum(A^k) c^3) and the channel
    # weight is h w alpha^k relu(c_k). Computed here without autograd.
    features = model.forward_features(x).detach()[0].double()
    _, h, wd = features.shape
    c = model.fc.weight.detach()[1].double() / (h * wd)
    alpha = c**2 / (2 * c**2 + features.sum(dim=(1, 2)) * c**3)
    weights = h * wd * alpha * torch.relu(c)
    expected = torch.relu((weights[:, None, None] * features).sum(0)).float()
    up = torch.nn.functional.interpolate(expected[None, None], size=(64, 64), mode="bilinear")[
        0, 0
    ]
    np.testing.assert_allclose(
        heat, ((up - up.min()) / (up.max() - up.min())).numpy(), rtol=1e-4, atol=1e-5
    )


def test_grad_cam_pp_of_a_1x1_feature_map_is_flat():
    """One place in the last feature map: nothing stands out; rounding noise is not stretched."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=3, width=4)).eval()
    for size in (16, 32):
        x = torch.randn(1, 1, size, size)
        assert model.forward_features(x).shape[-2:] == (1, 1)
        heat, p = grad_cam_pp(model, x, 1)
        assert heat.shape == (size, size) and 0 < p < 1
        assert not heat.any()


def _train_bar():
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "train_bar.py"
    if str(path.parent) not in sys.path:  # as for a script run: its folder first (harness.py)
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("train_bar", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_bar_entries_keep_their_tables():
    bar = _train_bar()
    table = "**{}** run\n\n| a | b |\n|---|---:|\n| x | {} |\n\n---\n\nCommand: `{}`"
    doc = f"# Doc\n\n{bar.START}\n{bar.END}\n\nafter\n"
    doc = bar.with_entry(doc, table.format("one", 1, "c1"), "one")
    doc = bar.with_entry(doc, table.format("two", 2, "c2"), "two")
    doc = bar.with_entry(doc, table.format("one", 3, "c3"), "one")  # replaced in place
    assert doc.count("|---|---:|") == 2 and doc.count("---\n\nCommand") == 2
    assert "| x | 1 |" not in doc
    assert doc.index("| x | 3 |") < doc.index("| x | 2 |")
    assert doc.startswith("# Doc\n") and doc.endswith(f"{bar.END}\n\nafter\n")
    # The repository's own document: rewriting its entry changes nothing else.
    path = Path(__file__).resolve().parents[1] / "docs" / "training.md"
    text = path.read_text()
    begin, end = bar.entry_markers("full-1thread")
    entry = text.split(begin, 1)[1].split(end, 1)[0]
    assert bar.with_entry(text, entry, "full-1thread") == text


def test_demo_stack_offers_every_simulated_detector():
    from ccfkit.simulate.stack import DETECTORS
    from trainer.cli import SIMULATED_DETECTORS

    assert SIMULATED_DETECTORS == tuple(DETECTORS)


def test_predict_on_a_store_refuses_the_options_of_frames(tmp_path):
    """A store with --geometry/--detector/--pulses: a usage error before the run is read."""
    store = tmp_path / "maps.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("{}")
    run = tmp_path / "run"
    for option in (["--geometry", "x.geom"], ["--detector", "SPB_DET_AGIPD1M-1"],
                   ["--pulses", "0:4"]):  # fmt: skip
        result = CliRunner().invoke(trainer_main, ["predict", str(run), str(store), "-o",
                                                   str(tmp_path / "p.csv"), *option])  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "apply to frames, not stores" in result.output
        assert not (tmp_path / "p.csv").exists()
