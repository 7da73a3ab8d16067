"""The noise levels of docs/build.md, noise."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccfkit.noise import (
    NoiseLevel,
    NoiseStatistics,
    add_noise,
    bounds_of_statistics,
    frame_bounds,
    frame_statistics,
    noise_statistics,
)


def test_frame_statistics_use_only_valid_pixels():
    rng = np.random.default_rng(1)
    images = rng.random((4, 9, 11)).astype(np.float32)
    mask = rng.random((9, 11)) > 0.3
    images[:, ~mask] = 1e6  # masked pixels must not count
    images[1, 2, 3] = np.nan  # nor NaN ones
    stats = frame_statistics(images, mask)
    for b in range(4):  # against NumPy on the valid pixels
        good = mask & np.isfinite(images[b])
        expected = [images[b][good].mean(), images[b][good].std(), images[b][good].max()]
        # float64 sums stored in float32: 1e-6 relative
        np.testing.assert_allclose(stats[b], expected, rtol=1e-6)


def test_frame_without_valid_pixels_is_nan_and_ignored_by_the_medians():
    images = np.ones((3, 4, 4), dtype=np.float32)
    images[0] = np.nan
    images[2] *= 3
    stats = frame_statistics(images)
    assert np.isnan(stats[0]).all()
    assert noise_statistics(stats) == NoiseStatistics(2.0, 0.0, 2.0)


def test_bounds_follow_the_paper():
    stats = NoiseStatistics(median_mean=2.0, median_std=0.5, median_max=9.0)
    assert stats.bound("none") == 0.0
    assert stats.bound(NoiseLevel.MEAN) == 2.0
    assert stats.bound("mean+std") == 2.5
    assert stats.bound("max") == 9.0
    with pytest.raises(ValueError):
        stats.bound("loud")


def test_noise_is_uniform_and_depends_only_on_seed_and_index():
    images = np.zeros((3, 64, 64), dtype=np.float32)
    noisy = add_noise(images, [10, 11, 12], bound=4.0, seed=7)
    assert noisy.min() >= 0.0 and noisy.max() < 4.0
    # mean of 12,288 U(0, 4) draws: standard error 4 / sqrt(12 * 12288) = 0.010
    assert abs(noisy.mean() - 2.0) < 0.05
    # the same frame index in another batch, another position: the same noise
    again = add_noise(images[:1], [11], bound=4.0, seed=7)
    np.testing.assert_array_equal(again[0], noisy[1])
    other_seed = add_noise(images[:1], [11], bound=4.0, seed=8)
    assert not np.array_equal(other_seed[0], noisy[1])
    assert not np.array_equal(noisy[0], noisy[1])


def test_no_noise_returns_an_unchanged_copy():
    images = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    noisy = add_noise(images, [0], bound=0.0, seed=0)
    np.testing.assert_array_equal(noisy, images)
    assert noisy is not images


def test_noise_has_the_variance_of_a_uniform_and_no_neighbour_correlation():
    drawn = add_noise(np.zeros((50, 64, 64), np.float32), np.arange(50), bound=1.0, seed=3)
    # 204,800 draws: var = 1/12 within 1 %; correlations within 4 standard errors (0.0022)
    assert abs(drawn.var() * 12 - 1) < 0.01
    along_x = np.corrcoef(drawn[:, :, :-1].ravel(), drawn[:, :, 1:].ravel())[0, 1]
    across_frames = np.corrcoef(drawn[:-1].ravel(), drawn[1:].ravel())[0, 1]
    assert abs(along_x) < 0.009 and abs(across_frames) < 0.009


def test_noise_indices_must_match_the_frames():
    with pytest.raises(ValueError, match="2 indices for 3 frames"):
        add_noise(np.zeros((3, 4, 4)), [0, 1], bound=1.0, seed=0)


def test_noise_in_place_adds_to_the_given_frames_only_when_asked():
    frames = np.zeros((2, 8, 8), np.float32)
    copy = add_noise(frames, [0, 1], bound=1.0, seed=0)
    assert not frames.any()  # untouched by default
    same = add_noise(frames, [0, 1], bound=1.0, seed=0, out=frames)
    assert same is frames
    np.testing.assert_array_equal(frames, copy)


def test_frame_statistics_keep_their_precision_far_from_zero():
    # A narrow distribution far from 0 (std 0.5 around 1e6): uncentred one-pass
    # sums would lose ~1e-16 (1e6)^2 / 0.25 = 4e-4 of the variance to cancellation.
    rng = np.random.default_rng(4)
    images = (1e6 + 0.5 * rng.standard_normal((2, 64, 64))).astype(np.float32)
    images[1, ::2] = np.nan  # half the centring sample invalid too
    stats = frame_statistics(images)
    for b in range(2):
        good = images[b][np.isfinite(images[b])].astype(np.float64)
        np.testing.assert_allclose(stats[b], [good.mean(), good.std(), good.max()], rtol=1e-6)


def test_huge_pixels_are_counted_and_left_out_of_the_statistics():
    from ccfkit.noise import unusable_pixel_counts
    from ccfkit.polar import HUGE_PIXEL

    images = np.ones((3, 5, 6), dtype=np.float32)
    mask = np.ones((5, 6), dtype=bool)
    mask[0, 0] = False
    images[0, 1, 1] = 3.4e38  # a float32-max sentinel
    images[0, 2, 2] = -np.float32(HUGE_PIXEL)  # the limit itself is unusable
    images[0, 0, 0] = np.nan  # masked: not counted
    images[1, 3, 3] = np.float32(HUGE_PIXEL) * np.float32(0.999)  # below it: a number
    images[2] = np.inf
    assert unusable_pixel_counts(images, mask).tolist() == [2, 0, 29]
    stats = frame_statistics(images, mask)
    np.testing.assert_allclose(stats[0], [1.0, 0.0, 1.0])  # as if the pixels were masked
    assert stats[1, 2] == np.float32(HUGE_PIXEL) * np.float32(0.999)
    assert np.isnan(stats[2]).all()


def test_frames_digest_sees_every_frame_and_its_place():
    from ccfkit.digest import frames_digest

    rng = np.random.default_rng(3)
    frames = rng.random((6, 8, 9)).astype(np.float32)
    digest = frames_digest([frames])
    assert digest == frames_digest([frames[:2], frames[2:]])  # pieces of one chunk
    assert 0 < digest < 2**63
    edited = frames.copy()
    edited[4, 7, 8] = np.nextafter(edited[4, 7, 8], 2)  # one bit of one pixel of one frame
    assert frames_digest([edited]) != digest
    assert frames_digest([frames[[1, 0, 2, 3, 4, 5]]]) != digest  # two frames swapped
    assert frames_digest([np.zeros((2, 3, 3), np.uint8)]) != frames_digest(
        [np.zeros((2, 3, 3), np.uint8) + 1]
    )


def _numpy_frame_bounds(images, mask):
    """docs/ccf.md, "Noise": b_i = max over the valid (good, finite) pixels of frame i, else 0."""
    out = []
    for frame in images:
        good = mask & np.isfinite(frame)
        out.append(max(float(frame[good].max()), 0.0) if good.any() else 0.0)
    return np.array(out, dtype=np.float32)


def test_max_frame_bound_is_each_frames_own_maximum_over_valid_pixels():
    rng = np.random.default_rng(4)
    images = (rng.random((5, 12, 10)) * rng.uniform(1, 100, (5, 1, 1))).astype(np.float32)
    mask = rng.random((12, 10)) > 0.25
    images[:, ~mask] = 1e6  # a masked hot pixel is not the frame's maximum
    images[1, 3, 4] = np.inf  # nor a non-finite one
    images[2] = np.nan  # no valid pixel: no noise
    images[3] = -images[3]  # a maximum below 0: no noise
    bounds = frame_bounds(images, "max-frame", bound=123.0, mask=mask)
    np.testing.assert_array_equal(bounds, _numpy_frame_bounds(images, mask))
    assert bounds[2] == 0 and bounds[3] == 0 and bounds[0] > 0
    # the data-set levels give their one bound to every frame
    np.testing.assert_array_equal(frame_bounds(images, "max", 123.0, mask), np.full(5, 123.0))
    # max-frame's recorded data-set bound is the median of the frames' maxima, as for max
    assert NoiseStatistics(2.0, 0.5, 9.0).bound(NoiseLevel.MAX_FRAME) == 9.0


def test_per_frame_bounds_draw_each_frame_as_its_own_scalar_bound_does():
    rng = np.random.default_rng(5)
    images = (
        rng.random((4, 16, 16)).astype(np.float32) * np.float32([1, 10, 100, 0])[:, None, None]
    )
    bounds = frame_bounds(images, NoiseLevel.MAX_FRAME, 0.0)
    noisy = add_noise(images, [3, 4, 5, 6], bounds, seed=2)
    for b in range(4):
        alone = add_noise(images[b : b + 1], [3 + b], float(bounds[b]), seed=2)
        np.testing.assert_array_equal(noisy[b], alone[0])
        added = noisy[b].astype(np.float64) - images[b]
        assert added.min() >= 0 and added.max() <= bounds[b] * (1 + 1e-6)
    np.testing.assert_array_equal(noisy[3], images[3])  # an all-zero frame: bound 0


def test_max_frame_noise_of_a_frame_is_the_same_in_every_data_set():
    """At ``max`` a frame's noise depends on the other frames of its set; at ``max-frame`` not."""
    rng = np.random.default_rng(6)
    frame = rng.random((1, 16, 16)).astype(np.float32) * 50
    dim = rng.random((3, 16, 16)).astype(np.float32)  # another set: much dimmer frames
    bright = rng.random((3, 16, 16)).astype(np.float32) * 500
    noisy = {}
    for level in ("max", "max-frame"):
        for name, others in (("dim", dim), ("bright", bright)):
            images = np.concatenate([frame, others])
            bound = noise_statistics(frame_statistics(images)).bound(level)
            noisy[level, name] = add_noise(images, np.arange(4), frame_bounds(images, level, bound),
                                           seed=1)[0]  # fmt: skip
    np.testing.assert_array_equal(noisy["max-frame", "dim"], noisy["max-frame", "bright"])
    assert not np.array_equal(noisy["max", "dim"], noisy["max", "bright"])


@pytest.mark.parametrize("level", list(NoiseLevel))
def test_bounds_from_the_statistics_are_the_bounds_from_the_frames(level):
    rng = np.random.default_rng(4)
    images = (rng.random((5, 12, 10)) * 50 - 5).astype(np.float32)
    images[1] = np.nan  # no valid pixel: no noise
    images[2] = -images[2] - 10  # its maximum below 0: no noise
    mask = rng.random((12, 10)) > 0.2
    from_frames = frame_bounds(images, level, 7.5, mask)
    from_statistics = bounds_of_statistics(frame_statistics(images, mask), level, 7.5)
    np.testing.assert_array_equal(from_statistics, from_frames)
    assert from_statistics.dtype == np.float32
    if level is NoiseLevel.MAX_FRAME:
        assert from_statistics[1] == from_statistics[2] == 0 and from_statistics[0] > 0


def _numpy_frame_statistics(images, mask):
    """Mean, std (population) and max of each frame's valid pixels in float64 NumPy; NaN if none."""
    from ccfkit.polar import HUGE_PIXEL

    rows = []
    for frame in images.astype(np.float64):
        values = frame[mask & (np.abs(frame) < HUGE_PIXEL)]  # NaN compares False
        rows.append([values.mean(), values.std(), values.max()] if values.size else [np.nan] * 3)
    return np.array(rows)


#: Where the random frames sit and how far they spread: near 0, far from it
#: (1e6 with a spread of 0.5: cancellation), tiny and enormous magnitudes.
_LOCATIONS_AND_SPREADS = [(0.0, 1.0), (0.5, 0.3), (1e6, 0.5), (-3e4, 1e-2), (0.0, 1e-30),
                          (1e-38, 1e-39), (2e15, 1e14), (5.0, 0.0), (0.0, 1e16)]  # fmt: skip


@pytest.mark.parametrize("location, spread", _LOCATIONS_AND_SPREADS)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.tuples(st.integers(1, 3), st.integers(1, 80), st.integers(1, 80)),
    zero_fraction=st.sampled_from([0.0, 0.8]),
    unusable_fraction=st.sampled_from([0.0, 0.01, 0.5, 1.0]),
    hot_pixels=st.integers(0, 3),
    masked_fraction=st.sampled_from([0.0, 0.3, 1.0]),
)
def test_frame_statistics_are_numpys_float64_ones_on_random_frames(
    location, spread, seed, shape, zero_fraction, unusable_fraction, hot_pixels, masked_fraction
):
    from ccfkit.polar import HUGE_PIXEL

    rng = np.random.default_rng(seed)
    images = (location + spread * rng.standard_normal(shape)).astype(np.float32)
    images[rng.random(shape) < zero_fraction] = 0  # mostly dark, as diffraction frames are
    unusable = [np.nan, np.inf, -np.inf, HUGE_PIXEL, -HUGE_PIXEL, 3.4e38]
    where = rng.random(shape) < unusable_fraction
    images[where] = rng.choice(unusable, where.sum())
    for _ in range(hot_pixels):  # usable, far from the rest
        images[tuple(rng.integers(0, shape))] = rng.choice([1e4, -1e9, 0.99 * HUGE_PIXEL])
    mask = rng.random(shape[1:]) >= masked_fraction
    stats = frame_statistics(images, mask)
    expected = _numpy_frame_statistics(images, mask)
    assert stats.dtype == np.float32 and stats.shape == (shape[0], 3)
    np.testing.assert_array_equal(np.isnan(stats), np.isnan(expected))  # no valid pixel: NaN row
    mean, std, top = stats.astype(np.float64).T
    mean_ref, std_ref, top_ref = expected.T
    np.testing.assert_array_equal(top, top_ref)  # exactly the largest valid pixel
    # float32 results: about 1e-7 of the spread and of the magnitude
    np.testing.assert_array_less(
        np.abs(mean - mean_ref), 1e-6 * (std_ref + np.abs(mean_ref)) + 1e-45
    )
    np.testing.assert_array_less(np.abs(std - std_ref), 1e-6 * std_ref + 1e-45)


def test_frame_statistics_read_read_only_memory_mapped_frames(tmp_path):
    rng = np.random.default_rng(8)
    images = (100 + rng.standard_normal((3, 40, 50))).astype(np.float32)
    images[1, 2, 3] = np.nan
    mask = rng.random((40, 50)) > 0.1
    path = tmp_path / "frames.raw"
    images.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=images.shape)
    assert not mapped.flags.writeable
    np.testing.assert_array_equal(frame_statistics(mapped, mask), frame_statistics(images, mask))
    expected = _numpy_frame_statistics(images, mask)
    np.testing.assert_allclose(frame_statistics(mapped, mask), expected, rtol=1e-6)


def test_no_noise_in_place_leaves_the_frames_and_elsewhere_copies_them():
    images = np.random.default_rng(4).normal(size=(3, 5, 6)).astype(np.float32)
    kept = images.copy()
    assert add_noise(images, np.arange(3), 0.0, 1, out=images) is images
    np.testing.assert_array_equal(images, kept)
    other = np.full_like(images, np.nan)
    add_noise(images, np.arange(3), np.zeros(3), 1, out=other)
    np.testing.assert_array_equal(other, kept)
    noisy = add_noise(images, np.arange(3), 2.0, 1, out=images)  # in place, with noise
    assert noisy is images and (images >= kept).all() and (images > kept).any()
