"""Fine-tuning from few labels: ``trainer fit --init RUN``, ``--freeze N``, ``--train-frames K``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from ccfkit.simulate import LABELS as SIMULATED_LABELS
from trainer.cli import main as trainer_main
from trainer.config import TrainConfig
from trainer.data import DataError, StoreDataset, inspect_store
from trainer.finetune import read_init, start_from_init
from trainer.inference import load_run
from trainer.loop import fit, resume
from trainer.model import ModelConfig, build_model
from trainer.run_dir import RunError, run_split
from trainer.train_rows import draw_frames

pytestmark = pytest.mark.usefixtures("torch_one_thread")

N_LABELS = len(SIMULATED_LABELS)


def _ccfkit(*args) -> None:
    from ccfkit.cli import main as ccfkit_main

    result = CliRunner().invoke(ccfkit_main, [str(a) for a in args])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """64 simulated frames built twice: 32 x 32 maps on 64 angles, and on 32 angles."""
    root = tmp_path_factory.mktemp("finetune")
    cxi = root / "sim.cxi"
    _ccfkit("simulate", cxi, "--n", 64, "--size", 64, "--seed", 1, "--quiet")
    made = {}
    for name, phi in (("maps", 64), ("other_phi", 32)):
        made[name] = root / f"{name}.zarr"
        _ccfkit("build", cxi, made[name], "--q-bins", 32, "--phi-bins", phi, "--chunk", 16,
                "--backend", "numpy", "--quiet")  # fmt: skip
    return {name: str(path) for name, path in made.items()}


def _train(store, **kw) -> TrainConfig:
    base = {"store": store, "epochs": 1, "batch_size": 16, "workers": 0, "device": "cpu",
            "lr": 0.05, "test_fraction": 0.15}  # fmt: skip
    return TrainConfig(**{**base, **kw})


MODEL = ModelConfig(num_classes=N_LABELS, width=8)


@pytest.fixture(scope="module")
def init_run(stores, tmp_path_factory):
    """A run of 2 epochs on the store: what the fine-tuned runs start from."""
    run = tmp_path_factory.mktemp("init") / "run"
    fit(run, MODEL, _train(stores["maps"], epochs=2, seed=3), progress=False)
    return run


def _renamed_store(store, tmp_path, names) -> str:
    """A copy of ``store`` whose label columns are called ``names``."""
    copy = tmp_path / "renamed.zarr"
    shutil.copytree(store, copy)
    group = zarr.open_group(str(copy), mode="r+")
    group["labels"].attrs["names"] = list(names)
    group.attrs["layout"] = {**group.attrs["layout"], "label_names": list(names)}  # as built so
    return str(copy)


def _probabilities(model, store) -> np.ndarray:
    x, _, _ = StoreDataset(store, "ccf")[(0, np.arange(64))]
    model.eval()
    with torch.no_grad():
        return torch.sigmoid(model(x)).numpy()


def test_the_init_weights_are_loaded_exactly(stores, init_run, tmp_path):
    """The network a fine-tuned run starts from predicts what the init run's checkpoint does."""
    run = tmp_path / "tuned"
    fit(run, MODEL, _train(stores["maps"], init=str(init_run), lr=1e-30), progress=False)
    recorded = json.loads((run / "config.json").read_text())["init"]
    assert recorded["run"] == str(init_run.resolve()) and recorded["checkpoint"] == "best.pt"
    assert recorded["sha256"] == read_init(init_run).sha256
    assert recorded["fresh_labels"] == [] and recorded["dropped_labels"] == []
    assert json.loads((run / "report.json").read_text())["init"] == recorded
    assert f"started from `{recorded['run']}` (best.pt" in (run / "report.md").read_text()
    init_model, _, _ = load_run(init_run, "best")
    torch.manual_seed(99)  # any fresh network: every weight is replaced
    model = build_model(MODEL)
    start_from_init(model, run, inspect_store(stores["maps"]).label_names)
    np.testing.assert_array_equal(
        _probabilities(model, stores["maps"]), _probabilities(init_model, stores["maps"])
    )
    # One epoch at lr 1e-30 moves no parameter by a float32 ulp: the start was the init's.
    tuned = torch.load(run / "last.pt", weights_only=True)["model"]
    for name, _ in model.named_parameters():
        assert torch.equal(tuned[name], init_model.state_dict()[name]), name


def test_the_last_checkpoint_can_be_chosen(stores, init_run, tmp_path):
    fit(tmp_path / "r", MODEL, _train(stores["maps"], init=str(init_run), init_checkpoint="last"),
        progress=False)  # fmt: skip
    recorded = json.loads((tmp_path / "r" / "config.json").read_text())["init"]
    assert recorded["checkpoint"] == "last.pt" and recorded["epoch"] == 1
    assert recorded["sha256"] == read_init(init_run, "last").sha256


def test_frozen_stages_stay_bit_for_bit_and_the_rest_learns(stores, init_run, tmp_path):
    run = tmp_path / "frozen"
    fit(run, MODEL, _train(stores["maps"], init=str(init_run), freeze=2, epochs=2), progress=False)
    before = torch.load(init_run / "best.pt", weights_only=True)["model"]
    after = torch.load(run / "last.pt", weights_only=True)["model"]
    frozen = [k for k in before if k.startswith(("conv1.", "stages.0."))]
    assert any("running_mean" in k for k in frozen)  # their BatchNorm statistics are kept too
    for key in frozen:
        assert torch.equal(after[key], before[key]), key
    for key in ("stages.1.0.conv1.weight", "stages.3.1.bn2.running_var", "norm.weight",
                "fc.weight"):  # fmt: skip
        assert not torch.equal(after[key], before[key]), key


def test_frozen_batchnorm_stays_in_eval_mode_after_train():
    model = build_model(MODEL)
    model.freeze(2)
    model.train()
    modes = {name: m.training for name, m in model.named_modules()
             if isinstance(m, torch.nn.BatchNorm2d)}  # fmt: skip
    assert not any(mode for name, mode in modes.items() if name.startswith("stages.0."))
    assert all(mode for name, mode in modes.items() if not name.startswith("stages.0."))
    assert not model.conv1.weight.requires_grad and model.stages[1][0].conv1.weight.requires_grad
    with pytest.raises(ValueError, match="freeze"):
        model.freeze(6)


def test_a_label_the_init_run_lacks_gets_a_fresh_head_row(stores, init_run, tmp_path):
    names = list(inspect_store(stores["maps"]).label_names)
    renamed = [n.upper().replace("_", "-") for n in names]  # the same labels, spelled otherwise
    renamed[-1] = "Streifen"  # a label the init run does not know
    store = _renamed_store(stores["maps"], tmp_path, renamed)
    run = tmp_path / "tuned"
    fit(run, MODEL, _train(store, init=str(init_run), seed=5), progress=False)
    recorded = json.loads((run / "config.json").read_text())["init"]
    assert recorded["fresh_labels"] == ["Streifen"] and recorded["dropped_labels"] == [names[-1]]
    assert recorded["labels"][renamed[0]] == names[0]
    torch.manual_seed(5)  # the fit's fresh network: seeded by its --seed
    fresh = build_model(MODEL)
    torch.manual_seed(5)
    model = build_model(MODEL)
    start_from_init(model, run, renamed)
    init_fc = load_run(init_run, "best")[0].fc.weight
    assert torch.equal(model.fc.weight[:-1], init_fc[:-1])
    assert torch.equal(model.fc.weight[-1], fresh.fc.weight[-1])


def _fit_cli(*args):
    return CliRunner().invoke(trainer_main, ["fit", *map(str, args), "--epochs", 1, "--workers",
                                             0, "--device", "cpu", "--quiet"])  # fmt: skip


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_mismatches_are_refused_in_one_line(stores, init_run, tmp_path):
    line = _one_line_error(_fit_cli(stores["other_phi"], "--init", init_run,
                                    "--run-dir", tmp_path / "a"))  # fmt: skip
    assert "phi_bins 32 (the init run's: 64)" in line
    line = _one_line_error(_fit_cli(stores["maps"], "--init", init_run, "--width", 16,
                                    "--run-dir", tmp_path / "b"))  # fmt: skip
    assert "another network: width 16 (the init run's: 8)" in line
    line = _one_line_error(_fit_cli(stores["maps"], "--init", init_run, "--normalize", "max",
                                    "--run-dir", tmp_path / "c"))  # fmt: skip
    assert "another input: normalize 'max' (the init run's: 'none')" in line
    unknown = _renamed_store(stores["maps"], tmp_path, [f"x{i}" for i in range(N_LABELS)])
    line = _one_line_error(_fit_cli(unknown, "--init", init_run, "--run-dir", tmp_path / "d"))
    assert "labels: no label of the store" in line
    assert not any((tmp_path / name).exists() for name in "abcd")  # refused before writing
    line = _one_line_error(
        _fit_cli(stores["maps"], "--init", tmp_path, "--run-dir", tmp_path / "e")
    )
    assert "not a run directory" in line


def test_the_init_runs_network_is_taken_without_options(stores, init_run, tmp_path):
    run = tmp_path / "r"
    result = _fit_cli(stores["maps"], "--init", init_run, "--run-dir", run, "--freeze", 1,
                      "--train-frames", 12)  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["width"] == 8 and config["train"]["freeze"] == 1
    assert config["train"]["train_frames"] == 12 and len(np.load(run / "split.npz")["train"]) == 12


def test_train_frames_draws_k_of_the_training_split_with_the_seed(stores):
    n = inspect_store(stores["maps"]).n_frames
    full = run_split(_train(stores["maps"]), n)
    few = run_split(_train(stores["maps"], train_frames=10), n)
    assert len(few["train"]) == 10 and np.isin(few["train"], full["train"]).all()
    for key in ("validation", "test"):  # unchanged: runs of every K are scored alike
        assert np.array_equal(few[key], full[key])
    other = run_split(_train(stores["maps"], train_frames=10, seed=1), n)
    assert len(other["train"]) == 10 and np.isin(other["train"], run_split(
        _train(stores["maps"], seed=1), n)["train"]).all()  # fmt: skip
    assert not np.array_equal(draw_frames(full["train"], 10, 0), draw_frames(full["train"], 10, 1))
    assert np.isin(draw_frames(full["train"], 5, 0), draw_frames(full["train"], 25, 0)).all()
    with pytest.raises(DataError, match=f"has {len(full['train'])} frames"):
        run_split(_train(stores["maps"], train_frames=len(full["train"]) + 1), n)
    with pytest.raises(ValueError, match="--train-frames and --train-fraction"):
        _train(stores["maps"], train_frames=10, train_fraction=0.5)


def test_a_fit_on_k_frames_trains_on_exactly_those(stores, init_run, tmp_path):
    run = tmp_path / "k"
    fit(run, MODEL, _train(stores["maps"], init=str(init_run), train_frames=7, seed=2),
        progress=False)  # fmt: skip
    split = np.load(run / "split.npz")
    n = inspect_store(stores["maps"]).n_frames
    assert np.array_equal(split["train"], run_split(_train(stores["maps"], train_frames=7, seed=2),
                                                    n)["train"])  # fmt: skip
    assert len(split["train"]) == 7


def test_train_index_rows_must_be_training_rows(stores, tmp_path):
    n = inspect_store(stores["maps"]).n_frames
    full = run_split(_train(stores["maps"]), n)
    index = tmp_path / "rows.txt"
    index.write_text("\n".join(map(str, full["train"][[4, 1, 9]])) + "\n")
    split = run_split(_train(stores["maps"], train_index=str(index)), n)
    assert np.array_equal(split["train"], np.sort(full["train"][[1, 4, 9]]))
    assert np.array_equal(split["validation"], full["validation"])
    index.write_text(f"{full['train'][0]}\n{full['validation'][0]}\n")
    with pytest.raises(DataError, match=f"row {full['validation'][0]} is in the validation split"):
        run_split(_train(stores["maps"], train_index=str(index)), n)


def test_train_frames_compose_with_a_label_table(stores, tmp_path):
    """--labels: the split is over the labelled frames, and K of their training rows are drawn."""
    names = inspect_store(stores["maps"]).label_names
    table = tmp_path / "labels.csv"
    rows = np.arange(0, 64, 2)
    table.write_text("index," + ",".join(names) + "\n"
                     + "".join(f"{r}," + ",".join("0" * len(names)) + "\n" for r in rows))  # fmt: skip
    labelled = run_split(_train(stores["maps"], labels=str(table)), 64)
    few = run_split(_train(stores["maps"], labels=str(table), train_frames=5), 64)
    assert len(few["train"]) == 5 and np.isin(few["train"], labelled["train"]).all()
    assert np.array_equal(few["validation"], labelled["validation"])


def test_resume_of_a_fine_tuned_run_continues_exactly(stores, init_run, tmp_path):
    """2 + 2 epochs equal 4, bit for bit, with frozen stages; the init run is not needed then."""
    init_copy = tmp_path / "init"
    shutil.copytree(init_run, init_copy)
    cfg = {"init": str(init_copy), "freeze": 2, "lr_step": 2, "train_frames": 20}
    fit(tmp_path / "straight", MODEL, _train(stores["maps"], epochs=4, **cfg), progress=False)
    fit(tmp_path / "split", MODEL, _train(stores["maps"], epochs=2, **cfg), progress=False)
    shutil.rmtree(init_copy)
    resume(tmp_path / "split", epochs=4, progress=False)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(b["model"][key], value), key
    frozen = torch.load(init_run / "best.pt", weights_only=True)["model"][
        "stages.0.0.conv1.weight"
    ]
    assert torch.equal(b["model"]["stages.0.0.conv1.weight"], frozen)


def test_freeze_needs_init():
    with pytest.raises(ValueError, match="--freeze needs --init"):
        TrainConfig(store="x", freeze=1)
    with pytest.raises(RunError, match="not a run directory"):
        read_init(".", "last")
