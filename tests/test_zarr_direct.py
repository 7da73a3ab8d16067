"""The O_DIRECT chunk files (ccfkit.io.zarr_direct) and the writes behind (ccfkit.write_behind).

That they match zarr's files byte for byte is tested through the interface: test_chunks.py.
"""

from __future__ import annotations

import errno
import os
import threading
import time

import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec

from ccfkit.io import zarr_direct
from ccfkit.io.zarr_direct import ALIGNMENT, ChunkFiles, aligned_empty
from ccfkit.write_behind import WriteBehind

SHAPE = (45, 12, 10)  # 45 rows in chunks of 16: the last chunk holds 13
CHUNK = 16


def new_array(root, name, dtype, compressors, **options):
    group = zarr.open_group(str(root), mode="a")
    return group.create_array(name, shape=SHAPE, chunks=(CHUNK, *SHAPE[1:]), dtype=dtype,
                              compressors=compressors, fill_value=0, **options)  # fmt: skip


def test_a_chunk_can_be_rewritten(tmp_path):
    array = new_array(tmp_path, "a", "float32", None)
    files = ChunkFiles.of(array)
    files.write(1, np.ones((CHUNK, *SHAPE[1:])))
    files.write(1, np.full((CHUNK, *SHAPE[1:]), 2.0))
    assert (array[CHUNK : 2 * CHUNK] == 2).all() and (array[:CHUNK] == 0).all()


def test_arrays_the_direct_writer_cannot_write_are_refused(tmp_path):
    in_memory = zarr.create_array(zarr.storage.MemoryStore(), shape=SHAPE,
                                  chunks=(CHUNK, *SHAPE[1:]), dtype="float32")  # fmt: skip
    with pytest.raises(TypeError, match="not a local store"):
        ChunkFiles.of(in_memory)
    with pytest.raises(ValueError, match="unsupported codecs"):
        ChunkFiles.of(new_array(tmp_path, "zstd", "float32", "auto"))  # zarr's default codec
    split = zarr.open_group(str(tmp_path), mode="a").create_array(
        "split", shape=SHAPE, chunks=(CHUNK, 12, 5), dtype="float32", compressors=None
    )
    with pytest.raises(ValueError, match="chunks must span"):
        ChunkFiles.of(split)


def test_encode_rejects_data_of_another_shape(tmp_path):
    files = ChunkFiles.of(new_array(tmp_path, "a", "float32", None))
    with pytest.raises(ValueError):
        files.encode(np.zeros((CHUNK + 1, *SHAPE[1:])))
    with pytest.raises(ValueError):
        files.encode(np.zeros((2, 3, 3)))


def test_encoded_chunks_are_aligned_and_padded(tmp_path):
    files = ChunkFiles.of(new_array(tmp_path, "a", "float32", Crc32cCodec()))
    data = np.ones((CHUNK, *SHAPE[1:]), np.float32)
    payload = files.encode(data)
    assert payload.ctypes.data % ALIGNMENT == 0 and not np.shares_memory(payload, data)
    assert payload.nbytes == data.nbytes + 4  # the crc32c after the raw bytes
    for size in (1, 4095, 4096, 5000):
        array = aligned_empty(size)
        assert array.nbytes == size and array.ctypes.data % ALIGNMENT == 0
        assert zarr_direct._padded(array).nbytes == -(-size // ALIGNMENT) * ALIGNMENT


@pytest.mark.parametrize("size", [1 << 20, (1 << 20) + 123])
def test_direct_writes_give_exact_files(tmp_path, size):
    """O_DIRECT where the file system takes it; the file has the payload's length either way."""
    payload = aligned_empty(size)
    payload[:] = np.random.default_rng(1).integers(0, 255, size, dtype=np.uint8)
    path = tmp_path / "sub" / "file"
    zarr_direct.write_file(str(path), payload)
    assert path.read_bytes() == payload.tobytes()
    assert [p.name for p in path.parent.iterdir()] == ["file"]  # the partial file was renamed
    written = zarr_direct._write_direct(str(tmp_path / "again"), payload)
    assert written == _takes_o_direct(tmp_path)  # used wherever the file system takes it
    if written:
        assert (tmp_path / "again").read_bytes() == payload.tobytes()


def _takes_o_direct(folder) -> bool:
    """Whether files in ``folder`` can be opened with O_DIRECT (not on tmpfs, not off Linux)."""
    if not hasattr(os, "O_DIRECT"):
        return False
    try:
        os.close(os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o666))
    except OSError:
        return False
    return True


def test_payload_without_padding_room_is_written_buffered(tmp_path):
    payload = np.frombuffer(bytes(range(256)) * 4097, dtype=np.uint8)  # not ours to pad
    assert zarr_direct._padded(payload) is None
    zarr_direct.write_file(str(tmp_path / "f"), payload)
    assert (tmp_path / "f").read_bytes() == payload.tobytes()


def test_write_behind_runs_jobs_in_order_and_bounds_the_queue():
    done, started = [], threading.Event()
    release = threading.Event()

    def slow(i):
        def job():
            started.set()
            release.wait(5)
            done.append(i)

        return job

    with WriteBehind(depth=2) as writes:
        writes.submit(slow(0))
        started.wait(5)
        writes.submit(slow(1))  # queued: 2 pending
        blocked = threading.Thread(target=writes.submit, args=(slow(2),))
        blocked.start()
        time.sleep(0.1)
        assert blocked.is_alive()  # a third waits for a slot
        release.set()
        blocked.join(5)
    assert done == [0, 1, 2]  # leaving the block waited for all of them


def test_write_behind_reports_errors():
    def failing():
        raise OSError("disk full")

    writes = WriteBehind(depth=1)
    writes.submit(failing)
    with pytest.raises(OSError, match="disk full"):
        writes.flush()
    with pytest.raises(OSError, match="disk full"):
        writes.submit(lambda: None)
    with pytest.raises(OSError, match="disk full"), writes:
        pass
    with pytest.raises(ValueError):
        WriteBehind(depth=0)


def test_file_systems_refusing_o_direct_get_ordinary_writes(tmp_path, monkeypatch):
    """tmpfs and some network file systems answer O_DIRECT with EINVAL: write the usual way."""
    real_open = os.open

    def refusing_open(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    payload = aligned_empty((1 << 20) + 5)
    payload[:] = 7
    assert not zarr_direct._write_direct(str(tmp_path / "direct"), payload)
    zarr_direct.write_file(str(tmp_path / "f"), payload)
    assert (tmp_path / "f").read_bytes() == payload.tobytes()
