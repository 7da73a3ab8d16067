"""Chunk files written by the Zarr v3 specification (ccfkit.store.chunk_files), against zarr's."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from hypothesis import given
from hypothesis import strategies as st
from zarr.codecs import BytesCodec, Crc32cCodec

from ccfkit.store import COMPRESSORS, chunk_writer
from ccfkit.store.chunk_files import _write_all, chunk_file_path, plain_chunk_shape
from ccfkit.store.direct import DirectLocalStore

CHECKSUM = (Crc32cCodec(),)


def _pair(root, shape, chunk, dtype, fill_value=0, compressors=CHECKSUM):
    """Two equal new arrays: one written by ChunkWriter, one by zarr's own ``array[...] =``."""
    group = zarr.open_group(str(root), mode="a")
    return tuple(
        group.create_array(name, shape=shape, chunks=(chunk, *shape[1:]), dtype=dtype,
                           compressors=compressors, fill_value=fill_value)
        for name in ("ours", "zarrs")
    )


@given(
    rows=st.integers(1, 40),
    chunk=st.integers(1, 16),
    tail=st.sampled_from([(), (3,), (5, 4), (2, 3, 2)]),
    dtype=st.sampled_from(["float32", "float16", "float64", "uint8", "int32", "uint64", "bool"]),
    fill_value=st.sampled_from([0, 1]),
    seed=st.integers(0, 2**16),
)
def test_the_files_are_zarrs_byte_for_byte(tmp_path_factory, rows, chunk, tail, dtype,
                                           fill_value, seed):  # fmt: skip
    root = tmp_path_factory.mktemp("chunks")
    shape = (rows, *tail)
    ours, zarrs = _pair(root, shape, chunk, dtype, fill_value)
    zarrs = zarrs.with_config({"write_empty_chunks": True})  # as ChunkWriter: every chunk
    assert plain_chunk_shape(ours) == (chunk, *tail)
    data = (np.random.default_rng(seed).normal(size=shape) * 50).astype(dtype)
    writer = chunk_writer(ours)
    for index in reversed(range(-(-rows // chunk))):  # the last (maybe short) chunk first
        part = data[index * chunk : (index + 1) * chunk]
        writer.write(index, part)
        zarrs[index * chunk : (index + 1) * chunk] = part
        key = "/".join(["c", str(index), *["0"] * len(tail)])
        assert (root / "ours" / key).read_bytes() == (root / "zarrs" / key).read_bytes()
        assert chunk_file_path(ours, (index, *[0] * len(tail))) == root / "ours" / key
    np.testing.assert_array_equal(zarr.open_array(str(root / "ours"), mode="r")[:], data)
    assert not list(root.rglob("*.partial"))


def test_a_damaged_file_is_caught_by_zarrs_checksum(tmp_path):
    ours, _ = _pair(tmp_path, (8, 4), 4, "float32")
    chunk_writer(ours).write(1, np.arange(16, dtype=np.float32).reshape(4, 4))
    path = tmp_path / "ours" / "c" / "1" / "0"
    damaged = bytearray(path.read_bytes())
    damaged[5] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="checksum"):
        zarr.open_array(str(tmp_path / "ours"), mode="r")[4:]


def test_only_plain_arrays_in_a_local_directory_are_written_here(tmp_path):
    group = zarr.open_group(str(tmp_path), mode="a")

    def array(name, **options):
        options = {"shape": (8, 4), "chunks": (4, 4), "dtype": "float32", **options}
        return group.create_array(name, **options)

    assert plain_chunk_shape(array("plain", compressors=CHECKSUM)) == (4, 4)
    assert plain_chunk_shape(array("no_checksum", compressors=None)) is None
    assert plain_chunk_shape(array("lz4", compressors=(COMPRESSORS["lz4"], Crc32cCodec()))) is None
    assert plain_chunk_shape(array("big", compressors=CHECKSUM,
                                   serializer=BytesCodec(endian="big"))) is None  # fmt: skip
    assert plain_chunk_shape(array("sharded", compressors=CHECKSUM, shards=(8, 4))) is None
    assert plain_chunk_shape(array("dots", compressors=CHECKSUM,
                                   chunk_key_encoding={"name": "default", "separator": "."})) is None  # fmt: skip
    direct = zarr.open_array(DirectLocalStore(tmp_path), path="plain", mode="r+")
    assert plain_chunk_shape(direct) == (4, 4)  # written here, large files with O_DIRECT

    class Elsewhere(zarr.storage.LocalStore):  # another subclass writes its own way
        pass

    assert plain_chunk_shape(zarr.open_array(Elsewhere(tmp_path), path="plain")) is None
    memory = zarr.create_array(zarr.storage.MemoryStore(), shape=(8, 4), chunks=(4, 4),
                               dtype="float32", compressors=CHECKSUM)  # fmt: skip
    assert plain_chunk_shape(memory) is None
    v2 = zarr.create_array(str(tmp_path / "v2"), shape=(8, 4), chunks=(4, 4), dtype="float32",
                           zarr_format=2)  # fmt: skip
    assert plain_chunk_shape(v2) is None


def test_rows_of_another_shape_are_refused(tmp_path):
    ours, _ = _pair(tmp_path, (8, 4, 3), 4, "float32")
    with pytest.raises(ValueError, match="rows of shape"):
        chunk_writer(ours).write(0, np.zeros((4, 3, 4), np.float32))
    assert not (tmp_path / "ours" / "c").exists()


def test_short_writes_are_continued(tmp_path, monkeypatch):
    """``writev`` may write less than asked: the rest follows, in order."""
    import os

    real = os.writev

    def one_byte_at_most_three(descriptor, buffers):
        return real(descriptor, [memoryview(buffers[0])[:3]])

    monkeypatch.setattr(os, "writev", one_byte_at_most_three)
    path = tmp_path / "f"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        _write_all(descriptor, [memoryview(b"abcdefg"), memoryview(b""), memoryview(b"hij")])
    finally:
        os.close(descriptor)
    assert path.read_bytes() == b"abcdefghij"


@pytest.mark.parametrize("rows", [8, 7])  # 1 MiB chunks; the last one short (padded)
def test_the_direct_store_writes_the_same_files_with_o_direct(tmp_path, rows, direct_writes,
                                                               takes_o_direct):  # fmt: skip
    shape, chunk = (rows, 256, 256), 4
    ours, zarrs = _pair(tmp_path, shape, chunk, "float32")
    data = np.random.default_rng(rows).normal(size=shape).astype(np.float32)
    writer = chunk_writer(ours, "direct")
    for index in range(2):
        writer.write(index, data[index * chunk : (index + 1) * chunk])
        zarrs[index * chunk : (index + 1) * chunk] = data[index * chunk : (index + 1) * chunk]
        key = f"c/{index}/0/0"
        assert (tmp_path / "ours" / key).read_bytes() == (tmp_path / "zarrs" / key).read_bytes()
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "ours"), mode="r")[:], data)
    sizes = [size for size, written in direct_writes if written]
    assert sizes == ([chunk * 256 * 256 * 4 + 4] * 2 if takes_o_direct else [])
