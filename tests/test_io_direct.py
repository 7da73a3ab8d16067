"""Direct frame reads (ccfkit.io.hdf5_direct, FrameReader) against h5py."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

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
def test_reader_and_pieces_match_the_data_across_files(two_files, a, b):
    reader, data = two_files
    lo, hi = min(a, b), max(a, b)
    np.testing.assert_array_equal(reader.read(lo, hi), data[lo:hi])
    pieces = reader.pieces(lo, hi)
    assert all(p.dtype == np.float32 and p.flags.c_contiguous for p in pieces)
    np.testing.assert_array_equal(np.concatenate(pieces), data[lo:hi])
    if 0 < hi - lo and (hi <= 20 or lo >= 20):  # within one file: mapped, not copied
        assert all(not p.flags.owndata and not p.flags.writeable for p in pieces)


def test_reader_checks_its_range(two_files):
    reader, data = two_files
    with pytest.raises(IndexError):
        reader.read(10, 51)
    np.testing.assert_array_equal(reader[-1], data[-1])


def test_mapped_pieces_split_where_hdf5_leaves_gaps(tmp_path):
    data = frames_of(n=300)
    name = write(tmp_path / "f.h5", data, chunks=(1, *SHAPE))
    layout = frame_layout(name, PATH)
    gaps = int((np.diff(layout.offsets) != layout.frame_bytes).sum())
    pieces = map_frames(name, layout, 0, 300, SHAPE)
    assert len(pieces) == gaps + 1 > 1  # one piece per run of back-to-back frames
    np.testing.assert_array_equal(np.concatenate(pieces), data)


def test_only_native_float32_is_mapped(tmp_path):
    name = write(tmp_path / "f.h5", frames_of(np.uint16))
    assert map_frames(name, frame_layout(name, PATH), 0, 5, SHAPE) is None
    reader = FrameReader((name,), PATH, (FRAMES,), SHAPE)
    (piece,) = reader.pieces(0, 5)  # read and converted instead
    assert piece.dtype == np.float32 and piece.flags.owndata
    np.testing.assert_array_equal(piece, frames_of(np.uint16)[:5])


def test_kernels_read_mapped_frames_like_arrays_in_memory(tmp_path):
    frames = frames_of(n=9)
    frames[2, 3, 4] = np.nan
    name = write(tmp_path / "f.h5", frames)
    (mapped,) = FrameReader((name,), PATH, (9,), SHAPE).pieces(0, 9)
    assert not mapped.flags.writeable  # a read-only view of the file
    mask = np.random.default_rng(4).random(SHAPE) > 0.2
    np.testing.assert_array_equal(frame_statistics(mapped, mask), frame_statistics(frames, mask))
    np.testing.assert_array_equal(
        add_noise(mapped, np.arange(9), 3.0, 5), add_noise(frames, np.arange(9), 3.0, 5)
    )
    np.testing.assert_array_equal(add_noise(mapped, np.arange(9), 0.0, 5), frames)
