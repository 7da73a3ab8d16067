"""The per-chunk digest of :mod:`ccfkit.store.layout`: XXH3-64 (schema 3) or BLAKE2b (schema 2)
of dtype, shape and bytes."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import xxhash

from ccfkit.store.layout import SCHEMA_VERSION, chunk_digest, digest_scheme


def blake2b_of(header: str, payload: bytes) -> int:
    """The digest written out by hand: 8-byte BLAKE2b of ``header`` then ``payload``."""
    digest = hashlib.blake2b(header.encode() + payload, digest_size=8)
    return int.from_bytes(digest.digest(), "little")


def xxh3_of(header: str, payload: bytes) -> int:
    """The digest written out by hand: XXH3-64 of ``header`` then ``payload``."""
    return xxhash.xxh3_64_intdigest(header.encode() + payload)


BLOCKS = pytest.mark.parametrize(
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


@BLOCKS
def test_the_digest_is_xxh3_of_dtype_shape_and_the_values_bytes(block):
    expected = xxh3_of(f"{block.dtype.str}{block.shape}", block.tobytes())
    assert chunk_digest(block) == chunk_digest(block, "xxh3-64") == expected


@BLOCKS
def test_schema_2_stores_keep_their_blake2b_digests(block):
    expected = blake2b_of(f"{block.dtype.str}{block.shape}", block.tobytes())
    assert chunk_digest(block, digest_scheme(2)) == expected


def test_the_scheme_follows_the_schema_and_an_unknown_one_is_refused():
    assert digest_scheme(1) == digest_scheme(2) == "blake2b-64"
    assert digest_scheme(SCHEMA_VERSION) == "xxh3-64"
    with pytest.raises(ValueError, match="unknown chunk digest"):
        chunk_digest(np.zeros(3), "md5")


@pytest.mark.parametrize("scheme", ["xxh3-64", "blake2b-64"])
def test_a_moved_value_changes_the_digest(scheme):
    block = np.arange(12, dtype=np.uint16).reshape(3, 4)
    assert chunk_digest(block, scheme) != chunk_digest(block[::-1], scheme)
    assert chunk_digest(block, scheme) != chunk_digest(block.reshape(4, 3), scheme)
