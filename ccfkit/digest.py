"""A cheap digest of frames, to recognise input that changed under a build (docs/build.md).

A build records the digest of each chunk of input frames the first time it
reads it (:mod:`ccfkit.pipeline`) and compares it every later time it reads
the chunk (the map pass after the statistics pass, a resumed build): frames
edited in place between two reads would otherwise mix old statistics and
noise with new maps. It is not a cryptographic hash: it catches accidental
changes at memory speed, one pass over the bytes the build reads anyway.

The digest of a sequence of 64-bit words ``w_i`` is
``mix(n ^ sum_i (w_i ^ i g) K mod 2^64)`` (``g`` the golden-ratio constant,
``K`` odd, ``mix`` SplitMix64's finaliser): changing any one word always
changes the sum (``K`` is odd), and the position term tells reordered frames
apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

__all__ = ["frames_digest"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ODD = np.uint64(0xBF58476D1CE4E5B9)


def frames_digest(pieces: Sequence[np.ndarray]) -> int:
    """The digest of consecutive pieces of frames, as they are laid out in memory.

    Parameters
    ----------
    pieces : sequence of (n_i, H, W) arrays
        The frames of one chunk in order (views of a memory-mapped file are
        read where they lie). Each piece is read as 64-bit words, the last
        one shorter: the build reads a chunk as the same pieces every time.

    Returns
    -------
    int
        In ``[1, 2^63)``: never 0, which a store uses for "not recorded".
    """
    total = np.zeros(2, dtype=np.uint64)  # the sum and the position, carried across pieces
    for piece in pieces:
        _add_bytes(np.ascontiguousarray(piece).reshape(-1).view(np.uint8), total)
    return int(_mix(total[0] ^ total[1]) >> np.uint64(1)) or 1


@numba.njit(nogil=True, cache=True)
def _add_bytes(data, total):
    """Add the 64-bit words of ``data`` (uint8; a shorter tail as one word) to ``[sum, position]``."""
    whole = data.shape[0] // 8
    words = data[: whole * 8].view(np.uint64)
    acc = total[0]
    start = total[1]
    for i in range(whole):
        acc += (words[i] ^ ((start + np.uint64(i)) * _GOLDEN)) * _ODD
    position = start + np.uint64(whole)
    if whole * 8 < data.shape[0]:
        tail = np.uint64(0)
        for j in range(whole * 8, data.shape[0]):
            tail = (tail << np.uint64(8)) | np.uint64(data[j])
        acc += (tail ^ (position * _GOLDEN)) * _ODD
        position += np.uint64(1)
    total[0] = acc
    total[1] = position


@numba.njit(nogil=True, cache=True)
def _mix(x):
    """SplitMix64's finaliser: a bijection of uint64 with full avalanche."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
