"""The §3.2 metrics: Accuracy, Precision, Recall over all labels, per class, and
the rate of predictions that break the declared exclusive label groups (§2).

Everything works on 0/1 arrays of shape (N, C): ``truth`` from the store,
``predicted = probability >= threshold``. Micro averaging: the counts of all
N x C labels are pooled, as the paper's §3.2 example does (79 904 labels for
7264 images x 11 classes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "ClassMetrics",
    "Metrics",
    "all_negative_accuracy",
    "compute_metrics",
    "format_class_table",
    "violation_rate",
]


def _ratio(num: int, den: int) -> float:
    """``num / den``, 0.0 when ``den == 0`` (e.g. Precision with no positive prediction, §3.2)."""
    return float(num) / float(den) if den else 0.0  # a Python float, never a NumPy scalar


@dataclass(frozen=True)
class ClassMetrics:
    """One row of the per-class table (Supplement Table 4)."""

    name: str
    precision: float
    recall: float
    accuracy: float
    support: int  # condition positives of this class
    predicted: int  # positive predictions of this class


@dataclass(frozen=True)
class Metrics:
    """Metrics of one evaluation.

    Attributes
    ----------
    accuracy, precision, recall : float
        Micro-averaged over all N x C labels (§3.2).
    tp, fp, fn, tn : int
        The pooled counts.
    violation_rate : float
        Fraction of frames whose prediction has more than one positive label
        in some declared exclusive group.
    n_frames : int
    per_class : tuple of ClassMetrics
    """

    accuracy: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int
    tn: int
    violation_rate: float
    n_frames: int
    per_class: tuple[ClassMetrics, ...] = ()

    def summary(self) -> dict:
        """The scalar metrics as a flat dict (no per-class rows)."""
        out = asdict(self)
        out.pop("per_class")
        return out

    def to_dict(self) -> dict:
        out = self.summary()
        out["per_class"] = [asdict(row) for row in self.per_class]
        return out


def violation_rate(predicted: np.ndarray, names, groups) -> float:
    """Fraction of rows with more than one positive label in some exclusive group.

    Parameters
    ----------
    predicted : (N, C) array of 0/1 or bool
    names : sequence of str
        The C label names, in column order.
    groups : sequence of sequences of str
        Mutually exclusive label groups (names); names not in ``names`` are ignored.
    """
    predicted = np.asarray(predicted).astype(bool)
    if predicted.shape[0] == 0:
        return 0.0
    column = {name: i for i, name in enumerate(names)}
    broken = np.zeros(predicted.shape[0], dtype=bool)
    for group in groups:
        cols = [column[name] for name in group if name in column]
        if len(cols) > 1:
            broken |= predicted[:, cols].sum(axis=1) > 1
    return float(broken.mean())


def all_negative_accuracy(truth: np.ndarray) -> float:
    """Accuracy of the useless model that predicts every label negative (§3.2)."""
    truth = np.asarray(truth).astype(bool)
    return float(1.0 - truth.mean()) if truth.size else 0.0


def compute_metrics(truth, predicted, names=None, groups=()) -> Metrics:
    """§3.2 metrics of 0/1 predictions against 0/1 truth, both (N, C)."""
    truth = np.asarray(truth).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    if truth.shape != predicted.shape or truth.ndim != 2:
        raise ValueError(
            f"truth {truth.shape} and predicted {predicted.shape} must both be (N, C)"
        )
    n, c = truth.shape
    names = list(names) if names is not None else [str(i) for i in range(c)]
    tp_c = (truth & predicted).sum(axis=0)
    fp_c = (~truth & predicted).sum(axis=0)
    fn_c = (truth & ~predicted).sum(axis=0)
    tn_c = (~truth & ~predicted).sum(axis=0)
    rows = tuple(
        ClassMetrics(
            name=names[k],
            precision=_ratio(tp_c[k], tp_c[k] + fp_c[k]),
            recall=_ratio(tp_c[k], tp_c[k] + fn_c[k]),
            accuracy=_ratio(tp_c[k] + tn_c[k], n),
            support=int(tp_c[k] + fn_c[k]),
            predicted=int(tp_c[k] + fp_c[k]),
        )
        for k in range(c)
    )
    tp, fp, fn, tn = (int(v.sum()) for v in (tp_c, fp_c, fn_c, tn_c))
    return Metrics(
        accuracy=_ratio(tp + tn, n * c),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        violation_rate=violation_rate(predicted, names, groups),
        n_frames=n,
        per_class=rows,
    )


def format_class_table(rows) -> str:
    """The per-class table as Markdown (Supplement Table 4 columns, plus support)."""
    lines = [
        "| class | precision | recall | accuracy | support | predicted |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if isinstance(row, dict):
            row = ClassMetrics(**row)
        lines.append(
            f"| {row.name} | {row.precision:.4f} | {row.recall:.4f} | {row.accuracy:.4f} "
            f"| {row.support} | {row.predicted} |"
        )
    return "\n".join(lines)
