"""`ccfkit build`, `info` and `show` end to end through the command line."""

from __future__ import annotations

from dataclasses import replace

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from conftest import write_cxi

import ccfkit
from ccfkit import pipeline
from ccfkit.backends.array import NumpyBackend
from ccfkit.build_config import PAPER_RECIPE, BuildConfig, NoiseSettings
from ccfkit.ccf import MapSettings
from ccfkit.cli import main
from ccfkit.noise import add_noise
from ccfkit.polar import RingGrid
from ccfkit.store import SCHEMA_VERSION, StoreRecipe, open_store, read_recipe

SIZE = 49  # small frames keep every build well under a second
FRAMES = 40
CENTER = (24.5, 23.0)
MAP_ARGS = ["--q-bins", "16", "--phi-bins", "32", "--chunk", "8", "--quiet"]


@pytest.fixture(scope="module")
def frames():
    """Ring patterns around CENTER with Poisson noise; a few NaN pixels in frame 5."""
    rng = np.random.default_rng(3)
    y, x = np.indices((SIZE, SIZE))
    r = np.hypot(x - CENTER[0], y - CENTER[1])
    phi = np.arctan2(y - CENTER[1], x - CENTER[0])
    stack = []
    for _ in range(FRAMES):
        m = rng.integers(0, 5)
        clean = (
            50 * np.exp(-r / 12) * (1.2 + np.cos(r / 2) * np.cos(m * (phi - rng.uniform(0, 6))))
        )
        stack.append(rng.poisson(clean))
    stack = np.array(stack, dtype=np.float32)
    stack[5, 3, 4] = np.nan
    return stack


@pytest.fixture(scope="module")
def bitmask():
    """A CXI bit mask: a 4-pixel hole around the centre (PIXEL_IS_BAD) and a dead column."""
    mask = np.zeros((SIZE, SIZE), dtype=np.uint16)
    y, x = np.indices((SIZE, SIZE))
    mask[np.hypot(x - CENTER[0], y - CENTER[1]) < 4] = 128
    mask[:, 40] = 8
    mask[0, 0] = 256  # "out of resolution limits" is not in PIXEL_IS_IN_MASK: stays good
    return mask


@pytest.fixture(scope="module")
def cxi(tmp_path_factory, frames, bitmask):
    labels = np.zeros((FRAMES, 2), dtype=np.uint8)
    labels[::2, 0] = 1
    labels[1::2, 1] = 1
    return write_cxi(
        tmp_path_factory.mktemp("in") / "run.cxi", frames, bitmask=bitmask, labels=labels
    )


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def build(cxi, out, *extra):
    result = run("build", cxi, out, "--center", f"{CENTER[0]},{CENTER[1]}", *MAP_ARGS, *extra)
    assert result.exit_code == 0, result.output
    return zarr.open_group(str(out), mode="r")


def expected_maps(frames, bitmask, bound, seed, **settings):
    """Maps computed independently: noise from (seed, i), float64 NumPy reference.

    The build's default map, named here value by value (docs/ccf.md, "Defaults"):
    order 2, rings from r = 0, every ring with a valid sample; ``settings`` change it.
    """
    noisy = add_noise(frames, np.arange(len(frames)), bound, seed)
    good = (bitmask.astype(int) & ccfkit.io.source.PIXEL_IS_IN_MASK) == 0
    default = {"q_bins": 16, "phi_bins": 32, "orders": (2,), "r_min": 0.0,
               "min_ring_fraction": 0.0, "estimator": "ring", "scale": "maxabs"}  # fmt: skip
    return ccfkit.compute_maps(
        noisy, center=CENTER, mask=good, backend=NumpyBackend(), **{**default, **settings}
    )


def valid_statistics(frames, bitmask):
    good = (bitmask.astype(int) & ccfkit.io.source.PIXEL_IS_IN_MASK) == 0
    stats = []
    for frame in frames:
        values = frame[good & np.isfinite(frame)]
        stats.append([values.mean(), values.std(), values.max()])
    return np.median(np.array(stats), axis=0)


@pytest.mark.parametrize("noise", ["none", "mean", "mean+std", "max"])
def test_every_noise_level_gives_the_maps_of_the_reference(tmp_path, cxi, frames, bitmask, noise):
    store = build(cxi, tmp_path / "out.zarr", "--noise", noise, "--seed", "11")
    assert store.attrs["status"] == "complete"
    medians = valid_statistics(frames, bitmask)
    bounds = {
        "none": 0.0,
        "mean": medians[0],
        "mean+std": medians[0] + medians[1],
        "max": medians[2],
    }
    # medians of float32 statistics: 1e-5 relative
    np.testing.assert_allclose(store.attrs["noise"]["bound"], bounds[noise], rtol=1e-5)
    np.testing.assert_allclose(
        [store.attrs["noise"][k] for k in ("median_mean", "median_std", "median_max")],
        medians,
        rtol=1e-5,
    )
    reference = expected_maps(frames, bitmask, store.attrs["noise"]["bound"], 11)
    # the backend contract: 1e-5 of each triangle's largest value, which is 1 here
    np.testing.assert_allclose(store["ccf"][:], reference, atol=1e-5)
    assert np.isfinite(store["ccf"][:]).all()  # frame 5 has an unmasked NaN pixel


def test_store_layout_and_provenance(tmp_path, cxi, bitmask):
    store = build(cxi, tmp_path / "out.zarr", "--noise", "mean")
    assert store["ccf"].shape == (FRAMES, 16, 16) and store["ccf"].dtype == np.float32
    np.testing.assert_array_equal(store["index"][:], np.arange(FRAMES))
    # the build's default rings: from the beam centre, every ring with a valid sample
    assert store.attrs["r_min"] == 0.0
    good = (bitmask.astype(int) & 767) == 0
    plan = ccfkit.make_polar_plan(
        good.shape, center=CENTER, mask=good, q_bins=16, phi_bins=32, r_min=0.0,
        min_ring_fraction=0.0,
    )  # fmt: skip
    np.testing.assert_allclose(store["radius"][:], (np.arange(16) + 0.5) * 23.0 / 16)
    np.testing.assert_array_equal(store["ring_used"][:], plan.ring_used)
    # rings 0-2 (0.7, 2.2, 3.6 px) need pixels of the 4 px hole: unused, 0 in every map
    assert store["ring_used"][:].tolist() == [False] * 3 + [True] * 13
    assert not store["ccf"][:, :3].any() and not store["ccf"][:, :, :3].any()
    assert store.attrs["parameters"]["r_min"] == 0.0
    assert store.attrs["parameters"]["min_ring_fraction"] == 0.0
    assert store.attrs["parameters"]["orders"] == [2]
    # the recipe read back says so: the build's defaults, each named
    recipe = read_recipe(store)
    assert recipe.settings == MapSettings(orders=(2,), estimator="ring", scale="maxabs")
    assert recipe.grid == RingGrid(q_bins=16, phi_bins=32, r_min=0.0, min_ring_fraction=0.0)
    asked = {"q_bins": 16, "phi_bins": 32, "noise": "mean"}
    assert recipe == StoreRecipe.of_build(BuildConfig.from_parameters(asked))
    assert store["labels"].attrs["names"] == ["round", "elliptical"]
    assert store["labels"][:].sum() == FRAMES
    assert store["stats"].shape == (FRAMES, 3)
    np.testing.assert_array_equal(store["mask"][:], (bitmask.astype(int) & 767) == 0)
    assert "CXI bit mask" in store.attrs["input"]["mask"]
    assert store.attrs["center"] == list(CENTER)
    assert store.attrs["parameters"]["noise"] == "mean"
    assert store.attrs["schema_version"] == SCHEMA_VERSION == 3
    assert store["done"][:].all()


def per_frame_bitmask(bitmask):
    """(FRAMES, H, W): the fixture's mask, and frame i's pixel (10, i) saturated too."""
    masks = np.repeat(bitmask[None], FRAMES, axis=0)
    masks[np.arange(FRAMES), 10, np.arange(FRAMES)] = 2
    return masks


@pytest.mark.parametrize("where", ["CXI mask location", "convention attribute", "0/1 elsewhere"])
def test_a_mask_per_frame_given_with_mask_is_read_as_in_the_file(tmp_path, frames, bitmask, where):
    masks = per_frame_bitmask(bitmask)
    in_file = build(write_cxi(tmp_path / "in.cxi", frames, bitmask=masks), tmp_path / "a.zarr")
    good = (bitmask.astype(int) & 767) == 0
    good[10, :FRAMES] = False  # bad in one frame: bad
    np.testing.assert_array_equal(in_file["mask"][:], good)
    mask_file = tmp_path / "mask.h5"
    with h5py.File(mask_file, "w") as handle:
        if where == "CXI mask location":
            handle["entry_1/instrument_1/detector_1/mask"] = masks
            spec = str(mask_file)
        elif where == "convention attribute":
            handle["masks/bits"] = masks
            handle["masks/bits"].attrs["convention"] = "cxi"
            spec = f"{mask_file}:masks/bits"
        else:
            handle["masks/good"] = ((masks.astype(int) & 767) == 0).astype(np.uint8)
            spec = f"{mask_file}:masks/good"
    plain = write_cxi(tmp_path / "plain.cxi", frames)
    given = build(plain, tmp_path / "b.zarr", "--mask", spec)
    np.testing.assert_array_equal(given["mask"][:], in_file["mask"][:])
    np.testing.assert_array_equal(given["ccf"][:], in_file["ccf"][:])


def test_the_build_adds_uniform_noise_between_zero_and_the_bound(tmp_path, cxi, frames, bitmask):
    """The noise the build added, read back from its stored noisy frames."""
    # resized to their own size, the stored images are the noisy frames (masked pixels 0)
    store = build(cxi, tmp_path / "out.zarr", "--noise", "max", "--seed", "4",
                  "--keep-images", "--image-size", SIZE)  # fmt: skip
    bound = store.attrs["noise"]["bound"]
    np.testing.assert_allclose(bound, valid_statistics(frames, bitmask)[2], rtol=1e-5)
    good = ((bitmask.astype(int) & 767) == 0) & np.isfinite(frames)
    drawn = (store["images"][:] - frames)[good]
    # float32 sums: within a rounding step of [0, b]
    assert drawn.min() >= -1e-4 and drawn.max() <= bound * (1 + 1e-6)
    # ~90,000 draws: the standard error of the mean is bound / sqrt(12 * 90000) = 0.001 bound
    assert abs(drawn.mean() / bound - 0.5) < 0.005
    # and it is the noise drawn from (seed, frame index), as `ccfkit show` draws it again
    again = add_noise(frames, np.arange(FRAMES), bound, 4)
    np.testing.assert_array_equal(store["images"][:][good], again[good])


def test_max_frame_noise_is_bounded_by_each_frames_own_maximum(tmp_path, cxi, frames, bitmask):
    """``--noise max-frame``: frame i gets U(0, b_i), b_i its own maximum over valid pixels."""
    store = build(cxi, tmp_path / "out.zarr", "--noise", "max-frame", "--seed", "4",
                  "--keep-images", "--image-size", SIZE)  # fmt: skip
    assert store.attrs["noise"]["level"] == "max-frame"
    assert store.attrs["parameters"]["noise"] == "max-frame"
    valid = (bitmask.astype(int) & ccfkit.io.source.PIXEL_IS_IN_MASK) == 0
    bounds = np.array([frame[valid & np.isfinite(frame)].max() for frame in frames], np.float32)
    good = ((bitmask.astype(int) & 767) == 0) & np.isfinite(frames)
    again = add_noise(frames, np.arange(FRAMES), bounds, 4)
    np.testing.assert_array_equal(store["images"][:][good], again[good])
    drawn = store["images"][:] - frames
    assert (drawn[good].max() <= bounds.max() * (1 + 1e-6)) and drawn[good].min() >= -1e-4
    per_frame_top = np.array([d[g].max() for d, g in zip(drawn, good)])
    assert (per_frame_top <= bounds * (1 + 1e-6)).all() and (per_frame_top > 0.9 * bounds).all()


def test_chunk_size_does_not_change_the_store(tmp_path, cxi):
    small = build(cxi, tmp_path / "a.zarr", "--noise", "max", "--chunk", "5")
    large = build(cxi, tmp_path / "b.zarr", "--noise", "max", "--chunk", "16")
    np.testing.assert_array_equal(small["ccf"][:], large["ccf"][:])
    np.testing.assert_array_equal(small["stats"][:], large["stats"][:])


@pytest.mark.parametrize("extra", [("--noise", "max"), ("--noise", "none", "--keep-images",
                                                          "--compressor", "lz4")])  # fmt: skip
def test_both_chunk_writers_write_the_same_files(tmp_path, cxi, extra):
    """``--chunk-writer direct`` (O_DIRECT, ccfkit's encoder) and zarr's: byte-identical chunks."""
    build(cxi, tmp_path / "zarr.zarr", *extra)
    build(cxi, tmp_path / "direct.zarr", *extra, "--chunk-writer", "direct")
    for array in ("ccf", "stats", "done", "images"):
        by_zarr = sorted((tmp_path / "zarr.zarr" / array).rglob("c/**/*"))
        if array == "images" and "--keep-images" not in extra:
            continue
        files = [f.relative_to(tmp_path / "zarr.zarr") for f in by_zarr if f.is_file()]
        assert files  # every chunk is there ...
        for name in files:  # ... with the same bytes
            assert (tmp_path / "direct.zarr" / name).read_bytes() == (
                tmp_path / "zarr.zarr" / name
            ).read_bytes(), name
    assert not list(tmp_path.rglob("*.partial"))


INPUT_STORAGE = {
    "frame chunks (read in place)": {"chunks": (1, SIZE, SIZE)},
    "gzip chunks (read by h5py)": {"chunks": (4, SIZE, SIZE), "compression": "gzip"},
    "uint16 (converted)": {"dtype": "uint16"},
}


@pytest.mark.parametrize("noise", ["max", "max-frame", "none"])
@pytest.mark.parametrize("storage", INPUT_STORAGE.values(), ids=INPUT_STORAGE.keys())
def test_input_storage_does_not_change_the_store(tmp_path, cxi, frames, bitmask, storage, noise):
    """Contiguous (the fixture), chunked, compressed or integer frames: the same maps.

    Frames read into memory (gzip, uint16) take their noise in place; mapped ones into a copy.
    """
    if storage.get("dtype") == "uint16":
        frames = np.nan_to_num(frames).astype(np.uint16)
    other = write_cxi(tmp_path / "other.cxi", frames, bitmask=bitmask, **storage)
    stored = build(other, tmp_path / "b.zarr", "--noise", noise)
    if storage.get("dtype") == "uint16":  # the reference from a contiguous float32 copy
        cxi = write_cxi(tmp_path / "plain.cxi", frames.astype(np.float32), bitmask=bitmask)
    plain = build(cxi, tmp_path / "a.zarr", "--noise", noise)
    assert plain["ccf"][:].any()
    np.testing.assert_array_equal(stored["ccf"][:], plain["ccf"][:])
    np.testing.assert_array_equal(stored["stats"][:], plain["stats"][:])


@pytest.mark.parametrize("compressor", ["lz4", "zstd"])
def test_compressed_maps_are_the_same_maps(tmp_path, cxi, compressor):
    plain = build(cxi, tmp_path / "a.zarr", "--noise", "mean")
    packed = build(cxi, tmp_path / "b.zarr", "--noise", "mean", "--compressor", compressor)
    assert packed.attrs["layout"]["compressor"] == compressor
    names = [codec.to_dict()["name"] for codec in packed["ccf"].metadata.codecs]
    assert names == ["bytes", "blosc", "crc32c"]
    np.testing.assert_array_equal(packed["ccf"][:], plain["ccf"][:])


def test_distributed_cluster_gives_the_same_store(tmp_path, cxi):
    distributed = pytest.importorskip("distributed")
    threaded = build(cxi, tmp_path / "threads.zarr", "--noise", "max")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        clustered = build(
            cxi,
            tmp_path / "cluster.zarr",
            "--noise",
            "max",
            "--scheduler",
            cluster.scheduler_address,
        )
    np.testing.assert_array_equal(threaded["ccf"][:], clustered["ccf"][:])
    assert clustered.attrs["noise"] == threaded.attrs["noise"]


def test_interrupted_build_says_incomplete_and_resumes(tmp_path, cxi, monkeypatch):
    complete = build(cxi, tmp_path / "whole.zarr", "--noise", "mean")
    out = tmp_path / "broken.zarr"
    original = pipeline.process_chunk

    def failing(chunk, *args):
        if chunk == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises
        return original(chunk, *args)

    monkeypatch.setattr(pipeline, "process_chunk", failing)
    result = CliRunner().invoke(
        main,
        [
            "build",
            str(cxi),
            str(out),
            "--noise",
            "mean",
            "--center",
            f"{CENTER[0]},{CENTER[1]}",
            *MAP_ARGS,
        ],
    )
    assert result.exit_code != 0 and "Aborted" in result.output  # click's answer to Ctrl-C
    broken = zarr.open_group(str(out), mode="r")
    assert broken.attrs["status"] == "incomplete"
    assert broken["done"][3] == 0

    # a plain build refuses to overwrite it
    result = run("build", cxi, out, "--noise", "mean", *MAP_ARGS)
    assert result.exit_code != 0 and "--resume" in result.output

    monkeypatch.setattr(pipeline, "process_chunk", original)
    done_before = np.flatnonzero(broken["done"][:])
    redone = []
    monkeypatch.setattr(
        pipeline, "process_chunk", lambda c, *a: redone.append(c) or original(c, *a)
    )
    resumed = build(cxi, out, "--noise", "mean", "--resume")
    assert resumed.attrs["status"] == "complete"
    assert not set(redone) & set(done_before.tolist())  # completed chunks are not redone
    np.testing.assert_array_equal(resumed["ccf"][:], complete["ccf"][:])


def test_a_build_stopped_after_creating_its_store_resumes_to_the_same_store(
    tmp_path, cxi, monkeypatch
):
    whole = build(cxi, tmp_path / "whole.zarr", "--noise", "mean")
    out = tmp_path / "out.zarr"
    args = ["build", str(cxi), str(out), "--noise", "mean",
            "--center", f"{CENTER[0]},{CENTER[1]}", *MAP_ARGS]  # fmt: skip

    def interrupted(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # Ctrl-C in the first task after the store is created
        patch.setattr(pipeline, "chunk_statistics", interrupted)
        assert "Aborted" in CliRunner().invoke(main, args).output
    created = zarr.open_group(str(out), mode="r")
    assert created.attrs["status"] == "incomplete" and not created["done"][:].any()

    resumed = build(cxi, out, "--noise", "mean", "--resume")
    assert resumed.attrs["status"] == "complete"
    assert sorted(resumed.array_keys()) == sorted(whole.array_keys())
    for name, array in whole.arrays():
        np.testing.assert_array_equal(resumed[name][:], array[:], err_msg=name)
        assert resumed[name].attrs.asdict() == array.attrs.asdict(), name
    assert resumed.attrs["noise"] == whole.attrs["noise"]


def test_a_store_stopped_while_being_created_is_recognised_and_resumed(tmp_path, cxi, monkeypatch):
    out = tmp_path / "out.zarr"
    args = ["build", str(cxi), str(out), "--noise", "mean", *MAP_ARGS]

    def interrupted(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # Ctrl-C just before the root attributes are written
        patch.setattr("ccfkit.store.lifecycle.layout_attributes", interrupted)
        assert "Aborted" in CliRunner().invoke(main, args).output
    info = run("info", str(out))
    assert info.exit_code == 1 and "creation of this store was interrupted" in info.output
    assert run(*args, "--resume").exit_code == 0
    resumed = open_store(out)
    assert run("build", str(cxi), str(tmp_path / "fresh.zarr"), *args[3:]).exit_code == 0
    fresh = open_store(tmp_path / "fresh.zarr")
    assert resumed.attrs["status"] == "complete"
    np.testing.assert_array_equal(resumed["ccf"][:], fresh["ccf"][:])


@pytest.mark.parametrize(
    ("changed", "named"),
    [(["--noise", "max"], "noise"), (["--center", "20,20"], "center")],
    ids=["noise", "centre"],
)
def test_resume_refuses_other_parameters(tmp_path, cxi, changed, named):
    out = tmp_path / "out.zarr"
    build(cxi, out, "--noise", "mean")
    same = ["--noise", "mean", "--center", f"{CENTER[0]},{CENTER[1]}"]
    result = run("build", cxi, out, *same, "--resume", *MAP_ARGS, *changed)  # the last one wins
    assert result.exit_code != 0 and f"built with another {named} (" in result.output


def test_overwrite_replaces_a_store(tmp_path, cxi):
    out = tmp_path / "out.zarr"
    build(cxi, out, "--noise", "mean")
    store = build(cxi, out, "--noise", "max", "--overwrite")
    assert store.attrs["parameters"]["noise"] == "max"


def test_keep_images_stores_resized_noisy_frames(tmp_path, cxi, frames, bitmask):
    store = build(cxi, tmp_path / "out.zarr", "--keep-images", "--image-size", "24")
    assert store["images"].shape == (FRAMES, 24, 24)
    good = (bitmask.astype(int) & 767) == 0
    # linear interpolation preserves the mean of a smooth image within a few per cent
    clean = np.where(good & np.isfinite(frames[0]), frames[0], 0)
    assert abs(store["images"][0].mean() / clean.mean() - 1) < 0.1


def test_float16_maps(tmp_path, cxi):
    single = build(cxi, tmp_path / "a.zarr")
    half = build(cxi, tmp_path / "b.zarr", "--dtype", "float16")
    assert half["ccf"].dtype == np.float16
    # float16 keeps 11 significant bits: 5e-4 of the [-1, 1] range
    np.testing.assert_allclose(half["ccf"][:].astype(np.float32), single["ccf"][:], atol=5e-4)


def test_automatic_centre_is_found(tmp_path, cxi):
    result = run("build", cxi, tmp_path / "out.zarr", "--center", "auto", *MAP_ARGS)
    assert result.exit_code == 0, result.output
    store = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    # ring patterns with Poisson noise on a 49-pixel detector: within half a pixel
    assert np.hypot(*(np.array(store.attrs["center"]) - CENTER)) < 0.5
    assert store.attrs["center_origin"].startswith("auto")


def test_order_8_and_paper_give_the_papers_order_8_maps_of_the_reference(tmp_path, cxi, frames,
                                                                         bitmask):  # fmt: skip
    """``--order 8`` changes the build's default map in its order only: the paper's map."""
    order8 = build(cxi, tmp_path / "order8.zarr", "--order", "8", "--noise", "max")
    bound = order8.attrs["noise"]["bound"]
    reference = expected_maps(frames, bitmask, bound, 0, orders=(8,))
    np.testing.assert_allclose(order8["ccf"][:], reference, atol=1e-5)
    assert read_recipe(order8) == StoreRecipe.of_build(
        replace(PAPER_RECIPE, grid=replace(PAPER_RECIPE.grid, q_bins=16, phi_bins=32),
                noise=NoiseSettings("max", 0))
    )  # fmt: skip
    # --paper: PAPER_RECIPE whole, on its own 224 x 512 grid
    result = run("build", cxi, tmp_path / "paper.zarr", "--center", f"{CENTER[0]},{CENTER[1]}",
                 "--paper", "--noise", "max", "--chunk", "8", "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    paper = zarr.open_group(str(tmp_path / "paper.zarr"), mode="r")
    assert read_recipe(paper) == StoreRecipe.of_build(
        replace(PAPER_RECIPE, noise=NoiseSettings("max", 0))
    )
    reference = expected_maps(frames, bitmask, bound, 0, q_bins=224, phi_bins=512, orders=(8,))
    np.testing.assert_allclose(paper["ccf"][:], reference, atol=1e-5)


def test_several_files_and_a_glob(tmp_path, frames, bitmask):
    write_cxi(tmp_path / "run_1.cxi", frames[:25], bitmask=bitmask)
    write_cxi(tmp_path / "run_2.cxi", frames[25:], bitmask=bitmask)
    store = build(str(tmp_path / "run_*.cxi"), tmp_path / "out.zarr", "--noise", "max")
    reference = expected_maps(frames, bitmask, store.attrs["noise"]["bound"], 0)
    np.testing.assert_allclose(store["ccf"][:], reference, atol=1e-5)
    assert store.attrs["input"]["frames_per_file"] == [25, 15]


def test_info_and_show(tmp_path, cxi):
    out = tmp_path / "out.zarr"
    build(cxi, out, "--noise", "max")
    result = run("info", out)
    assert result.exit_code == 0
    assert "status: complete" in result.output and "ccf" in result.output
    assert '"bound"' in result.output
    png = tmp_path / "fig.png"
    result = run("show", out, "--index", "2", "-o", png)
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = run("show", out, "--index", str(FRAMES), "-o", png)
    assert result.exit_code != 0 and "out of range" in result.output


def _bad_inputs(tmp_path, frames):
    not_hdf5 = tmp_path / "notes.cxi"
    not_hdf5.write_text("not HDF5")
    no_data = tmp_path / "empty.cxi"
    with h5py.File(no_data, "w") as handle:
        handle["entry_1/other"] = np.zeros(3)
    flat = tmp_path / "flat.cxi"
    with h5py.File(flat, "w") as handle:
        handle["entry_1/data_1/data"] = frames[0]
    good = write_cxi(tmp_path / "good.cxi", frames[:8])
    zero = tmp_path / "zero.cxi"
    with h5py.File(zero, "w") as handle:
        handle["entry_1/data_1/data"] = np.zeros((0, SIZE, SIZE), np.float32)
    wrong_mask = tmp_path / "mask.npy"
    np.save(wrong_mask, np.ones((SIZE + 1, SIZE), bool))
    return {
        "not an HDF5 file": [not_hdf5],
        "no frames found": [no_data],
        "expected 3 dimensions": [flat],
        "no such file": [tmp_path / "missing.cxi"],
        "no file matches": [str(tmp_path / "nothing_*.cxi")],
        "holds no frames": [zero],
        "mask has shape": [good, "--mask", wrong_mask],
        "outside the detector": [good, "--center", "70,10"],
        "no data set /entry_1/nope": [good, "--data-path", "entry_1/nope"],
    }


@pytest.mark.parametrize(
    "problem",
    [
        "not an HDF5 file",
        "no frames found",
        "expected 3 dimensions",
        "no such file",
        "no file matches",
        "holds no frames",
        "mask has shape",
        "outside the detector",
        "no data set /entry_1/nope",
    ],
)
def test_bad_input_is_one_clear_line_and_no_store(tmp_path, frames, problem):
    args = _bad_inputs(tmp_path, frames)[problem]
    out = tmp_path / "out.zarr"
    result = CliRunner().invoke(
        main, ["build", str(args[0]), str(out), *map(str, args[1:]), "--quiet"]
    )
    assert result.exit_code != 0
    assert problem in result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0, result.output  # one line
    assert not out.exists()


def test_existing_store_is_not_overwritten(tmp_path, cxi):
    out = tmp_path / "out.zarr"
    first = build(cxi, out, "--noise", "mean")
    created = first.attrs["created"]
    result = run("build", cxi, out, *MAP_ARGS)
    assert result.exit_code != 0 and "--overwrite" in result.output
    assert zarr.open_group(str(out), mode="r").attrs["created"] == created


def test_momentum_transfer_is_stored_when_the_geometry_is_known(tmp_path, frames):
    path = write_cxi(tmp_path / "geo.cxi", frames[:8])
    with h5py.File(path, "a") as handle:
        handle["entry_1/instrument_1/source_1/wavelength"] = 40e-9  # m
        handle["entry_1/instrument_1/detector_1/distance"] = 0.065
        handle["entry_1/instrument_1/detector_1/x_pixel_size"] = 1e-3
    store = build(path, tmp_path / "out.zarr")
    radius = store["radius"][:]
    # wide angle: 2 theta = atan(r p / L), q = 4 pi sin(theta) / lambda, in 1/nm
    expected = 4 * np.pi * np.sin(np.arctan(radius * 1e-3 / 0.065) / 2) / 40.0
    np.testing.assert_allclose(store["q"][:], expected, rtol=1e-12)
    assert store["q"].attrs["units"] == "1/nm"


def test_killed_build_leaves_an_incomplete_store_that_resumes(tmp_path):
    """A real SIGKILL in the middle of the map pass, then --resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(5)
    path = write_cxi(tmp_path / "slow.cxi", rng.poisson(20.0, (160, 97, 97)).astype(np.float32))
    args = ["--noise", "mean", "--q-bins", "48", "--phi-bins", "256", "--chunk", "4",
            "--backend", "numpy", "--workers", "1", "--center", "48,48", "--quiet"]  # fmt: skip
    out = tmp_path / "killed.zarr"
    command = [sys.executable, "-m", "ccfkit.cli", "build", str(path), str(out), *args]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done_chunks = out / "done" / "c"
    deadline = time.monotonic() + 60
    while not (done_chunks.exists() and any(done_chunks.iterdir())):
        assert child.poll() is None, "the build ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    killed = zarr.open_group(str(out), mode="r")
    assert killed.attrs["status"] == "incomplete"
    assert 0 < killed["done"][:].sum() < killed["done"].shape[0]

    resumed = build(path, out, *args, "--resume")
    whole = build(path, tmp_path / "whole.zarr", *args)
    assert resumed.attrs["status"] == "complete"
    np.testing.assert_array_equal(resumed["ccf"][:], whole["ccf"][:])


def test_several_orders_estimator_and_scale_give_the_maps_of_the_reference(tmp_path, cxi, frames,
                                                                           bitmask):  # fmt: skip
    extra = ["--orders", "8,2", "--estimator", "mask-corrected", "--scale", "ring", "--r-min",
             "auto", "--min-ring-fraction", "0.5"]  # fmt: skip
    store = build(cxi, tmp_path / "out.zarr", *extra)
    assert store["ccf"].shape == (FRAMES, 2, 16, 16)
    assert store.attrs["parameters"]["orders"] == [8, 2]
    assert store.attrs["parameters"]["estimator"] == "mask-corrected"
    good = (bitmask.astype(int) & ccfkit.io.source.PIXEL_IS_IN_MASK) == 0
    reference = ccfkit.compute_maps(
        frames, center=CENTER, mask=good, q_bins=16, phi_bins=32, r_min="auto", orders=(8, 2),
        estimator="mask-corrected", scale="ring", backend=NumpyBackend(),
    )  # fmt: skip
    # normalised CCFs are relative to 1: float32 against float64 to ~1e-6 of 1
    np.testing.assert_allclose(store["ccf"][:], reference, atol=1e-5)


@pytest.mark.parametrize(
    "changed", [["--estimator", "mask-corrected"], ["--orders", "8,2"], ["--r-min", "auto"],
                ["--min-ring-fraction", "0.3"], ["--scale", "ring"]],
)  # fmt: skip
def test_resume_refuses_other_map_settings(tmp_path, cxi, monkeypatch, changed):
    out = tmp_path / "broken.zarr"
    original = pipeline.process_chunk

    def failing(chunk, *args):
        if chunk == 1:
            raise KeyboardInterrupt
        return original(chunk, *args)

    monkeypatch.setattr(pipeline, "process_chunk", failing)
    run("build", cxi, out, "--center", f"{CENTER[0]},{CENTER[1]}", *MAP_ARGS)
    monkeypatch.setattr(pipeline, "process_chunk", original)
    result = run(
        "build", cxi, out, "--center", f"{CENTER[0]},{CENTER[1]}", *MAP_ARGS, *changed, "--resume"
    )
    assert result.exit_code != 0 and "was built with another" in result.output
    assert zarr.open_group(str(out), mode="r").attrs["status"] == "incomplete"


def test_a_mask_leaving_no_usable_ring_is_refused(tmp_path, frames):
    mask = np.zeros(frames.shape[1:], bool)
    mask[::3, ::3] = True  # 11 % good pixels: no bilinear sample has four good neighbours
    np.save(tmp_path / "mask.npy", mask)
    out = tmp_path / "out.zarr"
    cxi = write_cxi(tmp_path / "in.cxi", frames)
    result = run("build", cxi, out, "--mask", str(tmp_path / "mask.npy"), *MAP_ARGS)
    assert result.exit_code != 0 and "no ring has a valid sample under" in result.output
    assert not out.exists()
    result = run("build", cxi, out, "--mask", str(tmp_path / "mask.npy"), "--min-ring-fraction",
                 "0.5", *MAP_ARGS)  # fmt: skip
    assert result.exit_code != 0 and "no ring has 50% valid samples under" in result.output
    assert not out.exists()


def test_a_schema_1_store_still_opens_for_reading(tmp_path, cxi):
    """What a version-1 store differs in: no ring_used, ``order`` not ``orders``."""
    out = tmp_path / "old.zarr"
    build(cxi, out, "--r-min", "0")
    group = zarr.open_group(str(out), mode="r+")
    parameters = dict(group.attrs["parameters"])
    parameters["order"] = parameters.pop("orders")[0]
    for key in ("estimator", "min_ring_fraction"):
        del parameters[key]
    layout = dict(group.attrs["layout"])
    del layout["channels"]
    group.attrs.update({"schema_version": 1, "parameters": parameters, "layout": layout})
    del group["ring_used"]
    result = run("info", out)
    assert result.exit_code == 0 and "schema" in result.output.lower(), result.output
    png = tmp_path / "frame.png"
    result = run("show", out, "--index", "1", "-o", png)
    assert result.exit_code == 0 and png.stat().st_size > 0, result.output
    pytest.importorskip("torch")  # the trainer reads the old store too
    from trainer.data import StoreDataset, inspect_store

    info = inspect_store(out)
    assert info.channels("ccf") == 1
    x, _, _ = StoreDataset(str(out), "ccf")[(0, np.arange(3))]
    np.testing.assert_array_equal(x[:, 0].numpy(), group["ccf"][:3])
    # resuming it is refused (another schema's parameters), never half-mixed
    result = run("build", cxi, out, "--r-min", "0", "--resume", *MAP_ARGS)
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_a_link_to_a_store_reads_as_the_store(tmp_path, cxi):
    out = tmp_path / "out.zarr"
    build(cxi, out)
    link = tmp_path / "link.zarr"
    link.symlink_to(out)
    result = run("info", link)
    assert result.exit_code == 0 and "complete" in result.output, result.output
    result = run("show", link, "--index", "0", "-o", tmp_path / "f.png")
    assert result.exit_code == 0, result.output


def test_the_footprint_of_a_build_counts_its_maps_and_tasks():
    from ccfkit.build_resources import BuildFootprint, available_memory, format_bytes

    footprint = BuildFootprint(
        n_frames=40, frame_shape=(100, 120), q_bins=5000, phi_bins=512, channels=1,
        chunk_frames=64, image_size=None, map_itemsize=4, workers=2,
    )  # fmt: skip
    assert footprint.store_bytes == 40 * 5000**2 * 4  # 4.0 GB: announced before it is written
    assert format_bytes(footprint.store_bytes) == "4.0 GB"
    parts = footprint.memory_parts
    assert parts["polar plan"] == 5000 * 512 * 256
    assert parts["queued writes"] == 2 * 40 * 5000**2 * 4  # a chunk is at most the input
    assert parts["map tasks"] > 2 * 40 * 5000**2 * 4  # each task holds its maps, and more
    assert footprint.memory_bytes == sum(parts.values())
    assert available_memory() is None or available_memory() > 0
