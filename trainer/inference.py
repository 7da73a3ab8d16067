"""Using a finished run: load its checkpoint, evaluate it (§3.2), predict with it (docs/training.md).

A run is applied only to maps made as its training maps were: the store's
recipe (:func:`ccfkit.store.read_recipe`) is compared with the one the run
recorded, and a difference is refused with the fields named
(:func:`check_recipe`; ``allow_recipe_mismatch`` scores anyway, with a
warning). ``evaluate RUN`` on the run's own store checks that it is still
the store the run was trained on (:func:`~trainer.run_dir.store_identity`).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from ccfkit.atomic import atomic_output
from ccfkit.outputs import csv_with_header, writable_output

from .config import TrainConfig
from .data import (
    ChunkBatchSampler,
    DataError,
    StoreDataset,
    inspect_store,
    load_split,
    make_loader,
    open_store,
)
from .labels import match_labels
from .loop import predict_probabilities, resolve_device
from .metrics import Metrics, all_negative_accuracy, compute_metrics
from .model import ModelConfig, build_model
from .run_dir import RunError, read_run, run_recipe, store_identity, store_recipe

__all__ = [
    "RECIPE_FREE",
    "check_prediction_output",
    "check_recipe",
    "evaluate_run",
    "load_run",
    "predict_run",
    "store_probabilities",
    "write_probability_csv",
]

log = logging.getLogger(__name__)


def load_run(run_dir, which: str = "best", device: str = "cpu"):
    """``(model in eval mode, config dict, checkpoint epoch)`` of a run's checkpoint."""
    config, checkpoint = read_run(Path(run_dir), which)
    model = build_model(ModelConfig(**config["model"]))
    model.load_state_dict(checkpoint["model"])
    model.to(resolve_device(device)).eval()
    return model, config, checkpoint["epoch"]


#: Recipe parameters in which a store may differ from the run's training store (they do not
#: change what a map means); ``image_size`` too, for a run on the maps.
RECIPE_FREE = ("seed",)


def check_recipe(run_dir, config: dict, store, *, allow: bool = False) -> list[str]:
    """Refuse a store whose maps were made with another recipe than the run's training maps.

    Parameters
    ----------
    run_dir : path
        The run (named in the message).
    config : dict
        Its config.json.
    store : str or Path
        The store to apply the run to.
    allow : bool
        Log the differences as a warning instead of refusing.

    Returns
    -------
    list of str
        The differences, ``"orders [2] (the run's: [8])"`` each; empty when none.

    Raises
    ------
    RunError
        The recipes differ (and not ``allow``).
    """
    recorded = run_recipe(config)
    if recorded is None:
        log.warning("%s records no map recipe: the store's is not compared", run_dir)
        return []
    mine = store_recipe(store)
    if mine is None:
        log.warning("%s records no map recipe (a store written by hand): not compared with "
                    "%s's", store, run_dir)  # fmt: skip
        return []
    free = (
        RECIPE_FREE if config["train"].get("input") == "images" else (*RECIPE_FREE, "image_size")
    )
    differences = [
        f"{key} {mine.get(key)!r} (the run's: {recorded[key]!r})"
        for key in recorded
        if key not in free and mine.get(key) != recorded[key]
    ]
    if differences and not allow:
        raise RunError(
            f"{store}: its maps were made with another recipe than {run_dir}'s: "
            f"{'; '.join(differences)}; pass --allow-recipe-mismatch to apply the run anyway"
        )
    if differences:
        log.warning(
            "recipe mismatch allowed (--allow-recipe-mismatch): %s", "; ".join(differences)
        )
    return differences


def check_prediction_output(out, inputs) -> Path:
    """``out`` if ``trainer predict -o`` may write it (:func:`ccfkit.outputs.writable_output`).

    An existing file is replaced only when it is a predictions file (CSV with
    ``row,index,p_...`` or ``index,p_...`` columns, or HDF5 with the arrays
    ``index``, ``probabilities``, ``labels``); a ``.zarr`` output must not exist.
    """
    out = Path(out)
    kind = out.suffix.lower()
    recognise = None
    if kind == ".csv":
        store_csv, frames_csv = csv_with_header("row", "index"), csv_with_header("index")
        recognise = lambda path: store_csv(path) or frames_csv(path)
    elif kind in (".h5", ".hdf5"):
        recognise = _predictions_hdf5
    return writable_output(out, inputs=inputs, recognise=recognise, what="-o")


def _predictions_hdf5(path: Path) -> bool:
    """Whether ``path`` is an HDF5 predictions file (``trainer predict -o x.h5``)."""
    import h5py

    with h5py.File(path, "r") as handle:
        return set(handle.keys()) == {"index", "probabilities", "labels"}


def _check_own_store(run_dir, config: dict, store: str) -> None:
    """Refuse the run's own store path when it now holds another build than the run's."""
    identity = config["store"].get("identity")
    if identity is not None and store_identity(store) != identity:
        raise RunError(
            f"{store} is no longer the store {run_dir} was trained on (it was built again "
            "since); evaluate on it as another store: give its path and --subset all"
        )


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
    allow_recipe_mismatch: bool = False,
    predictions: bool = False,
) -> tuple[Metrics, dict]:
    """§3.2 metrics of a run's checkpoint.

    ``subset``: ``"eval"`` (the run's eval (validation) split; the default when
    ``store`` is the run's own store or omitted), ``"test"`` (the run's test
    split) or ``"all"`` (every frame; the default for another store). The
    store's labels are matched to the run's by :func:`trainer.labels.match_labels`
    (case and punctuation aside, or through ``label_map``); only matched labels
    are scored. Returns ``(metrics, extra)`` where ``extra`` has
    ``all_negative_accuracy``, ``epoch`` (the checkpoint's epoch counted from 0, as
    in the run's files), ``epochs_trained`` (``epoch + 1``), ``store``, ``subset``,
    ``unscored_labels`` (run labels the store lacks), ``ignored_labels``
    (store labels the run lacks) and ``recipe_mismatch`` (:func:`check_recipe`,
    with ``allow_recipe_mismatch``); with ``predictions``, also ``truth`` and
    ``predicted``: (N, C) bool arrays of the scored frames and matched labels.

    Raises
    ------
    RunError
        The store's recipe differs from the run's (:func:`check_recipe`), or
        the run's own store was built again since the run.
    """
    model, config, epoch = load_run(run_dir, which, device)
    own = config["store"]["path"]
    store = own if store is None else str(Path(store).resolve())
    if subset is None:
        subset = "eval" if store == own else "all"
    info = inspect_store(store, need_labels=True)
    mismatch = check_recipe(run_dir, config, store, allow=allow_recipe_mismatch)
    if store == own and subset in ("eval", "test"):  # the run's split: rows of that very store
        _check_own_store(run_dir, config, store)
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
    # the run's own groups (what its predictions must respect), whatever the store declares
    groups = match.run_groups(config["store"]["exclusive_groups"])
    metrics = compute_metrics(labels, predicted, match.names, groups)
    extra = {
        "all_negative_accuracy": all_negative_accuracy(labels),
        "epoch": epoch,
        "epochs_trained": epoch + 1,
        "store": store,
        "subset": subset,
        "eval_loss": bce,
        "unscored_labels": list(match.unmatched_run),
        "ignored_labels": list(match.unmatched_store),
        "recipe_mismatch": mismatch,
    }
    if predictions:
        extra.update(truth=np.asarray(labels).astype(bool), predicted=np.asarray(predicted))
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
    allow_recipe_mismatch: bool = False,
) -> int:
    """Write ``row, index, p_<name>..., <name>..., true_<name>...`` per frame; returns the rows.

    ``row`` is the store row, ``index`` the frame index in the build's input
    (the store's ``index`` array), ``p_*`` the sigmoid probabilities and the
    label columns the 0/1 predictions at the run's threshold. Needs no labels;
    ``true_*`` are the store's labels matched to the run's
    (:func:`trainer.labels.match_labels`, with ``label_map``), when it has
    labels and they match. A store of another recipe is refused
    (:func:`check_recipe`, unless ``allow_recipe_mismatch``).
    """
    if Path(out_csv).suffix.lower() != ".csv":  # HDF5 and Zarr are for predictions of frames
        raise DataError(f"-o {out_csv}: the predictions of a store are written as CSV; "
                        "name the file .csv")  # fmt: skip
    model, config, _ = load_run(run_dir, which, device)
    names = config["store"]["label_names"]
    info = inspect_store(store, need_labels=False)
    check_recipe(run_dir, config, store, allow=allow_recipe_mismatch)
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


def store_probabilities(
    run_dir, store, *, which: str = "best", device: str = "cpu", workers: int = 0,
    batch_size: int = 64,
) -> dict:  # fmt: skip
    """A run's probabilities for every row of a store, in row order.

    Returns
    -------
    dict
        ``probabilities`` (N, C) float32 sigmoid outputs, ``names`` (the run's
        C label names), ``threshold`` (the run's decision threshold),
        ``groups`` (the run's exclusive groups, lists of names).
    """
    model, config, _ = load_run(run_dir, which, device)
    info = inspect_store(store, need_labels=False)
    check_recipe(run_dir, config, store)
    loader, info = _loader_for(config, str(store), np.arange(info.n_frames), workers, batch_size)
    probs, _, rows, _ = predict_probabilities(model, loader, next(model.parameters()).device)
    out = np.empty(probs.shape, dtype=np.float32)
    out[rows] = probs
    return {
        "probabilities": out,
        "names": list(config["store"]["label_names"]),
        "threshold": float(config["train"]["threshold"]),
        "groups": [list(g) for g in config["store"].get("exclusive_groups", [])],
    }


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
