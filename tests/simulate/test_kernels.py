"""``ccfkit.simulate.kernels``: the Numba kernels against the NumPy reference, and loaded
only when frames are rendered."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ccfkit import simulate as sim

from .helpers import config


@pytest.mark.parametrize(
    "polarization, solid_angle",
    [("horizontal", True), ("vertical", True), ("unpolarised", False), ("none", True)],
)
def test_fused_kernel_matches_the_numpy_reference_on_random_frames(polarization, solid_angle):
    """The Numba engine against the NumPy formulation: every kind, halo, background,
    a jittered beam centre, 40 random frames per setting."""
    cfg = config(
        size=97, jitter=3.0, background=0.02, halo=(1e3, 2e4), radius=(150.0, 600.0),
        polarization=polarization, solid_angle=solid_angle,
        mix="sphere=1,oblate=1,prolate=1,empty=1,double=1,newton=1,asymmetric=1",
    )  # fmt: skip
    params = sim.draw_parameters(cfg, 11, np.arange(40))
    assert set(params.kind.tolist()) == set(range(len(sim.Kind)))
    fused = sim.expected_counts(params, cfg, engine="numba")
    reference = sim.expected_counts(params, cfg, engine="numpy")
    # The reference computes in float32 (errors up to ~5e-6 of the brightest
    # pixel against float64, test_float32_pattern_matches_a_float64_reference);
    # the fused kernel in float64 per pixel.
    for got, want in zip(fused, reference):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * want.max())
    good = cfg.detector.good_pixels()
    assert np.all(fused[:, ~good] == 0)
    want_sums = params.fluence + params.halo + cfg.background * good.sum()
    np.testing.assert_allclose(fused.sum(axis=(1, 2), dtype=np.float64), want_sums, rtol=1e-6)


def test_poisson_inversion_is_the_cdf_search():
    """The kernel's count is the number of CDF values (float64) below the uniform
    ``(bits >> 8) 2^-24``, for rates up to its cut; the pixels above are returned and
    left alone."""
    from scipy.stats import poisson

    from ccfkit.simulate.kernels import MAX_INVERSION_CUT, invert_poisson

    rng = np.random.default_rng(5)
    cut = MAX_INVERSION_CUT
    lam = np.concatenate(
        [rng.uniform(0, cut, 20_000), rng.exponential(0.2, 20_000), [0.0, cut, cut + 0.5, 40.0]]
    ).astype(np.float32)
    bits = rng.integers(0, 2**32, lam.size, dtype=np.uint32)
    out = np.full(lam.size, -1.0, dtype=np.float32)
    bright = invert_poisson(lam, bits, cut, int(4 * cut + 40), out)
    inside = lam <= cut
    np.testing.assert_array_equal(bright, np.flatnonzero(~inside))
    uniform = (bits >> 8) * 2.0**-24
    cdf = poisson.cdf(np.arange(120)[None, :], lam[inside, None].astype(np.float64))
    want = (cdf < uniform[inside, None]).sum(axis=1)
    np.testing.assert_array_equal(out[inside], want)
    np.testing.assert_array_equal(out[~inside], -1.0)


def test_numba_loads_only_when_frames_are_rendered():
    """The configuration, the labels and the command line import without Numba (and
    without the file writer's h5py); rendering a frame loads the kernels."""
    code = (
        "import sys, numpy as np, ccfkit.simulate as sim, ccfkit.cli; "
        "cfg = sim.SimulationConfig(size=33); p = sim.draw_parameters(cfg, 0, [0, 1]); "
        "sim.assign_labels(p, cfg.detector); "
        "print(sorted(m for m in ('numba', 'h5py', 'ccfkit.simulate.kernels') if m in sys.modules)); "
        "sim.render_frames(p, cfg, 0); "
        "print(sorted(m for m in ('numba', 'ccfkit.simulate.kernels') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    before, after = result.stdout.split("\n")[:2]
    assert before == "[]"
    assert after == "['ccfkit.simulate.kernels', 'numba']"
