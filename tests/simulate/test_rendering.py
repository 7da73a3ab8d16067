"""``ccfkit.simulate.rendering``: expected counts, Poisson sampling and the frames."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from ccfkit import simulate as sim
from ccfkit.io import cxi

from .helpers import config, simulate_file


def test_expected_counts_sum_to_the_fluence_plus_background():
    cfg = config(fluence=(3e4, 3e4), background=0.05, halo=(1e3, 1e4))
    det = cfg.detector
    params = sim.draw_parameters(cfg, 0, np.arange(12))
    assert np.all((params.halo >= 1e3) & (params.halo <= 1e4))
    expected = sim.expected_counts(params, cfg)
    good = det.good_pixels()
    sums = expected.sum(axis=(1, 2), dtype=np.float64)
    want = params.fluence + params.halo + cfg.background * good.sum()
    np.testing.assert_allclose(sums, want, rtol=1e-5)  # float32 accumulation


def test_an_unknown_engine_is_an_error():
    cfg = config()
    with pytest.raises(ValueError, match="engine"):
        sim.expected_counts(sim.draw_parameters(cfg, 0, [0]), cfg, engine="fortran")


def test_mean_photon_count_follows_the_requested_fluence(tmp_path):
    fluence = 2e4
    path = simulate_file(
        tmp_path / "f.cxi",
        "--fluence",
        fluence,
        fluence,
        "--background",
        0,
        "--halo",
        0,
        0,
        "--mix",
        "sphere=1,oblate=1,prolate=1",
        n=32,
    )
    with h5py.File(path, "r") as handle:
        totals = handle[cxi.DATA_PATH][()].sum(axis=(1, 2), dtype=np.float64)
        recorded = handle["entry_1/sample_1/fluence"][()]
    np.testing.assert_array_equal(recorded, fluence)
    # A frame's total is Poisson(fluence): each within 5 sigma, and the mean of 32
    # within 5 sigma / sqrt(32).
    z = (totals - fluence) / math.sqrt(fluence)
    assert np.all(np.abs(z) < 5), z
    assert abs(z.mean()) < 5 / math.sqrt(len(z))


@pytest.mark.parametrize("lam", [0.0, 0.003, 0.4, 1.7, 2.9, 3.1, 5.5, 8.0, 8.1, 60.0])
def test_poisson_sampler_has_poisson_statistics(lam):
    n = 200_000
    draws = sim.poisson_counts(np.full(n, lam, dtype=np.float32), np.random.default_rng(7))
    assert draws.dtype == np.float32
    assert np.all(draws == np.round(draws)) and draws.min() >= 0
    if lam == 0:
        assert draws.max() == 0
        return
    # mean within 5 standard errors; variance within 5 of its standard errors
    # (var of the sample variance ~ (lam + 2 lam^2) / n for a Poisson).
    assert draws.mean() == pytest.approx(lam, abs=5 * math.sqrt(lam / n))
    assert draws.var() == pytest.approx(lam, abs=5 * math.sqrt((lam + 2 * lam**2) / n))
    # P(0) = exp(-lam) (binomial error).
    p0 = math.exp(-lam)
    assert (draws == 0).mean() == pytest.approx(p0, abs=5 * math.sqrt(p0 * (1 - p0) / n) + 1e-9)


def test_a_frame_depends_only_on_seed_and_index():
    cfg = config()
    all_ = sim.render_frames(sim.draw_parameters(cfg, 5, np.arange(8)), cfg, 5)
    some = sim.render_frames(sim.draw_parameters(cfg, 5, [3, 6]), cfg, 5)
    np.testing.assert_array_equal(some, all_[[3, 6]])
