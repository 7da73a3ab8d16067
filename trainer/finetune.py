"""Fine-tuning: start a run from another run's weights (``trainer fit STORE --init RUN``).

What carries over, and what is checked first (docs/training.md, "Fine-tuning
from few labels"):

* the network: the init run's :class:`~trainer.model.ModelConfig` (depth,
  width, activations) must be the new run's, the number of classes aside;
* the input: the same kind (maps or images), the same per-frame scaling, the
  same input shape, and the same map recipe (:func:`ccfkit.store.read_recipe`:
  the store's against the one of the init run's store; only the noise seed
  may differ, and for maps the stored image size);
* the labels, by name (:func:`trainer.labels.match_labels`: case and
  punctuation aside): the head's row of a label the init run has is copied,
  a label it lacks gets the fresh row of a new network (seeded by ``--seed``),
  an init label the new store lacks is dropped.

Every refusal is one line (:class:`~trainer.run_dir.RunError`) naming what
differs. The new run's ``config.json`` records, under ``init``, the init
run's path, the checkpoint used, its epoch and the SHA-256 of its file (the
weights are checked against it when training starts), and the label mapping.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .labels import LabelMatch, match_labels
from .model import ModelConfig
from .run_dir import RunError, read_run, run_recipe, store_recipe

__all__ = [
    "RECIPE_MAY_DIFFER",
    "InitRun",
    "check_init",
    "init_model_settings",
    "prepare_init",
    "read_init",
    "record_init",
    "start_from_init",
]

log = logging.getLogger(__name__)

#: Map-recipe parameters in which the new store may differ from the init run's
#: (they do not change what an input means); ``image_size`` too, for maps. The same
#: as those a run may be applied across (``trainer.inference.RECIPE_FREE``).
RECIPE_MAY_DIFFER = ("seed",)
#: ModelConfig fields that may differ from the init run's (the head is remade).
MODEL_MAY_DIFFER = ("num_classes",)


@dataclass(frozen=True)
class InitRun:
    """A run another run starts from.

    Attributes
    ----------
    path : str
        Its directory (absolute).
    which : str
        ``"best"`` or ``"last"``: the checkpoint used.
    config : dict
        Its config.json.
    weights : dict
        The checkpoint's ``model`` state dict (CPU tensors).
    epoch : int
        The checkpoint's epoch (0-based).
    sha256 : str
        Digest of the checkpoint file.
    """

    path: str
    which: str
    config: dict
    weights: dict
    epoch: int
    sha256: str

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.config["model"])

    @property
    def label_names(self) -> list[str]:
        return list(self.config["store"]["label_names"])


def read_init(path, which: str = "best") -> InitRun:
    """Read run ``path``'s ``which`` checkpoint (RunError: not a run, no such checkpoint)."""
    path = Path(path).resolve()
    config, _ = read_run(path, which)  # the checks and messages of a run directory
    data = (path / f"{which}.pt").read_bytes()
    checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return InitRun(
        path=str(path), which=which, config=config, weights=checkpoint["model"],
        epoch=int(checkpoint["epoch"]), sha256=hashlib.sha256(data).hexdigest(),
    )  # fmt: skip


def init_model_settings(path) -> dict:
    """The init run's ModelConfig fields but the store's (classes, channels), from config.json."""
    config_path = Path(path) / "config.json"
    try:
        model = json.loads(config_path.read_text())["model"]
    except (OSError, ValueError, KeyError):
        raise RunError(f"--init {path}: not a run directory (no readable config.json)") from None
    return {k: v for k, v in model.items() if k not in ("num_classes", "in_channels")}


def _differences(mine: dict, theirs: dict, skip=()) -> list[str]:
    """``"key VALUE (the init run's: VALUE)"`` for every key of ``theirs`` that differs."""
    return [
        f"{key} {mine.get(key)!r} (the init run's: {theirs[key]!r})"
        for key in theirs
        if key not in skip and mine.get(key) != theirs[key]
    ]


def check_init(init: InitRun, model_cfg: ModelConfig, train_cfg, info) -> LabelMatch:
    """Refuse an init run the new run cannot start from; the label match if it can.

    Parameters
    ----------
    init : InitRun
    model_cfg : ModelConfig
        The new run's network.
    train_cfg : TrainConfig
        The new run's recipe (``input``, ``normalize``).
    info : StoreInfo
        The new run's store (its label names: the store's or the label table's).

    Raises
    ------
    RunError
        One line naming what differs: network fields, the input kind or
        scaling, the input shape, the map recipe's parameters, or labels
        that cannot be matched by name (none at all, or two on one).
    """
    where = f"--init {init.path}"
    model = _differences(model_cfg.to_dict(), init.model_config.to_dict(), MODEL_MAY_DIFFER)
    if model:
        raise RunError(f"{where}: another network: {'; '.join(model)}")
    theirs = init.config["train"]
    mine = {"input": train_cfg.input, "normalize": train_cfg.input_normalize}
    init_input = {"input": theirs["input"], "normalize": _resolved_normalize(theirs)}
    shape = {"input_shape": list(info.shapes[train_cfg.input])}
    inputs = _differences({**mine, **shape}, {**init_input,
                          "input_shape": init.config["store"]["input_shape"]})  # fmt: skip
    if inputs:
        raise RunError(f"{where}: another input: {'; '.join(inputs)}")
    _check_recipe(init, info.path, train_cfg.input)
    try:
        match = match_labels(init.label_names, info.label_names)
    except ValueError as error:
        raise RunError(f"{where}: labels: {error}") from None
    if match.unmatched_store:
        log.warning("labels the init run lacks (fresh head rows): %s",
                    ", ".join(match.unmatched_store))  # fmt: skip
    return match


def _resolved_normalize(train: dict) -> str:
    from .data import resolve_normalize

    return resolve_normalize(train.get("normalize", "auto"), train.get("input", "ccf"))


def _check_recipe(init: InitRun, store: str, input_kind: str) -> None:
    """RunError naming the map-recipe parameters in which ``store`` differs from the init's."""
    theirs = run_recipe(init.config)
    mine = store_recipe(store)
    if theirs is None or mine is None:  # a run whose store is gone, a store written by hand
        unknown = f"--init {init.path}'s store" if theirs is None else store
        log.warning("the map recipe of %s is unknown: the recipes are not compared", unknown)
        return
    skip = RECIPE_MAY_DIFFER if input_kind == "images" else (*RECIPE_MAY_DIFFER, "image_size")
    differences = _differences(mine, theirs, skip)
    if differences:
        raise RunError(
            f"{store}: its maps were made with another recipe than those of --init "
            f"{init.path}: {'; '.join(differences)}"
        )


def prepare_init(model_cfg: ModelConfig, train_cfg, info) -> tuple:
    """``(train_cfg with the init run's absolute path, InitRun, LabelMatch)`` once checked.

    Reads ``train_cfg.init``'s ``train_cfg.init_checkpoint`` and refuses it
    as :func:`check_init` does.
    """
    init = read_init(train_cfg.init, train_cfg.init_checkpoint)
    match = check_init(init, model_cfg, train_cfg, info)
    return replace(train_cfg, init=init.path), init, match


def record_init(run_dir: Path, init: InitRun, match: LabelMatch) -> None:
    """Add the ``init`` entry (the provenance of the start) to ``run_dir``'s config.json."""
    from .run_dir import write_json

    config_path = Path(run_dir) / "config.json"
    config = json.loads(config_path.read_text())
    config["init"] = {
        "run": init.path,
        "checkpoint": f"{init.which}.pt",
        "epoch": init.epoch,
        "sha256": init.sha256,
        "store": init.config["store"]["path"],
        "labels": {new: old for old, new in zip(match.names, match.store_names)},
        "fresh_labels": list(match.unmatched_store),
        "dropped_labels": list(match.unmatched_run),
    }
    write_json(config_path, config)


def start_from_init(model: torch.nn.Module, run_dir: Path, label_names) -> None:
    """Load the init run's weights recorded in ``run_dir``'s config.json into ``model``.

    Every tensor but the head's is copied; the head's rows are copied per
    matched label (:func:`record_init`'s ``labels``), the others keep
    ``model``'s fresh values.

    Raises
    ------
    RunError
        The init checkpoint's file is no longer the one recorded (its SHA-256).
    """
    recorded = json.loads((Path(run_dir) / "config.json").read_text())["init"]
    init = read_init(recorded["run"], Path(recorded["checkpoint"]).stem)
    if init.sha256 != recorded["sha256"]:
        raise RunError(
            f"{recorded['run']}/{recorded['checkpoint']} changed since this run was made "
            "(its SHA-256 differs): start again with --init"
        )
    state = model.state_dict()
    old_rows = {name: i for i, name in enumerate(init.label_names)}
    for key, value in init.weights.items():
        if key.startswith("fc."):
            for new_row, name in enumerate(label_names):
                old = recorded["labels"].get(name)
                if old is not None:
                    state[key][new_row] = value[old_rows[old]].to(state[key].device)
        else:
            state[key] = value
    model.load_state_dict(state)
