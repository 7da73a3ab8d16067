"""Several input files must agree on mask, beam centre and geometry, or the build refuses.

One build makes every map with one plan; a second file with another mask or
centre would otherwise be read with the first file's, and the result would
depend on the files' order. Each refusal is one ``Error:`` line naming both
files, exit status 1, no store created and the inputs untouched; ``--mask``
and ``--center`` replace what the files say, and ``--center per-frame``
resamples each file's frames at its own centre.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from ccfkit.cli import main
from ccfkit.io.source import InputError, open_source

FRAMES, SIDE = 6, 32
DATA = "entry_1/data_1/data"
MASK = "entry_1/instrument_1/detector_1/mask"
CENTER = "entry_1/instrument_1/detector_1/beam_center"
DISTANCE = "entry_1/instrument_1/detector_1/distance"
GRID = ["--q-bins", "8", "--phi-bins", "16", "--r-min", "2", "--r-max", "10", "--chunk", "3",
        "--backend", "numpy", "--noise", "none", "--quiet"]  # fmt: skip


def write(path: Path, seed: int, *, bad=(), center=(15.5, 15.5), distance=0.1) -> Path:
    """A CXI file: random frames, a CXI bit mask (``bad``: rows marked bad), a centre, a distance."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as handle:
        handle[DATA] = rng.random((FRAMES, SIDE, SIDE)).astype(np.float32)
        if bad is not None:
            mask = np.zeros((SIDE, SIDE), np.uint32)
            mask[list(bad)] = 512  # PIXEL_IS_MISSING
            handle[MASK] = mask
        if center is not None:
            handle[CENTER] = np.asarray(center, np.float64)
        if distance is not None:
            handle[DISTANCE] = distance
    return path


def build(*args):
    return CliRunner().invoke(main, ["build", *map(str, args)])


def digests(*paths: Path) -> list[str]:
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


def refused(result, *words: str) -> str:
    """Exit 1, one ``Error:`` line on stderr naming ``words``, no traceback."""
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "second, words",
    [
        ({"bad": range(16)}, ["different masks", "512 of 1024 pixels differ"]),
        ({"bad": None}, ["has a mask and", "none"]),
        ({"center": (20.0, 40.0)}, ["different beam centres", "(15.5, 15.5)", "(20, 40)"]),
        ({"center": None}, ["gives a beam centre and", "none"]),
        ({"distance": 0.2}, ["different detector distances", "0.1 m", "0.2 m"]),
    ],
    ids=["mask", "no-mask", "centre", "no-centre", "distance"],
)
def test_files_that_disagree_are_refused_in_one_line_naming_both(tmp_path, second, words):
    first, other = write(tmp_path / "a.cxi", 1), write(tmp_path / "b.cxi", 2, **second)
    before = digests(first, other)
    for order in ((first, other), (other, first)):  # whichever comes first
        out = tmp_path / "maps.zarr"
        line = refused(build(*order, out, *GRID), *words)
        assert str(first) in line and str(other) in line
        assert not out.exists()
    assert digests(first, other) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.cxi", "b.cxi"]


def test_a_given_mask_or_centre_replaces_what_the_files_say(tmp_path):
    """--mask and --center X,Y hold for every file: nothing to compare, the build runs."""
    first = write(tmp_path / "a.cxi", 1)
    other = write(tmp_path / "b.cxi", 2, bad=range(16), center=(20.0, 40.0))
    np.save(tmp_path / "good.npy", np.ones((SIDE, SIDE), np.uint8))
    result = build(first, other, tmp_path / "m.zarr", *GRID,
                   "--mask", tmp_path / "good.npy", "--center", "15.5,15.5")  # fmt: skip
    assert result.exit_code == 0, result.output
    store = zarr.open_group(str(tmp_path / "m.zarr"), mode="r")
    assert store["ccf"].shape[0] == 2 * FRAMES and store["mask"][:].all()
    assert store.attrs["center"] == [15.5, 15.5]


def test_files_that_agree_give_the_maps_of_each_file_in_either_order(tmp_path):
    first = write(tmp_path / "a.cxi", 1, bad=[0, 1])
    other = write(tmp_path / "b.cxi", 2, bad=[0, 1])
    stores = {}
    for name, order in (("ab", (first, other)), ("ba", (other, first)), ("a", (first,))):
        assert build(*order, tmp_path / f"{name}.zarr", *GRID).exit_code == 0
        stores[name] = zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="r")
    ab, ba = stores["ab"]["ccf"][:], stores["ba"]["ccf"][:]
    np.testing.assert_array_equal(ab[:FRAMES], ba[FRAMES:])
    np.testing.assert_array_equal(ab[:FRAMES], stores["a"]["ccf"][:])
    assert "the same in all 2 files" in stores["ab"].attrs["input"]["mask"]
    assert not stores["ab"]["mask"][:2].any() and stores["ab"]["mask"][2:].all()


def test_center_per_frame_resamples_each_files_frames_at_its_own_centre(tmp_path):
    first = write(tmp_path / "a.cxi", 1, center=(15.5, 15.5))
    other = write(tmp_path / "b.cxi", 2, center=(14.0, 17.0))
    result = build(first, other, tmp_path / "own.zarr", *GRID, "--center", "per-frame")
    assert result.exit_code == 0, result.output
    own = zarr.open_group(str(tmp_path / "own.zarr"), mode="r")
    expected = np.repeat([[15.5, 15.5], [14.0, 17.0]], FRAMES, axis=0)
    np.testing.assert_array_equal(own["frame_center"][:], expected)
    for k, (path, centre) in enumerate(((first, "15.5,15.5"), (other, "14,17"))):
        assert build(path, tmp_path / f"{k}.zarr", *GRID, "--center", centre).exit_code == 0
        alone = zarr.open_group(str(tmp_path / f"{k}.zarr"), mode="r")["ccf"][:]
        np.testing.assert_array_equal(own["ccf"][k * FRAMES : (k + 1) * FRAMES], alone)


def test_center_per_frame_needs_a_centre_in_every_file(tmp_path):
    first, other = write(tmp_path / "a.cxi", 1), write(tmp_path / "b.cxi", 2, center=None)
    out = tmp_path / "own.zarr"
    refused(build(first, other, out, *GRID, "--center", "per-frame"), str(other), "per-frame")
    assert not out.exists()


def test_centres_per_frame_of_several_files_are_all_kept(tmp_path):
    """Jittered centres in every file: their mean over all frames, whatever the order."""
    rng = np.random.default_rng(7)
    centres = 15.5 + rng.normal(0, 1.0, size=(2, FRAMES, 2))
    first = write(tmp_path / "a.cxi", 1, center=centres[0])
    other = write(tmp_path / "b.cxi", 2, center=centres[1])
    source = open_source([first, other])
    np.testing.assert_array_equal(source.centers, centres.reshape(-1, 2))
    assert source.center == pytest.approx(tuple(centres.reshape(-1, 2).mean(axis=0)))
    with pytest.raises(Exception, match="one beam centre, .* one per frame"):
        open_source([first, write(tmp_path / "c.cxi", 3)])


def test_wavelengths_per_frame_of_several_files_give_their_mean_over_all_frames(tmp_path):
    """A photon energy drawn per shot: the files' values differ, their mean is the input's."""
    rng = np.random.default_rng(8)
    wavelengths = rng.uniform(30e-9, 60e-9, size=(2, FRAMES))
    paths = [write(tmp_path / f"{k}.cxi", k) for k in range(2)]
    for path, values in zip(paths, wavelengths):
        with h5py.File(path, "r+") as handle:
            handle["entry_1/instrument_1/source_1/wavelength"] = values
    for order in (paths, paths[::-1]):
        assert open_source(order).wavelength == pytest.approx(wavelengths.mean(), rel=1e-12)
    with h5py.File(paths[1], "r+") as handle:  # one value per file: they must be equal
        del handle["entry_1/instrument_1/source_1/wavelength"]
        handle["entry_1/instrument_1/source_1/wavelength"] = 40e-9
    with h5py.File(paths[0], "r+") as handle:
        del handle["entry_1/instrument_1/source_1/wavelength"]
        handle["entry_1/instrument_1/source_1/wavelength"] = 41e-9
    with pytest.raises(InputError, match="different wavelengths"):
        open_source(paths)
