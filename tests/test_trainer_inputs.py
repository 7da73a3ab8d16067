"""The trainer's inputs: `trainer fit` refuses bad ones in one line, before a run directory is
made or cleared; `trainer explain` reads a store's labels by name."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from trainer.cli import main as trainer_main
from trainer.data import inspect_store

pytestmark = pytest.mark.usefixtures("torch_one_thread")

TINY = ["--epochs", 1, "--width", 4, "--batch-size", 8, "--workers", 0, "--device", "cpu",
        "--quiet"]  # fmt: skip


def _invoke(main, *args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _one_line_error(result) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def _fit(store, run_dir, *options):
    return _invoke(trainer_main, "fit", store, "--run-dir", run_dir, *TINY, *options)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """24 simulated frames -> 16 x 16 CCF maps, chunks of 8."""
    from ccfkit.cli import main as ccfkit_main

    root = tmp_path_factory.mktemp("fit_inputs")
    cxi, store = root / "sim.cxi", root / "maps.zarr"
    _ok(_invoke(ccfkit_main, "simulate", cxi, "--n", 24, "--size", 48, "--seed", 3, "--quiet"))
    _ok(_invoke(ccfkit_main, "build", cxi, store, "--q-bins", 16, "--phi-bins", 32, "--chunk", 8,
                "--backend", "numpy", "--quiet"))  # fmt: skip
    return str(store)


def _label_table(path, store, rows, value=0):
    names = inspect_store(store).label_names
    path.write_text("index," + ",".join(names) + "\n" + "".join(
        f"{r}," + ",".join(str(value) for _ in names) + "\n" for r in rows))  # fmt: skip
    return path


def test_overwrite_refuses_inputs_inside_the_run_it_would_clear(store, tmp_path):
    """--labels RUN/labels.csv, --init RUN, --split RUN/split.npz with --run-dir RUN --overwrite:
    refused before anything is removed; the run's files are all still there, unchanged."""
    run_dir = tmp_path / "run"
    table = _label_table(tmp_path / "table.csv", store, range(0, 24, 2))
    _ok(_fit(store, run_dir, "--labels", table))
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert "labels.csv" in before and "best.pt" in before
    cases = [(option, value, value) for option, value in (
        ("--labels", run_dir / "labels.csv"), ("--init", run_dir),
        ("--split", run_dir / "split.npz"))]  # fmt: skip
    # the same files spelt otherwise (strings: pathlib would drop a "." itself), named as
    # resolved (the command line resolves --labels, fine-tuning --init)
    cases += [("--labels", f"{run_dir}/./labels.csv", run_dir / "labels.csv"),
              ("--labels", f"{run_dir}/../run/labels.csv", run_dir / "labels.csv"),
              ("--init", f"{run_dir}/.", run_dir),
              ("--init", f"{run_dir}/../run", run_dir)]  # fmt: skip
    for option, value, named in cases:
        line = _one_line_error(_fit(store, run_dir, "--overwrite", option, value))
        assert f"{option} {named} lies in --run-dir {run_dir}" in line, line
        assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before
    # an input outside the run: the overwrite goes ahead
    _ok(_fit(store, run_dir, "--overwrite", "--labels", table))


def test_an_empty_validation_split_is_refused(store, tmp_path):
    """The best checkpoint is chosen on the validation split: there must be one."""
    line = _one_line_error(_fit(store, tmp_path / "a", "--eval-fraction", 0))
    assert "no validation frame" in line
    split = tmp_path / "split.npz"
    np.savez(split, train=np.arange(20), eval=np.zeros(0, np.int64), test=np.arange(20, 24))
    line = _one_line_error(_fit(store, tmp_path / "b", "--split", split))
    assert "no validation frame" in line
    table = _label_table(tmp_path / "two.csv", store, [3, 7])  # 1 to validate, 1 to train
    line = _one_line_error(_fit(store, tmp_path / "c", "--labels", table))
    assert "has 1 training frame(s)" in line
    assert not any((tmp_path / name).exists() for name in "abc")


@pytest.mark.parametrize(
    "options, message",
    [
        (["--eval-fraction", 0.5, "--test-fraction", 0.6], "leave no training frame"),
        (["--train-fraction", 0.01], "has 1 training frame(s)"),
        (["--train-frames", 1], "has 1 training frame(s)"),
    ],
)
def test_unusable_splits_are_refused_in_one_line(store, tmp_path, options, message):
    line = _one_line_error(_fit(store, tmp_path / "run", *options))
    assert message in line
    assert not (tmp_path / "run").exists()


def test_a_split_file_with_negative_rows_is_refused_as_the_split_files_fault(store, tmp_path):
    split = tmp_path / "neg.npz"
    np.savez(split, train=np.array([-3, 1, 2, 4, 5]), eval=np.array([6, 7]), test=np.array([8]))
    line = _one_line_error(_fit(store, tmp_path / "run", "--split", split))
    assert f"{split}: row -3 is negative" in line and "rebuild" not in line
    assert not (tmp_path / "run").exists()


def test_a_label_table_with_a_split_file_keeps_the_splits_sets(store, tmp_path):
    """--labels with --split: each labelled frame stays in the set the split file puts it in."""
    from trainer.config import TrainConfig
    from trainer.run_dir import run_split

    split = tmp_path / "split.npz"
    order = np.random.default_rng(5).permutation(24)
    np.savez(split, train=np.sort(order[:14]), eval=np.sort(order[14:19]),
             test=np.sort(order[19:]))  # fmt: skip
    labelled = np.arange(0, 24, 2)
    table = _label_table(tmp_path / "table.csv", store, labelled)
    got = run_split(TrainConfig(store=store, labels=str(table), split_file=str(split)), 24)
    for key, saved in (("train", order[:14]), ("validation", order[14:19]), ("test", order[19:])):
        assert np.array_equal(got[key], np.intersect1d(saved, labelled)), key
    run_dir = tmp_path / "run"
    _ok(_fit(store, run_dir, "--labels", table, "--split", split))
    written = np.load(run_dir / "split.npz")
    assert np.array_equal(written["eval"], np.intersect1d(order[14:19], labelled))
    assert np.array_equal(written["test"], np.intersect1d(order[19:], labelled))


def test_explain_names_the_true_labels_by_name_not_position(store, tmp_path):
    """A store whose label columns are in another order (and case): the truth is read by name."""
    import shutil

    import zarr

    run_dir = tmp_path / "run"
    _ok(_fit(store, run_dir))
    names = list(inspect_store(store).label_names)
    permuted = tmp_path / "permuted.zarr"
    shutil.copytree(store, permuted)
    group = zarr.open_group(str(permuted), mode="r+")
    order = np.roll(np.arange(len(names)), 3)
    labels = group["labels"][:]
    group["labels"][:] = labels[:, order]
    new_names = [names[i].upper() for i in order]
    group["labels"].attrs["names"] = new_names
    group.attrs["layout"] = {**group.attrs["layout"], "label_names": new_names}
    row = int(np.argmax(labels.sum(axis=1)))  # a frame with labels set
    expected = ", ".join(n for n, v in zip(names, labels[row]) if v) or "none"
    for source in (store, permuted):
        out = _ok(_invoke(trainer_main, "explain", run_dir, source, "--index", row,
                          "-o", tmp_path / "h.png")).output  # fmt: skip
        assert out.split("; true: ")[1].split(";")[0].strip() == expected, out
        assert "flat heatmap" in out  # 16 x 16 maps: a 1 x 1 feature map, nothing stands out
