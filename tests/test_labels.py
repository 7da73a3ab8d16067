"""trainer/labels.py: a run scored on a store whose labels are named or ordered otherwise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from test_trainer import N_LABELS, read_csv, tiny_store, tiny_train  # noqa: F401 (fixture)

from trainer.data import DataError
from trainer.inference import evaluate_run, predict_run
from trainer.labels import match_labels, normalize_label, read_label_map
from trainer.loop import fit
from trainer.model import ModelConfig

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize(
    "name, key",
    [
        ("Spherical/Oblate", "spherical_oblate"),
        ("spherical-oblate", "spherical_oblate"),
        (" SPHERICAL__OBLATE ", "spherical_oblate"),
        ("Double Rings", "double_rings"),
        ("Newton rings", "newton_rings"),
    ],
)
def test_names_differing_in_case_and_punctuation_normalize_alike(name, key):
    assert normalize_label(name) == key


def test_match_reorders_columns_and_reports_the_unmatched():
    run = ["spherical_oblate", "round", "elliptical", "empty"]
    store = ["Empty", "Round", "Layered", "Spherical/Oblate"]
    match = match_labels(run, store)
    np.testing.assert_array_equal(match.run_columns, [0, 1, 3])
    np.testing.assert_array_equal(match.store_columns, [3, 1, 0])
    assert match.names == ("spherical_oblate", "round", "empty")
    assert match.unmatched_run == ("elliptical",) and match.unmatched_store == ("Layered",)
    assert not match.is_identity
    assert match.groups([["Spherical/Oblate", "Layered", "Empty"], ["Round", "Layered"]]) == (
        ("spherical_oblate", "empty"),
    )  # a group left with one scored label constrains nothing
    assert match_labels(run, ["Spherical/Oblate", "ROUND", "elliptical", "Empty"]).is_identity


def test_a_label_map_matches_other_names_and_is_checked():
    run = ["round", "elliptical"]
    match = match_labels(run, ["Kugel", "Ellipse"], {"kugel": "Round", "Ellipse": "elliptical"})
    np.testing.assert_array_equal(match.store_columns, [0, 1])
    with pytest.raises(ValueError, match="no label of the store"):
        match_labels(run, ["Kugel", "Ellipse"])
    with pytest.raises(ValueError, match="'cube' is not a label of the store"):
        match_labels(run, ["Kugel"], {"cube": "round"})
    with pytest.raises(ValueError, match="'prolate' is not a label of the run"):
        match_labels(run, ["Kugel"], {"Kugel": "prolate"})
    with pytest.raises(ValueError, match="both match"):
        match_labels(run, ["Round", "round!"])


def test_reading_a_label_map(tmp_path):
    good = tmp_path / "map.json"
    good.write_text(json.dumps({"Kugel": "round"}))
    assert read_label_map(good) == {"Kugel": "round"}
    bad = tmp_path / "bad.json"
    bad.write_text('["round"]')
    with pytest.raises(ValueError, match="expected a JSON object"):
        read_label_map(bad)
    bad.write_text("{round")
    with pytest.raises(ValueError, match="not JSON"):
        read_label_map(bad)
    with pytest.raises(ValueError, match="no such file"):
        read_label_map(tmp_path / "missing.json")


def relabelled_copy(store, path, names, order):
    """The maps of ``store`` with its label columns in ``order``, called ``names``."""
    source = zarr.open_group(store, mode="r")
    group = zarr.open_group(str(path), mode="w")
    group.create_array("ccf", data=source["ccf"][:], chunks=(16, *source["ccf"].shape[1:]))
    group.create_array("index", data=source["index"][:], chunks=(16,))
    labels = group.create_array(
        "labels", data=source["labels"][:][:, order], chunks=(16, len(order))
    )
    labels.attrs["names"] = names
    labels.attrs["exclusive_groups"] = [["Spherical/Oblate", "Prolate", "Empty"]]
    group.attrs.update({"tool": "ccfkit", "schema_version": 1, "status": "complete"})
    return str(path)


def test_a_run_is_scored_on_a_store_with_the_papers_names_in_another_order(
    tiny_store,  # noqa: F811 (the fixture imported above)
    tmp_path,
):
    from ccfkit.simulate import DISPLAY_NAMES, LABELS

    run_dir = tmp_path / "run"
    fit(run_dir, ModelConfig(num_classes=N_LABELS, width=8), tiny_train(tiny_store, epochs=1),
        progress=False)  # fmt: skip
    own, _ = evaluate_run(run_dir, tiny_store, subset="all")
    order = list(range(N_LABELS))[::-1]
    names = [DISPLAY_NAMES[LABELS[i]] for i in order]
    other = relabelled_copy(tiny_store, tmp_path / "paper.zarr", names, order)
    metrics, extra = evaluate_run(run_dir, other)
    assert extra["unscored_labels"] == [] and extra["ignored_labels"] == []
    assert (metrics.tp, metrics.fp, metrics.fn, metrics.tn) == (own.tp, own.fp, own.fn, own.tn)
    assert [c.name for c in metrics.per_class] == [c.name for c in own.per_class]
    assert metrics.accuracy == own.accuracy

    # Two labels only, one under another name: scored through a label map.
    keep = [LABELS.index("round"), LABELS.index("empty")]
    two = relabelled_copy(tiny_store, tmp_path / "two.zarr", ["Kugel", "EMPTY"], keep)
    with pytest.raises(DataError, match="'nothing' is not a label of the run"):
        evaluate_run(run_dir, two, label_map={"Kugel": "nothing"})
    metrics, extra = evaluate_run(run_dir, two, label_map={"Kugel": "round"})
    assert [c.name for c in metrics.per_class] == ["round", "empty"]
    assert len(extra["unscored_labels"]) == N_LABELS - 2
    by_name = {c.name: c for c in own.per_class}
    for row in metrics.per_class:
        assert (row.support, row.predicted) == (
            by_name[row.name].support,
            by_name[row.name].predicted,
        )

    # predict: the run's columns, and the store's labels beside them where they match.
    assert predict_run(run_dir, two, tmp_path / "p.csv", label_map={"Kugel": "round"}) == 64
    rows = read_csv(tmp_path / "p.csv")
    truth = zarr.open_group(tiny_store, mode="r")["labels"][:]
    np.testing.assert_array_equal(
        [int(r["true_round"]) for r in rows], truth[:, LABELS.index("round")]
    )
    assert "p_streak" in rows[0] and "true_streak" not in rows[0]
