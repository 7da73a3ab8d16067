"""`trainer gallery`: the frames it picks (against a full sort), the page, the page in Chromium."""

from __future__ import annotations

import re

import numpy as np
import pytest
from labelling import (  # noqa: F401 (browser: a fixture)
    assert_not_uniform,
    browser,
    invoke,
    make_run,
    make_store,
    open_page,
    run_names,
)
from test_sorting import STACK_GRID, agipd_run  # noqa: F401 (agipd_run: a fixture)

from ccfkit.cli import main as ccfkit_main
from ccfsort.gallery import counts_along_run, select_frames
from ccfsort.selection import top_k, uncertainty
from trainer.cli import main as trainer_main

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    store = make_store(root, n=40)
    return store, make_run(store, root / "run")


def reference_top(scores, k, candidates):
    """The k largest by a full stable sort (largest first, ties to the lower position)."""
    order = sorted(candidates, key=lambda i: (-scores[i], i))
    return np.array(order[:k], dtype=np.int64)


def test_top_k_matches_a_full_sort():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 6, size=300).astype(float)  # many ties
    for k in (0, 1, 5, 60, 299, 300, 400):
        for candidates in (np.arange(300), np.flatnonzero(scores > 1), np.array([], np.int64)):
            got = top_k(scores, k, candidates)
            assert np.array_equal(got, reference_top(scores, k, candidates)), (k, len(candidates))


def test_selection_on_a_million_predictions():
    rng = np.random.default_rng(7)
    n, c, threshold = 1_000_000, 9, 0.5
    p = rng.random((n, c), dtype=np.float32) ** 3  # most frames negative, some positive
    selection = select_frames(p, threshold, per_class=8, uncertain=12)
    predicted = p >= threshold
    assert selection.counts.tolist() == predicted.sum(axis=0).tolist()
    for k in range(c):
        positives = np.flatnonzero(predicted[:, k])
        full = positives[np.lexsort((positives, -p[positives, k]))][:8]
        assert np.array_equal(selection.best[k], full)
    u = uncertainty(p, threshold)
    full = np.lexsort((np.arange(n), -u))[:12]
    assert np.array_equal(selection.uncertain, full)
    assert np.all(u[selection.uncertain] >= np.sort(u)[-12])
    edges, counts = counts_along_run(p, threshold, np.arange(n) * 2 + 100, bins=50)
    assert counts.shape == (50, c) and counts.sum(axis=0).tolist() == selection.counts.tolist()
    assert edges[0] == 100 and edges[-1] == 2 * (n - 1) + 100


def test_uncertainty_values():
    p = np.array([[0.5, 1.0], [0.0, 1.0], [0.75, 0.9], [0.2, 0.0]])
    assert uncertainty(p).tolist() == pytest.approx([1.0, 0.0, 0.5, 0.4])
    # threshold 0.8: a probability of 0 is as certain as it gets (distance 0.8, scale 0.8)
    assert uncertainty(np.array([[0.0], [0.8], [1.0]]), 0.8).tolist() == pytest.approx(
        [0.0, 1.0, 0.75]
    )


def test_gallery_file(made, tmp_path):
    store, run_dir = made
    out = tmp_path / "g.html"
    result = invoke(trainer_main, "gallery", run_dir, store, "-o", out, "--per-class", 3,
                    "--uncertain", 4, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    images = re.findall(r'<img[^>]* src="data:image/png;base64,', page)
    thumbnails = page.count('class="thumb"')
    assert thumbnails >= 4 and len(images) == 2 * thumbnails + 1  # image + map each, the plot
    for name in run_names(run_dir):
        assert f"<h2>{name} " in page
    assert "Least certain" in page and "frames" in result.output
    again = invoke(trainer_main, "gallery", run_dir, store, "-o", out, "--device", "cpu")
    assert again.exit_code == 0 and not list(tmp_path.glob("*.partial"))


def test_gallery_of_files_maps_the_frames(made, tmp_path):
    store, run_dir = made
    out = tmp_path / "files.html"
    result = invoke(trainer_main, "gallery", run_dir, store.parent / "sim.cxi", "-o", out,
                    "--backend", "numpy", "--device", "cpu", "--uncertain", 3)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_text().count('class="thumb"') >= 3


def test_gallery_of_a_store_refuses_the_options_of_frames(made, tmp_path):
    store, run_dir = made
    for option in (["--geometry", "x.geom"], ["--detector", "SPB_DET_AGIPD1M-1"]):
        result = invoke(trainer_main, "gallery", run_dir, store, "-o", tmp_path / "g.html",
                        *option)  # fmt: skip
        assert result.exit_code == 2 and "apply to frames, not stores" in result.output
        assert not (tmp_path / "g.html").exists()


def test_gallery_in_chromium(made, tmp_path, browser):  # noqa: F811
    store, run_dir = made
    out = tmp_path / "g.html"
    result = invoke(trainer_main, "gallery", run_dir, store, "-o", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    page, problems = open_page(browser, out.as_uri())
    loaded = page.evaluate(
        "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length"
    )
    assert loaded >= 3 and loaded == page.evaluate("document.images.length")
    assert page.evaluate("document.body.innerText.length") > 200
    page.screenshot(path=str(tmp_path / "gallery.png"), full_page=True)
    assert problems == []
    page.close()
    assert_not_uniform(tmp_path / "gallery.png")


def test_pictures():
    import io

    from matplotlib.image import imread

    from ccfsort.render import data_uri, image_png, map_png

    image = np.ones((512, 300), np.float32)
    image[:, :100] = 0  # no signal: black
    image[:, 200:] = 100.0
    png = imread(io.BytesIO(image_png(image)))
    assert png.shape == (256, 150, 4)  # averaged down in 2 x 2 blocks
    assert np.all(png[:, :50, :3] == 0) and png[:, 100:, :3].mean() > png[:, 50:100, :3].mean()
    merged = np.zeros((8, 8), np.float32)
    merged[0, 5], merged[5, 0] = 1.0, -1.0
    rgb = imread(io.BytesIO(map_png(merged)))[..., :3]
    assert rgb.shape == (8, 8, 3) and np.all(rgb[2, 2] > 0.9)  # 0: white
    assert rgb[0, 5, 0] > rgb[0, 5, 2] and rgb[5, 0, 2] > rgb[5, 0, 0]  # + red, - blue
    assert data_uri(b"\x89PNG").startswith("data:image/png;base64,iVBORw")


# --------------------------------------------------------------------------
# Module stacks and European XFEL runs: assembled thumbnails, frames by train and pulse
# --------------------------------------------------------------------------


def _thumbnail_shapes(page: str) -> list[tuple[int, ...]]:
    """(rows, columns) of each thumbnail's image (the first picture of each card)."""
    import base64
    import io

    from matplotlib.image import imread

    found = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="image of row', page)
    return [imread(io.BytesIO(base64.b64decode(b))).shape[:2] for b in found]


def test_module_stacks_are_shown_assembled_by_extra_geom(agipd_run, tmp_path):  # noqa: F811
    import json

    from ccfsort.frames import FileFrames

    extra_geom = pytest.importorskip("extra_geom")

    root, geom_file, new = agipd_run
    config = json.loads((root / "run" / "config.json").read_text())
    frames = FileFrames([str(root / "new.h5")], config, backend="numpy",
                        facility={"geometry": geom_file})  # fmt: skip
    expected, _ = extra_geom.AGIPD_1MGeometry.from_crystfel_geom(str(geom_file)).position_modules(
        new[[0, 5]]
    )
    np.testing.assert_array_equal(frames.images([0, 5]), expected.astype(np.float32))
    assert frames.maps([0, 5]).shape == (2, 16, 16)
    store = tmp_path / "new.zarr"
    result = invoke(ccfkit_main, "build", root / "new.h5", store, *STACK_GRID,
                    "--geometry", geom_file)  # fmt: skip
    assert result.exit_code == 0, result.output
    for name, source in {
        "given": ["--geometry", geom_file],
        "recorded": [],
        "store": None,
    }.items():
        out = tmp_path / f"{name}.html"
        inputs = [store] if source is None else [root / "new.h5", *source]
        result = invoke(trainer_main, "gallery", root / "run", *inputs, "-o", out, "--backend",
                        "numpy", "--device", "cpu", "--uncertain", 3)  # fmt: skip
        assert result.exit_code == 0, (name, result.output)
        shapes = _thumbnail_shapes(out.read_text())
        assert len(shapes) >= 3, name
        for rows, columns in shapes:  # assembled: about square (the stack is 64 times taller)
            assert 0.8 < rows / columns < 1.25, (name, rows, columns)


def test_a_run_directorys_frames_are_named_by_train_and_pulse(agipd_run, tmp_path, browser):  # noqa: F811
    from test_io_euxfel import DETECTOR, write_run

    root, geom_file, new = agipd_run
    run_dir = write_run(tmp_path / "r0001", new, first_train=20000)
    store = tmp_path / "run.zarr"
    result = invoke(ccfkit_main, "build", run_dir, store, "--detector", DETECTOR,
                    "--geometry", geom_file, *STACK_GRID)  # fmt: skip
    assert result.exit_code == 0, result.output
    for name, inputs in {"run": [run_dir, "--detector", DETECTOR], "store": [store]}.items():
        out = tmp_path / f"{name}.html"
        result = invoke(trainer_main, "gallery", root / "run", *inputs, "-o", out, "--backend",
                        "numpy", "--device", "cpu", "--uncertain", 8)  # fmt: skip
        assert result.exit_code == 0, (name, result.output)
        page = out.read_text()
        named = re.findall(r"<b>row (\d+)</b> · train (\d+) · pulse (\d+) · train id (\d+)", page)
        assert len(named) == page.count('class="thumb"') >= 8, name
        for row, train, pulse, along in named:  # frame k: train 20000 + k // 2, pulse k % 2
            assert (int(train), int(pulse)) == (20000 + int(row) // 2, int(row) % 2), name
            assert along == train
        assert all(0.8 < r / c < 1.25 for r, c in _thumbnail_shapes(page)), name
    page, problems = open_page(browser, out.as_uri())
    loaded = page.evaluate(
        "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length"
    )
    assert loaded >= 9 and loaded == page.evaluate("document.images.length")
    assert "train 20000 · pulse 0" in page.evaluate("document.body.innerText")
    assert problems == []
    page.close()
