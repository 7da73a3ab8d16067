"""The paper's noise levels (docs/build.md, the paper's §5.3 and Table 6), and a per-frame one.

Per frame, over its valid pixels: mean, standard deviation and maximum. Over
the data set: the median of each (robust to outliers). Noise drawn i.i.d. per
pixel from ``U(0, b)`` with ``b`` one of those medians (or their sum) is added
to the raw image *before* resampling. The level ``max-frame`` takes ``b`` from
the frame alone: its own maximum over valid pixels (docs/ccf.md, "Noise").
The draw for frame ``i`` depends only on ``(seed, i)``, so a result never
depends on chunking, workers or backend.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .polar import HUGE_PIXEL
from .settings import NoiseLevel

__all__ = [
    "NoiseLevel",
    "NoiseStatistics",
    "add_noise",
    "bounds_of_statistics",
    "frame_bounds",
    "frame_statistics",
    "noise_statistics",
    "unusable_pixel_counts",
]


class NoiseStatistics(NamedTuple):
    """Medians over the data set of the per-frame statistics of valid pixels."""

    median_mean: float
    median_std: float
    median_max: float

    def bound(self, level: NoiseLevel | str) -> float:
        """The upper bound ``b`` of the noise for ``level`` (0 for ``none``).

        For ``max-frame``, whose bound is each frame's own (:func:`frame_bounds`),
        the data set's median of those bounds, ``median_max``, recorded beside it.
        """
        level = NoiseLevel(level)
        return {
            NoiseLevel.NONE: 0.0,
            NoiseLevel.MEAN: self.median_mean,
            NoiseLevel.MEAN_STD: self.median_mean + self.median_std,
            NoiseLevel.MAX: self.median_max,
            NoiseLevel.MAX_FRAME: self.median_max,
        }[level]


def frame_bounds(images: np.ndarray, level: NoiseLevel | str, bound: float,
                 mask: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The upper bound of each frame's noise.

    Parameters
    ----------
    images : (B, H, W) array
        Raw frames (unusable pixels, NaN, +-inf or huge, are not valid).
    level : NoiseLevel or str
    bound : float
        The data set's bound (:meth:`NoiseStatistics.bound`), used for every
        frame at the data-set levels.
    mask : (H, W) bool array, optional
        True for good pixels.

    Returns
    -------
    (B,) float32 array
        ``bound`` for every frame; for ``max-frame``, the frame's own maximum
        over its valid pixels (0, no noise, for a frame without valid pixels
        or whose maximum is below 0).
    """
    if NoiseLevel(level) is not NoiseLevel.MAX_FRAME:
        return np.full(len(images), bound, dtype=np.float32)
    return bounds_of_statistics(frame_statistics(images, mask), level, bound)


def bounds_of_statistics(stats: np.ndarray, level: NoiseLevel | str, bound: float) -> np.ndarray:
    """:func:`frame_bounds` from the frames' statistics, without reading the frames again.

    Parameters
    ----------
    stats : (B, 3) array
        :func:`frame_statistics` of the frames (mean, std, max).
    level : NoiseLevel or str
    bound : float
        The data set's bound.

    Returns
    -------
    (B,) float32 array
        As :func:`frame_bounds`.
    """
    if NoiseLevel(level) is not NoiseLevel.MAX_FRAME:
        return np.full(len(stats), bound, dtype=np.float32)
    top = np.asarray(stats)[:, 2]
    return np.where(np.isfinite(top), np.maximum(top, 0), 0).astype(np.float32)


def frame_statistics(images: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean, standard deviation and maximum of each frame over its valid pixels.

    Parameters
    ----------
    images : (B, H, W) array
        Raw frames; unusable pixels (NaN, +-inf, at least
        :data:`~ccfkit.polar.HUGE_PIXEL` in magnitude) are not valid. A C-contiguous float32
        array (for instance a read-only view of a memory-mapped file) is read
        where it lies, others are converted first.
    mask : (H, W) bool array, optional
        True for good pixels.

    Returns
    -------
    (B, 3) float32 array
        Columns mean, std (population), max; NaN for a frame without valid pixels.
        The max is exact; the mean is its float64 value to about 1e-7 (std + |mean|),
        the std to about 1e-7 std, at any magnitude (float32 sums over blocks of
        pixels, float64 over the blocks: :func:`_frame_sums`).
    """
    pixels = _pixel_rows(images)
    if mask is None:
        mask = np.ones(pixels.shape[1], dtype=bool)
    flat_mask = np.ascontiguousarray(mask, dtype=bool).reshape(-1)
    if flat_mask.shape[0] != pixels.shape[1]:
        raise ValueError(f"mask of shape {np.shape(mask)} for frames of {np.shape(images)[1:]}")
    stats = np.empty((len(pixels), 3), dtype=np.float32)
    _frame_statistics(pixels, flat_mask.view(np.uint8), stats)
    return stats


def _pixel_rows(images: np.ndarray) -> np.ndarray:
    """``images`` as a C-contiguous float32 ``(B, H * W)`` array (no copy when it is one)."""
    if np.ndim(images) != 3:
        raise ValueError(f"expected (B, H, W) frames, got shape {np.shape(images)}")
    images = np.ascontiguousarray(images, dtype=np.float32)
    return images.reshape(images.shape[0], images.shape[1] * images.shape[2])


#: Fast-math flags that keep NaN and inf comparisons exact (no "nnan", "ninf").
_EXACT_NAN = {"reassoc", "nsz", "arcp", "contract"}

#: :data:`~ccfkit.polar.HUGE_PIXEL` in the kernels' float32 (a power of 2: exact).
_HUGE32 = np.float32(HUGE_PIXEL)

#: Pixels per block of :func:`_frame_statistics`: float32 sums within a block
#: (a few kB, read twice while in the L1 cache), float64 sums of the blocks.
_STATISTICS_BLOCK = 1024

_LOWEST_KEY = np.int32(-(2**31))
_HIGHEST_KEY = np.int32(2**31 - 1)


@intrinsic
def _prefetch(typingctx, address):
    """Ask the CPU to bring the cache line at ``address`` (uintp) into its caches.

    ``llvm.prefetch`` (a read, to be kept in every cache level): a hint, with no
    effect on any result.
    """

    def codegen(context, builder, signature, args):
        byte_pointer = ir.IntType(8).as_pointer()
        flag = ir.IntType(32)
        function = builder.module.declare_intrinsic(
            "llvm.prefetch",
            [byte_pointer],
            ir.FunctionType(ir.VoidType(), [byte_pointer, flag, flag, flag]),
        )
        pointer = builder.inttoptr(args[0], byte_pointer)
        builder.call(function, [pointer, flag(0), flag(3), flag(1)])
        return context.get_dummy_value()

    return types.void(types.uintp), codegen


@numba.njit(nogil=True, cache=True, inline="always")
def _prefetch_lines(values):
    """Prefetch every 64-byte cache line of the float32 array ``values`` (maybe empty)."""
    address = np.uintp(values.ctypes.data)
    for offset in range(0, values.shape[0] * 4, 64):
        _prefetch(address + np.uintp(offset))


@numba.njit(nogil=True, cache=True, fastmath=_EXACT_NAN, inline="always")
def _order_key(bits):
    """float32 bits (as int32) -> int32 in the order of the floats, and back (an involution).

    LLVM vectorises an integer max, not a float one (NaN).
    """
    return np.int32(bits ^ ((bits >> np.int32(31)) & np.int32(0x7FFFFFFF)))


@numba.njit(nogil=True, cache=True, fastmath=_EXACT_NAN, inline="always")
def _binary_exponent(key):
    """The least ``e >= -126`` with ``|v| < 2^e``, ``v`` the float32 of order key ``key``."""
    return ((_order_key(key) & 0x7FFFFFFF) >> 23) - 126  # biased exponent field, less 127, plus 1


@numba.njit(nogil=True, cache=True, fastmath=_EXACT_NAN, inline="always")
def _block_extent(values, bits, mask):
    """Count, float32 sum, and largest and smallest order keys of a block's valid pixels."""
    count = np.int32(0)
    total = np.float32(0)
    top = _LOWEST_KEY
    bottom = _HIGHEST_KEY
    for i in range(values.shape[0]):  # branch-free selects, so that it vectorises
        value = values[i]
        good = (mask[i] != 0) & (abs(value) < _HUGE32)  # good pixel, usable value (not NaN)
        count = np.int32(count + np.int32(good))
        total += value if good else np.float32(0)
        key = _order_key(bits[i])
        top = np.int32(max(top, key if good else _LOWEST_KEY))
        bottom = np.int32(min(bottom, key if good else _HIGHEST_KEY))
    return count, total, top, bottom


@numba.njit(nogil=True, cache=True, fastmath=_EXACT_NAN, inline="always")
def _block_moments(values, mask, centre, scale):
    """float32 sums of ``d`` and ``d * d``, ``d = (value - centre) * scale``, over valid pixels."""
    zero = np.float32(0)
    first = zero
    second = zero
    for i in range(values.shape[0]):
        value = values[i]
        good = (mask[i] != 0) & (abs(value) < _HUGE32)
        deviation = (value - centre) * scale if good else zero
        first += deviation
        second += deviation * deviation  # not ** 2: that calls pow() and does not vectorise
    return first, second


@numba.njit(nogil=True, cache=True, fastmath=_EXACT_NAN)
def _frame_sums(frame, bits, mask):
    """Count, reference ``r``, float64 sums of ``v - r`` and ``(v - r)^2``, and max key of a frame.

    Block by block (contiguous, so that the frame streams from memory once):
    a first pass gives the block's count, mean ``c`` and extent; a second,
    from the L1 cache, float32 sums of ``d = (v - c) s`` and ``d^2``, with
    ``s`` the power of 2 that brings the block's largest ``|v|`` below 1
    (no overflow, no underflow that matters). Centred on its own mean, a
    block's float32 sums lose about 1e-7 of the block's own spread. They are
    moved to the reference ``r`` (the first block's ``c``) exactly, in float64:
    ``sum (v - r)^2 = sum d^2 / s^2 + 2 (c - r) sum d / s + n (c - r)^2``.
    ``r`` being a mean of valid pixels, the final ``var = E[(v-r)^2] - E[v-r]^2``
    loses at most about ``1e-16 N`` of the variance (``N`` pixels) to cancellation.
    """
    count = 0
    reference = 0.0
    total = 0.0
    squares = 0.0
    top = _LOWEST_KEY
    for start in range(0, frame.shape[0], _STATISTICS_BLOCK):
        stop = start + _STATISTICS_BLOCK
        values = frame[start:stop]  # slices indexed from 0: no negative-index wraparound
        block_mask = mask[start:stop]
        block_count, block_total, block_top, block_bottom = _block_extent(
            values, bits[start:stop], block_mask
        )
        if block_count == 0:
            continue
        top = max(top, block_top)
        centre = np.float32(block_total / block_count)
        exponent = max(_binary_exponent(block_top), _binary_exponent(block_bottom))
        # the next block is read while this one is summed from the L1 cache (the CPU's own
        # prefetchers stop at each 4 kB page: each block of a memory-mapped file)
        _prefetch_lines(frame[stop : stop + _STATISTICS_BLOCK])
        first, second = _block_moments(
            values, block_mask, centre, np.float32(math.ldexp(1.0, -exponent))
        )
        unscale = math.ldexp(1.0, exponent)
        first *= unscale
        second *= unscale * unscale
        if count == 0:
            reference = np.float64(centre)
        offset = np.float64(centre) - reference
        total += first + block_count * offset
        squares += second + offset * (2 * first + block_count * offset)
        count += block_count
    return count, reference, total, squares, top


@numba.njit(nogil=True, cache=True, fastmath=_EXACT_NAN)
def _frame_statistics(pixels, mask, out):
    """Mean, std and max of the valid pixels of each row of ``pixels`` into ``out``.

    Frame ``b`` is row ``pixels[b]`` of a ``(B, H * W)`` float32 array, ``mask``
    a ``(H * W,)`` uint8 array (nonzero: good pixel), ``out`` ``(B, 3)``
    float32. See :func:`_frame_sums` for the precision.
    """
    all_bits = pixels.view(np.int32)
    out_bits = out.view(np.int32)
    for b in range(pixels.shape[0]):
        count, reference, total, squares, top = _frame_sums(pixels[b], all_bits[b], mask)
        if count == 0:
            out[b, :] = np.nan
            continue
        shift = total / count
        out[b, 0] = reference + shift
        out[b, 1] = np.sqrt(max(0.0, squares / count - shift * shift))
        out_bits[b, 2] = _order_key(top)  # the max's own float32 bits


def unusable_pixel_counts(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """How many good pixels of each frame are unusable: NaN, +-inf or huge.

    Such pixels make the samples that need them invalid in that frame
    (:func:`~ccfkit.polar.usable_pixels`); the build counts them to report
    and record them (docs/build.md, "Unusable pixels").

    Parameters
    ----------
    images : (B, H, W) array
        Frames (read where they lie when C-contiguous float32).
    mask : (H, W) bool array
        True for good pixels.

    Returns
    -------
    (B,) int64 array
    """
    pixels = _pixel_rows(images)
    flat_mask = np.ascontiguousarray(mask, dtype=bool).reshape(-1)
    if flat_mask.shape[0] != pixels.shape[1]:
        raise ValueError(f"mask of shape {np.shape(mask)} for frames of {np.shape(images)[1:]}")
    counts = np.zeros(len(pixels), dtype=np.int64)
    _count_unusable(pixels, flat_mask.view(np.uint8), counts)
    return counts


@numba.njit(nogil=True, cache=True, fastmath=_EXACT_NAN)
def _count_unusable(pixels, mask, out):
    """``out[b]``: good pixels of row ``b`` (``mask`` uint8, nonzero) not below ``_HUGE32`` in size.

    NaN too. The count in int32, as wide as the pixels, so that the loop vectorises.
    """
    for b in range(pixels.shape[0]):
        frame = pixels[b]
        count = np.int32(0)
        for i in range(frame.shape[0]):
            count = np.int32(count + np.int32((mask[i] != 0) & ~(abs(frame[i]) < _HUGE32)))
        out[b] = count


def noise_statistics(stats: np.ndarray) -> NoiseStatistics:
    """Medians of the per-frame statistics (frames without valid pixels ignored).

    Parameters
    ----------
    stats : (N, 3) array
        From :func:`frame_statistics`, concatenated over the data set.
    """
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[1] != 3:
        raise ValueError(f"expected (N, 3) statistics, got shape {stats.shape}")
    medians = np.nanmedian(stats, axis=0) if np.isfinite(stats).any() else np.zeros(3)
    return NoiseStatistics(*(float(m) for m in medians))


def add_noise(
    images: np.ndarray,
    indices: np.ndarray,
    bound,
    seed: int,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Add ``U(0, bound)`` noise, drawn from ``(seed, index)`` for each frame.

    The draw for pixel ``j`` of frame ``index`` is a pure function of
    ``(seed, index, j)``: a counter-based generator (the SplitMix64 finaliser,
    a bijective 64-bit mix, applied to a per-frame key plus the pixel number),
    whose top 24 bits give a float32 in ``[0, 1)``. Any frame can therefore be
    drawn alone, in any batch, on any worker, with the same result, and the
    draw runs at memory speed (no generator state to set up per frame).

    Parameters
    ----------
    images : (B, H, W) array
        Raw frames. A C-contiguous float32 array (for instance a read-only
        view of a memory-mapped file) is read where it lies: the noisy frames
        are written in one pass from it.
    indices : (B,) int array
        The frames' indices in the data set: frame ``indices[b]`` always gets
        the same noise, whatever batch it arrives in.
    bound : float or (B,) array
        Upper bound ``b`` of the uniform distribution (0: no noise), one for
        every frame or one per frame (:func:`frame_bounds`).
    seed : int
        The data set's seed (>= 0).
    out : (B, H, W) float32 C-contiguous array, optional
        Where to write the noisy frames; may be ``images`` itself (in place).
        Default: a new array, ``images`` left as it is.

    Returns
    -------
    (B, H, W) float32 array
        ``out``.
    """
    pixels = _pixel_rows(images)
    shape = (len(pixels), *np.shape(images)[1:])
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {shape}")
    indices = np.asarray(indices, dtype=np.uint64).reshape(-1)
    if indices.shape[0] != len(pixels):
        raise ValueError(f"{indices.shape[0]} indices for {len(pixels)} frames")
    bounds = np.broadcast_to(np.asarray(bound, dtype=np.float32), (len(pixels),))
    if not (bounds > 0).any():  # no noise: the frames as they are (in place: nothing to do)
        if out.ctypes.data != pixels.ctypes.data:
            np.copyto(out.reshape(pixels.shape), pixels)
        return out
    bounds = np.ascontiguousarray(np.maximum(bounds, 0))
    _add_uniform(pixels, out.reshape(pixels.shape), indices, np.uint64(seed), bounds)
    return out


@numba.njit(nogil=True, cache=True)
def _mix(x):
    """SplitMix64's finaliser: a bijection of uint64 with full avalanche."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(nogil=True, cache=True)
def _add_uniform(pixels, out, indices, seed, bounds):
    """``out[b, j] = pixels[b, j] + bounds[b] * u(seed, indices[b], j)``.

    ``u`` is uniform on [0, 1) in 2^-24 steps; ``out`` may share memory with
    ``pixels`` element for element (in place).
    """
    golden = np.uint64(0x9E3779B97F4A7C15)
    for b in range(out.shape[0]):
        scale = bounds[b] * np.float32(2.0**-24)
        key = _mix(_mix(seed + golden) ^ (indices[b] * golden))
        frame = pixels[b]
        noisy = out[b]
        for j in range(noisy.shape[0]):
            draw = _mix(key + np.uint64(j) * golden) >> np.uint64(40)
            noisy[j] = frame[j] + np.float32(draw) * scale
