"""Bitshuffle-LZ4 chunks decoded outside HDF5 (``ccfkit.io.bitshuffle_chunks``) against h5py.

The oracle is HDF5's own decompression through h5py: every frame read by
the direct path must equal it, byte for byte, whatever the frames per
chunk, the range read, the dtype or byte order, and for module stacks.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from ccfkit.io.bitshuffle_chunks import bitshuffle_layout, read_bitshuffle_frames
from ccfkit.io.source import FrameReader, open_source

hdf5plugin = pytest.importorskip("hdf5plugin")

DATA = "entry_1/data_1/data"


def write(path, frames, chunks, **filters) -> str:
    with h5py.File(path, "w") as handle:
        handle.create_dataset(DATA, data=frames, chunks=chunks, **filters)
    return str(path)


def through_h5py(path) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle[DATA][()]


@pytest.mark.parametrize("per_chunk", [1, 3, 5])
def test_every_range_reads_as_hdf5_decompresses_it(tmp_path, per_chunk):
    rng = np.random.default_rng(per_chunk)
    frames = rng.poisson(0.7, size=(11, 40, 36)).astype(np.float32) * 1.5
    path = write(tmp_path / "f.h5", frames, (per_chunk, 40, 36), **hdf5plugin.Bitshuffle())
    layout = bitshuffle_layout(path, DATA)
    assert layout is not None and layout.per_chunk == per_chunk  # the direct path is taken
    reader = open_source([path]).reader
    expected = through_h5py(path)
    for lo, hi in [(0, 11), (1, 4), (per_chunk, 2 * per_chunk), (10, 11), (2, 3)]:
        np.testing.assert_array_equal(reader.read(lo, hi), expected[lo:hi])


def test_module_stacks_and_other_dtypes_convert_as_h5py_does(tmp_path):
    rng = np.random.default_rng(2)
    stack = rng.integers(-300, 3000, size=(5, 4, 16, 24)).astype(">i2")  # big-endian int16
    path = write(tmp_path / "s.h5", stack, (2, 4, 16, 24), **hdf5plugin.Bitshuffle())
    layout = bitshuffle_layout(path, DATA)
    assert layout.frame_shape == (4, 16, 24) and layout.dtype == np.dtype(">i2")
    reader = FrameReader((path,), DATA, (5,), (64, 24), np.dtype(np.float32), (4, 16, 24))
    got = reader.read(1, 5)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, stack[1:5].astype(np.float32).reshape(4, 64, 24))


def test_other_layouts_are_left_to_h5py(tmp_path):
    frames = np.ones((4, 16, 16), np.float32)
    cases = {
        "zstd": write(tmp_path / "z.h5", frames, (1, 16, 16), **hdf5plugin.Zstd()),
        "bitshuffle alone": write(
            tmp_path / "b.h5", frames, (1, 16, 16), **hdf5plugin.Bitshuffle(cname="none")
        ),
        "half frames": write(tmp_path / "h.h5", frames, (1, 8, 16), **hdf5plugin.Bitshuffle()),
        "plain": write(tmp_path / "p.h5", frames, (1, 16, 16)),
    }
    for name, path in cases.items():
        assert bitshuffle_layout(path, DATA) is None, name
        np.testing.assert_array_equal(open_source([path]).reader.read(0, 4), frames)


def test_a_damaged_chunk_is_an_error_not_wrong_frames(tmp_path):
    frames = np.arange(2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32)
    path = write(tmp_path / "d.h5", frames, (1, 32, 32), **hdf5plugin.Bitshuffle())
    with h5py.File(path, "r+") as handle:
        dataset = handle[DATA]
        _, raw = dataset.id.read_direct_chunk((1, 0, 0))
        damaged = raw[:8] + (1000).to_bytes(4, "big") + bytes(len(raw) - 12)
        dataset.id.write_direct_chunk((1, 0, 0), damaged)
    layout = bitshuffle_layout(path, DATA)
    out = np.empty((1, 32, 32), np.float32)
    assert read_bitshuffle_frames(path, DATA, layout, 0, 1, out)
    np.testing.assert_array_equal(out[0], frames[0])
    with pytest.raises(OSError, match="chunk 1"):
        read_bitshuffle_frames(path, DATA, layout, 1, 2, out)
