"""The bad-input and fault catalogue (docs/build.md, "Safety"): nothing lost or silently wrong.

Every case runs the command line as a user would and checks four things:
the exit status, one ``Error:`` line on stderr and no traceback (the error
left through click, not as an uncaught exception), what is on disk
afterwards, and that no file the tool did not create was touched
(:func:`snapshot` before and after). Inputs are small simulated CXI files
(64 x 64 frames) and maps are 16 x 16 over 32 angles, so each case takes
about a second.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
import zarr
from click.testing import CliRunner

from ccfkit import pipeline
from ccfkit.cli import main
from ccfkit.io.cxi import CENTER_PATH, DATA_PATH, LABELS_PATH, MASK_PATH
from ccfkit.simulate import SimulationConfig
from ccfkit.simulate.cxi_file import write_simulated

pytestmark = pytest.mark.usefixtures("torch_one_thread")

FRAMES = 16
#: numpy: the reference backend needs no compilation; chunks of 4 frames: 4 map tasks.
BUILD = ["--q-bins", "16", "--phi-bins", "32", "--chunk", "4", "--backend", "numpy", "--quiet"]


def simulated(path: Path, seed: int = 1) -> Path:
    """A small labelled CXI file (with a CXI bit mask and the beam centre)."""
    write_simulated(path, SimulationConfig(size=64), FRAMES, seed, progress=False)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return simulated(tmp_path_factory.mktemp("input") / "small.cxi")


@pytest.fixture
def small(tmp_path, source) -> Path:
    """A copy of the input in this test's directory (cases may replace or edit it)."""
    return Path(shutil.copy(source, tmp_path / "small.cxi"))


@pytest.fixture(scope="module")
def store(tmp_path_factory, source) -> Path:
    """A complete store of the input (read-only use)."""
    out = tmp_path_factory.mktemp("store") / "maps.zarr"
    ok(ccfkit("build", source, out, *BUILD))
    return out


def ccfkit(*args, program=main):
    return CliRunner().invoke(program, [str(a) for a in args])


def ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def refused(result, *words: str, code: int = 1) -> str:
    """A clean refusal: the exit code, one ``Error:`` line naming ``words``, no traceback."""
    assert isinstance(result.exception, SystemExit), result.exception  # not an uncaught error
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    if code == 1:  # a usage error (2) comes with click's usage lines
        assert result.stderr.strip() == errors[0], result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (or ``root`` itself) by relative path, with its content's hash."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def interrupted_build(monkeypatch, source: Path, out: Path, *extra, at_chunk: int = 2):
    """A build Ctrl-C'd at map task ``at_chunk``: an incomplete store."""
    original = pipeline.process_chunk

    def failing(chunk, *args):
        if chunk == at_chunk:
            raise KeyboardInterrupt
        return original(chunk, *args)

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "process_chunk", failing)
        result = ccfkit("build", source, out, *BUILD, "--workers", "1", *extra)
    assert "Aborted" in result.output
    assert zarr.open_group(str(out), mode="r").attrs["status"] == "incomplete"


def same_arrays(a: Path, b: Path) -> None:
    """The stores hold the same arrays, value for value."""
    first, second = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert sorted(first.array_keys()) == sorted(second.array_keys())
    for name in first.array_keys():
        np.testing.assert_array_equal(first[name][:], second[name][:], err_msg=name)


# --------------------------------------------------------------------------
# Data loss
# --------------------------------------------------------------------------


def test_overwrite_refuses_the_current_directory(tmp_path, small, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    refused(ccfkit("build", "small.cxi", ".", *BUILD, "--overwrite"), "contains the input")
    assert snapshot(tmp_path) == before


def test_overwrite_refuses_a_directory_of_user_files(tmp_path, small):
    user = tmp_path / "ud"
    user.mkdir()
    (user / "thesis.tex").write_text("t")
    (user / "zarr.json").write_text('{"node_type": "group", "attributes": {}}')  # not ours
    before = snapshot(tmp_path)
    refused(ccfkit("build", small, user, *BUILD, "--overwrite"), "not a ccfkit store")
    refused(ccfkit("build", small, user, *BUILD, "--resume"), "not a ccfkit store")
    assert snapshot(tmp_path) == before


def test_overwrite_refuses_a_regular_file(tmp_path, small):
    target = tmp_path / "results.zarr"
    target.write_text("not a store")
    before = snapshot(tmp_path)
    refused(ccfkit("build", small, target, *BUILD, "--overwrite"), "not a directory")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["the input", "its directory"])
def test_the_output_is_never_the_input_or_above_it(tmp_path, small, where):
    out = small if where == "the input" else tmp_path
    before = snapshot(tmp_path)
    refused(ccfkit("build", small, out, *BUILD, "--overwrite"), "is or contains the input")
    assert snapshot(tmp_path) == before


def test_a_mask_file_inside_the_output_is_refused(tmp_path, small):
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "mask.npy", np.ones((64, 64), dtype=bool))
    refused(ccfkit("build", small, out, *BUILD, "--overwrite", "--mask", out / "mask.npy"),
            "contains the input")  # fmt: skip
    assert (out / "mask.npy").is_file()


def test_overwrite_fills_an_empty_directory_and_replaces_only_a_store(tmp_path, small):
    out = tmp_path / "out.zarr"
    out.mkdir()
    ok(ccfkit("build", small, out, *BUILD, "--overwrite"))
    first = snapshot(out)
    ok(ccfkit("build", small, out, *BUILD, "--overwrite"))
    assert zarr.open_group(str(out), mode="r").attrs["status"] == "complete"
    assert set(snapshot(out)) == set(first)  # the same files, nothing left over or added


def test_an_existing_store_is_kept_without_a_flag(tmp_path, small, store):
    out = tmp_path / "maps.zarr"
    shutil.copytree(store, out)
    before = snapshot(out)
    refused(ccfkit("build", small, out, *BUILD), "exists; use --overwrite")
    assert snapshot(out) == before


def test_a_store_being_written_is_locked(tmp_path, small, store):
    out = tmp_path / "maps.zarr"
    shutil.copytree(store, out)
    before = snapshot(out)
    holder = os.open(out, os.O_RDONLY)  # what a running build holds
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for flag in ("--overwrite", "--resume"):
            refused(ccfkit("build", small, out, *BUILD, flag), "another ccfkit process")
    finally:
        os.close(holder)
    assert snapshot(out) == before
    ok(ccfkit("build", small, out, *BUILD, "--overwrite"))  # released: it goes through


# --------------------------------------------------------------------------
# Silently wrong results
# --------------------------------------------------------------------------


def test_resume_refuses_an_input_replaced_by_one_of_the_same_size(tmp_path, small, monkeypatch):
    out, centre = tmp_path / "maps.zarr", ["--center", "31.5,31.5"]  # not each file's own
    interrupted_build(monkeypatch, small, out, *centre)
    done = zarr.open_group(str(out), mode="r")["done"][:]
    other = simulated(tmp_path / "other.cxi", seed=2)
    assert other.stat().st_size == small.stat().st_size  # same size, same frame count
    os.replace(other, small)
    refused(ccfkit("build", small, out, *BUILD, *centre, "--resume"), "another input (fingerprint")
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["done"][:], done)


def test_resume_from_another_working_directory(tmp_path, small, store, monkeypatch):
    np.save(tmp_path / "mask.npy", np.ones((64, 64), dtype=bool))
    monkeypatch.chdir(tmp_path)
    interrupted_build(monkeypatch, Path("small.cxi"), Path("maps.zarr"), "--mask", "mask.npy")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ok(ccfkit("build", small, "../maps.zarr", *BUILD, "--resume", "--mask", "../mask.npy"))
    ok(ccfkit("build", small, "whole.zarr", *BUILD, "--mask", tmp_path / "mask.npy"))
    same_arrays(tmp_path / "maps.zarr", elsewhere / "whole.zarr")


def test_resume_refuses_another_backend(tmp_path, small, monkeypatch):
    out = tmp_path / "maps.zarr"
    interrupted_build(monkeypatch, small, out)
    refused(ccfkit("build", small, out, *BUILD, "--resume", "--backend", "numba"),
            "another backend")  # fmt: skip


def cxi_with(path: Path, source: Path, name: str, data, **attrs) -> Path:
    """A copy of ``source`` with the data set ``name`` replaced by ``data``."""
    shutil.copy(source, path)
    with h5py.File(path, "a") as handle:
        if name in handle:
            del handle[name]
        handle[name] = data
        handle[name].attrs.update(attrs)
    return path


@pytest.mark.parametrize("case", ["no good pixel", "0.5 % good", "0/255 read as a bit mask"])
def test_masks_that_leave_almost_nothing_are_refused(tmp_path, source, case):
    good = np.zeros((64, 64), dtype=np.uint32)  # CXI bit mask: 0 = good
    if case == "no good pixel":
        good[:] = 1
    elif case == "0.5 % good":
        good[:] = 1
        good.flat[:20] = 0
    else:  # a 0/255 mask (255 = good, a 5 x 5 spot bad) read as CXI bits: inverted
        good = np.full((64, 64), 255, dtype=np.uint8)
        good[:5, :5] = 0
    cxi = cxi_with(tmp_path / "masked.cxi", source, MASK_PATH, good)
    refused(ccfkit("build", cxi, tmp_path / "out.zarr", *BUILD), "of the pixels are good")
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("values", [(0, 2), (0, 255)])
def test_mask_values_that_are_not_0_1_are_refused(tmp_path, small, values):
    mask = np.full((64, 64), values[1], dtype=np.uint8)
    mask[0] = values[0]
    np.save(tmp_path / "mask.npy", mask)
    with h5py.File(tmp_path / "mask.h5", "w") as handle:
        handle["good"] = mask  # not at a CXI location, no convention: 0/1 expected
    for spec in (tmp_path / "mask.npy", f"{tmp_path / 'mask.h5'}:/good"):
        refused(ccfkit("build", small, tmp_path / "out.zarr", *BUILD, "--mask", spec),
                "are not 0/1")  # fmt: skip
    assert not (tmp_path / "out.zarr").exists()


def test_a_mask_per_frame_of_the_wrong_length_is_refused(tmp_path, small):
    np.save(tmp_path / "mask.npy", np.ones((FRAMES + 1, 64, 64), dtype=bool))
    result = ccfkit("build", small, tmp_path / "out.zarr", *BUILD, "--mask", tmp_path / "mask.npy")
    refused(result, f"has {FRAMES + 1} frames, the input {FRAMES}")


@pytest.mark.parametrize(
    ("labels", "complaint"),
    [(np.full((FRAMES, 2), 0.3), "float64"), (np.array([[0, 2, 255]] * FRAMES), "[0, 2, 255]")],
    ids=["float", "0/2/255"],
)
def test_labels_that_are_not_0_1_integers_are_refused(tmp_path, source, labels, complaint):
    cxi = cxi_with(tmp_path / "labelled.cxi", source, "entry_1/my_labels", labels)
    result = ccfkit(
        "build", cxi, tmp_path / "out.zarr", *BUILD, "--labels-path", "entry_1/my_labels"
    )
    refused(result, "expected 0/1", complaint)
    refused(ccfkit("build", cxi_with(tmp_path / "l2.cxi", source, LABELS_PATH, labels),
                   tmp_path / "out.zarr", *BUILD), "expected 0/1")  # fmt: skip
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("value", [0.0, 7.0])
def test_center_auto_on_constant_frames_is_refused(tmp_path, source, value):
    cxi = cxi_with(tmp_path / "flat.cxi", source, DATA_PATH, np.full((4, 64, 64), value, "f4"))
    refused(ccfkit("build", cxi, tmp_path / "out.zarr", *BUILD, "--center", "auto"), "constant")
    assert not (tmp_path / "out.zarr").exists()


def damage(store: Path, key: str, how: str) -> None:
    """Flip one byte in the middle of a chunk file, or delete it."""
    path = store / key
    if how == "deleted":
        path.unlink()
        return
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("compressor", "how"), [("none", "flipped"), ("lz4", "flipped"),
                                                 ("none", "deleted")])  # fmt: skip
def test_a_damaged_chunk_is_an_error_naming_it(tmp_path, small, compressor, how):
    out = tmp_path / "maps.zarr"
    ok(ccfkit("build", small, out, *BUILD, "--compressor", compressor))
    ok(ccfkit("info", out, "--verify"))
    damage(out, "ccf/c/1/0/0", how)
    named = ("'ccf', chunk c/1/0/0", "missing" if how == "deleted" else "checksum")
    assert "status: complete" in ok(ccfkit("info", out)).output  # without --verify: not read
    refused(ccfkit("info", out, "--verify"), str(out), *named)
    refused(ccfkit("show", out, "--index", 5, "-o", tmp_path / "f.png"), *named)
    assert not (tmp_path / "f.png").exists()


def test_a_damaged_labels_chunk_is_an_error(tmp_path, small):
    out = tmp_path / "maps.zarr"
    ok(ccfkit("build", small, out, *BUILD))
    damage(out, "labels/c/0/0", "flipped")
    refused(ccfkit("info", out, "--verify"), "'labels', chunk c/0/0", "checksum")
    refused(ccfkit("show", out, "--index", 0, "-o", tmp_path / "f.png"), "'labels'")


# --------------------------------------------------------------------------
# Store creation interrupted; bad options
# --------------------------------------------------------------------------


def test_an_interrupted_creation_is_recognised_and_overwritten(tmp_path, small, monkeypatch):
    out = tmp_path / "maps.zarr"

    def killed(*args):
        raise KeyboardInterrupt  # Ctrl-C while the arrays are made

    with monkeypatch.context() as patch:
        patch.setattr("ccfkit.store.lifecycle.layout_attributes", killed)
        assert "Aborted" in ccfkit("build", small, out, *BUILD).output
    refused(ccfkit("info", out), "creation of this store was interrupted")
    refused(ccfkit("build", small, out, *BUILD), "exists")
    ok(ccfkit("build", small, out, *BUILD, "--overwrite"))
    assert zarr.open_group(str(out), mode="r").attrs["status"] == "complete"


@pytest.mark.parametrize("option", [["--chunk", "0"], ["--chunk", "-5"], ["--image-size", "0"]])
def test_bad_sizes_are_refused_before_anything_is_written(tmp_path, small, option):
    out = tmp_path / "out.zarr"
    refused(ccfkit("build", small, out, *BUILD, *option, "--keep-images"), option[0], code=2)
    assert not out.exists()


def test_r_max_beyond_the_detector_needs_force(tmp_path, small):
    out = tmp_path / "out.zarr"
    refused(ccfkit("build", small, out, *BUILD, "--r-max", "60"), "beyond the detector")
    assert not out.exists()
    ok(ccfkit("build", small, out, *BUILD, "--r-max", "60", "--force"))


@pytest.mark.parametrize(
    ("case", "complaint"),
    [
        ("directory", "is a directory"),
        ("complex", "not real numbers"),
        ("3 x 3 frames", "too small"),
        ("dangling external link", "a dangling link"),
        ("truncated", "truncated"),
    ],
)
def test_inputs_that_cannot_be_used_get_one_line(tmp_path, source, case, complaint):
    cxi = tmp_path / "in.cxi"
    if case == "directory":
        cxi.mkdir()
    elif case == "complex":
        cxi_with(cxi, source, DATA_PATH, np.ones((4, 64, 64), np.complex64))
    elif case == "3 x 3 frames":
        cxi_with(cxi, source, DATA_PATH, np.ones((4, 3, 3), np.float32))
    elif case == "dangling external link":
        with h5py.File(cxi, "w") as handle:
            handle[DATA_PATH] = h5py.ExternalLink("gone.h5", "/data")
    else:
        cxi.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    refused(ccfkit("build", cxi, tmp_path / "out.zarr", *BUILD), str(cxi), complaint)
    assert not (tmp_path / "out.zarr").exists()


def test_a_damaged_compressed_input_chunk_names_the_file(tmp_path, source):
    cxi = tmp_path / "gzip.cxi"
    with h5py.File(source, "r") as handle:
        frames = handle[DATA_PATH][()]
    with h5py.File(cxi, "w") as handle:
        handle.create_dataset(DATA_PATH, data=frames, chunks=(1, 64, 64), compression="gzip")
        where = handle[DATA_PATH].id.get_chunk_info(9)  # frame 9
    with open(cxi, "r+b") as handle:  # garbage in the middle of its deflate stream
        handle.seek(where.byte_offset + where.size // 2)
        handle.write(b"\xff" * 16)
    result = ccfkit("build", cxi, tmp_path / "out.zarr", *BUILD, "--center", "31.5,31.5")
    refused(result, str(cxi), "cannot read frames")


def test_a_virtual_data_set_with_a_missing_source_exits_cleanly(tmp_path):
    with h5py.File(tmp_path / "part.h5", "w") as handle:
        handle["data"] = np.ones((4, 32, 32), np.float32)
    layout = h5py.VirtualLayout(shape=(8, 32, 32), dtype="f4")
    layout[:4] = h5py.VirtualSource("part.h5", "data", shape=(4, 32, 32))
    layout[4:] = h5py.VirtualSource("gone.h5", "data", shape=(4, 32, 32))
    with h5py.File(tmp_path / "vds.h5", "w") as handle:
        handle.create_virtual_dataset(DATA_PATH, layout, fillvalue=0)
    # a process of its own: the crash this guards against (SIGSEGV) came at interpreter exit
    command = [sys.executable, "-c", "from ccfkit.cli import run; run()", "build",
               "vds.h5", "out.zarr", *BUILD]  # fmt: skip
    result = subprocess.run(
        command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == "Error: vds.h5: virtual data set source gone.h5 is missing"
    assert not (tmp_path / "out.zarr").exists()


# --------------------------------------------------------------------------
# Huge and non-finite pixels; resume strictness; builds that cannot run
# --------------------------------------------------------------------------


def frames_of(source: Path) -> np.ndarray:
    with h5py.File(source, "r") as handle:
        return handle[DATA_PATH][()]


def good_pixel(source: Path) -> tuple[int, int]:
    """A good pixel on the used rings of the default build (a quarter of the way in)."""
    with h5py.File(source, "r") as handle:
        bad = handle[MASK_PATH][()] != 0
    assert not bad[16, 20]
    return 16, 20


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_a_dead_pixel_sentinel_gives_no_nan_map_and_is_reported(tmp_path, source, backend,
                                                                caplog):  # fmt: skip
    frames = frames_of(source)
    y, x = good_pixel(source)
    frames[3, y, x] = 3.4e38  # float32-max sentinel of a dead pixel
    frames[4, y, x] = -1e19
    frames[5] = np.nan  # a frame of nothing
    cxi = cxi_with(tmp_path / "dead.cxi", source, DATA_PATH, frames)
    args = [*BUILD[:-3], "--backend", backend]  # BUILD without its backend and --quiet
    ok(ccfkit("build", cxi, tmp_path / "out.zarr", *args, "--quiet"))
    assert "3 frames have unusable pixels" in caplog.text  # the build's summary (stderr)
    assert "masked in their frame: 3, 4, 5" in caplog.text
    assert "1 frames have all-zero maps (no usable ring): 5" in caplog.text
    store = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    maps = store["ccf"][:]
    assert np.isfinite(maps).all() and store.attrs["status"] == "complete"
    checks = store["frame_checks"][:]
    assert checks[3, 0] == 1 and checks[4, 0] == 1 and checks[5, 0] > 1000
    assert checks[:, 1].tolist() == [0] * 5 + [1] + [0] * 10  # frame 5's map is 0, named
    assert store.attrs["frame_checks"]["first_frames"]["empty_map"] == [5]
    # the semantics: a huge pixel is masked in its frame, as a NaN there is
    frames[3, y, x] = frames[4, y, x] = np.nan
    nan_cxi = cxi_with(tmp_path / "nan.cxi", source, DATA_PATH, frames)
    ok(ccfkit("build", nan_cxi, tmp_path / "nan.zarr", *args, "--quiet"))
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "nan.zarr"))["ccf"][:], maps)
    assert "frames_with_unusable_pixels" in ok(ccfkit("info", tmp_path / "out.zarr")).output
    ok(ccfkit("show", tmp_path / "out.zarr", "--index", 3, "-o", tmp_path / "f3.png"))
    ok(ccfkit("show", tmp_path / "out.zarr", "--index", 5, "-o", tmp_path / "f5.png"))


def test_an_all_nan_input_is_no_complete_store_of_zeros(tmp_path, source):
    nothing = np.full((FRAMES, 64, 64), np.nan, "f4")
    cxi = cxi_with(tmp_path / "nan.cxi", source, DATA_PATH, nothing)
    out = tmp_path / "out.zarr"
    refused(ccfkit("build", cxi, out, *BUILD, "--center", "31.5,31.5"), "every frame's map is 0")
    assert zarr.open_group(str(out), mode="r").attrs["status"] == "incomplete"


def test_show_draws_a_map_with_nan_values(tmp_path, store):
    copy = tmp_path / "maps.zarr"
    shutil.copytree(store, copy)
    zarr.open_group(str(copy), mode="r+")["ccf"][0:4] = np.nan  # as stores made before the guard
    ok(ccfkit("show", copy, "--index", 0, "-o", tmp_path / "f.png"))
    assert (tmp_path / "f.png").stat().st_size > 0


def test_a_nan_map_stops_the_build_at_its_frame_or_is_masked_on_request(tmp_path, small,
                                                                         monkeypatch, caplog):  # fmt: skip
    original = pipeline.task_backend

    class Broken:  # an engine whose map of frame 6 (chunk 1, row 2) goes NaN
        def __init__(self, engine):
            self.engine = engine

        def __getattr__(self, name):
            return getattr(self.engine, name)

        def merged_maps(self, images, plan, settings):
            maps = self.engine.merged_maps(images, plan, settings)
            if np.allclose(images[2], self.sixth, equal_nan=True):
                maps[2, 0, 0] = np.nan
            return maps

    Broken.sixth = frames_of(small)[6]
    out = tmp_path / "maps.zarr"
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "task_backend", lambda name: Broken(original(name)))
        refused(ccfkit("build", small, out, *BUILD, "--workers", "1"),
                "frame 6: its map has NaN/inf values", "nothing of frames 4..7 was written")  # fmt: skip
        store = zarr.open_group(str(out), mode="r")
        assert store.attrs["status"] == "incomplete" and not store["done"][1]
        ok(ccfkit("build", small, out, *BUILD, "--resume", "--mask-bad-maps"))
    assert "1 maps held NaN/inf values and are stored as 0: 6" in caplog.text
    store = zarr.open_group(str(out), mode="r")
    assert store["frame_checks"][6].tolist()[2] == 1 and not store["ccf"][6].any()
    assert np.isfinite(store["ccf"][:]).all()


@pytest.mark.parametrize(
    ("option", "old", "new"), [("--compressor", "none", "lz4"), ("--chunk", "4", "8")]
)
def test_resume_refuses_another_compressor_or_chunking(tmp_path, small, monkeypatch, option,
                                                       old, new):  # fmt: skip
    out = tmp_path / "maps.zarr"
    interrupted_build(monkeypatch, small, out)
    before = snapshot(out)
    shown = repr(int(old)) if old.isdigit() else repr(old)
    now = repr(int(new)) if new.isdigit() else repr(new)
    refused(ccfkit("build", small, out, *BUILD, "--resume", option, new),
            f"built with another {option} ({shown}, now {now})")  # fmt: skip
    assert snapshot(out) == before


def longer_input(path: Path, source: Path, copies: int = 3) -> Path:
    """``source``'s frames and labels repeated: more frames than the 16 fingerprinted.

    Every other per-frame data set (a wavelength per frame, a centre per frame) is repeated too.
    """
    frames = frames_of(source)
    cxi_with(path, source, DATA_PATH, np.concatenate([frames] * copies))
    with h5py.File(path, "a") as handle:
        per_frame = []
        handle.visititems(lambda name, item: per_frame.append(name) if (
            isinstance(item, h5py.Dataset) and item.ndim and len(item) == len(frames)
            and "/" + name != DATA_PATH) else None)  # fmt: skip
        for name in per_frame:
            values, attrs = handle[name][()], dict(handle[name].attrs)
            del handle[name]
            handle[name] = np.concatenate([values] * copies)
            handle[name].attrs.update(attrs)
    return path


def test_resume_refuses_frames_edited_in_place_since_they_were_read(tmp_path, source,
                                                                    monkeypatch):  # fmt: skip
    cxi = longer_input(tmp_path / "long.cxi", source)  # 48 frames; 22 is not fingerprinted
    out = tmp_path / "maps.zarr"
    interrupted_build(monkeypatch, cxi, out, "--noise", "max", at_chunk=5)  # frames 20..23
    done = zarr.open_group(str(out), mode="r")["done"][:]
    with h5py.File(cxi, "r+") as handle:
        handle[DATA_PATH][22] = handle[DATA_PATH][22] * 2  # same file, size and fingerprint
    refused(ccfkit("build", cxi, out, *BUILD, "--noise", "max", "--resume"),
            "frames 20..23 of the input changed since this build read them")  # fmt: skip
    after = zarr.open_group(str(out), mode="r")["done"][:]  # other chunks may have been finished
    assert not after[5] and (after >= done).all()


def test_resume_refuses_labels_edited_in_the_input(tmp_path, small, monkeypatch):
    out = tmp_path / "maps.zarr"
    interrupted_build(monkeypatch, small, out)
    with h5py.File(small, "r+") as handle:
        handle[LABELS_PATH][3] = 1 - handle[LABELS_PATH][3]
    before = snapshot(out)
    refused(ccfkit("build", small, out, *BUILD, "--resume"), "labels changed", "frame 3")
    assert snapshot(out) == before


def broken_input(path: Path, source: Path, case: str) -> Path:
    """A copy of ``source`` with one thing wrong that used to end in a traceback."""
    shutil.copy(source, path)
    with h5py.File(path, "a") as handle:
        where = {"mask": MASK_PATH, "labels": LABELS_PATH, "centre": CENTER_PATH}
        if case.startswith("dangling"):
            name = where[case.split()[1]]
            del handle[name]
            handle[name] = h5py.ExternalLink("gone.h5", "/data")
        elif case == "groups not JSON":
            handle[LABELS_PATH].attrs["exclusive_groups"] = "[[class_0, class_1]"
        elif case == "0 frames, labels":
            for name, shape in ((DATA_PATH, (0, 64, 64)), (LABELS_PATH, (0, 4))):
                del handle[name]
                handle[name] = np.zeros(shape, np.float32 if name == DATA_PATH else np.uint8)
        elif case == "centre as strings":
            del handle[CENTER_PATH]
            handle[CENTER_PATH] = np.array([b"31.5", b"(y)"])
        elif case == "0.5 mask":
            del handle[MASK_PATH]
            handle[MASK_PATH] = np.full((64, 64), 0.5, np.float32)
    return path


@pytest.mark.parametrize(
    ("case", "complaint"),
    [
        ("dangling mask", "cannot open the mask"),
        ("dangling labels", "cannot open the labels"),
        ("dangling centre", "cannot open the beam centre"),
        ("groups not JSON", "exclusive_groups attribute"),
        ("0 frames, labels", "holds no frames"),
        ("centre as strings", "holds no numbers"),
        ("0.5 mask", "not float32 values (e.g. 0.5)"),
    ],
)
def test_inputs_that_used_to_end_in_a_traceback_get_one_line(tmp_path, source, case, complaint):
    cxi = broken_input(tmp_path / "in.cxi", source, case)
    before = snapshot(tmp_path)
    refused(ccfkit("build", cxi, tmp_path / "out.zarr", *BUILD), complaint)
    assert snapshot(tmp_path) == before  # nothing created, nothing touched


@pytest.mark.parametrize(
    ("options", "complaint", "code"),
    [
        (["--seed", "-1", "--noise", "max"], "seed must be an integer in [0, 2^64), not -1", 1),
        (["--seed", str(10**23), "--noise", "max"], "seed must be an integer in [0, 2^64)", 1),
        (["--seed", "1e23", "--noise", "max"], "'1e23' is not a valid integer", 2),
        (["--delta", "nan"], "delta must be a finite angle in radians, not nan", 1),
        (["--delta", "inf"], "delta must be a finite angle in radians, not inf", 1),
        (["--phi-bins", "0"], "q_bins, phi_bins: need q_bins >= 1 and an even phi_bins", 1),
        (["--phi-bins", "1000000"], "phi_bins must be at most 32768", 1),
        (["--r-max", "nan"], "r_max must be a finite radius", 1),
        (["--q-bins", "10000000"], "of memory", 1),
        (["--chunk", "100", "--keep-images", "--image-size", "100000"], "of memory", 1),
    ],
)
def test_options_no_build_can_use_are_refused_before_anything_is_created(tmp_path, small,
                                                                         options, complaint,
                                                                         code):  # fmt: skip
    before = snapshot(tmp_path)
    refused(ccfkit("build", small, tmp_path / "out.zarr", *BUILD, *options), complaint, code=code)
    assert snapshot(tmp_path) == before


def test_a_chunk_larger_than_the_input_is_the_input(tmp_path, small):
    out = tmp_path / "out.zarr"
    ok(ccfkit("build", small, out, *BUILD, "--chunk", "100000000"))  # zarr would allocate it
    store = zarr.open_group(str(out), mode="r")
    assert store["ccf"].chunks[0] == FRAMES and store.attrs["layout"]["chunk_frames"] == FRAMES
    ok(ccfkit("build", small, out, *BUILD, "--chunk", "100000000", "--resume"))


def test_the_memory_refusal_gives_the_figures(tmp_path, small, monkeypatch):
    monkeypatch.setattr("ccfkit.build_resources.available_memory", lambda: 999)
    line = refused(ccfkit("build", small, tmp_path / "out.zarr", *BUILD), "999 B is available")
    assert "this build needs about" in line and "lower --q-bins" in line
    assert not (tmp_path / "out.zarr").exists()


def test_a_store_larger_than_the_free_space_is_refused_and_a_large_one_announced(
    tmp_path, small, monkeypatch, caplog
):
    monkeypatch.setattr("ccfkit.build_resources._free_space", lambda path: 999)
    before = snapshot(tmp_path)
    refused(ccfkit("build", small, tmp_path / "out.zarr", *BUILD), "999 B is free there")
    assert snapshot(tmp_path) == before
    monkeypatch.setattr("ccfkit.build_resources._free_space", lambda path: None)
    monkeypatch.setattr("ccfkit.build_resources.LARGE_STORE", 1000)
    ok(ccfkit("build", small, tmp_path / "out.zarr", *BUILD))
    assert "will hold about 16.4 kB (16 frames of 1 x 16 x 16 maps)" in caplog.text


def test_an_unreachable_scheduler_is_refused_before_the_store_is_created(tmp_path, small,
                                                                         monkeypatch):  # fmt: skip
    monkeypatch.setattr(pipeline, "SCHEDULER_TIMEOUT", "1s")
    out = tmp_path / "out.zarr"
    refused(ccfkit("build", small, out, *BUILD, "--scheduler", "tcp://127.0.0.1:9"),
            "cannot reach the Dask scheduler")  # fmt: skip
    assert not out.exists()


def test_a_full_disk_names_the_store_and_leaves_it_resumable(tmp_path, small, monkeypatch):
    import errno

    from ccfkit.store import ChunkWriter

    out = tmp_path / "maps.zarr"
    original = ChunkWriter.write

    def full(self, chunk, data):
        if self.path == "ccf" and chunk == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, chunk, data)

    with monkeypatch.context() as patch:
        patch.setattr(ChunkWriter, "write", full)
        refused(ccfkit("build", small, out, *BUILD, "--workers", "1"), str(out),
                "No space left on device", "--resume")  # fmt: skip
    assert zarr.open_group(str(out), mode="r").attrs["status"] == "incomplete"
    ok(ccfkit("build", small, out, *BUILD, "--resume"))


# --------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------

FIT = ["--epochs", "1", "--width", "8", "--batch-size", "8", "--workers", "0", "--device", "cpu",
       "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def trainer_main():
    """The ``trainer`` command; its cases skip where torch (the ``trainer`` extra) is absent."""
    pytest.importorskip("torch")
    from trainer.cli import main as program

    return program


@pytest.fixture(scope="module")
def trained(tmp_path_factory, store, trainer_main) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    ok(ccfkit("fit", store, "--run-dir", run_dir, "--threads", "1", *FIT, program=trainer_main))
    return run_dir


def test_fit_resume_refuses_another_store(tmp_path, trained, source, trainer_main):
    other = tmp_path / "other.zarr"
    ok(ccfkit("build", source, other, *BUILD, "--seed", "5", "--noise", "max"))
    before = snapshot(trained)
    refused(ccfkit("fit", other, "--run-dir", trained, "--resume", program=trainer_main),
            "is another store")  # fmt: skip
    assert snapshot(trained) == before


def test_fit_resume_keeps_the_threads(tmp_path, trained, store, trainer_main):
    copy = tmp_path / "copy.zarr"  # the same store moved elsewhere is still the run's store
    shutil.copytree(store, copy)
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    result = ccfkit("fit", copy, "--run-dir", run_dir, "--resume", "--threads", "2",
                    program=trainer_main)  # fmt: skip
    refused(result, "cannot change ['threads']", "threads = 1")
    ok(
        ccfkit(
            "fit", copy, "--run-dir", run_dir, "--resume", "--epochs", "2", program=trainer_main
        )
    )
    assert '"threads": 1' in (run_dir / "config.json").read_text()


def test_trainer_file_errors_are_one_line(tmp_path, trained, store, trainer_main):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    refused(ccfkit("fit", store, "--run-dir", a_file, *FIT, program=trainer_main), "a_file")
    refused(ccfkit("predict", trained, store, "-o", a_file / "p.csv", program=trainer_main),
            "a_file")  # fmt: skip
    refused(ccfkit("evaluate", trained, "--json", tmp_path, program=trainer_main), str(tmp_path))
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize("damaged", ["last.pt", "config.json"])
def test_a_damaged_run_file_is_one_line(tmp_path, trained, store, damaged, trainer_main):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    (run_dir / damaged).write_bytes((run_dir / damaged).read_bytes()[:100])
    result = ccfkit("fit", store, "--run-dir", run_dir, "--resume", program=trainer_main)
    refused(result, damaged, "not readable")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_trainer_read_only_places_are_one_line(tmp_path, trained, store, trainer_main):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    refused(ccfkit("fit", store, "--run-dir", locked / "run", *FIT, program=trainer_main), "ro")
    refused(ccfkit("predict", trained, store, "-o", locked / "p.csv", program=trainer_main), "ro")


def test_the_trainer_names_a_damaged_chunk(tmp_path, trained, store, trainer_main):
    copy = tmp_path / "maps.zarr"
    shutil.copytree(store, copy)
    damage(copy, "ccf/c/2/0/0", "flipped")
    result = ccfkit("predict", trained, copy, "-o", tmp_path / "p.csv", program=trainer_main)
    refused(result, "'ccf', chunk c/2/0/0", "checksum")
    assert not (tmp_path / "p.csv").exists()


# --------------------------------------------------------------------------
# Killed builds (the small version of benchmarks/kill_resume.py)
# --------------------------------------------------------------------------


def load_kill_resume():
    """benchmarks/kill_resume.py as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_resume.py"
    spec = importlib.util.spec_from_file_location("kill_resume", path)
    kill_resume = importlib.util.module_from_spec(spec)
    sys.modules["kill_resume"] = kill_resume  # its dataclass looks its module up
    spec.loader.exec_module(kill_resume)
    return kill_resume


def test_builds_killed_at_three_moments_resume_to_the_same_store(tmp_path):
    kill_resume = load_kill_resume()
    _, trials = kill_resume.run_trials(tmp_path, count=3, seed=0, frames=16, in_process=True)
    assert [t.identical for t in trials] == [True, True, True], trials
    # at least one kill left a store to resume (not only "missing" or "complete",
    # which a fresh build or nothing would make identical by construction)
    assert any(t.resumed_with == "--resume" and not t.left.startswith("complete")
               for t in trials), trials  # fmt: skip


# --------------------------------------------------------------------------
# Every output guarded: never an input, never inside a store, never a user's file
# --------------------------------------------------------------------------


def test_predict_never_writes_over_its_input(tmp_path, trained, source, trainer_main):
    frames = Path(shutil.copy(source, tmp_path / "f_in.h5"))
    before = snapshot(tmp_path)
    result = ccfkit("predict", trained, frames, "-o", frames, "--quiet", program=trainer_main)
    refused(result, "is an input of this command", "f_in.h5")
    link = tmp_path / "same.h5"  # another name of the same file
    os.link(frames, link)
    refused(ccfkit("predict", trained, frames, "-o", link, program=trainer_main), "is an input")
    link.unlink()
    assert snapshot(tmp_path) == before


def test_predict_refuses_a_file_it_did_not_write_and_replaces_its_own(tmp_path, trained, store,
                                                                      trainer_main):  # fmt: skip
    theirs = tmp_path / "theirs.h5"
    with h5py.File(theirs, "w") as handle:
        handle["data"] = np.arange(3)
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    before = snapshot(tmp_path)
    refused(ccfkit("predict", trained, store, "-o", notes, program=trainer_main),
            "not a file this tool wrote")  # fmt: skip
    refused(ccfkit("predict", trained, store, "-o", theirs, program=trainer_main),
            "not a file this tool wrote")  # fmt: skip
    assert snapshot(tmp_path) == before
    mine = tmp_path / "p.csv"
    ok(ccfkit("predict", trained, store, "-o", mine, program=trainer_main))
    first = mine.read_text()
    ok(ccfkit("predict", trained, store, "-o", mine, program=trainer_main))  # its own: replaced
    assert mine.read_text() == first and first.startswith("row,index,p_")


def test_predict_never_writes_inside_a_store(tmp_path, trained, store, trainer_main):
    copy = tmp_path / "maps.zarr"
    shutil.copytree(store, copy)
    before = snapshot(copy)
    refused(ccfkit("predict", trained, copy, "-o", copy / "zarr.json", program=trainer_main),
            "inside the input")  # fmt: skip
    refused(ccfkit("predict", trained, store, "-o", copy / "p.csv", program=trainer_main),
            "inside the Zarr store")  # fmt: skip
    assert snapshot(copy) == before
    ok(ccfkit("info", copy, "--verify"))


def test_evaluate_json_refuses_what_it_did_not_write(tmp_path, trained, small, trainer_main):
    before = snapshot(small)
    refused(ccfkit("evaluate", trained, "--json", small, program=trainer_main),
            "not a file this tool wrote")  # fmt: skip
    assert snapshot(small) == before
    refused(ccfkit("evaluate", trained, "--json", trained / "config.json", program=trainer_main),
            "is an input")  # fmt: skip
    out = tmp_path / "metrics.json"
    ok(ccfkit("evaluate", trained, "--json", out, program=trainer_main))
    ok(ccfkit("evaluate", trained, "--json", out, program=trainer_main))  # its own: replaced
    assert '"accuracy"' in out.read_text()


def test_show_writes_the_path_it_prints_and_never_an_input(tmp_path, store, source):
    picture = tmp_path / "picture"  # no suffix: written as given, not picture.png
    result = ok(ccfkit("show", store, "-o", picture))
    assert result.output.strip() == f"wrote {picture}"
    assert picture.read_bytes().startswith(b"\x89PNG") and not Path(f"{picture}.png").exists()
    ok(ccfkit("show", store, "--index", 3, "-o", picture))  # its own picture: replaced
    before = snapshot(source)
    refused(ccfkit("show", store, "-o", source), "is an input", str(source))
    refused(ccfkit("show", store, "-o", tmp_path), "is a directory")
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n not ours")
    refused(ccfkit("show", store, "-o", photo), "not a file this tool wrote")
    assert snapshot(source) == before and photo.read_bytes().endswith(b"not ours")


def test_gallery_label_and_explain_outputs_are_guarded(tmp_path, trained, store, trainer_main):
    page = tmp_path / "page.html"
    page.write_text("<!doctype html><p>my notes</p>")
    before, checkpoint = snapshot(tmp_path), snapshot(trained / "best.pt")
    refused(ccfkit("explain", trained, store, "--index", 0, "-o", trained / "best.pt",
                   program=trainer_main), "is an input")  # fmt: skip
    assert snapshot(trained / "best.pt") == checkpoint
    heatmap = tmp_path / "heatmap"
    ok(ccfkit("explain", trained, store, "--index", 0, "-o", heatmap, program=trainer_main))
    ok(ccfkit("explain", trained, store, "--index", 1, "-o", heatmap, program=trainer_main))
    heatmap.unlink()
    refused(ccfkit("gallery", trained, store, "-o", page, program=trainer_main),
            "not a file this tool wrote")  # fmt: skip
    refused(ccfkit("label", store, "--out", store / "labels.csv", program=trainer_main),
            "inside the input")  # fmt: skip
    assert snapshot(tmp_path) == before and not (store / "labels.csv").exists()


def test_fit_overwrite_removes_only_the_runs_own_files(tmp_path, trained, store, trainer_main):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    (run_dir / "notes.md").write_text("mine")
    before = snapshot(run_dir)
    result = ccfkit("fit", store, "--run-dir", run_dir, "--overwrite", *FIT, program=trainer_main)
    refused(result, "did not write", "notes.md")
    assert snapshot(run_dir) == before
    (run_dir / "notes.md").unlink()
    ok(ccfkit("fit", store, "--run-dir", run_dir, "--overwrite", *FIT, program=trainer_main))
    assert (run_dir / "last.pt").is_file()


def test_fit_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path, store, trainer_main):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    (mine / "report.md").write_text("# my report")
    before = snapshot(mine)
    result = ccfkit("fit", store, "--run-dir", mine, "--overwrite", *FIT, program=trainer_main)
    refused(result, "not a run directory", "manifest.json")
    assert snapshot(mine) == before
    refused(ccfkit("fit", store, "--run-dir", store / "run", *FIT, program=trainer_main),
            "inside the Zarr store")  # fmt: skip
    assert not (store / "run").exists()


def test_build_overwrite_refuses_a_store_holding_user_files(tmp_path, small):
    out = tmp_path / "maps.zarr"
    ok(ccfkit("build", small, out, *BUILD))
    (out / "notes.md").write_text("mine")
    (out / "analysis").mkdir()
    (out / "analysis" / "result.csv").write_text("a\n1\n")
    before = snapshot(out)
    refused(ccfkit("build", small, out, *BUILD, "--overwrite"), "notes.md", "analysis/")
    assert snapshot(out) == before
    shutil.rmtree(out / "analysis")
    (out / "notes.md").unlink()
    ok(ccfkit("build", small, out, *BUILD, "--overwrite"))


# --------------------------------------------------------------------------
# info --verify checks the whole store; the trainer runs the cheap part
# --------------------------------------------------------------------------


def swap(store: Path, first: str, second: str) -> None:
    """Exchange two chunk files (each intact: only their places are wrong)."""
    a, b = store / first, store / second
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def test_verify_finds_a_missing_labels_chunk_and_the_trainer_refuses(tmp_path, store,
                                                                     trainer_main):  # fmt: skip
    copy = tmp_path / "maps.zarr"
    shutil.copytree(store, copy)
    (copy / "labels" / "c" / "0" / "0").unlink()
    refused(ccfkit("info", copy, "--verify"), "'labels', chunk c/0/0", "missing")
    run_dir = tmp_path / "run"
    refused(ccfkit("fit", copy, "--run-dir", run_dir, *FIT, program=trainer_main),
            "'labels', chunk c/0/0", "missing")  # fmt: skip
    assert not run_dir.exists()


def test_verify_finds_a_missing_array(tmp_path, trained, store, trainer_main):
    copy = tmp_path / "maps.zarr"
    shutil.copytree(store, copy)
    shutil.rmtree(copy / "ccf")
    refused(ccfkit("info", copy, "--verify"), "array 'ccf' is missing")
    refused(ccfkit("predict", trained, copy, "-o", tmp_path / "p.csv", program=trainer_main),
            "array 'ccf' is missing")  # fmt: skip
    assert not (tmp_path / "p.csv").exists()


def test_verify_finds_swapped_and_foreign_chunks(tmp_path, small):
    out, other = tmp_path / "maps.zarr", tmp_path / "other.zarr"
    ok(ccfkit("build", small, out, *BUILD))
    ok(ccfkit("build", small, other, *BUILD, "--noise", "max"))
    ok(ccfkit("info", out, "--verify"))
    swap(out, "ccf/c/1/0/0", "ccf/c/2/0/0")
    refused(ccfkit("info", out, "--verify"), "'ccf', chunk c/1/0/0", "not the ones written")
    swap(out, "ccf/c/1/0/0", "ccf/c/2/0/0")
    ok(ccfkit("info", out, "--verify"))
    shutil.copy(other / "ccf/c/3/0/0", out / "ccf/c/3/0/0")  # intact, but another store's
    refused(ccfkit("info", out, "--verify"), "'ccf', chunk c/3/0/0", "another store")


def as_schema_2(out: Path) -> None:
    """Rewrite a store's digests as a schema-2 ccfkit wrote them (BLAKE2b) and say schema 2."""
    import itertools

    from ccfkit.store.layout import chunk_digest

    group = zarr.open_group(out, mode="r+")

    def blake2b(array):
        grid = itertools.product(*(range(n) for n in array.cdata_shape))
        return [chunk_digest(array.get_block_selection(c), "blake2b-64") for c in grid]

    for name, digests in group["digests"].arrays():
        digests[:] = np.array(blake2b(group[name]), dtype=np.uint64)
    recorded = {name: [f"{d:016x}" for d in blake2b(group[name])]
                for name in group.attrs["chunk_digests"]}  # fmt: skip
    group.attrs.update({"chunk_digests": recorded, "schema_version": 2})


def test_verify_checks_a_schema_2_store_by_its_blake2b_digests(tmp_path, small):
    out = tmp_path / "maps.zarr"
    ok(ccfkit("build", small, out, *BUILD))
    as_schema_2(out)
    ok(ccfkit("info", out, "--verify"))
    swap(out, "ccf/c/1/0/0", "ccf/c/2/0/0")
    refused(ccfkit("info", out, "--verify"), "'ccf', chunk c/1/0/0", "not the ones written")


def test_verify_finds_a_shape_edited_in_the_metadata(tmp_path, small):
    import json

    out = tmp_path / "maps.zarr"
    ok(ccfkit("build", small, out, *BUILD))
    metadata = json.loads((out / "ccf" / "zarr.json").read_text())
    metadata["shape"][0] = 12
    (out / "ccf" / "zarr.json").write_text(json.dumps(metadata))
    refused(ccfkit("info", out, "--verify"), "array 'ccf' is (12, 16, 16)", "(16, 16, 16)")


# --------------------------------------------------------------------------
# A run knows its recipe
# --------------------------------------------------------------------------


def test_a_store_of_another_recipe_is_refused_by_the_run(tmp_path, trained, source,
                                                         trainer_main):  # fmt: skip
    other = tmp_path / "order8.zarr"
    ok(ccfkit("build", source, other, *BUILD, "--orders", "8"))  # the run's store: the default, 2
    refused(ccfkit("evaluate", trained, other, program=trainer_main),
            "another recipe", "orders [8] (the run's: [2])", "--allow-recipe-mismatch")  # fmt: skip
    refused(ccfkit("predict", trained, other, "-o", tmp_path / "p.csv", program=trainer_main),
            "orders [8]")  # fmt: skip
    assert not (tmp_path / "p.csv").exists()
    result = ok(ccfkit("evaluate", trained, other, "--allow-recipe-mismatch",
                       program=trainer_main))  # fmt: skip
    assert "recipe mismatch allowed (--allow-recipe-mismatch): orders [8]" in result.output
    import json  # a run made before runs recorded the recipe: compared through its store

    older = tmp_path / "older_run"
    shutil.copytree(trained, older)
    config = json.loads((older / "config.json").read_text())
    del config["store"]["recipe"]
    (older / "config.json").write_text(json.dumps(config))
    refused(ccfkit("evaluate", older, other, program=trainer_main), "orders [8]")


def test_evaluate_refuses_the_runs_store_built_again(tmp_path, small, trainer_main):
    out, run_dir = tmp_path / "maps.zarr", tmp_path / "run"
    ok(ccfkit("build", small, out, *BUILD))
    ok(ccfkit("fit", out, "--run-dir", run_dir, *FIT, program=trainer_main))
    ok(ccfkit("evaluate", run_dir, program=trainer_main))
    ok(ccfkit("build", small, out, *BUILD, "--overwrite", "--seed", "7", "--noise", "max"))
    refused(ccfkit("evaluate", run_dir, program=trainer_main), "another recipe", "noise")
    ok(ccfkit("build", small, out, *BUILD, "--overwrite"))  # the same recipe, another build
    refused(ccfkit("evaluate", run_dir, program=trainer_main), "no longer the store")


# --------------------------------------------------------------------------
# trainer fit: bad settings, a broken store, a non-finite loss, a full disk
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "complaint"), [("--width", "width must be >= 1"),
                                                   ("--max-frames", "max-frames must be >= 1")])  # fmt: skip
def test_fit_refuses_zero_sizes(tmp_path, store, option, complaint, trainer_main):
    run_dir = tmp_path / "run"
    result = ccfkit("fit", store, "--run-dir", run_dir, *FIT, option, 0, program=trainer_main)
    assert complaint in result.output and "Traceback" not in result.output
    assert result.exit_code != 0 and not run_dir.exists()


def test_fit_refuses_label_names_that_disagree_with_the_columns(tmp_path, store, trainer_main):
    import json

    copy = tmp_path / "maps.zarr"
    shutil.copytree(store, copy)
    metadata = json.loads((copy / "labels" / "zarr.json").read_text())
    metadata["attributes"]["names"] = metadata["attributes"]["names"][:-1]
    (copy / "labels" / "zarr.json").write_text(json.dumps(metadata))
    run_dir = tmp_path / "run"
    refused(ccfkit("fit", copy, "--run-dir", run_dir, *FIT, program=trainer_main), "label names")
    assert not run_dir.exists()


def test_fit_stops_at_a_non_finite_loss_naming_the_rows(tmp_path, store, trainer_main):
    copy = tmp_path / "maps.zarr"
    shutil.copytree(store, copy)
    ccf = zarr.open_group(str(copy), mode="r+")["ccf"]
    maps = ccf[4:12]
    maps[:, 0, 0] = np.nan  # rows 4..11: some of them in the training split
    ccf[4:12] = maps
    run_dir = tmp_path / "run"
    result = ccfkit("fit", copy, "--run-dir", run_dir, *FIT, program=trainer_main)
    line = refused(result, "the training loss is nan", "store rows")
    named = {int(r) for r in line.split("store rows ")[1].split(" (")[0].split(", ")}
    train = set(np.load(run_dir / "split.npz")["train"].tolist())
    assert named <= train and named & set(range(4, 12))
    assert not (run_dir / "last.pt").exists() and not (run_dir / "report.md").exists()


def test_fit_with_the_disk_full_at_a_checkpoint_keeps_last_pt(tmp_path, trained, store,
                                                              trainer_main, monkeypatch):  # fmt: skip
    import errno

    import torch

    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    before = snapshot(run_dir / "last.pt")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    result = ccfkit("fit", store, "--run-dir", run_dir, "--resume", "--epochs", "2", "--quiet",
                    program=trainer_main)  # fmt: skip
    refused(result, "last.pt: the checkpoint could not be written (No space left on device)")
    assert snapshot(run_dir / "last.pt") == before
    assert not list(run_dir.glob("*.partial"))


def test_fit_and_predict_killed_finish_to_the_same_run_and_file(tmp_path, store, trained):
    kill_resume = load_kill_resume()
    _, trials = kill_resume.fit_trials(tmp_path, store, count=2, seed=1, in_process=True)
    assert [t.identical for t in trials] == [True, True], trials
    _, trials = kill_resume.predict_trials(tmp_path, store, trained, count=2, seed=1,
                                           in_process=True)  # fmt: skip
    assert [t.identical for t in trials] == [True, True], trials
    assert {t.left for t in trials} <= {"the older file", "the new file"}


@given(
    shape=st.tuples(st.integers(1, 5), st.integers(1, 4), st.integers(1, 9)),
    specials=st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(
        [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -3.4e38, 3.4e38])), max_size=6),
    zeros=st.lists(st.integers(0, 4), max_size=3),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_map_checks_agree_with_numpy(shape, specials, zeros, dtype):
    from ccfkit.frame_checks import map_checks

    rng = np.random.default_rng(len(specials) + 7 * len(zeros))
    maps = rng.normal(size=shape).astype(dtype)
    for position, value in specials:
        maps.reshape(-1)[position % maps.size] = value
    for row in zeros:
        maps[row % len(maps)] = 0
    finite, nonzero = map_checks(maps)
    flat = maps.reshape(len(maps), -1)
    assert np.array_equal(finite, np.isfinite(flat).all(axis=1))
    assert np.array_equal(nonzero, flat.any(axis=1))
    strided = map_checks(maps[:, ::-1])  # not contiguous: the same answers
    assert np.array_equal(strided[0], finite) and np.array_equal(strided[1], nonzero)
