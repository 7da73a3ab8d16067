"""Direct frame reads (ccfkit.io.hdf5_direct, FrameReader, FrameBlock) against h5py."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccfkit.frames import FrameBlock
from ccfkit.io.hdf5_direct import frame_layout, map_frames, read_frames
from ccfkit.io.source import FrameReader
from ccfkit.noise import add_noise, frame_statistics

SHAPE = (13, 11)
FRAMES = 37
PATH = "entry_1/data_1/data"


def frames_of(dtype=np.float32, n=FRAMES, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(100, 30, size=(n, *SHAPE))).astype(dtype)


def write(path, data, **options):
    with h5py.File(path, "w") as handle:
        # other data sets between the frames' chunks, as a detector file has them
        handle["entry_1/instrument_1/name"] = "test"
        handle.create_dataset(PATH, data=data, **options)
    return str(path)


LAYOUTS = {
    "contiguous": {},
    "frame chunks": {"chunks": (1, *SHAPE)},
    "4-frame chunks": {"chunks": (4, *SHAPE)},  # 37 frames: the last chunk is partial
}


@pytest.mark.parametrize("options", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<u2", "<i4", "<f8"])
def test_plain_layouts_read_like_h5py(tmp_path, options, dtype):
    data = frames_of(np.dtype(dtype))
    name = write(tmp_path / "f.h5", data, **options)
    layout = frame_layout(name, PATH)
    assert layout is not None and layout.dtype == np.dtype(dtype)
    for lo, hi in [(0, FRAMES), (3, 4), (5, 30), (36, 37), (7, 7)]:
        out = np.empty((hi - lo, *SHAPE), np.float32)
        read_frames(name, layout, lo, hi, out)
        np.testing.assert_array_equal(out, data[lo:hi].astype(np.float32))


def test_frame_chunks_are_found_across_the_gaps_hdf5_leaves(tmp_path):
    """Per-frame chunks are not back to back (index blocks sit between): offsets per frame."""
    data = frames_of(n=300)
    name = write(tmp_path / "f.h5", data, chunks=(1, *SHAPE))
    layout = frame_layout(name, PATH)
    steps = np.diff(layout.offsets)
    assert (steps != layout.frame_bytes).any()  # the file has gaps ...
    out = np.empty((300, *SHAPE), np.float32)
    read_frames(name, layout, 0, 300, out)
    np.testing.assert_array_equal(out, data)  # ... and every frame is found


NOT_PLAIN = {
    "gzip": {"chunks": (1, *SHAPE), "compression": "gzip"},
    "shuffle filter": {"chunks": (1, *SHAPE), "shuffle": True},
    "partial-frame chunks": {"chunks": (1, 7, SHAPE[1])},
}


@pytest.mark.parametrize("options", NOT_PLAIN.values(), ids=NOT_PLAIN.keys())
def test_other_layouts_fall_back_to_h5py(tmp_path, options):
    data = frames_of()
    name = write(tmp_path / "f.h5", data, **options)
    assert frame_layout(name, PATH) is None
    reader = FrameReader((name,), PATH, (FRAMES,), SHAPE)
    np.testing.assert_array_equal(reader.read(2, 9), data[2:9])


def test_chunks_never_written_fall_back_to_the_fill_value(tmp_path):
    name = str(tmp_path / "f.h5")
    with h5py.File(name, "w") as handle:
        dataset = handle.create_dataset(PATH, shape=(8, *SHAPE), dtype="f4", chunks=(1, *SHAPE),
                                        fillvalue=-1)  # fmt: skip
        dataset[:4] = 1.0  # frames 4..7 never written
    assert frame_layout(name, PATH) is None
    reader = FrameReader((name,), PATH, (8,), SHAPE)
    np.testing.assert_array_equal(reader.read(2, 6)[:, 0, 0], [1, 1, -1, -1])


def test_a_rewritten_file_is_looked_at_again(tmp_path):
    name = write(tmp_path / "f.h5", frames_of(seed=1))
    reader = FrameReader((name,), PATH, (FRAMES,), SHAPE)
    reader.read(0, 2)
    second = frames_of(seed=2)
    write(tmp_path / "f.h5", second, chunks=(1, *SHAPE))  # other layout, other offsets
    np.testing.assert_array_equal(reader.read(0, 5), second[:5])


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    """Frames split over a contiguous file and a per-frame-chunked one."""
    folder = tmp_path_factory.mktemp("two")
    data = frames_of(n=50)
    first = write(folder / "a.h5", data[:20])
    second = write(folder / "b.h5", data[20:], chunks=(1, *SHAPE))
    return FrameReader((first, second), PATH, (20, 30), SHAPE), data


@given(st.integers(0, 50), st.integers(0, 50))
def test_reader_and_blocks_match_the_data_across_files(two_files, a, b):
    reader, data = two_files
    lo, hi = min(a, b), max(a, b)
    np.testing.assert_array_equal(reader.read(lo, hi), data[lo:hi])
    block = reader.block(lo, hi)
    np.testing.assert_array_equal(block.to_array(), data[lo:hi])
    if 0 < hi - lo and (hi <= 20 or lo >= 20):  # within one file: mapped, not copied
        assert not block.pixels.flags.owndata and not block.pixels.flags.writeable


def test_reader_checks_its_range(two_files):
    reader, data = two_files
    with pytest.raises(IndexError):
        reader.read(10, 51)
    np.testing.assert_array_equal(reader[-1], data[-1])


def test_only_native_float32_is_mapped(tmp_path):
    name = write(tmp_path / "f.h5", frames_of(np.uint16))
    assert map_frames(name, frame_layout(name, PATH), 0, 5, SHAPE) is None
    reader = FrameReader((name,), PATH, (FRAMES,), SHAPE)
    block = reader.block(0, 5)  # read and converted instead
    assert block.pixels.dtype == np.float32 and block.pixels.flags.owndata is False
    np.testing.assert_array_equal(block.to_array(), frames_of(np.uint16)[:5])


def irregular_block(frames: np.ndarray, seed: int = 0) -> FrameBlock:
    """The frames at random gaps in one flat array, as in a mapped HDF5 file."""
    rng = np.random.default_rng(seed)
    pixels_per_frame = frames[0].size
    gaps = rng.integers(0, 50, size=len(frames))
    starts = np.cumsum(gaps) + np.arange(len(frames)) * pixels_per_frame
    pixels = np.full(starts[-1] + pixels_per_frame + 7, np.nan, np.float32)
    for frame, start in zip(frames, starts):
        pixels[start : start + pixels_per_frame] = frame.ravel()
    return FrameBlock(pixels, starts.astype(np.int64), frames.shape[1:])


def test_kernels_read_irregular_blocks_like_arrays():
    frames = frames_of(n=9)
    frames[2, 3, 4] = np.nan  # gaps hold NaN too: they must never be read
    block = irregular_block(frames)
    mask = np.random.default_rng(4).random(SHAPE) > 0.2
    np.testing.assert_array_equal(frame_statistics(block, mask), frame_statistics(frames, mask))
    np.testing.assert_array_equal(
        add_noise(block, np.arange(9), 3.0, 5), add_noise(frames, np.arange(9), 3.0, 5)
    )
    np.testing.assert_array_equal(add_noise(block, np.arange(9), 0.0, 5), frames)
    np.testing.assert_array_equal(block.to_array(), frames)


def test_frame_block_of_an_array_shares_its_memory():
    frames = frames_of(n=3)
    block = FrameBlock.of(frames)
    assert np.shares_memory(block.pixels, frames)
    assert block.starts.tolist() == [0, frames[0].size, 2 * frames[0].size]
    with pytest.raises(ValueError, match="B, H, W"):
        FrameBlock.of(frames[0])
