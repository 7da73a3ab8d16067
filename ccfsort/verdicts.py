"""Is arm A better than arm B? A paired test over seeds and a bootstrap over test frames.

Both arms are trained with the same seeds (seed ``s`` of A and of B share
the initialisation seed, the batch order and the split) and scored on the
same test frames. Two questions, both needed for a "yes" (docs/study.md):

* **Seeds** (training randomness): the per-seed differences
  ``d_s = m(A_s) - m(B_s)`` of the micro metric ``m`` (§3.2), a one-sided
  paired t-test of ``mean(d) > 0`` (or ``< 0``) with ``S - 1`` degrees of
  freedom.
* **Frames** (which test frames happened to be drawn): a paired percentile
  bootstrap. Each resample draws N test frames with replacement (the same
  frames for every run of both arms), pools the counts of each run and
  gives ``mean_s m(A_s) - mean_s m(B_s)``; the interval holds the central
  ``level`` of the resampled differences.

Verdict: ``"yes"`` when the interval lies above 0 and the t-test says
``> 0`` at ``alpha``; ``"no"`` when the interval lies below 0 and the
t-test says ``< 0``; otherwise ``"not resolved"``. With one seed there is no
test over seeds, so no verdict: ``"no verdict (one seed)"``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "NO",
    "ONE_SEED",
    "UNRESOLVED",
    "YES",
    "bootstrap_difference",
    "compare",
    "frame_counts",
    "metric_of_counts",
    "paired_t_test",
    "verdict",
]

YES, NO, UNRESOLVED = "yes", "no", "not resolved"
#: The verdict of a comparison over one seed: the paired test needs two.
ONE_SEED = "no verdict (one seed)"


def frame_counts(truth, predicted) -> np.ndarray:
    """Per-frame label counts ``(tp, fp, fn, tn)``.

    Parameters
    ----------
    truth, predicted : (N, C) arrays of 0/1 or bool

    Returns
    -------
    (N, 4) int64 array
    """
    truth = np.asarray(truth).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    parts = (truth & predicted, ~truth & predicted, truth & ~predicted, ~truth & ~predicted)
    return np.stack([p.sum(axis=1) for p in parts], axis=1).astype(np.int64)


def metric_of_counts(counts, metric: str) -> np.ndarray:
    """A micro metric (§3.2) from pooled counts.

    Parameters
    ----------
    counts : (..., 4) array
        Pooled ``(tp, fp, fn, tn)``.
    metric : str
        ``"accuracy"``, ``"precision"`` or ``"recall"``; a ratio with a zero
        denominator is 0, as in :mod:`trainer.metrics`.

    Returns
    -------
    (...) float64 array
    """
    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn, tn = (counts[..., k] for k in range(4))
    if metric == "accuracy":
        num, den = tp + tn, tp + fp + fn + tn
    elif metric == "precision":
        num, den = tp, tp + fp
    elif metric == "recall":
        num, den = tp, tp + fn
    else:
        raise ValueError(f"metric must be accuracy, precision or recall, got {metric!r}")
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def paired_t_test(differences) -> dict:
    """One-sided paired t-tests of the per-seed differences.

    Parameters
    ----------
    differences : (S,) array
        ``m(A_s) - m(B_s)`` for each seed.

    Returns
    -------
    dict
        ``mean``, ``std`` (ddof 1), ``n``, ``t``, ``p_greater`` (H1: mean > 0),
        ``p_less`` (H1: mean < 0). With one seed ``t`` and both p are NaN
        (nothing to test); with identical differences the t statistic is infinite (p 0
        on the side of the mean) or, all zero, 0 (p 1 both ways).
    """
    from scipy import stats

    d = np.asarray(differences, dtype=np.float64)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    std = float(d.std(ddof=1)) if n > 1 else math.nan
    if n < 2:
        return {"mean": mean, "std": std, "n": n, "t": math.nan, "p_greater": math.nan,
                "p_less": math.nan}  # fmt: skip
    if std == 0:
        t = math.copysign(math.inf, mean) if mean else 0.0
        p_greater = 0.0 if mean > 0 else 1.0
        p_less = 0.0 if mean < 0 else 1.0
    else:
        t = mean / (std / math.sqrt(n))
        p_greater = float(stats.t.sf(t, n - 1))
        p_less = float(stats.t.cdf(t, n - 1))
    return {"mean": mean, "std": std, "n": n, "t": t, "p_greater": p_greater, "p_less": p_less}


def bootstrap_difference(
    counts_a, counts_b, metric: str, *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of ``mean_s m(A_s) - mean_s m(B_s)`` over resampled test frames.

    Parameters
    ----------
    counts_a, counts_b : (S, N, 4) int arrays
        Per-frame counts (:func:`frame_counts`) of each seed's run, the same
        N test frames in the same order for both arms.
    metric : str
    resamples : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling.
    level : float
        Central probability of the interval (0.95).

    Returns
    -------
    (float, float)
        The interval's ends.
    """
    counts_a = np.asarray(counts_a, dtype=np.float64)
    counts_b = np.asarray(counts_b, dtype=np.float64)
    if counts_a.shape[1:] != counts_b.shape[1:] or counts_a.ndim != 3:
        raise ValueError(f"counts {counts_a.shape} and {counts_b.shape} must be (S, N, 4)")
    n = counts_a.shape[1]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    # (B, N) x (S, N, 4) -> (B, S, 4): each resample's pooled counts of every run
    pooled_a = np.einsum("bn,snk->bsk", weights, counts_a)
    pooled_b = np.einsum("bn,snk->bsk", weights, counts_b)
    delta = metric_of_counts(pooled_a, metric).mean(1) - metric_of_counts(pooled_b, metric).mean(1)
    low, high = np.quantile(delta, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def verdict(test: dict, interval: tuple[float, float], alpha: float = 0.05) -> str:
    """``"yes"``, ``"no"`` or ``"not resolved"`` from a t-test dict and a bootstrap interval."""
    low, high = interval
    if low > 0 and test["p_greater"] < alpha:
        return YES
    if high < 0 and test["p_less"] < alpha:
        return NO
    return UNRESOLVED


def compare(
    counts_a,
    counts_b,
    metric: str,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    alpha: float = 0.05,
) -> dict:
    """Everything a claim's verdict line needs, for arms A and B.

    Parameters
    ----------
    counts_a, counts_b : (S, N, 4) int arrays
        As in :func:`bootstrap_difference`; seed ``s`` of A is paired with
        seed ``s`` of B.

    Returns
    -------
    dict
        ``delta`` (mean over seeds of the per-seed differences on all test
        frames), ``per_seed`` differences, ``ci`` (low, high), ``t_test``
        (:func:`paired_t_test`), ``verdict`` (:data:`ONE_SEED` with one
        seed), ``level``, ``alpha``,
        ``n_frames``, ``n_seeds``.
    """
    counts_a, counts_b = np.asarray(counts_a), np.asarray(counts_b)
    if counts_a.shape != counts_b.shape:
        raise ValueError(f"arms differ in seeds or frames: {counts_a.shape} vs {counts_b.shape}")
    per_seed = metric_of_counts(counts_a.sum(1), metric) - metric_of_counts(
        counts_b.sum(1), metric
    )
    test = paired_t_test(per_seed)
    interval = bootstrap_difference(
        counts_a, counts_b, metric, resamples=resamples, seed=seed, level=level
    )
    return {
        "metric": metric,
        "delta": float(per_seed.mean()),
        "per_seed": per_seed.tolist(),
        "ci": list(interval),
        "t_test": test,
        "verdict": verdict(test, interval, alpha) if len(per_seed) > 1 else ONE_SEED,
        "level": level,
        "alpha": alpha,
        "n_frames": int(counts_a.shape[1]),
        "n_seeds": int(counts_a.shape[0]),
    }
