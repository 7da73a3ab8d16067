"""What a study file may contain: its sections, their keys, and the seeds (docs/study.md).

A misspelt section or key (``[tarin]``, ``[split] tset``) would otherwise be
read as "not given" and the study would run with the defaults; here it is an
error, in one line, that names the nearest valid name (:mod:`difflib`), found
before anything is created. The recipe sections (``[build]``, ``[model]``,
``[train]``) are checked against the fields of the three config classes, the
same way wherever a recipe key appears (the defaults, a table's ``set``,
``vary`` and ``arms``, a claim's ``a`` and ``b``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "KNOWN_KEYS",
    "PlanError",
    "check_config",
    "check_section_keys",
    "check_seed",
    "nearest_hint",
    "recipe_path_error",
]

#: The keys of every section that is not a recipe (a recipe's are the config classes' fields).
KNOWN_KEYS = {
    "study file": (
        "name", "seeds", "threads", "extends", "split", "data", "build", "build_options",
        "model", "train", "statistics", "tables", "claims",
    ),
    "[split]": ("validation", "test", "seed"),
    "[data]": ("simulate", "sources", "data_path", "labels_path"),
    "[statistics]": ("bootstrap", "seed", "level", "alpha"),
    "table": ("title", "set", "vary", "arms", "labels"),
    "claim": ("text", "table", "metric", "a", "b", "on"),
}  # fmt: skip


class PlanError(ValueError):
    """The study file cannot be used as written (one-line message)."""


def nearest_hint(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'train'?"``, or the list of known names when none is close."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; known: {', '.join(known)}"


def check_section_keys(where: str, section, known: Iterable[str]) -> None:
    """Refuse a section that is not a table, or one with a key not in ``known``.

    Raises
    ------
    PlanError
        One line naming the first unknown key and the nearest known one.
    """
    if not isinstance(section, dict):
        raise PlanError(f"{where} must be a table of keys, got {section!r}")
    for key in section:
        if key not in known:
            raise PlanError(f"{where}: unknown key {key!r}{nearest_hint(key, known)}")


def recipe_path_error(where: str, path: str, allowed: dict, reserved=()) -> str | None:
    """Why the dotted recipe ``path`` (``"build.noise"``) is not one, or None when it is.

    Parameters
    ----------
    where : str
        Where the path was written (the start of the message).
    path : str
        ``SECTION.KEY``.
    allowed : dict
        ``build`` / ``model`` / ``train`` / ``data`` -> the keys each may set
        (an arm's ``data``: how it sees the study's frames).
    reserved : sequence of str
        ``train`` keys the study sets itself.
    """
    section, _, key = path.partition(".")
    sections = ("build", "model", "train", "data")  # what a recipe is made of
    if section not in sections:
        return (
            f"{where}: {path!r} is not in {', '.join(sections)}{nearest_hint(section, sections)}"
        )
    if section == "train" and key in reserved:
        return f"{where}: train.{key} is set by the study itself, not by the study file"
    if key not in allowed[section]:
        return f"{where}: unknown {section} parameter {key!r}{nearest_hint(key, allowed[section])}"
    return None


def check_seed(where: str, value) -> int:
    """``value`` as a seed: an integer >= 0 (NumPy and torch take no negative seed)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise PlanError(f"{where} must be an integer >= 0 (below 2**63), got {value!r}")
    return value


def _check_numbers(config: dict) -> None:
    """The seeds, fractions and statistics settings, before anything runs."""
    seeds = config.get("seeds")
    if not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) != len(seeds):
        raise PlanError("seeds must be a non-empty list of distinct integers >= 0")
    for seed in seeds:
        check_seed("seeds", seed)
    for where, section in (("[split] seed", "split"), ("[statistics] seed", "statistics")):
        if "seed" in config.get(section, {}):
            check_seed(where, config[section]["seed"])
    simulate = config.get("data", {}).get("simulate")
    if isinstance(simulate, dict) and "seed" in simulate:
        check_seed("[data] simulate.seed", simulate["seed"])
    for key in ("validation", "test"):
        value = config.get("split", {}).get(key, 0.15)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise PlanError(f"[split] {key} must be a fraction between 0 and 1, got {value!r}")
    statistics = config.get("statistics", {})
    bootstrap = statistics.get("bootstrap", 1)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 1:
        raise PlanError(f"[statistics] bootstrap must be an integer >= 1, got {bootstrap!r}")
    for key in ("level", "alpha"):
        value = statistics.get(key, 0.5)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise PlanError(f"[statistics] {key} must be between 0 and 1, got {value!r}")
    threads = config.get("threads", 0)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise PlanError(f"threads must be an integer >= 0, got {threads!r}")


def _check_simulate(simulate) -> None:
    """``[data] simulate``: ``n``, ``seed`` and :class:`ccfkit.simulate.SimulationConfig` fields."""
    from dataclasses import fields

    from ccfkit.simulate import SimulationConfig

    known = {"n", "seed"} | {f.name for f in fields(SimulationConfig)}
    check_section_keys("[data] simulate", simulate, known)
    n = simulate.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PlanError(f"[data] simulate.n must be an integer >= 1, got {n!r}")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in simulate.items()
               if k not in ("n", "seed")}  # fmt: skip
    try:
        SimulationConfig(**options)
    except (TypeError, ValueError) as error:
        raise PlanError(f"[data] simulate: {error}") from None


def check_config(config: dict, allowed: dict, reserved=()) -> None:
    """Refuse a study configuration with an unknown section or key, or a bad seed.

    Parameters
    ----------
    config : dict
        From :func:`ccfsort.study_plan.load_config` (``extends`` already applied).
    allowed : dict
        ``build`` / ``model`` / ``train`` / ``build_options`` -> the keys each may set.
    reserved : sequence of str
        ``train`` keys the study sets itself.

    Raises
    ------
    PlanError
        One line: where, the unknown name, the nearest known one.
    """
    check_section_keys("the study file", config, KNOWN_KEYS["study file"])
    for section in ("split", "data", "statistics"):
        check_section_keys(f"[{section}]", config.get(section, {}), KNOWN_KEYS[f"[{section}]"])
    check_section_keys(
        "[build_options]", config.get("build_options", {}), allowed["build_options"]
    )
    for key in reserved:
        if key in config.get("train", {}) and isinstance(config["train"], dict):
            raise PlanError(f"[train] {key} is set by the study itself, not by the study file")
    for section in ("build", "model", "train"):
        check_section_keys(f"[{section}]", config.get(section, {}), allowed[section])
    tables = config.get("tables", {})
    if not isinstance(tables, dict):
        raise PlanError(f"tables must be [tables.NAME] sections, got {tables!r}")
    for name, spec in tables.items():
        check_section_keys(f"[tables.{name}]", spec, KNOWN_KEYS["table"])
    claims = config.get("claims", [])
    if not isinstance(claims, list):
        raise PlanError("claims must be a list of [[claims]] tables")
    for number, spec in enumerate(claims, 1):
        check_section_keys(f"claim {number}", spec, KNOWN_KEYS["claim"])
        if spec.get("table") not in tables:
            table = str(spec.get("table"))
            raise PlanError(f"claim {number}: no table {table!r}{nearest_hint(table, tables)}")
    if "simulate" in config.get("data", {}):
        _check_simulate(config["data"]["simulate"])
    _check_numbers(config)
