"""`trainer label`: the label table, the session, the HTTP interface, the page in Chromium,
and `trainer fit --labels` closing the loop (docs/training.md, "Labelling a run")."""

from __future__ import annotations

import csv
import json
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
from labelling import (  # noqa: F401 (browser: a fixture)
    TIMEOUT_MS,
    assert_not_uniform,
    browser,
    invoke,
    make_run,
    make_store,
    open_page,
    store_labels,
)

from ccfsort.frames import FramesError, StoreFrames
from ccfsort.label.app import LabelServer
from ccfsort.label.session import LabelError, LabelSession, Prediction, open_session
from trainer.cli import main as trainer_main
from trainer.label_table import (
    LabelTable,
    LabelTableError,
    read_label_table,
    write_label_table,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: Seconds any HTTP request of a test may take.
HTTP_TIMEOUT = 20


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("label"))


@pytest.fixture(scope="module")
def run_dir(store, tmp_path_factory):
    return make_run(store, tmp_path_factory.mktemp("run") / "run")


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def http(url, body=None):
    """``(status, JSON or text)`` of a GET (or a JSON POST with ``body``) to 127.0.0.1."""
    assert url.startswith("http://127.0.0.1:")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            status, raw, kind = response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers["Content-Type"]
    return status, json.loads(raw) if "json" in kind else raw.decode()


# ---------------------------------------------------------------------------- the table


def test_label_table_round_trip_and_refusals(tmp_path):
    names = ("round", "prolate", "empty")
    table = LabelTable.empty(names).with_row(7, [1, 1, 0]).with_row(2, [0, 0, 1])
    table = table.with_row(7, [0, 1, 0])  # replaced, not added
    path = tmp_path / "labels.csv"
    write_label_table(path, table)
    assert path.read_text().splitlines() == ["index,round,prolate,empty", "2,0,0,1", "7,0,1,0"]
    back = read_label_table(path, names, n_frames=8)
    assert back.rows.tolist() == [2, 7] and back.labels.tolist() == [[0, 0, 1], [0, 1, 0]]
    assert back.dense(9)[7].tolist() == [0, 1, 0] and back.dense(9)[0].tolist() == [0, 0, 0]
    with pytest.raises(LabelTableError, match="do not match the store's label names"):
        read_label_table(path, ("round", "empty", "prolate"))
    with pytest.raises(LabelTableError, match="outside"):
        read_label_table(path, names, n_frames=5)
    for text, message in [
        ("row,round\n1,0\n", "no 'index' column"),
        ("index,round\n1,2\n", "0 or 1"),
        ("index,round\nx,1\n", "not an integer"),
        ("index,round\n1,1\n1,0\n", "appears twice"),
        ("index,round\n1\n", "expected 2"),
    ]:
        path.write_text(text)
        with pytest.raises(LabelTableError, match=message):
            read_label_table(path)
    assert not list(tmp_path.glob("*.partial"))


# ---------------------------------------------------------------------------- the session


def test_next_frame_is_the_least_certain_then_random_without_a_run(store, tmp_path):
    frames = StoreFrames(store)
    n = frames.n_frames
    names = frames.info.label_names
    p = np.full((n, len(names)), 0.99, dtype=np.float32)
    p[5, 2], p[11, 0], p[30, 4] = 0.55, 0.5, 0.6  # 11 exactly at the threshold, then 5, then 30
    prediction = Prediction("run", names, p, 0.5)
    session = LabelSession(frames, tmp_path / "a.csv", prediction=prediction)
    assert session.next_index() == 11
    assert session.next_index() == 11  # the same frame until it is saved
    session.save(11, [])
    assert session.next_index() == 5
    session.save(5, ["round"])
    assert session.next_index() == 30
    assert session.undo() == 5 and session.next_index() == 5  # undo shows it again
    assert read_label_table(tmp_path / "a.csv").rows.tolist() == [11]

    orders = []
    for _ in range(2):  # no run: a seeded random order, the same for the same seed
        random = LabelSession(frames, tmp_path / f"r{len(orders)}.csv", seed=4)
        order = []
        for _ in range(5):
            order.append(random.next_index())
            random.save(order[-1], [])
        orders.append(order)
    assert orders[0] == orders[1] and len(set(orders[0])) == 5
    assert orders[0] != sorted(orders[0]) or orders[0][0] != 0


def test_save_checks_names_groups_and_rows(store, tmp_path):
    session = LabelSession(StoreFrames(store), tmp_path / "l.csv")
    with pytest.raises(LabelError, match="unknown label 'roundish'"):
        session.save(1, ["roundish"])
    with pytest.raises(LabelError, match="exclude each other"):
        session.save(1, ["round", "elliptical"])
    for bad in (-1, 40, 1.5, "3", True):
        with pytest.raises(LabelError):
            session.save(bad, ["round"])
    assert not (tmp_path / "l.csv").exists()
    session.save(3, ["spherical_oblate", "round"])
    session.save(3, ["prolate"])  # a second save replaces the row
    assert session.labels_of(3) == ["prolate"] and session.progress()["per_class"]["prolate"] == 1
    assert session.undo() == 3 and session.labels_of(3) == ["spherical_oblate", "round"]
    assert session.undo() == 3 and session.labels_of(3) is None and session.undo() is None


# ---------------------------------------------------------------------------- HTTP


def test_http_interface(store, run_dir, tmp_path):
    out = tmp_path / "labels.csv"
    session = open_session(store, out, run=run_dir)
    with LabelServer(session, port=0) as server:
        status, page = http(server.url)
        assert status == 200 and "<html" in page and "label.js" in page
        status, script = http(server.url + "static/label.js")
        assert status == 200 and "/api/next" in script
        status, meta = http(server.url + "api/meta")
        assert meta["names"] == list(store_labels(store)[0]) and meta["keys"][:3] == list("123")
        status, frame = http(server.url + "api/next")
        assert status == 200 and isinstance(frame["index"], int) and 0 <= frame["index"] < 40
        assert frame["image"].startswith("data:image/png;base64,") and frame["map"]
        assert set(frame["probabilities"]) == set(meta["names"])
        # the least certain frame of the run comes first
        assert frame["uncertainty"] == pytest.approx(session._uncertainty.max())
        i = frame["index"]
        status, answer = http(
            server.url + "api/labels", {"index": i, "labels": ["round", "prolate"]}
        )
        assert status == 200, answer
        rows = read_rows(out)
        assert [r["index"] for r in rows] == [str(i)]
        assert rows[0]["round"] == "1" and rows[0]["prolate"] == "1"
        assert {k for k, v in rows[0].items() if v == "1"} == {"round", "prolate"}
        before = out.read_bytes()
        for body, message in [
            ({"index": 40, "labels": ["round"]}, "outside"),
            ({"index": -1, "labels": []}, "outside"),
            ({"index": 2, "labels": ["roundish"]}, "unknown label"),
            ({"index": 2, "labels": ["round", "elliptical"]}, "exclude"),
            ({"labels": []}, "expected a JSON object"),
        ]:
            status, answer = http(server.url + "api/labels", body)
            assert 400 <= status < 500 and message in answer["error"], (body, answer)
        assert out.read_bytes() == before
        status, _ = http(server.url + "api/frame/40")
        assert 400 <= status < 500
        status, frame = http(server.url + "api/next")
        assert frame["index"] != i and frame["progress"]["labelled"] == 1

    # restarting with the same --out resumes: the labelled frame is not shown again
    again = open_session(store, out, run=run_dir)
    assert again.progress()["labelled"] == 1 and again.labels_of(i) == ["round", "prolate"]
    assert again.next_index() != i


def test_cli_refusals_are_one_line(store, tmp_path):
    out = tmp_path / "labels.csv"
    out.write_text("this is,not a label table\n")
    before = out.read_bytes()
    result = invoke(trainer_main, "label", store, "--out", out, "--port", 0)
    assert result.exit_code == 1 and str(out) in result.output and "refusing" in result.output
    assert len(result.output.strip().splitlines()) == 1 and out.read_bytes() == before

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = invoke(trainer_main, "label", store, "--out", tmp_path / "new.csv",
                        "--port", port)  # fmt: skip
    assert result.exit_code == 1 and "in use" in result.output and str(port) in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_store_without_images_or_source_is_one_line(tmp_path):
    store = make_store(tmp_path, n=8, keep_images=False)
    assert StoreFrames(store).images([2]).shape == (1, 48, 48)  # from the input file
    (tmp_path / "sim.cxi").rename(tmp_path / "moved.cxi")
    with pytest.raises(FramesError, match="no images"):
        StoreFrames(store)
    result = invoke(trainer_main, "label", store, "--out", tmp_path / "l.csv", "--port", 0)
    assert result.exit_code == 1 and "has no images" in result.output
    assert len(result.output.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- fit --labels


def test_fit_on_a_label_table(store, tmp_path):
    names, truth = store_labels(store)
    rows = np.array([0, 3, 4, 9, 12, 17, 20, 21, 26, 30, 33, 38])
    flipped = truth[rows].copy()
    flipped[:, 0] = 1 - flipped[:, 0]  # not the store's labels: the table's must be used
    table = LabelTable(names, rows, flipped)
    labels = tmp_path / "labels.csv"
    write_label_table(labels, table)
    run = tmp_path / "run"
    result = invoke(trainer_main, "fit", store, "--labels", labels, "--epochs", 1, "--width", 8,
                    "--batch-size", 8, "--workers", 0, "--device", "cpu", "--run-dir", run,
                    "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    split = np.load(run / "split.npz")
    used = np.concatenate([split["train"], split["eval"], split["test"]])
    assert sorted(used.tolist()) == rows.tolist() and len(split["eval"]) == round(0.15 * 12)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["labels"] == str(labels.resolve())
    assert (run / "labels.csv").read_text() == labels.read_text()  # kept with the run
    from trainer.config import TrainConfig
    from trainer.data import StoreDataset
    from trainer.run_dir import run_labels

    dense = run_labels(run, TrainConfig.from_dict(config["train"]), StoreFrames(store).info)
    _, y, _ = StoreDataset(str(store), "ccf", labels=dense)[(0, rows)]
    assert np.array_equal(y.numpy(), flipped)
    labels.write_text("index\n")  # the run resumes from its own copy of the table
    result = invoke(trainer_main, "fit", store, "--run-dir", run, "--resume", "--epochs", 2,
                    "--workers", 0, "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len((run / "metrics.csv").read_text().splitlines()) == 3

    # columns that are not the store's names: one line
    bad = tmp_path / "bad.csv"
    bad.write_text("index,round,prolate\n1,1,0\n")
    result = invoke(trainer_main, "fit", store, "--labels", bad, "--epochs", 1, "--run-dir",
                    tmp_path / "r2", "--workers", 0, "--device", "cpu", "--quiet")  # fmt: skip
    assert result.exit_code == 1 and "do not match the store's label names" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "r2").exists()


# ---------------------------------------------------------------------------- the page


def test_label_page_in_chromium(store, run_dir, tmp_path, browser):  # noqa: F811
    out = tmp_path / "labels.csv"
    session = open_session(store, out, run=run_dir)
    with LabelServer(session, port=0) as server:
        page, problems = open_page(browser, server.url)
        page.wait_for_function(
            "document.getElementById('image').naturalWidth > 0"
            " && document.getElementById('map').naturalWidth > 0", timeout=TIMEOUT_MS,
        )  # fmt: skip
        title = page.text_content("#frame-title")
        first = int(title.split()[-1])
        assert first == session.next_index()
        assert page.locator("button.toggle").count() == len(session.names)
        keys = session.meta()["keys"]
        round_key = keys[session.names.index("round")]
        elliptical_key = keys[session.names.index("elliptical")]
        page.keyboard.press(elliptical_key)
        page.keyboard.press(round_key)  # the exclusive group turns elliptical off
        assert page.locator("button.toggle.on").count() == 1
        page.screenshot(path=str(tmp_path / "label.png"))
        page.keyboard.press(" ")
        page.wait_for_function(f"!document.getElementById('frame-title').textContent"
                               f".endsWith(' {first}')", timeout=TIMEOUT_MS)  # fmt: skip
        rows = read_rows(out)
        assert [r["index"] for r in rows] == [str(first)]
        assert {k for k, v in rows[0].items() if v == "1"} == {"round"}
        page.keyboard.press("Backspace")  # undo: the frame comes back, the row goes
        page.wait_for_function(f"document.getElementById('frame-title').textContent"
                               f".endsWith(' {first}')", timeout=TIMEOUT_MS)  # fmt: skip
        assert read_rows(out) == []
        assert problems == []
        page.close()
    assert_not_uniform(tmp_path / "label.png")


def test_a_store_without_labels_takes_the_run_s_or_the_table_s_names(store, tmp_path):
    import dataclasses

    from trainer.label_table import labelled_store_info

    frames = StoreFrames(store)
    frames.info = dataclasses.replace(frames.info, has_labels=False, label_names=())
    frames.label_attrs = {}
    with pytest.raises(LabelError, match="no label names"):
        LabelSession(frames, tmp_path / "l.csv")
    p = np.full((frames.n_frames, 2), 0.9, np.float32)
    prediction = Prediction("run", ("drop", "no_drop"), p, 0.5, (("drop", "no_drop"),))
    session = LabelSession(frames, tmp_path / "l.csv", prediction=prediction)
    assert session.names == ("drop", "no_drop") and session.display_names == ("Drop", "No drop")
    with pytest.raises(LabelError, match="exclude each other"):
        session.save(0, ["drop", "no_drop"])
    session.save(0, ["drop"])
    info = labelled_store_info(frames.info, tmp_path / "l.csv")
    assert info.label_names == ("drop", "no_drop") and info.has_labels
    (tmp_path / "e.csv").write_text("index,drop,no_drop\n")
    with pytest.raises(LabelTableError, match="no labelled frame"):
        labelled_store_info(frames.info, tmp_path / "e.csv")
