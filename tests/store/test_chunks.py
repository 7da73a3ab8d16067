"""The store's chunk writer (ccfkit.store.chunks): whole chunks, zarr's codecs, never torn."""

from __future__ import annotations

import ast
import errno
import os
import pathlib
import signal
import subprocess
import sys
import time

import dask.array as da
import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec

from ccfkit.store import COMPRESSORS, DirectLocalStore, WriteMethod, chunk_writer
from ccfkit.store import direct as direct_module

SHAPE = (45, 12, 10)  # 45 rows in chunks of 16: the last chunk holds 13
CHUNK = 16
METHODS = [m.value for m in WriteMethod]
CHECKSUM = (Crc32cCodec(),)  # what every ccfkit array ends with


def new_array(root, name="a", dtype="float32", compressors=CHECKSUM, shape=SHAPE,
              chunk=CHUNK):  # fmt: skip
    group = zarr.open_group(str(root), mode="a")
    return group.create_array(name, shape=shape, chunks=(chunk, *shape[1:]), dtype=dtype,
                              compressors=compressors, fill_value=0)  # fmt: skip


def data_of(shape=SHAPE, dtype="float32", seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).uniform(-1, 1, shape) * 100).astype(dtype)


@pytest.mark.parametrize("method", METHODS)
def test_chunks_read_back_identical_with_zarr_and_dask(tmp_path, method):
    array = new_array(tmp_path)
    data = data_of()
    writer = chunk_writer(array, method)
    assert isinstance(writer.store, DirectLocalStore) is (method == "direct")
    for chunk in (2, 0, 1):  # any order; the last chunk is short
        writer.write(chunk, data[chunk * CHUNK : (chunk + 1) * CHUNK])
    reread = zarr.open_array(str(tmp_path / "a"), mode="r")
    assert [c.to_dict()["name"] for c in reread.metadata.codecs][-1] == "crc32c"
    np.testing.assert_array_equal(reread[:], data)
    np.testing.assert_array_equal(da.from_zarr(str(tmp_path / "a")).compute(), data)
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize("checksum", [False, True], ids=["plain", "crc32c"])
@pytest.mark.parametrize("codec", COMPRESSORS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_the_direct_method_writes_the_files_zarr_writes(tmp_path, codec, dtype, checksum,
                                                        direct_writes, takes_o_direct):  # fmt: skip
    """Chunks of 2 MiB (raw): large enough for O_DIRECT, whatever zarr's codecs make of them."""
    chunk = (2 << 20) // (256 * 256 * np.dtype(dtype).itemsize)
    shape = (chunk * 5 // 2, 256, 256)  # the last chunk is half full
    data = data_of(shape, dtype)
    codecs = tuple(c for c in (COMPRESSORS[codec], Crc32cCodec() if checksum else None) if c)
    made = {m: new_array(tmp_path, m, dtype, codecs or None, shape, chunk) for m in METHODS}
    writers = {m: chunk_writer(array, m) for m, array in made.items()}
    for index in range(3):
        for writer in writers.values():
            writer.write(index, data[index * chunk : (index + 1) * chunk])
    for index in range(3):
        key = f"c/{index}/0/0"
        assert (tmp_path / "direct" / key).read_bytes() == (tmp_path / "zarr" / key).read_bytes()
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "direct"))[:], data)
    if takes_o_direct and codec == "none":  # raw: every chunk is >= 1 MiB
        sizes = [size for size, written in direct_writes if written]
        assert len(sizes) == 3 and min(sizes) >= direct_module.DIRECT_MIN_BYTES


@pytest.mark.parametrize("method", METHODS)
def test_only_whole_chunks_are_written(tmp_path, method):
    writer = chunk_writer(new_array(tmp_path), method)
    with pytest.raises(ValueError, match="whole chunks"):
        writer.write(0, np.zeros((CHUNK - 1, *SHAPE[1:])))
    with pytest.raises(ValueError, match="whole chunks"):
        writer.write(2, np.zeros((CHUNK, *SHAPE[1:])))  # the last chunk has 13 rows
    with pytest.raises(ValueError, match="whole chunks"):
        writer.write(3, np.zeros((0, *SHAPE[1:])))
    split = zarr.open_group(str(tmp_path), mode="a").create_array(
        "split", shape=SHAPE, chunks=(CHUNK, 12, 5), dtype="float32"
    )
    with pytest.raises(ValueError, match="split more than the first axis"):
        chunk_writer(split)


def test_zeros_are_written_as_chunks(tmp_path):
    """A missing chunk of a finished task means damage: empty chunks are written too."""
    chunk_writer(new_array(tmp_path)).write(1, np.zeros((CHUNK, *SHAPE[1:]), np.float32))
    assert (tmp_path / "a" / "c" / "1" / "0" / "0").is_file()


def test_the_direct_method_leaves_other_stores_as_they_are(tmp_path):
    in_memory = zarr.create_array(zarr.storage.MemoryStore(), shape=SHAPE,
                                  chunks=(CHUNK, *SHAPE[1:]), dtype="float32")  # fmt: skip
    zstd_default = new_array(tmp_path, "zstd", compressors="auto")  # zarr's own default codec
    data = data_of()
    for array in (in_memory, zstd_default):
        writer = chunk_writer(array, "direct")
        local = isinstance(array.store, zarr.storage.LocalStore)
        assert isinstance(writer.store, DirectLocalStore) is local
        writer.write(2, data[2 * CHUNK :])
        np.testing.assert_array_equal(array[2 * CHUNK :], data[2 * CHUNK :])


class _DiskFull:
    """A file object that takes half of a write, then fails as a full disk does."""

    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        view = memoryview(data).cast("B")
        self._handle.write(view[: len(view) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


@pytest.fixture
def disk_full_midway(monkeypatch):
    """Every file opened for writing fails half-way through its first write (all methods)."""
    real_path_open, real_open = pathlib.Path.open, open
    real_os_write, real_os_writev = os.write, os.writev

    def path_open(self, mode="r", *args, **kwargs):
        handle = real_path_open(self, mode, *args, **kwargs)
        return _DiskFull(handle) if "w" in mode else handle

    def builtin_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return _DiskFull(handle) if "w" in mode else handle

    def os_write(descriptor, data):
        view = memoryview(data).cast("B")
        real_os_write(descriptor, view[: len(view) // 2 // 4096 * 4096])
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    def os_writev(descriptor, buffers):
        first = memoryview(buffers[0]).cast("B")
        real_os_writev(descriptor, [first[: len(first) // 2]])
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")

    def install():
        monkeypatch.setattr(pathlib.Path, "open", path_open)
        monkeypatch.setattr("builtins.open", builtin_open)
        monkeypatch.setattr(os, "write", os_write)
        monkeypatch.setattr(os, "writev", os_writev)

    return install


@pytest.mark.parametrize("method", METHODS)
def test_a_failed_write_leaves_the_old_chunk_or_none(tmp_path, method, disk_full_midway,
                                                     monkeypatch):  # fmt: skip
    shape, chunk = (8, 256, 256), 4  # 1 MiB chunks: the direct method uses O_DIRECT
    array = new_array(tmp_path, shape=shape, chunk=chunk)
    writer = chunk_writer(array, method)
    old, new = np.full((chunk, 256, 256), 1.0, np.float32), np.full((chunk, 256, 256), 2.0)
    writer.write(0, old)
    disk_full_midway()
    for index in (0, 1):  # chunk 0 was written before, chunk 1 never
        with pytest.raises(OSError, match="simulated"):
            writer.write(index, new)
    monkeypatch.undo()
    reread = zarr.open_array(str(tmp_path / "a"), mode="r")
    np.testing.assert_array_equal(reread[:chunk], old)  # checksum and values of the old one
    assert not (tmp_path / "a" / "c" / "1" / "0" / "0").exists()  # no chunk at all
    assert not list(tmp_path.rglob("*.partial"))  # the temporary files are removed


_CHILD = """
import sys
import numpy as np
import zarr
from ccfkit.store import chunk_writer
array = zarr.open_array(sys.argv[1], mode="r+")
writer = chunk_writer(array, sys.argv[2])
shape = (array.chunks[0], *array.shape[1:])
value = 1.0
while True:
    writer.write(0, np.full(shape, value, np.float32))
    print(value, flush=True)
    value += 1.0
"""


@pytest.mark.parametrize("method", METHODS)
def test_a_killed_writer_never_leaves_a_torn_chunk(tmp_path, method):
    """SIGKILL at random moments of a writer rewriting one 12.8 MB chunk over and over."""
    shape = (64, 224, 224)
    new_array(tmp_path, shape=shape, chunk=64)
    rng = np.random.default_rng(0)
    for _ in range(4):
        child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "a"), method],
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
        written = float(child.stdout.readline())  # one whole write done
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        chunk = zarr.open_array(str(tmp_path / "a"), mode="r")[:]  # checks the crc32c
        values = np.unique(chunk)
        assert values.size == 1 and values[0] >= written  # one whole version of the chunk


PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "ccfkit"


@pytest.mark.parametrize(
    "module", ["backends/numba.py", "noise.py", "pipeline.py", "store/lifecycle.py",
               "store/verify.py", "store/recipe.py"],
)  # fmt: skip
def test_only_the_chunk_writer_knows_how_chunks_reach_the_disk(module):
    """Kernels and noise take plain arrays; the store writes through ccfkit.store.chunks only."""
    imported = set()
    for node in ast.walk(ast.parse((PACKAGE / module).read_text())):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not {name for name in imported if name.split(".")[-1] in ("direct", "hdf5_direct")}
