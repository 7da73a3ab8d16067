"""A study's plan: a TOML file (or a shipped preset) -> arms, tables and claims.

The file (docs/study.md) has these sections::

    name, seeds                  the study's name and the training seeds of every arm
    [split]                      validation, test, seed: one three-way split for all arms
    [data]                       simulate = {n, seed, ...} or sources = [...]; data_path, labels_path
    [build], [build_options]     store parameters (BuildConfig) / how to build (BuildOptions)
    [model], [train]             ModelConfig / TrainConfig fields, the defaults of every arm
    [statistics]                 bootstrap resamples, its seed, the confidence level, alpha
    [tables.NAME]                title; set = {...}; vary = {...} (a grid) or arms = [...]
    [[claims]]                   text, table, metric, a = {...}, b = {...}: "a beats b";
                                 on = "test" (the split) or "eval-source" (each --eval-source)

An *arm* is one full recipe (build, model and train parameters); arms with
the same recipe in several tables (e.g. images without noise at alpha = 0.2
in Tables 4, 5 and 6) are one arm, trained once per seed. Every ``build``
key is a store parameter of :class:`ccfkit.build_config.BuildConfig` (lists
become tuples), so a parameter the build learns later works here as soon as
it exists; ``recipe = "paper"`` starts from the paper's map. An unknown
section or key anywhere is an error that names the nearest known one
(:mod:`ccfsort.study_schema`).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

from .study_schema import PlanError, check_config, recipe_path_error

__all__ = [
    "Arm",
    "Claim",
    "Column",
    "PlanError",
    "StudyPlan",
    "Table",
    "apply_override",
    "build_config",
    "load_config",
    "make_plan",
    "preset_names",
]

#: Sections whose keys make an arm's recipe, in order.
SECTIONS = ("build", "model", "train")
#: TrainConfig fields the study sets itself (the split, the store, the seed, the
#: study-level ``threads``).
RESERVED_TRAIN = (
    "store",
    "split_file",
    "seed",
    "eval_fraction",
    "test_fraction",
    "max_frames",
    "threads",
)
#: TrainConfig fields a study file may not set either: the study's frames and labels are
#: its sources' (a label table would train and test each arm on other frames and labels).
#: Unlike :data:`RESERVED_TRAIN` they stay in an arm's recipe (at their default), so that
#: the arms' keys are those of studies made before.
NOT_IN_A_STUDY = ("labels",)
_NOT_FROM_THE_FILE = RESERVED_TRAIN + NOT_IN_A_STUDY
#: Keys of an arm's ``data``: how it sees the study's frames (:attr:`Arm.geometry`).
ARM_DATA_KEYS = ("geometry",)
#: ``data.geometry`` of an arm that sees the frames of the flat, regular detector.
FLAT_DETECTOR = "none"
#: Metrics a claim may compare (micro-averaged, §3.2).
CLAIM_METRICS = ("accuracy", "precision", "recall")

#: The frames a claim may be judged on: the test split, or every frame of each --eval-source.
CLAIM_FRAMES = ("test", "eval-source")
DEFAULT_STATISTICS = {"bootstrap": 2000, "seed": 0, "level": 0.95, "alpha": 0.05}


@dataclass(frozen=True)
class Arm:
    """One recipe, trained once per seed.

    Attributes
    ----------
    key : str
        A hash of the recipe with every default filled in (10 hex digits):
        equal recipes, equal keys, however they were written.
    name : str
        Directory name: the first table and column that use it, plus the key.
    build, model, train : dict
        BuildConfig, ModelConfig (without ``num_classes``) and TrainConfig
        fields (without the reserved ones), as the study file gives them
        (the defaults of the three classes fill the rest).
    data : dict
        How the arm sees the study's data: ``{"geometry": NAME_OR_FILE}``
        simulates the same particles as module stacks of that detector
        (``ccfkit simulate --geometry``); ``{}`` (or ``"none"``) the flat detector.
    """

    key: str
    name: str
    build: dict
    model: dict
    train: dict
    data: dict = field(default_factory=dict)

    @property
    def geometry(self) -> str | None:
        """The detector of the arm's module stacks, or None (the study's frames as they are)."""
        value = self.data.get("geometry", FLAT_DETECTOR)
        return None if value == FLAT_DETECTOR else value


@dataclass(frozen=True)
class Column:
    """A column of a table: its label, its arm and the values that set it apart."""

    label: str
    arm: str
    values: dict  # dotted path -> value


@dataclass(frozen=True)
class Table:
    """One of the paper's tables: columns of arms, laid out as the paper does."""

    name: str
    title: str
    columns: tuple[Column, ...]
    axes: tuple[str, ...]  # the varied dotted paths (a grid); () for explicit arms


@dataclass(frozen=True)
class Claim:
    """ "Arm ``a`` beats arm ``b`` on ``metric``", tested over seeds and test frames."""

    text: str
    table: str
    metric: str
    a: str  # arm keys
    b: str
    on: str = "test"  # the frames it is judged on: "test" (split) or "eval-source"


@dataclass(frozen=True)
class StudyPlan:
    """The resolved study: its configuration, seeds, arms, tables and claims."""

    config: dict
    seeds: tuple[int, ...]
    arms: dict  # key -> Arm, in the order the tables first use them
    tables: tuple[Table, ...]
    claims: tuple[Claim, ...]

    @property
    def name(self) -> str:
        return self.config["name"]

    @property
    def statistics(self) -> dict:
        return {**DEFAULT_STATISTICS, **self.config.get("statistics", {})}


# --------------------------------------------------------------------------
# Reading and overriding
# --------------------------------------------------------------------------


def preset_names() -> list[str]:
    """The presets shipped in ``ccfsort/presets`` (file names without ``.toml``)."""
    folder = resources.files("ccfsort") / "presets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_config(study: str, overrides=()) -> dict:
    """The study's configuration: a TOML file or a preset name, then ``KEY=VALUE`` overrides.

    Parameters
    ----------
    study : str
        A path to a ``.toml`` file, or a preset name (:func:`preset_names`).
        A file with ``extends = "OTHER"`` (a file or preset) starts from
        OTHER's configuration.
    overrides : sequence of str
        ``dotted.key=VALUE``; VALUE is read as a TOML value (``3``, ``[0, 1]``,
        ``"max"``, ``true``), else taken as a string.

    Returns
    -------
    dict
        The nested configuration.

    Raises
    ------
    PlanError
        No such file or preset, bad TOML, a malformed override.
    """
    path = Path(study)
    if path.is_file():
        text = path.read_text()
    elif study in preset_names():
        text = (resources.files("ccfsort") / "presets" / f"{study}.toml").read_text()
    else:
        raise PlanError(
            f"{study}: no such study file or preset (presets: {', '.join(preset_names())})"
        )
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PlanError(f"{study}: {error}") from None
    if "extends" in config:
        config = _extend(load_config(config.pop("extends")), config)
    config.setdefault("name", path.stem)
    for override in overrides:
        apply_override(config, override)
    return config


def _extend(base: dict, child: dict) -> dict:
    """``child`` on top of ``base``: tables merge key by key; ``tables`` and ``claims`` replace."""
    out = copy.deepcopy(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "tables":
            out[key] = _extend(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(config: dict, override: str) -> None:
    """Set ``config[a][b]... = value`` from ``"a.b...=value"`` (in place).

    Raises
    ------
    PlanError
        No ``=``, an empty key, or a key that runs through a non-table value.
    """
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise PlanError(f"--set {override!r}: expected dotted.key=VALUE")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise PlanError(f"--set {override!r}: {part!r} is not a table")
    node[parts[-1]] = value


# --------------------------------------------------------------------------
# Arms, tables, claims
# --------------------------------------------------------------------------


def _flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (TOML dotted keys read back as paths)."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _allowed_keys() -> dict[str, set]:
    from ccfkit.build_config import BuildConfig, BuildOptions
    from trainer.config import TrainConfig
    from trainer.model import ModelConfig

    return {
        "build": {*BuildConfig.parameter_keys(), "recipe"},
        "model": {f.name for f in fields(ModelConfig)} - {"num_classes"},
        "train": {f.name for f in fields(TrainConfig)} - set(_NOT_FROM_THE_FILE),
        "build_options": {f.name for f in fields(BuildOptions)},
        "data": set(ARM_DATA_KEYS),
    }


def build_config(build: dict):
    """A :class:`ccfkit.build_config.BuildConfig` from an arm's ``build`` table.

    Its keys are a store's ``parameters`` (lists read as tuples), and
    ``recipe``: a named recipe the others change (``"paper"``).
    """
    from ccfkit.build_config import BuildConfig

    return BuildConfig.from_parameters(build)


def _recipe(config: dict, values: dict) -> dict:
    """The defaults' sections with the dotted ``values`` set on top."""
    recipe = {section: copy.deepcopy(config.get(section, {})) for section in SECTIONS}
    recipe["data"] = {}  # the arm's view of [data], set only by a table
    for path, value in values.items():
        section, _, key = path.partition(".")
        recipe[section][key] = value
    return recipe


def _check_recipe(recipe: dict, where: str, allowed: dict) -> dict:
    """The recipe with every default filled in (what the arm's key is made of).

    Raises
    ------
    PlanError
        Unknown keys and values the three config classes refuse (one line).
    """
    from ccfkit.io.source import InputError
    from trainer.config import TrainConfig
    from trainer.model import ModelConfig

    for section in SECTIONS:
        for key in recipe[section]:
            error = recipe_path_error(where, f"{section}.{key}", allowed, _NOT_FROM_THE_FILE)
            if error:
                raise PlanError(error)
    try:
        full = {
            "build": build_config(recipe["build"]).parameters(),
            "model": asdict(ModelConfig(num_classes=1, **recipe["model"])),
            "train": asdict(TrainConfig(store="", **recipe["train"])),
        }
    except (InputError, ValueError, TypeError) as error:
        raise PlanError(f"{where}: {error}") from None
    geometry = recipe["data"].get("geometry", FLAT_DETECTOR)
    if not isinstance(geometry, str) or not geometry:
        raise PlanError(f"{where}: data.geometry must be a detector name or a geometry file")
    if geometry != FLAT_DETECTOR:  # flat arms keep the keys they had before arms had data
        full["data"] = {"geometry": geometry}
    if full["train"]["input"] == "images" and not full["build"]["image_size"]:
        raise PlanError(f"{where}: an images arm needs build.image_size (the stored frames)")
    del full["model"]["num_classes"]
    for key in RESERVED_TRAIN:
        del full["train"][key]
    return full


def _arm_key(recipe: dict) -> str:
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _label(values: dict) -> str:
    """``"noise=max, input=ccf"`` from dotted values (last path component)."""
    return ", ".join(f"{path.rsplit('.', 1)[-1]}={value}" for path, value in values.items())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")[:40]


def _table_columns(name: str, spec: dict) -> tuple[list[dict], tuple[str, ...]]:
    """The dotted values of each column, and the varied paths (a grid's axes)."""
    fixed = _flatten(spec.get("set", {}))
    if "vary" in spec and "arms" in spec:
        raise PlanError(f"table {name}: give either vary (a grid) or arms (a list), not both")
    if "vary" in spec:
        vary = _flatten(spec["vary"])
        for path, values in vary.items():
            if not isinstance(values, list) or not values:
                raise PlanError(f"table {name}: vary.{path} must be a non-empty list")
        axes = tuple(vary)
        combos = [dict(zip(axes, combo)) for combo in itertools.product(*vary.values())]
        return [{**fixed, **combo} for combo in combos], axes
    arms = spec.get("arms")
    if not isinstance(arms, list) or not arms:
        raise PlanError(f"table {name}: needs vary = {{...}} or arms = [{{...}}, ...]")
    return [{**fixed, **_flatten(arm)} for arm in arms], ()


def _differing(columns: list[dict]) -> list[dict]:
    """Each column's values that are not the same in every column (what labels show)."""
    paths = {p for column in columns for p in column}
    same = {p for p in paths if all(c.get(p, None) == columns[0].get(p, None) for c in columns)}
    return [{p: v for p, v in column.items() if p not in same} for column in columns]


def make_plan(config: dict, tables: list[str] | None = None) -> StudyPlan:
    """Check a configuration and expand it into arms, tables and claims.

    Parameters
    ----------
    config : dict
        From :func:`load_config`.
    tables : list of str, optional
        Keep only these tables (and the claims about them); default all.

    Returns
    -------
    StudyPlan

    Raises
    ------
    PlanError
        Anything the study cannot run as written, found before anything runs.
    """
    allowed = _allowed_keys()
    check_config(config, allowed, _NOT_FROM_THE_FILE)
    seeds = config["seeds"]
    all_tables = config.get("tables", {})
    if tables is not None:
        missing = sorted(set(tables) - set(all_tables))
        if missing:
            raise PlanError(f"no such table(s) {missing}; the study has {sorted(all_tables)}")
        all_tables = {name: all_tables[name] for name in tables}
    if not all_tables:
        raise PlanError("the study has no tables")
    data = config.get("data", {})
    if ("simulate" in data) == ("sources" in data):
        raise PlanError("[data] needs exactly one of simulate = {...} and sources = [...]")
    arms: dict[str, Arm] = {}
    out_tables = []
    for name, spec in all_tables.items():
        column_values, axes = _table_columns(name, spec)
        labels = spec.get("labels") or [
            _label(differs) or _label(values) or name
            for differs, values in zip(_differing(column_values), column_values)
        ]
        if len(labels) != len(column_values):
            raise PlanError(f"table {name}: {len(labels)} labels for {len(column_values)} columns")
        columns = []
        for label, values in zip(labels, column_values):
            for path in values:
                error = recipe_path_error(f"table {name}", path, allowed, _NOT_FROM_THE_FILE)
                if error:
                    raise PlanError(error)
            recipe = _recipe(config, values)
            full = _check_recipe(recipe, f"table {name}, column {label!r}", allowed)
            key = _arm_key(full)
            if key not in arms:
                arms[key] = Arm(key, f"{name}-{_slug(label)}-{key[:6]}", **recipe)
            columns.append(Column(str(label), key, values))
        out_tables.append(Table(name, spec.get("title", name), tuple(columns), axes))
    if "simulate" not in data and any(arm.geometry for arm in arms.values()):
        raise PlanError("data.geometry simulates module stacks: it needs [data] simulate = {...}")
    claims = tuple(
        _claim(spec, {t.name: t for t in out_tables})
        for spec in config.get("claims", [])
        if spec.get("table") in all_tables
    )
    return StudyPlan(config, tuple(int(s) for s in seeds), arms, tuple(out_tables), claims)


def _claim(spec: dict, tables: dict) -> Claim:
    """Resolve a claim's ``a`` and ``b`` to arms.

    A side picks the column that has all its values and sets the fewest
    others; two such columns are an error.
    """
    text = spec.get("text", "?")
    metric = spec.get("metric", "accuracy")
    if metric not in CLAIM_METRICS:
        raise PlanError(f"claim {text!r}: metric must be one of {CLAIM_METRICS}")
    on = spec.get("on", "test")
    if on not in CLAIM_FRAMES:
        raise PlanError(f"claim {text!r}: on must be one of {CLAIM_FRAMES}, got {on!r}")
    table = tables[spec["table"]]
    keys = []
    for side in ("a", "b"):
        want = _flatten(spec.get(side, {}))
        for path in want:
            error = recipe_path_error(f"claim {text!r}, {side}", path, _allowed_keys())
            if error:
                raise PlanError(error)
        found = [c for c in table.columns if all(c.values.get(p) == v for p, v in want.items())]
        # of the columns that have these values, the one that sets the fewest others
        # ({} is the column that changes nothing)
        extra = sorted(len(set(c.values) - set(want)) for c in found)
        if not found or (len(extra) > 1 and extra[0] == extra[1]):
            raise PlanError(
                f"claim {text!r}: {side} = {want} matches {len(found)} columns of table "
                f"{table.name}, not one"
            )
        keys.append(min(found, key=lambda c: len(set(c.values) - set(want))).arm)
    return Claim(text, table.name, metric, keys[0], keys[1], on)
