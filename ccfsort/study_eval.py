"""A study's runs scored on another labelled source (``--eval-source``, docs/study.md).

Every finished run's best checkpoint is scored on all frames of the other
source, built with the run's own build parameters. Each score keeps what the
test split's results keep: the micro metrics, the per-class rows, and the
per-frame counts ``(tp, fp, fn, tn)`` that the claims' paired statistics
resample (:mod:`ccfsort.verdicts`), plus the labels that could not be scored
(the run's labels the source lacks) and those ignored (the source's labels
the run lacks). The constant baselines (all-negative, the training split's
majority) are scored on the test split and on every frame of each source
(:func:`baselines`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trainer.run_dir import write_json

__all__ = [
    "METRIC_KEYS",
    "baselines",
    "constant_baselines",
    "per_class_summary",
    "score_on_source",
    "score_predictions",
    "source_content",
    "source_result",
    "summarise",
]

#: The micro metrics a study summarises over seeds.
METRIC_KEYS = ("accuracy", "precision", "recall", "violation_rate")


def summarise(values) -> dict:
    """``{"mean", "std" (ddof 1; NaN with one value), "n"}`` of a list of floats."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    return {"mean": float(values.mean()), "std": std, "n": len(values)}


def per_class_summary(seeds: dict) -> dict:
    """class -> precision / recall summaries over seeds, and the class's support.

    Parameters
    ----------
    seeds : dict
        seed -> :meth:`trainer.metrics.Metrics.to_dict` (its ``per_class`` rows
        in the same order for every seed).
    """
    rows = list(seeds.values())
    return {
        row["name"]: {
            "precision": summarise([m["per_class"][k]["precision"] for m in rows]),
            "recall": summarise([m["per_class"][k]["recall"] for m in rows]),
            "support": row["support"],
        }
        for k, row in enumerate(rows[0]["per_class"])
    }


def score_on_source(run_dir, store: str, score_file: Path) -> tuple[dict, np.ndarray]:
    """The run's best checkpoint on every frame of ``store``, cached in ``score_file``.

    Exclusivity violations are counted with the run's groups. A cached score
    without per-class rows or per-frame counts (written before they were
    kept) is scored again.

    Returns
    -------
    result : dict
        :meth:`trainer.metrics.Metrics.to_dict`, with ``store``,
        ``unscored_labels`` and ``ignored_labels``.
    counts : (N, 4) int64 array
        Per-frame ``(tp, fp, fn, tn)`` over the scored labels.
    """
    from ccfkit.atomic import atomic_output
    from trainer.inference import evaluate_run

    from .verdicts import frame_counts

    counts_file = score_file.with_suffix(".npz")
    if score_file.is_file() and counts_file.is_file():
        cached = json.loads(score_file.read_text())
        if cached.get("exclusive_groups") == "the run's" and "per_class" in cached:
            with np.load(counts_file) as saved:
                return cached, saved["counts"]
    metrics, extra = evaluate_run(run_dir, store, subset="all", device="cpu", predictions=True)
    counts = frame_counts(extra["truth"], extra["predicted"])
    result = {**metrics.to_dict(), "store": store, "exclusive_groups": "the run's",
              "unscored_labels": extra["unscored_labels"],
              "ignored_labels": extra["ignored_labels"]}  # fmt: skip
    score_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(counts_file, overwrite=True) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, counts=counts)
    write_json(score_file, result)  # last: a score file means its counts are there
    return result, counts


def score_predictions(predicted, run_names, run_groups, store: str) -> tuple[dict, np.ndarray]:
    """Predictions for the labels ``run_names`` scored on every frame of ``store``.

    The labels are matched and the exclusivity violations counted as a run's
    on another source (:func:`score_on_source`, :func:`trainer.inference.evaluate_run`):
    only the labels both have are scored, with the run's groups.

    Parameters
    ----------
    predicted : (N, C) bool array
        One row per frame of ``store``, one column per name of ``run_names``.
    run_names : sequence of str
    run_groups : sequence of sequence of str
        The exclusive groups of ``run_names``.
    store : str
        A labelled ccfkit store of N frames.

    Returns
    -------
    result : dict
        :meth:`trainer.metrics.Metrics.to_dict`, with ``unscored_labels`` and
        ``ignored_labels``.
    counts : (N, 4) int64 array
        Per-frame ``(tp, fp, fn, tn)`` over the scored labels.

    Raises
    ------
    ValueError
        No label of ``store`` matches; ``predicted`` has another number of frames.
    """
    from trainer.data import inspect_store, open_store
    from trainer.labels import match_labels
    from trainer.metrics import compute_metrics

    from .verdicts import frame_counts

    info = inspect_store(store, need_labels=True)
    predicted = np.asarray(predicted, dtype=bool)
    if len(predicted) != info.n_frames:
        raise ValueError(f"{store}: {info.n_frames} frames, {len(predicted)} predictions")
    match = match_labels(run_names, info.label_names)
    truth = open_store(store)["labels"][:][:, match.store_columns].astype(bool)
    guess = predicted[:, match.run_columns]
    metrics = compute_metrics(truth, guess, match.names, match.run_groups(run_groups))
    result = {**metrics.to_dict(), "unscored_labels": list(match.unmatched_run),
              "ignored_labels": list(match.unmatched_store)}  # fmt: skip
    return result, frame_counts(truth, guess)


def source_content(frames) -> str:
    """What a labelled source holds: its frames' fingerprint and a digest of its labels.

    Parameters
    ----------
    frames : ccfkit.io.source.FrameSource

    Returns
    -------
    str
        ``input_fingerprint`` (:func:`ccfkit.io.source.input_fingerprint`,
        sampled frames) and the SHA-1 of the label names and the (N, C) labels.
    """
    import hashlib

    labels = hashlib.sha1(json.dumps(list(frames.label_names)).encode())
    if frames.labels is not None:
        labels.update(np.ascontiguousarray(frames.labels, dtype=np.uint8).tobytes())
    return f"{frames.describe()['fingerprint']};labels:{labels.hexdigest()}"


def source_result(scores: dict) -> dict:
    """One arm's results on one source, from its seeds' :func:`score_on_source`.

    Parameters
    ----------
    scores : dict
        seed -> ``(result, counts)``; at least one seed.

    Returns
    -------
    dict
        ``seeds`` (seed -> metrics dict), ``counts`` ((S, N, 4), seeds in
        order), ``summary``, ``per_class`` (as the test split's), and the
        sorted ``unscored_labels`` and ``ignored_labels`` of any seed.
    """
    seeds = {s: result for s, (result, _) in scores.items()}
    return {
        "seeds": seeds,
        "counts": np.stack([counts for _, counts in scores.values()]),
        "summary": {k: summarise([m[k] for m in seeds.values()]) for k in METRIC_KEYS},
        "per_class": per_class_summary(seeds),
        "unscored_labels": sorted({n for m in seeds.values() for n in m["unscored_labels"]}),
        "ignored_labels": sorted({n for m in seeds.values() for n in m["ignored_labels"]}),
    }


def baselines(store: str, split: dict, on: str | None = None) -> dict:
    """Metrics of the all-negative and the best constant predictor.

    The best constant predicts, for each class, the majority value of the
    training labels of ``store`` (the constant with the best accuracy on
    training data).

    Parameters
    ----------
    store : str
        A labelled store (an arm's: every arm's frames have the same labels).
    split : dict
        The study's split: ``train`` rows give the majority; without ``on``
        the ``test`` rows are scored.
    on : str, optional
        Another source's store: every frame of it is scored instead, on the
        labels it has (:func:`score_predictions`, as the
        runs are).

    Returns
    -------
    dict
        ``"all-negative"``, ``"best constant"`` -> :meth:`trainer.metrics.Metrics.summary`
        (the best constant's with its ``positive_classes``).
    """
    from trainer.data import inspect_store, open_store
    from trainer.metrics import compute_metrics

    info = inspect_store(store)
    labels = open_store(store)["labels"][:].astype(bool)
    majority = labels[split["train"]].mean(axis=0) >= 0.5
    truth = labels[split["test"]]
    shape = truth.shape if on is None else (inspect_store(on).n_frames, len(majority))
    out = {}
    for name, predicted in (
        ("all-negative", np.zeros(shape, dtype=bool)),
        ("best constant", np.broadcast_to(majority, shape)),
    ):
        if on is None:
            m = compute_metrics(truth, predicted, info.label_names, info.exclusive_groups)
            out[name] = m.summary()
        else:
            scored, _ = score_predictions(predicted, info.label_names, info.exclusive_groups, on)
            rows = ("per_class", "unscored_labels", "ignored_labels")
            out[name] = {k: v for k, v in scored.items() if k not in rows}
    out["best constant"]["positive_classes"] = [
        n for n, on_ in zip(info.label_names, majority) if on_
    ]
    return out


def constant_baselines(store: str, split: dict, eval_stores: dict) -> dict:
    """:func:`baselines` on the test split, with ``eval_sources``: source -> them on its frames.

    ``eval_stores``: arm key -> {source: (its store for the arm, frames, content)};
    every arm's store of a source holds the same frames and labels, so the
    constants are scored once per source.
    """
    base = baselines(store, split)
    on_sources = {}
    for arm_sources in eval_stores.values():
        for source, (eval_store, *_) in arm_sources.items():
            if source not in on_sources:
                on_sources[source] = baselines(store, split, on=eval_store)
    if on_sources:
        base["eval_sources"] = dict(sorted(on_sources.items()))
    return base
