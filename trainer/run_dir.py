"""The run directory: its files, its checkpoints and the state a resumed run continues from.

A run directory holds (docs/training.md)::

    manifest.json  written first: says the directory is a run of this trainer and lists
                   the files the trainer writes in it (:data:`RUN_FILES`)
    config.json    the ModelConfig, the TrainConfig, what was read from the store and
                   the machine and versions (:func:`ccfkit.provenance.environment`)
    split.npz      train, eval (validation) and test frame indices (rows of the store)
    metrics.csv    one row per epoch: losses, eval metrics, lr, seconds, samples/s
    last.pt        checkpoint after the last finished epoch (resume from here)
    best.pt        checkpoint of the epoch with the best eval (validation) metric
    test.npz       with a test split: the best checkpoint's probabilities on it
    report.json    final and best metrics, per-class tables, violation rates,
                   and with a test split the best checkpoint's test metrics
    report.md      the same for people (:mod:`trainer.report`)
    loss.png, metrics.png

A checkpoint is a plain dict: ``version``, ``model``, ``optimizer``,
``scheduler``, ``scaler``, ``epoch`` (last finished, 0-based), ``best``,
``history``, ``config``, ``rng``. The order of the batches and the flips of
epoch ``e`` depend only on ``(seed, e)``, so a resumed run continues exactly.
Every file is written to a temporary name and moved into place.
``--overwrite`` removes only the files the manifest lists and refuses a
directory holding anything else (:func:`clear_run`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
import random
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from ccfkit.atomic import atomic_output

from .config import TrainConfig
from .data import (
    DataError,
    StoreInfo,
    load_split,
    open_store,
    save_split,
    split_three_ways,
    subsample,
)
from .label_table import read_label_table
from .model import ModelConfig
from .train_rows import training_rows

__all__ = [
    "CHECKPOINT_VERSION",
    "CSV_FIELDS",
    "RESUME_OVERRIDES",
    "RUN_FILES",
    "RUN_LABELS",
    "RUN_MANIFEST",
    "RunError",
    "checkpoint_state",
    "clear_run",
    "create_run",
    "read_run",
    "restore_rng_state",
    "resumed_configs",
    "run_labels",
    "run_recipe",
    "run_split",
    "save_checkpoint",
    "store_identity",
    "store_recipe",
    "write_json",
    "write_metrics_csv",
]

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
#: TrainConfig fields that :func:`trainer.loop.resume` may change.
RESUME_OVERRIDES = ("workers", "device", "store")
#: The run's copy of the label table it was trained on (``TrainConfig.labels``).
RUN_LABELS = "labels.csv"
#: Written first into a new run directory: the files below are the trainer's.
RUN_MANIFEST = "manifest.json"
#: Every file the trainer writes in a run directory (what ``--overwrite`` may remove).
RUN_FILES = (
    RUN_MANIFEST, "config.json", "split.npz", RUN_LABELS, "metrics.csv", "last.pt", "best.pt",
    "test.npz", "report.json", "report.md", "loss.png", "metrics.png",
)  # fmt: skip


class RunError(RuntimeError):
    """A run directory cannot be created, resumed or used as asked."""


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def write_json(path: Path, data) -> None:
    """``data`` as indented JSON (NumPy scalars as numbers), written atomically."""
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(type(value))


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """metrics.csv: one row per epoch of ``history``, columns :data:`CSV_FIELDS`."""
    with atomic_output(path, overwrite=True) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k) for k in CSV_FIELDS})


def store_identity(path) -> str:
    """A hash of what makes a store itself (its build's id, creation time, parameters, input).

    The same store copied or moved keeps it; another build does not.
    """
    attrs = open_store(path).attrs
    keys = ("build_id", "created", "parameters", "input", "layout", "center")
    identity = json.dumps({key: attrs.get(key) for key in keys}, sort_keys=True)
    return hashlib.sha256(identity.encode()).hexdigest()


def store_recipe(path) -> dict | None:
    """The store's map recipe as JSON-ready parameters (:func:`ccfkit.store.read_recipe`).

    None for a store that records no parameters (one written by hand).
    """
    from ccfkit.store import read_recipe

    group = open_store(path)
    if "parameters" not in group.attrs:
        return None
    return json.loads(json.dumps(read_recipe(group).parameters()))


def run_recipe(config: dict) -> dict | None:
    """The map recipe of the store a run was trained on, None where it cannot be known.

    Recorded in config.json; a run made before it was recorded has it from
    its store, when that store is still at its path and still the same
    (:func:`store_identity`).
    """
    from ccfkit.store import StoreError

    stored = config["store"]
    if "recipe" in stored:
        return stored["recipe"]
    path, identity = stored.get("path"), stored.get("identity")
    if path is None or identity is None or not (Path(path) / "zarr.json").is_file():
        return None
    try:
        return store_recipe(path) if store_identity(path) == identity else None
    except (DataError, StoreError):
        return None


def _config_dict(model_cfg: ModelConfig, train_cfg: TrainConfig, info: StoreInfo) -> dict:
    from ccfkit.provenance import environment

    from . import __version__

    return {
        "trainer_version": __version__,
        "environment": environment(("torch", "numpy")),
        "model": model_cfg.to_dict(),
        "train": asdict(train_cfg),
        "store": {
            "path": info.path,
            "n_frames": info.n_frames,
            "label_names": list(info.label_names),
            "exclusive_groups": [list(g) for g in info.exclusive_groups],
            "input_shape": list(info.shapes[train_cfg.input]),
            "identity": store_identity(info.path),
            "recipe": store_recipe(info.path),
        },
    }


def run_split(train_cfg: TrainConfig, n_frames: int) -> dict[str, np.ndarray]:
    """The rows a run trains, selects and tests on.

    Parameters
    ----------
    train_cfg : TrainConfig
        ``split_file`` (a saved split, e.g. a study's) or else ``eval_fraction``,
        ``test_fraction`` and ``seed`` over the first ``max_frames`` rows; with
        the label table ``labels``, only its rows (the split file's sets
        restricted to them, or the fractions over them);
        then ``train_fraction`` of the training rows (:func:`~trainer.data.subsample`,
        seeded by ``seed``), or ``train_frames`` / ``train_index``
        (:func:`~trainer.train_rows.training_rows`).
    n_frames : int
        Rows of the store.

    Returns
    -------
    dict
        ``{"train", "validation", "test"}`` sorted int64 row arrays.

    Raises
    ------
    RunError
        ``max_frames`` below 1, fractions that leave no training frame, a split
        file with rows outside the store, fewer than 2 training frames or an
        empty validation set (the best checkpoint is chosen on it).
    """
    if train_cfg.max_frames is not None and train_cfg.max_frames < 1:
        raise RunError(f"--max-frames must be >= 1, got {train_cfg.max_frames}")
    n = n_frames if train_cfg.max_frames is None else min(train_cfg.max_frames, n_frames)
    split = _split_file(train_cfg.split_file, n) if train_cfg.split_file is not None else None
    if train_cfg.labels is not None:  # the labelled frames only, split as a store of their own
        rows = read_label_table(train_cfg.labels, n_frames=n_frames).rows
        rows = rows[rows < n]
        if split is None:
            positions = _fractions(train_cfg, len(rows))
            split = {key: rows[where] for key, where in positions.items()}
        else:  # the split file's sets, restricted to the labelled rows
            split = {key: np.intersect1d(part, rows) for key, part in split.items()}
    elif split is None:
        split = _fractions(train_cfg, n)
    if train_cfg.train_fraction < 1:
        split["train"] = subsample(split["train"], train_cfg.train_fraction, train_cfg.seed)
    split["train"] = training_rows(split, train_cfg)  # --train-frames K, --train-index FILE
    _check_usable(split)
    return split


def _fractions(train_cfg: TrainConfig, n: int) -> dict[str, np.ndarray]:
    """:func:`~trainer.data.split_three_ways` of ``n`` rows by the run's fractions and seed."""
    try:
        return split_three_ways(
            n, train_cfg.eval_fraction, train_cfg.test_fraction, train_cfg.seed
        )
    except ValueError as error:
        raise RunError(f"--eval-fraction and --test-fraction: {error}") from error


def _split_file(path, n: int) -> dict[str, np.ndarray]:
    """A saved split (:func:`~trainer.data.load_split`) whose rows all lie in ``range(n)``."""
    split = load_split(path)
    together = np.concatenate(list(split.values()))
    if len(together) and together.min() < 0:
        raise RunError(f"{path}: row {int(together.min())} is negative: not a split of a store")
    if len(together) and together.max() >= n:
        raise RunError(f"{path}: row {int(together.max())} is beyond the {n} frames used")
    return split


def _check_usable(split: dict[str, np.ndarray]) -> None:
    """RunError unless the split trains on 2 frames or more and has a validation set."""
    if len(split["train"]) < 2:  # BatchNorm needs two values per channel in training
        raise RunError(f"the split has {len(split['train'])} training frame(s): 2 are needed")
    if not len(split["validation"]):  # the best checkpoint is chosen on it (docs/training.md)
        raise RunError(
            "the split has no validation frame, and the best checkpoint is chosen on it: "
            "give a larger --eval-fraction, more frames, or a --split file with eval rows"
        )


def create_run(
    run_dir: Path,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    info: StoreInfo,
    *,
    overwrite: bool = False,
) -> None:
    """Make ``run_dir`` with its ``split.npz`` and ``config.json``.

    Raises
    ------
    RunError
        ``run_dir`` exists and is not empty (unless ``overwrite``: then it
        must be a run directory holding only the trainer's files,
        :func:`clear_run`), lies inside a Zarr store, or the split is
        unusable (:func:`run_split`).
    """
    from ccfkit.outputs import inside_store

    store = inside_store(run_dir)
    if store is not None or (run_dir / "zarr.json").exists():
        raise RunError(f"--run-dir {run_dir} is inside the Zarr store {store or run_dir}: "
                       "choose a directory outside it")  # fmt: skip
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise RunError(f"{run_dir} exists and is not empty (use --resume or a new --run-dir)")
    split = run_split(train_cfg, info.n_frames)  # before anything is removed or written
    if run_dir.exists() and any(run_dir.iterdir()):
        _refuse_inputs_inside(run_dir, train_cfg)
        clear_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / RUN_MANIFEST, {"tool": "trainer", "files": list(RUN_FILES)})
    save_split(run_dir / "split.npz", split, train_cfg.seed)
    if train_cfg.labels is not None:  # the labels trained on, kept with the run
        shutil.copyfile(train_cfg.labels, run_dir / RUN_LABELS)
    write_json(run_dir / "config.json", _config_dict(model_cfg, train_cfg, info))


def _refuse_inputs_inside(run_dir: Path, train_cfg: TrainConfig) -> None:
    """RunError when a file the run reads lies in ``run_dir``, which ``--overwrite`` clears."""
    inputs = {"--labels": train_cfg.labels, "--init": train_cfg.init,
              "--split": train_cfg.split_file, "--train-index": train_cfg.train_index}  # fmt: skip
    cleared = run_dir.resolve()
    for option, path in inputs.items():
        if path is not None and cleared in (Path(path).resolve(), *Path(path).resolve().parents):
            raise RunError(
                f"{option} {path} lies in --run-dir {run_dir}, which --overwrite would clear: "
                "copy it elsewhere first, or choose another --run-dir"
            )


def clear_run(run_dir: Path) -> list[str]:
    """Remove the trainer's files from ``run_dir`` (for ``--overwrite``); return their names.

    Only what the run's :data:`RUN_MANIFEST` lists (and their ``.partial``
    leftovers) is removed, the manifest last.

    Raises
    ------
    RunError
        ``run_dir`` has no manifest (not a run directory of this trainer), or
        holds anything else (named, every one): nothing is removed then.
    """
    try:
        manifest = json.loads((run_dir / RUN_MANIFEST).read_text())
        own = set(manifest["files"]) if manifest.get("tool") == "trainer" else None
    except (OSError, ValueError, TypeError, KeyError):
        own = None
    if own is None:
        raise RunError(
            f"{run_dir} is not a run directory of this trainer (no readable {RUN_MANIFEST}): "
            "--overwrite removes only a run's own files; choose another --run-dir"
        )
    own |= {f"{name}.partial" for name in own}
    entries = sorted(run_dir.iterdir())
    foreign = [e.name + ("/" if e.is_dir() else "") for e in entries
               if e.name not in own or e.is_dir() or e.is_symlink()]  # fmt: skip
    if foreign:
        raise RunError(
            f"{run_dir} holds what the trainer did not write: {', '.join(foreign)}; "
            "--overwrite removes only a run's own files: move those away or choose another "
            "--run-dir"
        )
    removed = [e.name for e in entries if e.name != RUN_MANIFEST]
    for name in removed:
        (run_dir / name).unlink()
    (run_dir / RUN_MANIFEST).unlink(missing_ok=True)
    return removed


def run_labels(run_dir: Path, train_cfg: TrainConfig, info: StoreInfo) -> np.ndarray | None:
    """The labels a run trains on: its copy of the label table, dense (N, C) uint8.

    None when the run trains on the store's own labels (no ``labels`` table).
    """
    if train_cfg.labels is None:
        return None
    table = read_label_table(run_dir / RUN_LABELS, info.label_names, info.n_frames)
    return table.dense(info.n_frames)


# --------------------------------------------------------------------------
# Checkpoints and the state of a resumed run
# --------------------------------------------------------------------------


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


def restore_rng_state(state: dict) -> None:
    """Set torch's, NumPy's, Python's (and CUDA's) generators to a checkpoint's ``rng``."""
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, python_state, gauss_next = state["python"]
    random.setstate((version, tuple(python_state), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_state(
    model, optimizer, scheduler, scaler, *, epoch: int, best, history, config
) -> dict:
    """The checkpoint dict after ``epoch`` (the generators' states included)."""
    return {
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


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` to a temporary name, then moved into place.

    Raises
    ------
    RunError
        The file could not be written (e.g. a full disk); the checkpoint at
        ``path`` is then the one before.
    """
    try:
        with atomic_output(path, overwrite=True) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as error:  # torch reports a failed write as a RuntimeError
        reason = getattr(error, "strerror", None) or " ".join(str(error).split())[:160]
        raise RunError(
            f"{path}: the checkpoint could not be written ({reason}); {path.name} is unchanged"
        ) from error


def read_run(run_dir, which: str) -> tuple[dict, dict]:
    """``(config.json, checkpoint)`` of a run; ``which`` is ``"best"`` or ``"last"``.

    Raises
    ------
    RunError
        Not a run directory, no such checkpoint, or one that is damaged or
        not plain data (an older trainer's).
    """
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


def resumed_configs(config: dict, epochs: int | None, overrides: dict) -> tuple[TrainConfig, dict]:
    """The saved TrainConfig with the allowed changes, and those changes.

    Parameters
    ----------
    config : dict
        The run's config.json.
    epochs : int, optional
        The new total number of epochs; None keeps the saved one.
    overrides : dict
        Field name to value (None: keep); only :data:`RESUME_OVERRIDES` may
        differ from the saved values. A ``store`` path is made absolute.

    Returns
    -------
    (TrainConfig, dict)
        The config to train with, and the fields that changed.

    Raises
    ------
    RunError
        An override outside :data:`RESUME_OVERRIDES` that changes a value.
    """
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
    return replace(train_cfg, **changes), changes


def check_same_store(run_dir: Path, config: dict, train_cfg: TrainConfig, info: StoreInfo) -> None:
    """Raise RunError unless ``train_cfg.store`` is the store the run was trained on.

    The labels must match; so must :func:`store_identity` where the run
    recorded it (runs made before it was recorded have none).
    """
    if list(info.label_names) != config["store"]["label_names"]:
        raise RunError(f"{train_cfg.store}: labels differ from the run's store")
    identity = config["store"].get("identity")
    if identity is not None and store_identity(train_cfg.store) != identity:
        raise RunError(
            f"{train_cfg.store} is another store than the one {run_dir} was trained on "
            f"({config['store']['path']}); resume needs that store (moved or copied is fine)"
        )
