"""The training recipe: :class:`TrainConfig`, saved with every run and checkpoint (docs/training.md).

Recipe (§3.1.5, Eq. 6 and 10): binary cross-entropy on the logits plus
``l1 * sum |w|`` plus ``l2 * sum w^2`` over the convolution and fully
connected weights (not BatchNorm parameters or biases); SGD with momentum 0.9,
learning rate 0.1 multiplied by 0.1 every 50 epochs, batch 48, 200 epochs.
Every number is a field of :class:`TrainConfig`; the ``trainer fit`` options
take their defaults from it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields

from .data import InputKind, Normalize, resolve_normalize

__all__ = ["BEST_METRICS", "DEVICES", "Flips", "TrainConfig"]

#: Metrics that "best" may follow, and whether larger is better.
BEST_METRICS = {"accuracy": True, "precision": True, "recall": True, "eval_loss": False}
#: Devices by name (``cuda:N`` is accepted too).
DEVICES = ("auto", "cpu", "cuda")


class Flips(str, enum.Enum):
    """Random horizontal and vertical flips of the training frames."""

    #: On for images, off for CCF maps (a flip swaps their triangles, docs/training.md).
    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class TrainConfig:
    """Everything about training except the network (saved with the run and checkpoints)."""

    store: str
    input: str = InputKind.CCF.value
    epochs: int = 200
    batch_size: int = 48
    lr: float = 0.1
    momentum: float = 0.9
    lr_step: int = 50
    lr_gamma: float = 0.1
    l1: float = 1e-5
    l2: float = 1e-5
    #: Validation ("eval") fraction: the split that picks the best checkpoint.
    eval_fraction: float = 0.15
    #: Held-out test fraction, scored once with the best checkpoint (0: no test split).
    test_fraction: float = 0.0
    #: A saved split (.npz: train, eval, test) used instead of the fractions (docs/study.md).
    split_file: str | None = None
    #: Train on this fraction of the training split (nested subsets, Table 5).
    train_fraction: float = 1.0
    seed: int = 0
    #: :class:`Flips`: "auto" flips images, not CCF maps.
    flips: str = Flips.AUTO.value
    #: "auto": "none" for CCF maps (scaled by the build), "max" for images.
    normalize: str = Normalize.AUTO.value
    workers: int = 2
    group_chunks: int = 4
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    threshold: float = 0.5
    best_metric: str = "accuracy"
    #: Use only the first ``max_frames`` frames of the store (quick runs); None = all.
    max_frames: int | None = None
    sync_bn: bool = True
    #: Stop after the epoch during which this many minutes of training have passed
    #: (counted from this process's start of training; None = no limit).
    max_minutes: float | None = None
    #: torch CPU threads (None: torch's default); kept on --resume (results depend on it).
    threads: int | None = None
    #: A label table (CSV: ``index`` + one 0/1 column per label name, as ``trainer label``
    #: writes it): train on its frames only, with its labels; the split is over them.
    labels: str | None = field(
        default=None,
        metadata={"help": "Train on the frames of this label table (trainer label) only, "
                          "with its labels; the split is over them."},
    )  # fmt: skip

    def __post_init__(self):
        InputKind(self.input)
        Normalize(self.normalize)
        if self.flips not in [f.value for f in Flips]:
            raise ValueError(f"flips must be auto, on or off, got {self.flips!r}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.best_metric not in BEST_METRICS:
            raise ValueError(f"best_metric must be one of {sorted(BEST_METRICS)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        for name in ("epochs", "batch_size", "lr_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")

    @property
    def use_flips(self) -> bool:
        return self.flips == Flips.ON or (self.flips == Flips.AUTO and self.input == "images")

    @property
    def input_normalize(self) -> str:
        """The concrete scaling (``"auto"`` resolved by :func:`~trainer.data.resolve_normalize`)."""
        return resolve_normalize(self.normalize, self.input)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
