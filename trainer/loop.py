"""The training loop, the run directory, evaluation and prediction (docs/training.md).

Recipe (§3.1.5, Eq. 6 and 10): binary cross-entropy on the logits plus
``l1 * sum |w|`` plus ``l2 * sum w^2`` over the convolution and fully
connected weights (not BatchNorm parameters or biases); SGD with momentum 0.9,
learning rate 0.1 multiplied by 0.1 every 50 epochs, batch 48, 200 epochs.
Every number is a field of :class:`TrainConfig`.

A run directory holds::

    config.json    the ModelConfig, the TrainConfig and what was read from the store
    split.npz      train, eval (validation) and test frame indices (rows of the store)
    metrics.csv    one row per epoch: losses, eval metrics, lr, seconds, samples/s
    last.pt        checkpoint after the last finished epoch (resume from here)
    best.pt        checkpoint of the epoch with the best eval (validation) metric
    test.npz       with a test split: the best checkpoint's probabilities on it
    report.json    final and best metrics, per-class tables, violation rates,
                   and with a test split the best checkpoint's test metrics
    report.md      the same for people
    loss.png, metrics.png

A checkpoint is a plain dict: ``model``, ``optimizer``, ``scheduler``,
``scaler``, ``epoch`` (last finished, 0-based), ``best``, ``history``,
``config``, ``rng``. The order of the batches and the flips of epoch ``e``
depend only on ``(seed, e)``, so ``--resume`` continues exactly.

Distributed data parallel: start the same command under ``torchrun``; each
process reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, joins a process group
(NCCL on GPUs, gloo on CPUs) and takes an interleaved slice of every global
batch, so the global batch size stays ``batch_size``. BatchNorm is
synchronised across processes on GPUs (``sync_bn``; torch's SyncBatchNorm
does not run on CPUs, where every process normalises its own slice). Rank 0
evaluates and writes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import pickle
import random
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ccfkit.io.atomic import atomic_output

from .data import (
    ChunkBatchSampler,
    DataError,
    InputKind,
    Normalize,
    StoreDataset,
    StoreInfo,
    inspect_store,
    load_split,
    make_loader,
    open_store,
    resolve_normalize,
    save_split,
    split_three_ways,
    subsample,
)
from .labels import match_labels
from .metrics import Metrics, all_negative_accuracy, compute_metrics, format_class_table
from .model import ModelConfig, build_model

__all__ = [
    "RunError",
    "TrainConfig",
    "evaluate_run",
    "fit",
    "load_run",
    "predict_run",
    "regularization",
    "resume",
    "step_throughput",
]

log = logging.getLogger(__name__)

#: 2: plain types only (tensors, numbers, strings, lists, dicts): loaded with
#: ``torch.load(weights_only=True)``, which runs no pickled code.
CHECKPOINT_VERSION = 2
#: metrics.csv columns, in order.
CSV_FIELDS = (
    "epoch",
    "lr",
    "train_loss",
    "train_bce",
    "eval_loss",
    "accuracy",
    "precision",
    "recall",
    "violation_rate",
    "seconds",
    "samples_per_s",
)
#: Metrics that "best" may follow, and whether larger is better.
BEST_METRICS = {"accuracy": True, "precision": True, "recall": True, "eval_loss": False}


class RunError(RuntimeError):
    """A run directory cannot be created, resumed or used as asked."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything about training except the network (saved with the run and checkpoints)."""

    store: str
    input: str = "ccf"
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
    #: "auto": flips for images, none for CCF maps (a flip swaps their triangles, docs/training.md).
    flips: str = "auto"
    #: "auto": "none" for CCF maps (scaled by the build), "max" for images.
    normalize: str = "auto"
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

    def __post_init__(self):
        InputKind(self.input)
        Normalize(self.normalize)
        if self.flips not in ("auto", "on", "off"):
            raise ValueError(f"flips must be auto, on or off, got {self.flips!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
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
        return self.flips == "on" or (self.flips == "auto" and self.input == "images")

    @property
    def input_normalize(self) -> str:
        """The concrete scaling (``"auto"`` resolved by :func:`~trainer.data.resolve_normalize`)."""
        return resolve_normalize(self.normalize, self.input)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------
# Small pieces
# --------------------------------------------------------------------------


def regularization(model: nn.Module, l1: float, l2: float) -> torch.Tensor:
    """``l1 * sum |w| + l2 * sum w^2`` over conv and linear weights (Eq. 10)."""
    total = None
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.float()
            term = l1 * w.abs().sum() + l2 * w.pow(2).sum()
            total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def _resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RunError("--device cuda asked for, but no CUDA device is available")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device("cpu")


def _dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (0, 1, 0 without)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def _rng_state() -> dict:
    """The generators' states in types ``torch.load(weights_only=True)`` accepts."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": [version, list(python_state), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, python_state, gauss_next = state["python"]
    random.setstate((version, tuple(python_state), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@torch.no_grad()
def predict_probabilities(
    model, loader, device, *, amp=False, channels_last=False, label_columns=None
):
    """Sigmoid probabilities over a loader: ``(probs (N, C), labels (N, M), indices (N,), bce)``.

    ``model`` is the plain network (not a DDP wrapper). ``bce`` is the mean
    binary cross-entropy (nan when the store has no labels). ``label_columns``
    ``(run_columns, store_columns)`` pairs output ``run_columns[j]`` with the
    store's label ``store_columns[j]`` (a store whose labels are named or
    ordered otherwise, :mod:`trainer.labels`); ``labels`` then holds those
    store columns and the BCE compares those pairs only. Default: the same
    columns (``M = C``).
    """
    model.eval()
    probs, labels, rows = [], [], []
    total, count = 0.0, 0
    for x, y, idx in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(x)
        logits = logits.float().cpu()
        scored = logits
        if label_columns is not None:
            scored, y = logits[:, label_columns[0]], y[:, label_columns[1]]
        if y.shape[1]:
            total += F.binary_cross_entropy_with_logits(scored, y, reduction="sum").item()
            count += y.numel()
        probs.append(torch.sigmoid(logits).numpy())
        labels.append(y.numpy())
        rows.append(idx.numpy())
    c = model.config.num_classes
    m = c if label_columns is None else len(label_columns[1])
    cat = lambda parts, shape: np.concatenate(parts) if parts else np.zeros(shape)
    return (
        cat(probs, (0, c)),
        cat(labels, (0, m)),
        cat(rows, (0,)).astype(np.int64),
        total / count if count else math.nan,
    )


# --------------------------------------------------------------------------
# The run directory
# --------------------------------------------------------------------------


def _config_dict(model_cfg: ModelConfig, train_cfg: TrainConfig, info: StoreInfo) -> dict:
    from . import __version__

    return {
        "trainer_version": __version__,
        "model": model_cfg.to_dict(),
        "train": asdict(train_cfg),
        "store": {
            "path": info.path,
            "n_frames": info.n_frames,
            "label_names": list(info.label_names),
            "exclusive_groups": [list(g) for g in info.exclusive_groups],
            "input_shape": list(info.shapes[train_cfg.input]),
            "identity": store_identity(info.path),
        },
    }


def store_identity(path) -> str:
    """A hash of what makes a store itself (creation time, parameters, input, layout).

    The same store copied or moved keeps it; another build does not.
    """
    attrs = open_store(path).attrs
    keys = ("created", "parameters", "input", "layout", "center")
    identity = json.dumps({key: attrs.get(key) for key in keys}, sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()


def _write_json(path: Path, data) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(type(value))


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def _write_csv(path: Path, history: list[dict]) -> None:
    with atomic_output(path, overwrite=True) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k) for k in CSV_FIELDS})


def _save_figure(fig, path: Path) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=100)


def _plot(run_dir: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] + 1 for row in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [row["train_loss"] for row in history], label="train loss (BCE + reg.)")
    ax.plot(epochs, [row["train_bce"] for row in history], label="train BCE")
    ax.plot(epochs, [row["eval_loss"] for row in history], label="eval BCE")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, run_dir / "loss.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("accuracy", "precision", "recall", "violation_rate"):
        ax.plot(epochs, [row[key] for row in history], label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("evaluation split")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, run_dir / "metrics.png")
    plt.close(fig)


def _best_over_training(history: list[dict]) -> dict:
    out = {}
    for key, larger in (
        ("accuracy", True),
        ("precision", True),
        ("recall", True),
        ("violation_rate", False),
        ("eval_loss", False),
    ):
        values = [row[key] for row in history]
        pick = max if larger else min
        i = values.index(pick(values))
        out[key] = {"value": values[i], "epoch": history[i]["epoch"]}
    return out


def _row(title: str, m: dict) -> str:
    return (
        f"| {title} | {m['accuracy']:.4f} | {m['precision']:.4f} | {m['recall']:.4f} "
        f"| {m['violation_rate']:.4f} |"
    )


def write_report(
    run_dir: Path,
    config: dict,
    history: list[dict],
    final: dict,
    best: dict,
    test: dict | None = None,
):
    """report.json and report.md from the history and the final / best-checkpoint metrics.

    ``test``: the best checkpoint's metrics on the test split (None without one).
    """
    report = {
        "epochs_run": len(history),
        "store": config["store"]["path"],
        "input": config["train"]["input"],
        "arch": config["model"]["arch"],
        "log_act": config["model"]["log_act"],
        "alpha": config["model"]["alpha"],
        "all_negative_accuracy": final.get("all_negative_accuracy"),
        "final": final,
        "best_checkpoint": best,
        "best_over_training": _best_over_training(history),
        "test": test,
    }
    _write_json(run_dir / "report.json", report)
    lines = [
        f"# Training report: {run_dir.name}",
        "",
        f"- store: `{report['store']}` ({config['train']['input']}), "
        f"ResNet-{report['arch']}, log activation "
        + (f"alpha={report['alpha']}" if report["log_act"] else "off"),
        f"- epochs run: {len(history)}; eval frames: {final['n_frames']}",
        f"- all-negative baseline accuracy: {report['all_negative_accuracy']:.4f}",
        "",
        "## Metrics on the evaluation (validation) split (§3.2, micro over all labels)",
        "",
        "| | accuracy | precision | recall | exclusivity violations |",
        "|---|---:|---:|---:|---:|",
        _row(f"final (epoch {history[-1]['epoch'] + 1})", final),
        _row(f"best checkpoint (epoch {best['epoch'] + 1})", best),
    ]
    bot = report["best_over_training"]
    lines.append(
        "| best over training (each its own epoch) "
        f"| {bot['accuracy']['value']:.4f} (ep. {bot['accuracy']['epoch'] + 1}) "
        f"| {bot['precision']['value']:.4f} (ep. {bot['precision']['epoch'] + 1}) "
        f"| {bot['recall']['value']:.4f} (ep. {bot['recall']['epoch'] + 1}) "
        f"| {bot['violation_rate']['value']:.4f} (ep. {bot['violation_rate']['epoch'] + 1}) |"
    )
    if test is None:
        lines += [
            "",
            (
                "No test split: the best checkpoint is chosen and scored on the same "
                "evaluation split, an optimistic figure (`--test-fraction`, docs/training.md)."
            ),
        ]
    else:
        lines += [
            "",
            f"## Test split ({test['n_frames']} frames), best checkpoint chosen on validation",
            "",
            "| | accuracy | precision | recall | exclusivity violations |",
            "|---|---:|---:|---:|---:|",
            _row(f"best checkpoint (epoch {test['epoch'] + 1})", test),
            "",
            f"All-negative accuracy on the test split: {test['all_negative_accuracy']:.4f}.",
            "",
            format_class_table(test["per_class"]),
        ]
    lines += [
        "",
        "## Per class, final epoch (Supplement Table 4)",
        "",
        format_class_table(final["per_class"]),
        "",
        f"## Per class, best checkpoint (epoch {best['epoch'] + 1})",
        "",
        format_class_table(best["per_class"]),
        "",
        "Exclusive groups: "
        + "; ".join(" / ".join(g) for g in config["store"]["exclusive_groups"])
        + ". A violation is a frame with more than one positive label in a group.",
        "",
        "![loss](loss.png) ![metrics](metrics.png)",
        "",
    ]
    with atomic_output(run_dir / "report.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(lines))
    return report


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def fit(
    run_dir,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Train a new run into ``run_dir`` (must not exist or be empty, unless ``overwrite``).

    Returns the report dict (rank 0; other DDP ranks get ``{}``).
    """
    run_dir = Path(run_dir)
    rank, _, _ = _dist_env()
    info = inspect_store(train_cfg.store, input_kind=train_cfg.input)
    # the store decides the input channels (one per angular order of its maps)
    model_cfg = replace(model_cfg, in_channels=info.channels(train_cfg.input))
    if model_cfg.num_classes != len(info.label_names):
        raise RunError(
            f"the model has {model_cfg.num_classes} outputs but the store has "
            f"{len(info.label_names)} labels"
        )
    if rank == 0:
        if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
            raise RunError(f"{run_dir} exists and is not empty (use --resume or a new --run-dir)")
        run_dir.mkdir(parents=True, exist_ok=True)
        split = run_split(train_cfg, info.n_frames)
        save_split(run_dir / "split.npz", split, train_cfg.seed)
        _write_json(run_dir / "config.json", _config_dict(model_cfg, train_cfg, info))
    return _train(run_dir, model_cfg, train_cfg, info, checkpoint=None, progress=progress)


def run_split(train_cfg: TrainConfig, n_frames: int) -> dict[str, np.ndarray]:
    """The rows a run trains, selects and tests on.

    Parameters
    ----------
    train_cfg : TrainConfig
        ``split_file`` (a saved split, e.g. a study's) or else ``eval_fraction``,
        ``test_fraction`` and ``seed`` over the first ``max_frames`` rows;
        then ``train_fraction`` of the training rows (:func:`~trainer.data.subsample`,
        seeded by ``seed``).
    n_frames : int
        Rows of the store.

    Returns
    -------
    dict
        ``{"train", "validation", "test"}`` sorted int64 row arrays.

    Raises
    ------
    RunError
        A split file with rows beyond the store, or an empty training set.
    """
    n = n_frames if train_cfg.max_frames is None else min(train_cfg.max_frames, n_frames)
    if train_cfg.split_file is not None:
        split = load_split(train_cfg.split_file)
        largest = max((int(rows.max()) for rows in split.values() if len(rows)), default=-1)
        if largest >= n:
            raise RunError(f"{train_cfg.split_file}: row {largest} is beyond the {n} frames used")
    else:
        split = split_three_ways(
            n, train_cfg.eval_fraction, train_cfg.test_fraction, train_cfg.seed
        )
    if train_cfg.train_fraction < 1:
        split["train"] = subsample(split["train"], train_cfg.train_fraction, train_cfg.seed)
    if not len(split["train"]):
        raise RunError("the split has no training frame")
    return split


#: TrainConfig fields that :func:`resume` may change.
RESUME_OVERRIDES = ("workers", "device", "store")


def resume(run_dir, *, epochs: int | None = None, progress: bool = True, **overrides) -> dict:
    """Continue a run from its ``last.pt`` (optionally to a larger number of ``epochs``).

    Parameters
    ----------
    run_dir : str or Path
        The run directory.
    epochs : int, optional
        The new total number of epochs; None keeps the saved one.
    progress : bool
        Show a progress bar (rank 0).
    **overrides
        Only these, each None (keep the saved value) or a new value:
        ``workers`` (DataLoader workers), ``device`` (``auto``, ``cpu``,
        ``cuda[:N]``) and ``store`` (the same store at another path; its
        label names must match). Everything else is the saved recipe.

    Returns
    -------
    dict
        The report (rank 0; other DDP ranks get ``{}``).

    Raises
    ------
    RunError
        Not a run directory, no ``last.pt``, an override outside the list
        above, or a store whose labels differ from the run's.
    """
    run_dir = Path(run_dir)
    config, checkpoint = _read_run(run_dir, "last")
    train_cfg = TrainConfig.from_dict(config["train"])
    bad = {  # giving the saved value again is no change
        k
        for k, v in overrides.items()
        if k not in RESUME_OVERRIDES and v is not None and v != getattr(train_cfg, k)
    }
    if bad:
        saved = ", ".join(f"{k} = {getattr(train_cfg, k)}" for k in sorted(bad))
        raise RunError(f"cannot change {sorted(bad)} when resuming (the run has {saved})")
    overrides = {k: v for k, v in overrides.items() if k in RESUME_OVERRIDES}
    if overrides.get("store") is not None:
        overrides["store"] = str(Path(overrides["store"]).resolve())
    if epochs is not None:
        overrides["epochs"] = epochs
    changes = {k: v for k, v in overrides.items() if v is not None and v != getattr(train_cfg, k)}
    train_cfg = replace(train_cfg, **changes)
    model_cfg = ModelConfig(**config["model"])
    info = inspect_store(train_cfg.store, input_kind=train_cfg.input)
    if list(info.label_names) != config["store"]["label_names"]:
        raise RunError(f"{train_cfg.store}: labels differ from the run's store")
    identity = config["store"].get("identity")  # runs made before it was recorded have none
    if identity is not None and store_identity(train_cfg.store) != identity:
        raise RunError(
            f"{train_cfg.store} is another store than the one {run_dir} was trained on "
            f"({config['store']['path']}); resume needs that store (moved or copied is fine)"
        )
    if _dist_env()[0] == 0 and changes:
        config["train"] = asdict(train_cfg)
        _write_json(run_dir / "config.json", config)
    return _train(run_dir, model_cfg, train_cfg, info, checkpoint=checkpoint, progress=progress)


def _train(run_dir, model_cfg, train_cfg, info, *, checkpoint, progress) -> dict:
    from tqdm import tqdm

    rank, world, local_rank = _dist_env()
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    device = _resolve_device(train_cfg.device, local_rank)
    distributed = world > 1
    if distributed and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
    if distributed:
        torch.distributed.barrier()  # rank 0 has written split.npz and config.json
    if device.type == "cuda":
        torch.cuda.set_device(device)
    split = load_split(run_dir / "split.npz")
    train_idx, eval_idx, test_idx = split["train"], split["validation"], split["test"]

    _seed_all(train_cfg.seed)
    model = build_model(model_cfg).to(device)
    channels_last = train_cfg.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    amp = train_cfg.amp and device.type == "cuda"
    optimizer = torch.optim.SGD(model.parameters(), lr=train_cfg.lr, momentum=train_cfg.momentum)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=train_cfg.lr_step, gamma=train_cfg.lr_gamma
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    history: list[dict] = []
    best = None
    start_epoch = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        history = list(checkpoint["history"])
        best = checkpoint["best"]
        start_epoch = checkpoint["epoch"] + 1
        _set_rng_state(checkpoint["rng"])
    train_model = model
    if distributed:
        if train_cfg.sync_bn and device.type == "cuda":  # SyncBatchNorm is GPU-only
            train_model = nn.SyncBatchNorm.convert_sync_batchnorm(train_model)
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None
        )
        model = train_model.module

    dataset = StoreDataset(
        train_cfg.store,
        train_cfg.input,
        flips=train_cfg.use_flips,
        normalize=train_cfg.normalize,
        seed=train_cfg.seed,
    )
    eval_dataset = StoreDataset(train_cfg.store, train_cfg.input, normalize=train_cfg.normalize)
    sampler = ChunkBatchSampler(
        train_idx,
        info.chunk_frames,
        train_cfg.batch_size,
        group_chunks=train_cfg.group_chunks,
        seed=train_cfg.seed,
        drop_last=len(train_idx) > train_cfg.batch_size,
        rank=rank,
        world_size=world,
    )
    eval_sampler = ChunkBatchSampler(
        eval_idx, info.chunk_frames, max(train_cfg.batch_size, 64), shuffle=False
    )
    pin = device.type == "cuda"
    loader = make_loader(dataset, sampler, train_cfg.workers, pin=pin)
    eval_loader = make_loader(eval_dataset, eval_sampler, 0 if distributed else train_cfg.workers)
    names = info.label_names
    groups = info.exclusive_groups
    better = BEST_METRICS[train_cfg.best_metric]
    show = progress and rank == 0
    config = json.loads((run_dir / "config.json").read_text()) if rank == 0 else None
    final = None  # metrics of the last epoch run in this call (rank 0)

    started = time.perf_counter()
    for epoch in range(start_epoch, train_cfg.epochs):
        if train_cfg.max_minutes is not None and epoch > start_epoch:
            out_of_time = torch.tensor(
                [float(time.perf_counter() - started > 60 * train_cfg.max_minutes)]
            )
            if distributed:
                torch.distributed.broadcast(out_of_time, 0)
            if out_of_time.item():
                log.warning(
                    "time limit of %s min reached after %d epochs", train_cfg.max_minutes, epoch
                )
                break
        sampler.set_epoch(epoch)
        train_model.train()
        lr = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        seen = 0
        sum_loss = sum_bce = 0.0
        bar = tqdm(
            total=len(sampler),
            desc=f"epoch {epoch + 1}/{train_cfg.epochs}",
            disable=not show,
            leave=False,
            dynamic_ncols=True,
        )
        for x, y, _ in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, enabled=amp):
                logits = train_model(x)
            bce = F.binary_cross_entropy_with_logits(logits.float(), y)
            loss = bce + regularization(model, train_cfg.l1, train_cfg.l2)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            n = len(x)
            seen += n
            loss_value = loss.item()
            sum_loss += loss_value * n
            sum_bce += bce.item() * n
            rate = seen * world / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_value:.4f}", samples_s=f"{rate:.1f}")
            bar.update()
        bar.close()
        scheduler.step()
        if distributed:
            sums = torch.tensor([sum_loss, sum_bce, seen], dtype=torch.float64)
            torch.distributed.all_reduce(sums)
            sum_loss, sum_bce, seen = sums.tolist()
        seconds = time.perf_counter() - t0
        if rank == 0:
            probs, labels, _, eval_bce = predict_probabilities(
                model, eval_loader, device, amp=amp, channels_last=channels_last
            )
            metrics = compute_metrics(labels, probs >= train_cfg.threshold, names, groups)
            row = {
                "epoch": epoch,
                "lr": lr,
                "train_loss": sum_loss / max(seen, 1),
                "train_bce": sum_bce / max(seen, 1),
                "eval_loss": eval_bce,
                "accuracy": metrics.accuracy,
                "precision": metrics.precision,
                "recall": metrics.recall,
                "violation_rate": metrics.violation_rate,
                "seconds": seconds,
                "samples_per_s": seen / seconds,
            }
            history.append(row)
            value = row[train_cfg.best_metric]
            improved = best is None or (value > best["value"] if better else value < best["value"])
            final = metrics.to_dict()
            final["all_negative_accuracy"] = all_negative_accuracy(labels)
            if improved:
                best = {"value": value, "epoch": epoch, "metric": train_cfg.best_metric, **final}
            state = {
                "version": CHECKPOINT_VERSION,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "epoch": epoch,
                "best": best,
                "history": history,
                "config": config,
                "rng": _rng_state(),
            }
            _save_checkpoint(run_dir / "last.pt", state)
            if improved:
                _save_checkpoint(run_dir / "best.pt", state)
            _write_csv(run_dir / "metrics.csv", history)
            msg = (
                f"epoch {epoch + 1}/{train_cfg.epochs}: loss {row['train_loss']:.4f}, "
                f"eval acc {metrics.accuracy:.4f} prec {metrics.precision:.4f} "
                f"rec {metrics.recall:.4f} viol {metrics.violation_rate:.3f}, "
                f"{row['samples_per_s']:.1f} samples/s"
            )
            log.info(msg)
            if show:
                tqdm.write(msg)
        if distributed:
            torch.distributed.barrier()

    del loader  # stop the persistent workers now, not at interpreter exit
    report: dict = {}
    if rank == 0 and history:
        if final is None:  # no epoch ran in this call (a finished run resumed): evaluate
            probs, labels, _, _ = predict_probabilities(
                model, eval_loader, device, amp=amp, channels_last=channels_last
            )
            metrics = compute_metrics(labels, probs >= train_cfg.threshold, names, groups)
            final = metrics.to_dict()
            final["all_negative_accuracy"] = all_negative_accuracy(labels)
        test = None
        if len(test_idx):
            test = _score_test(run_dir, model, eval_dataset, test_idx, info, train_cfg, device)
        _plot(run_dir, history)
        report = write_report(run_dir, config, history, final, best, test)
    del eval_loader
    if distributed:
        torch.distributed.barrier()
    return report


def _score_test(run_dir: Path, model, dataset, test_idx, info, train_cfg, device) -> dict:
    """The best checkpoint (chosen on validation) scored once on the test rows.

    Loads ``best.pt`` into ``model``, writes ``test.npz`` (``rows``, ``probs``
    (N, C) float32, ``labels`` (N, C) uint8) and returns the test metrics dict
    (with ``epoch`` of the checkpoint and ``all_negative_accuracy``).
    """
    best_state = torch.load(run_dir / "best.pt", map_location=device, weights_only=True)
    model.load_state_dict(best_state["model"])
    sampler = ChunkBatchSampler(test_idx, info.chunk_frames, max(train_cfg.batch_size, 64),
                                shuffle=False)  # fmt: skip
    probs, labels, rows, _ = predict_probabilities(model, make_loader(dataset, sampler, 0), device)
    with atomic_output(run_dir / "test.npz", overwrite=True) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, rows=rows, probs=probs.astype(np.float32), labels=labels.astype(np.uint8))
    metrics = compute_metrics(
        labels, probs >= train_cfg.threshold, info.label_names, info.exclusive_groups
    )
    return {
        **metrics.to_dict(),
        "epoch": int(best_state["epoch"]),
        "all_negative_accuracy": all_negative_accuracy(labels),
    }


# --------------------------------------------------------------------------
# Using a finished run
# --------------------------------------------------------------------------


def _read_run(run_dir: Path, which: str) -> tuple[dict, dict]:
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise RunError(f"{run_dir}: not a run directory (no config.json)")
    path = run_dir / f"{which}.pt"
    if not path.is_file():
        raise RunError(f"{run_dir}: no {which}.pt checkpoint")
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except ValueError as error:
        raise RunError(f"{run_dir / 'config.json'}: not readable JSON ({error})") from None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # code in the pickle: an older trainer's, or not ours
        raise RunError(
            f"{path}: not a checkpoint of this trainer (version {CHECKPOINT_VERSION} checkpoints "
            "hold plain data only; an older run cannot be resumed or used by this version)"
        ) from None
    except (RuntimeError, EOFError) as error:  # a damaged file
        raise RunError(f"{path}: not readable as a checkpoint ({error})") from None
    return config, checkpoint


def load_run(run_dir, which: str = "best", device: str = "cpu"):
    """``(model in eval mode, config dict, checkpoint epoch)`` of a run's checkpoint."""
    config, checkpoint = _read_run(Path(run_dir), which)
    model = build_model(ModelConfig(**config["model"]))
    model.load_state_dict(checkpoint["model"])
    model.to(_resolve_device(device)).eval()
    return model, config, checkpoint["epoch"]


def _loader_for(config: dict, store: str, rows: np.ndarray, workers: int, batch_size: int):
    train = TrainConfig.from_dict(config["train"])
    info = inspect_store(store, need_labels=False, input_kind=train.input)
    expected = tuple(config["store"]["input_shape"])
    if info.shapes[train.input] != expected:
        raise DataError(
            f"{store}: {train.input} frames are {info.shapes[train.input]}, the run was "
            f"trained on {expected}"
        )
    dataset = StoreDataset(store, train.input, normalize=train.normalize)
    sampler = ChunkBatchSampler(rows, info.chunk_frames, batch_size, shuffle=False)
    return make_loader(dataset, sampler, workers), info


def evaluate_run(
    run_dir,
    store: str | None = None,
    *,
    which: str = "best",
    subset: str | None = None,
    device: str = "cpu",
    workers: int = 0,
    batch_size: int = 64,
    label_map: dict[str, str] | None = None,
) -> tuple[Metrics, dict]:
    """§3.2 metrics of a run's checkpoint.

    ``subset``: ``"eval"`` (the run's eval (validation) split; the default when
    ``store`` is the run's own store or omitted), ``"test"`` (the run's test
    split) or ``"all"`` (every frame; the default for another store). The
    store's labels are matched to the run's by :func:`trainer.labels.match_labels`
    (case and punctuation aside, or through ``label_map``); only matched labels
    are scored. Returns ``(metrics, extra)`` where ``extra`` has
    ``all_negative_accuracy``, ``epoch``, ``store``, ``subset``,
    ``unscored_labels`` (run labels the store lacks) and ``ignored_labels``
    (store labels the run lacks).
    """
    model, config, epoch = load_run(run_dir, which, device)
    own = config["store"]["path"]
    store = own if store is None else str(Path(store).resolve())
    if subset is None:
        subset = "eval" if store == own else "all"
    info = inspect_store(store, need_labels=True)
    try:
        match = match_labels(config["store"]["label_names"], info.label_names, label_map)
    except ValueError as error:
        raise DataError(f"{store}: {error}") from None
    if subset in ("eval", "test"):
        rows = load_split(Path(run_dir) / "split.npz")[
            "validation" if subset == "eval" else "test"
        ]
        if not len(rows):
            raise RunError(f"{run_dir}: the run has no {subset} split")
    elif subset == "all":
        rows = np.arange(info.n_frames)
    else:
        raise ValueError(f"subset must be eval, test or all, got {subset!r}")
    loader, info = _loader_for(config, store, rows, workers, batch_size)
    dev = next(model.parameters()).device
    columns = (match.run_columns, match.store_columns)
    probs, labels, _, bce = predict_probabilities(model, loader, dev, label_columns=columns)
    threshold = config["train"]["threshold"]
    predicted = probs[:, match.run_columns] >= threshold
    groups = match.groups(info.exclusive_groups)
    metrics = compute_metrics(labels, predicted, match.names, groups)
    extra = {
        "all_negative_accuracy": all_negative_accuracy(labels),
        "epoch": epoch,
        "store": store,
        "subset": subset,
        "eval_loss": bce,
        "unscored_labels": list(match.unmatched_run),
        "ignored_labels": list(match.unmatched_store),
    }
    return metrics, extra


def predict_run(
    run_dir,
    store: str,
    out_csv,
    *,
    which: str = "best",
    device: str = "cpu",
    workers: int = 0,
    batch_size: int = 64,
    label_map: dict[str, str] | None = None,
) -> int:
    """Write ``row, index, p_<name>..., <name>..., true_<name>...`` per frame; returns the rows.

    ``row`` is the store row, ``index`` the frame index in the build's input
    (the store's ``index`` array), ``p_*`` the sigmoid probabilities and the
    label columns the 0/1 predictions at the run's threshold. Needs no labels;
    ``true_*`` are the store's labels matched to the run's
    (:func:`trainer.labels.match_labels`, with ``label_map``), when it has
    labels and they match.
    """
    model, config, _ = load_run(run_dir, which, device)
    names = config["store"]["label_names"]
    info = inspect_store(store, need_labels=False)
    match = None
    if info.has_labels:
        try:
            match = match_labels(names, info.label_names, label_map)
        except ValueError as error:
            if label_map:
                raise DataError(f"{store}: {error}") from None
            log.info("%s: labels not written (%s)", store, error)
    none = np.zeros(0, dtype=np.int64)
    columns = (none, none) if match is None else (match.run_columns, match.store_columns)
    loader, info = _loader_for(config, store, np.arange(info.n_frames), workers, batch_size)
    dev = next(model.parameters()).device
    probs, truth, rows, _ = predict_probabilities(model, loader, dev, label_columns=columns)
    frame_index = open_store(store)["index"][:][rows]
    threshold = config["train"]["threshold"]
    true_names = [] if match is None else [f"true_{n}" for n in match.names]
    write_probability_csv(
        out_csv, {"row": rows, "index": frame_index}, names, probs, threshold,
        dict(zip(true_names, np.asarray(truth, dtype=np.int64).T)),
    )  # fmt: skip
    return len(rows)


def write_probability_csv(path, lead: dict, names, probabilities, threshold: float, extra=None):
    """One CSV row per frame: ``lead`` columns, ``p_<name>``, ``<name>``, then ``extra``.

    Parameters
    ----------
    path : path
        Written to a temporary name and moved into place.
    lead, extra : dict of str to (N,) int array
        Integer columns before the probabilities (e.g. ``row``, ``index``)
        and after the labels (e.g. ``true_<name>``).
    names : list of str
        The C label names.
    probabilities : (N, C) array
        Sigmoid probabilities, written with 6 decimals.
    threshold : float
        ``<name>`` is 1 where the probability reaches it.
    """
    extra = extra or {}
    labels = (np.asarray(probabilities) >= threshold).astype(np.int64)
    header = [*lead, *(f"p_{n}" for n in names), *names, *extra]
    with atomic_output(Path(path), overwrite=True) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in range(len(labels)):
            writer.writerow(
                [int(column[r]) for column in lead.values()]
                + [f"{v:.6f}" for v in probabilities[r]]
                + labels[r].tolist()
                + [int(column[r]) for column in extra.values()]
            )


def step_throughput(
    model_cfg: ModelConfig,
    input_shape: tuple[int, int],
    *,
    batch_size: int = 48,
    steps: int = 10,
    device: str = "cpu",
    amp: bool = True,
    channels_last: bool = True,
) -> dict:
    """Samples per second of a training step on random data (the first 2 steps are warm-up)."""
    dev = _resolve_device(device)
    model = build_model(model_cfg).to(dev)
    cl = channels_last and dev.type == "cuda"
    use_amp = amp and dev.type == "cuda"
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(dev.type, enabled=use_amp)
    x = torch.randn(batch_size, model_cfg.in_channels, *input_shape, device=dev)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch_size, model_cfg.num_classes, device=dev) > 0.5).float()
    model.train()

    def step():
        with torch.autocast(dev.type, enabled=use_amp):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y) + regularization(
            model, 1e-5, 1e-5
        )
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return {"samples_per_s": steps * batch_size / elapsed, "step_s": elapsed / steps}
