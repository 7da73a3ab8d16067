"""The README's main job, `ccfkit demo`, on a small simulated set."""

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from ccfkit.cli import main


def test_demo_simulates_builds_and_draws(tmp_path):
    result = CliRunner().invoke(main, ["demo", str(tmp_path), "--frames", "24"])
    assert result.exit_code == 0, result.output
    for name in ("demo_maps.png", "ccf_stages.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    clean = zarr.open_group(str(tmp_path / "maps-none.zarr"), mode="r")
    noisy = zarr.open_group(str(tmp_path / "maps-max.zarr"), mode="r")
    assert clean.attrs["status"] == noisy.attrs["status"] == "complete"
    assert clean["ccf"].shape == (24, 224, 224)
    assert noisy.attrs["noise"]["bound"] == noisy.attrs["noise"]["median_max"] > 0
    # same frames, same statistics; the noise changes the maps
    np.testing.assert_array_equal(clean["stats"][:], noisy["stats"][:])
    assert not np.allclose(clean["ccf"][:], noisy["ccf"][:], atol=1e-3)


def test_the_stack_demo_sorts_module_stacks_through_their_geometry(tmp_path, monkeypatch):
    """`trainer demo-stack` at a small size: every step's file, the store's geometry, the page;
    the new frames predicted once, for the CSV, the page and the accuracy alike."""
    import csv

    pytest.importorskip("extra_geom")
    pytest.importorskip("torch")
    import ccfsort.sorting
    from ccfkit.cli_inputs import open_frames
    from ccfsort.demo_stack import run_stack_demo

    predictions = []
    real = ccfsort.sorting.predict_frames
    monkeypatch.setattr(ccfsort.sorting, "predict_frames",
                        lambda *a, **k: predictions.append(1) or real(*a, **k))  # fmt: skip

    lines = []
    small = {"q_bins": 16, "phi_bins": 32}
    summary = run_stack_demo(tmp_path, frames=12, new_frames=6, epochs=1, width=8, maps=small,
                             backend="numpy", say=lines.append)  # fmt: skip
    assert summary["stack_shape"] == (16, 512, 128) and summary["sorted"] == 6
    store = zarr.open_group(str(tmp_path / "train.zarr"), mode="r")
    assert store["ccf"].shape == (12, 16, 16) and store.attrs["status"] == "complete"
    recorded = store.attrs["input"]["geometry"]
    assert recorded["text"] == (tmp_path / "train.geom").read_text()
    assert recorded["stack_shape"] == [16, 512, 128]
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["index"]) for row in rows] == list(range(6))
    assert len(predictions) == 1
    new = open_frames([str(tmp_path / "new.h5")], geometry=tmp_path / "new.geom")
    csv_labels = np.array([[int(row[name]) for name in new.label_names] for row in rows])
    assert summary["accuracy"] == pytest.approx((csv_labels == new.labels).mean())
    page = (tmp_path / "gallery.html").read_text()
    assert page.count('class="thumb"') >= 3
    assert [line.split()[:2] for line in lines] == [
        ["ccfkit", "simulate"], ["ccfkit", "simulate"], ["ccfkit", "build"],
        ["trainer", "fit"], ["trainer", "predict"], ["trainer", "gallery"],
    ]  # fmt: skip
    assert "--geometry" not in lines[4] and f"--geometry {tmp_path / 'train.geom'} " in lines[2]
    assert recorded["file"] == str(tmp_path / "train.geom")

    # a rerun replaces the demo's own files (it wrote demo-stack.json listing them)
    again = run_stack_demo(tmp_path, frames=12, new_frames=6, epochs=1, width=8, maps=small,
                           backend="numpy", say=lines.append)  # fmt: skip
    assert again["accuracy"] == summary["accuracy"] and again["sorted"] == 6


@pytest.mark.parametrize("name", ["train.h5", "predictions.csv", "run"])
def test_the_stack_demo_refuses_files_it_did_not_write(tmp_path, name):
    """A user's file where the demo writes one: refused in one line, before anything is written."""
    pytest.importorskip("torch")
    from ccfkit.outputs import OutputRefused
    from ccfsort.demo_stack import run_stack_demo

    mine = tmp_path / name
    if name == "run":
        mine.mkdir()
        (mine / "notes.txt").write_text("mine")
    else:
        mine.write_text("mine")
    with pytest.raises(OutputRefused, match=f"{mine} exists and was not written by"):
        run_stack_demo(tmp_path, frames=12, new_frames=6, epochs=1, width=8,
                       maps={"q_bins": 16, "phi_bins": 32}, backend="numpy", say=print)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert (mine / "notes.txt" if name == "run" else mine).read_text() == "mine"
