"""The training recipe: :class:`TrainConfig`, saved with every run and checkpoint (docs/training.md).

Recipe (§3.1.5, Eq. 6 and 10): binary cross-entropy on the logits plus
``l1 * sum |w|`` plus ``l2 * sum w^2`` over the convolution and fully
connected weights (not BatchNorm parameters or biases); SGD with momentum 0.9,
learning rate 0.1 multiplied by 0.1 every 50 epochs, batch 48, 200 epochs.
Every number is a field of :class:`TrainConfig`; the ``trainer fit`` options
are made from its fields (their ``metadata``: help, choices; ``resume``: the
options that may change a run on ``--resume``, :mod:`ccfkit.cli_options`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields

from .data import InputKind, Normalize, resolve_normalize

__all__ = [
    "BEST_METRICS",
    "DEVICES",
    "INIT_CHECKPOINTS",
    "STUDY_TEST_FRACTION",
    "Flips",
    "TrainConfig",
]

#: Metrics that "best" may follow, and whether larger is better.
BEST_METRICS = {"accuracy": True, "precision": True, "recall": True, "eval_loss": False}
#: Devices by name (``cuda:N`` is accepted too).
DEVICES = ("auto", "cpu", "cuda")
#: The checkpoints of a run another run may start from (``init_checkpoint``).
INIT_CHECKPOINTS = ("best", "last")
#: A study's held-out test fraction (``trainer fit`` holds none out by default:
#: :attr:`TrainConfig.test_fraction`); its validation fraction is
#: :attr:`TrainConfig.eval_fraction` (docs/study.md).
STUDY_TEST_FRACTION = 0.15


def _fraction(default: float, help_text: str):
    """A field holding a split's fraction of the frames, in [0, 1)."""
    range_ = {"min": 0, "max": 1, "max_open": True}
    return field(default=default, metadata={"range": range_, "help": help_text})


class Flips(str, enum.Enum):
    """Random horizontal and vertical flips of the training frames."""

    #: On for images, off for CCF maps (a flip swaps their triangles, docs/training.md).
    AUTO = "auto"
    ON = "on"
    OFF = "off"


@dataclass(frozen=True)
class TrainConfig:
    """Everything about training except the network (saved with the run and checkpoints)."""

    #: The store trained on (the command's argument, not an option).
    store: str = field(metadata={"cli": False})
    input: str = field(
        default=InputKind.CCF.value,
        metadata={"choices": InputKind,
                  "help": "What the network sees: the CCF maps or the stored images."},
    )  # fmt: skip
    epochs: int = field(default=200, metadata={"resume": True})
    batch_size: int = field(default=48, metadata={"help": "Global batch size."})
    lr: float = 0.1
    momentum: float = 0.9
    lr_step: int = field(default=50, metadata={"help": "Epochs between lr drops."})
    lr_gamma: float = 0.1
    l1: float = field(default=1e-5, metadata={"help": "L1 weight penalty."})
    l2: float = field(default=1e-5, metadata={"help": "L2 weight penalty."})
    #: Validation ("eval") fraction: the split that picks the best checkpoint.
    eval_fraction: float = _fraction(0.15, "Validation split: picks the best checkpoint.")
    #: Held-out test fraction, scored once with the best checkpoint (0: no test split).
    test_fraction: float = _fraction(
        0.0, "Held-out test split, scored once with the best checkpoint."
    )
    #: A saved split (.npz: train, eval, test) used instead of the fractions (docs/study.md).
    split_file: str | None = field(
        default=None,
        metadata={"option": "--split", "path": "file",
                  "help": "A saved split.npz (train, eval, test) instead of the fractions."},
    )  # fmt: skip
    #: Train on this fraction of the training split (nested subsets, Table 5).
    train_fraction: float = field(
        default=1.0,
        metadata={"range": {"min": 0, "max": 1, "min_open": True},
                  "help": "Train on this fraction of the training split (Table 5)."},
    )  # fmt: skip
    seed: int = field(default=0, metadata={"help": "Split, init and order."})
    #: :class:`Flips`: "auto" flips images, not CCF maps.
    flips: str = field(
        default=Flips.AUTO.value,
        metadata={"choices": Flips, "help": "Random h/v flips; auto: on for images, off for CCF "
                  "maps."},
    )  # fmt: skip
    #: "auto": "none" for CCF maps (scaled by the build), "max" for images.
    normalize: str = field(
        default=Normalize.AUTO.value,
        metadata={"choices": Normalize, "help": "Per-frame scaling; auto: none for CCF maps, max "
                  "for images."},
    )  # fmt: skip
    workers: int = field(default=2, metadata={"resume": True, "help": "DataLoader workers"})
    group_chunks: int = field(
        default=4,
        metadata={"help": "Consecutive store chunks the loader reads and shuffles together."},
    )
    device: str = field(default="auto", metadata={"resume": True, "choices": DEVICES})
    amp: bool = field(default=True, metadata={"help": "Mixed precision (GPU)."})
    channels_last: bool = field(default=True, metadata={"help": "(GPU)"})
    threshold: float = 0.5
    best_metric: str = field(
        default="accuracy",
        metadata={"choices": tuple(BEST_METRICS), "help": "The validation metric that picks the "
                  "best checkpoint."},
    )  # fmt: skip
    #: Use only the first ``max_frames`` frames of the store (quick runs); None = all.
    max_frames: int | None = field(default=None, metadata={"help": "Use only the first N frames."})
    sync_bn: bool = field(default=True, metadata={"help": "BatchNorm statistics synchronised "
                                                  "across processes (torchrun)."})  # fmt: skip
    #: Stop after the epoch during which this many minutes of training have passed
    #: (counted from this process's start of training; None = no limit).
    max_minutes: float | None = field(
        default=None, metadata={"help": "Stop after the epoch that passes this."}
    )
    #: torch CPU threads (None: torch's default); kept on --resume (results depend on it).
    threads: int | None = field(
        default=None,
        metadata={"resume": True, "range": {"min": 1},
                  "help": "torch CPU threads [torch's default; on --resume: the saved value]"},
    )  # fmt: skip
    #: A label table (CSV: ``index`` + one 0/1 column per label name, as ``trainer label``
    #: writes it): train on its frames only, with its labels; the split is over them.
    labels: str | None = field(
        default=None,
        metadata={"path": "file",
                  "help": "Train on the frames of this label table (trainer label) only, "
                          "with its labels; the split is over them."},
    )  # fmt: skip
    #: Fine-tuning (docs/training.md, "Fine-tuning from few labels"): start from the weights
    #: of this run directory's checkpoint instead of a fresh network.
    init: str | None = field(
        default=None,
        metadata={"metavar": "RUN", "help": "Start from this run's weights (fine-tuning): same "
                  "network, input and map recipe; labels matched by name."},
    )  # fmt: skip
    #: Which checkpoint of ``init``: "best" (best.pt) or "last" (last.pt).
    init_checkpoint: str = field(
        default="best",
        metadata={"choices": INIT_CHECKPOINTS, "help": "The --init run's checkpoint."},
    )  # fmt: skip
    #: Freeze the first N stages (1: the stem, 2: stem + stage 1, ... 5: all four stages);
    #: their BatchNorm layers stay in eval mode.
    freeze: int = field(
        default=0,
        metadata={"range": {"min": 0, "max": 5},
                  "help": "Freeze the first N stages (1: the stem, 2: + stage 1, ...; "
                          "their BatchNorm in eval mode)."},
    )  # fmt: skip
    #: Train on K frames of the training split, drawn with ``seed`` (validation and test
    #: unchanged); for one seed a smaller K's frames are among a larger K's.
    train_frames: int | None = field(
        default=None,
        metadata={"metavar": "K", "range": {"min": 1},
                  "help": "Train on K frames of the training split, drawn with --seed "
                          "(validation and test unchanged)."},
    )  # fmt: skip
    #: A file of store rows (one integer per line, or a .npy) to train on: all must be in
    #: the training split.
    train_index: str | None = field(
        default=None,
        metadata={"path": "file",
                  "help": "Train on these store rows (a text file, one per line, or .npy); "
                          "all in the training split."},
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
        self._check_few_labels()

    def _check_few_labels(self) -> None:
        """The fine-tuning fields: in range, and not two ways of choosing the training rows."""
        if self.init_checkpoint not in INIT_CHECKPOINTS:
            raise ValueError(f"init_checkpoint must be best or last, got {self.init_checkpoint!r}")
        if not 0 <= self.freeze <= 5:
            raise ValueError(
                f"freeze must be in 0..5 (the stem and four stages), got {self.freeze}"
            )
        if self.freeze and self.init is None:
            raise ValueError("--freeze needs --init (frozen fresh weights learn nothing)")
        if self.train_frames is not None and self.train_frames < 1:
            raise ValueError(f"train_frames must be >= 1, got {self.train_frames}")
        chosen = [name for name, value in (
            ("--train-frames", self.train_frames), ("--train-index", self.train_index),
            ("--train-fraction", None if self.train_fraction == 1 else self.train_fraction),
        ) if value is not None]  # fmt: skip
        if len(chosen) > 1:
            raise ValueError(f"{' and '.join(chosen)} both choose the training frames: give one")

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
