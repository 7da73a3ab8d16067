"""Which frames to show: the most confident of a class, the least certain overall.

Both the gallery (``trainer gallery``) and the label page's active learning
(``trainer label --run``) pick a few frames out of up to millions of
predictions. :func:`top_k` does it with :func:`numpy.argpartition`, O(N), and
sorts only the k frames it keeps.
"""

from __future__ import annotations

import numpy as np

__all__ = ["top_k", "uncertainty"]


def uncertainty(probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """How unsure the model is of each frame: 1 at the threshold, 0 at certainty.

    A frame is as uncertain as its least certain label: ``1 - min_c |p_c - t| /
    max(t, 1 - t)``, the distance of the probability nearest the decision
    threshold ``t``, scaled so that a probability of 0 or 1 (for ``t = 0.5``)
    gives 0 and one exactly at ``t`` gives 1.

    Parameters
    ----------
    probabilities : (N, C) array
        Sigmoid probabilities, in [0, 1].
    threshold : float
        The run's decision threshold, in (0, 1).

    Returns
    -------
    (N,) float64
        Uncertainties in [0, 1].
    """
    p = np.asarray(probabilities, dtype=np.float64)
    margin = np.abs(p - threshold).min(axis=1) / max(threshold, 1.0 - threshold)
    return 1.0 - margin


def top_k(scores: np.ndarray, k: int, candidates: np.ndarray | None = None) -> np.ndarray:
    """The positions of the ``k`` largest scores, largest first (ties: lower position first).

    Parameters
    ----------
    scores : (N,) array
        Finite scores.
    k : int
        How many to keep (fewer when there are fewer candidates).
    candidates : (M,) int array, optional
        Positions to choose from [all N].

    Returns
    -------
    (min(k, M),) int64
        Positions into ``scores``.
    """
    scores = np.asarray(scores)
    pool = np.arange(len(scores)) if candidates is None else np.asarray(candidates, np.int64)
    k = max(0, min(int(k), len(pool)))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    values = scores[pool]
    if k < len(pool):
        # argpartition keeps the k largest in O(M); a tie at the boundary may
        # fall either way, so widen the cut to every value equal to the k-th.
        cut = len(values) - k
        kth = values[np.argpartition(values, cut)[cut]]
        keep = np.flatnonzero(values >= kth)
        pool, values = pool[keep], values[keep]
    order = np.lexsort((pool, -values))[:k]
    return pool[order].astype(np.int64)
