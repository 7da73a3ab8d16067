"""The per-chunk digest of :mod:`ccfkit.store.layout`: BLAKE2b of dtype, shape and bytes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ccfkit.store.layout import chunk_digest


def blake2b_of(header: str, payload: bytes) -> int:
    """The digest written out by hand: 8-byte BLAKE2b of ``header`` then ``payload``."""
    digest = hashlib.blake2b(header.encode() + payload, digest_size=8)
    return int.from_bytes(digest.digest(), "little")


@pytest.mark.parametrize(
    "block",
    [
        np.random.default_rng(0).random((4, 3, 5), dtype=np.float32),
        np.random.default_rng(1).random((6, 4))[:, ::2],  # not contiguous
        np.random.default_rng(2).random((3, 2)).astype(">f4"),  # not the native byte order
        np.zeros((0, 3), dtype=np.float32),
        np.array(2.5),
        np.array([True, False, True]),
        np.arange(3).astype("datetime64[s]"),
    ],
    ids=["float32", "strided", "big-endian", "empty", "scalar", "bool", "datetime"],
)
def test_the_digest_is_blake2b_of_dtype_shape_and_the_values_bytes(block):
    expected = blake2b_of(f"{block.dtype.str}{block.shape}", block.tobytes())
    assert chunk_digest(block) == expected


def test_a_moved_value_changes_the_digest():
    block = np.arange(12, dtype=np.uint16).reshape(3, 4)
    assert chunk_digest(block) != chunk_digest(block[::-1])
    assert chunk_digest(block) != chunk_digest(block.reshape(4, 3))
