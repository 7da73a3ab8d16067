"""zarr's local store with O_DIRECT writes (ccfkit.store.direct), under zarr's store contract.

:class:`TestDirectLocalStore` runs zarr's own store test suite
(``zarr.testing.store.StoreTests``) on it, every value written with O_DIRECT;
that a build's chunks are the files zarr's ``LocalStore`` writes, byte for
byte, is tested through the chunk writer (test_chunks.py).
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import zarr
from zarr.core.buffer import Buffer, cpu
from zarr.testing.store import StoreTests

from ccfkit.store import DirectLocalStore
from ccfkit.store import direct as direct_module
from ccfkit.store.direct import ALIGNMENT, aligned_empty, write_file


class TestDirectLocalStore(StoreTests[DirectLocalStore, cpu.Buffer]):
    """zarr's contract for stores, with every value (not only large ones) written with O_DIRECT."""

    store_cls = DirectLocalStore
    buffer_cls = cpu.Buffer

    @pytest.fixture(autouse=True)
    def every_value_direct(self, monkeypatch):
        monkeypatch.setattr(direct_module, "DIRECT_MIN_BYTES", 0)

    async def get(self, store: DirectLocalStore, key: str) -> Buffer:
        return self.buffer_cls.from_bytes((store.root / key).read_bytes())

    async def set(self, store: DirectLocalStore, key: str, value: Buffer) -> None:
        (store.root / key).parent.mkdir(parents=True, exist_ok=True)
        (store.root / key).write_bytes(value.to_bytes())

    @pytest.fixture
    def store_kwargs(self, tmp_path) -> dict[str, str]:
        return {"root": str(tmp_path)}

    def test_store_repr(self, store: DirectLocalStore) -> None:
        assert str(store) == f"file://{store.root.as_posix()}"

    def test_store_supports_writes(self, store: DirectLocalStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: DirectLocalStore) -> None:
        assert store.supports_listing

    async def test_values_are_written_with_o_direct(self, store: DirectLocalStore, direct_writes,
                                                    takes_o_direct) -> None:  # fmt: skip
        """The suite above goes the O_DIRECT way where the file system takes it."""
        value = bytes(range(256)) * 41  # 10,496 bytes: not a whole number of blocks
        await store.set("c/0/1", self.buffer_cls.from_bytes(value))
        store.set_sync("c/0/2", self.buffer_cls.from_bytes(value))
        assert direct_writes == [(len(value), takes_o_direct)] * 2
        for key in ("c/0/1", "c/0/2"):
            assert (store.root / key).read_bytes() == value
        assert sorted(p.name for p in (store.root / "c" / "0").iterdir()) == ["1", "2"]


def test_a_zarr_array_reads_back_through_the_store(tmp_path):
    """zarr encodes, names the keys and reads; the store only puts the bytes."""
    store = DirectLocalStore(tmp_path / "a.zarr")
    data = np.random.default_rng(0).normal(size=(6, 256, 256)).astype(np.float32)
    array = zarr.create_array(store, shape=data.shape, chunks=(4, 256, 256), dtype="float32",
                              compressors=zarr.codecs.Crc32cCodec())  # fmt: skip
    array[:] = data  # a 1 MiB chunk (O_DIRECT) and a half-full one
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[:], data)
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize("size", [1 << 20, (1 << 20) + 123])
def test_direct_writes_give_exact_files(tmp_path, size, takes_o_direct):
    """O_DIRECT where the file system takes it; the file has the payload's length either way."""
    payload = np.random.default_rng(1).integers(0, 255, size, dtype=np.uint8)
    path = tmp_path / "sub" / "file"
    write_file(path, payload)
    assert path.read_bytes() == payload.tobytes()
    assert [p.name for p in path.parent.iterdir()] == ["file"]  # the partial file was renamed
    written = direct_module.write_direct(str(tmp_path / "again"), payload)
    assert written == takes_o_direct  # used wherever the file system takes it
    if written:
        assert (tmp_path / "again").read_bytes() == payload.tobytes()


def test_aligned_memory_starts_on_a_block(tmp_path):
    for size in (1, 4095, 4096, 5000):
        array = aligned_empty(size)
        assert array.nbytes == size and array.ctypes.data % ALIGNMENT == 0


def test_file_systems_refusing_o_direct_get_ordinary_writes(tmp_path, monkeypatch):
    """tmpfs and some network file systems answer O_DIRECT with EINVAL: write the usual way."""
    real_open = os.open

    def refusing_open(path, flags, *args):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    payload = np.full((1 << 20) + 5, 7, dtype=np.uint8)
    assert not direct_module.write_direct(str(tmp_path / "direct"), payload)
    write_file(tmp_path / "f", payload)
    assert (tmp_path / "f").read_bytes() == payload.tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # nothing half-written left
