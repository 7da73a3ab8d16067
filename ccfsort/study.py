"""``trainer study``: the paper's Tables 4-6 as one resumable command (docs/study.md).

A study directory holds::

    study.json        the resolved study file, the command, versions, CPU (provenance),
                      and the earlier commands whose tables the report still shows
    data/             simulated.cxi and simulated.json (when [data] simulate is used)
    split.npz         the three-way split of the frames (train, eval = validation, test)
    split.json        how it was drawn (frames, fractions, seed)
    stores/           one ccfkit store per distinct (source, build parameters), reused
    runs/ARM/seed-S/  a normal ``trainer fit`` run directory per arm and seed
    scores/           each run scored on every --eval-source (JSON, reused)
    baselines/        the RBF SVM's predictions per (frames, noise, rings): on the test
                      split, and on every frame of each --eval-source; reused
    report.md, report.json, TABLE.png  one report for every table run here

Everything is made once: the data, the split and a store are reused when they
exist with the same parameters (and refused when they exist with others); a
run with a ``test.npz`` is finished and skipped; a run with a ``last.pt`` is
resumed. Arms run one after another, or as tasks of a Dask cluster
(``scheduler``), whose workers must see the study directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from trainer.run_dir import write_json

from .study_baseline import svm_baselines
from .study_eval import (
    METRIC_KEYS,
    baselines,
    constant_baselines,
    per_class_summary,
    score_on_source,
    source_content,
    source_result,
)
from .study_eval import summarise as _summary
from .study_plan import PlanError, StudyPlan, build_config

__all__ = [
    "RunJob",
    "StudyError",
    "arm_source",
    "baselines",
    "is_finished",
    "record_invocation",
    "reuse_arm_directories",
    "run_job",
    "run_study",
    "score_on_source",
    "svm_baselines",
]

log = logging.getLogger(__name__)


class StudyError(RuntimeError):
    """The study directory cannot be used as asked (one-line message)."""


# --------------------------------------------------------------------------
# Small files
# --------------------------------------------------------------------------


def _canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=list)


def _digest(value) -> str:
    return hashlib.sha1(_canonical(value).encode()).hexdigest()[:10]


def _same_or_new(path: Path, record: dict, what: str) -> bool:
    """True when ``path`` holds ``record`` (reuse); False when absent; StudyError otherwise."""
    if not path.is_file():
        return False
    stored = json.loads(path.read_text())
    if _canonical(stored) != _canonical(json.loads(_canonical(record))):
        raise StudyError(
            f"{path}: the study directory holds {what} made with other parameters "
            "(use another study directory)"
        )
    return True


def cpu_name() -> str:
    """The CPU model and the usable core count (:mod:`ccfkit.provenance`)."""
    from ccfkit.provenance import cpu_model, usable_cpus

    return f"{cpu_model()}, {usable_cpus()} usable cores"


def environment() -> dict:
    """Versions and machine, for provenance (:func:`ccfkit.provenance.environment`)."""
    from ccfkit.provenance import environment as described
    from trainer import __version__

    return {"trainer": __version__, **described(("torch", "numpy")), "cpu": cpu_name()}


def record_invocation(out: Path, record: dict) -> None:
    """Write ``study.json``: this command's ``record``, and the earlier ones still reported.

    The top-level keys are this command's (its configuration, sources,
    command, environment); ``invocations`` lists every command whose tables
    the report still shows: an earlier one all of whose tables this command
    runs again is dropped.
    """
    path = out / "study.json"
    try:
        previous = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        previous = {}
    earlier = previous.get("invocations")
    if earlier is None and "config" in previous:  # written before invocations were kept
        earlier = [{**previous, "tables": sorted(previous["config"].get("tables", {}))}]
    mine = set(record["tables"])
    kept = [i for i in earlier or [] if not set(i.get("tables", [])) <= mine]
    write_json(path, {**record, "invocations": [*kept, record]})


def reuse_arm_directories(plan: StudyPlan, out: Path) -> StudyPlan:
    """The plan with each arm named as its existing run directory, if it has one.

    An arm's directory name ends with its recipe's key; a recipe first run
    under another table or label (another ``--tables`` run, or a study that
    ``extends`` this one, into the same directory) has a directory of another
    name, which is reused: a recipe is trained once per seed, whatever its label.
    """
    runs = out / "runs"
    arms = {}
    for key, arm in plan.arms.items():
        name = arm.name
        if not (runs / name).is_dir() and runs.is_dir():
            found = sorted(p.name for p in runs.glob(f"*-{key[:6]}") if p.is_dir())
            name = found[0] if found else name
        arms[key] = replace(arm, name=name)
    return replace(plan, arms=arms)


# --------------------------------------------------------------------------
# Data, split, stores
# --------------------------------------------------------------------------


def prepare_data(config: dict, out: Path, sources=None, progress: bool = False,
                 geometry: str | None = None) -> list[str]:  # fmt: skip
    """The main data's files: the given ``sources``, the file's, or a simulation made once.

    Parameters
    ----------
    config : dict
        The study configuration (its ``[data]`` table).
    out : Path
        The study directory.
    sources : list of str, optional
        CXI files that replace ``[data]`` (the ``--source`` option).
    progress : bool
    geometry : str, optional
        A detector name or CrystFEL file (an arm's ``data.geometry``): the
        same simulated particles written as that detector's module stacks
        (``ccfkit simulate --geometry``, docs/simulate.md), its geometry beside them.

    Returns
    -------
    list of str
        Absolute paths.
    """
    data = config["data"]
    if sources:
        return [str(Path(s).resolve()) for s in sources]
    if "sources" in data:
        return [str(Path(s).resolve()) for s in data["sources"]]
    from ccfkit.simulate import SimulationConfig
    from ccfkit.simulate.cxi_file import write_simulated
    from ccfkit.simulate.stack import write_simulated_stack

    spec = dict(data["simulate"])
    n, seed = int(spec.pop("n")), int(spec.pop("seed", 0))
    record = {"n": n, "seed": seed, "options": spec}
    stem = "simulated"
    if geometry is not None:
        record["geometry"] = geometry
        stem = f"simulated-{_digest(record)}"
    path = out / "data" / f"{stem}.cxi"
    if _same_or_new(out / "data" / f"{stem}.json", record, "simulated data") and path.is_file():
        return [str(path.resolve())]
    try:
        sim = SimulationConfig(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()}
        )
    except (TypeError, ValueError) as error:
        raise PlanError(f"[data] simulate: {error}") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("simulating %d frames (seed %d%s) into %s", n, seed,
             f", module stacks of {geometry}" if geometry else "", path)  # fmt: skip
    if geometry is None:
        write_simulated(path, sim, n, seed, overwrite=True, progress=progress)
    else:
        try:
            write_simulated_stack(path, sim, n, seed, geometry, overwrite=True)
        except ValueError as error:
            raise PlanError(f"data.geometry: {error}") from None
    write_json(out / "data" / f"{stem}.json", record)
    return [str(path.resolve())]


def stack_geometry_file(paths, geometry: str) -> str:
    """The CrystFEL file of the stacks :func:`prepare_data` simulated into ``paths``.

    A built-in detector's is written beside the frames (``ccfkit simulate
    --geometry``); a file is the one given.
    """
    from ccfkit.simulate.stack import DETECTORS

    if geometry.lower() in DETECTORS:
        return str(Path(paths[0]).with_suffix(".geom"))
    return str(Path(geometry).resolve())


def open_frames(paths, config: dict, geometry: str | None = None):
    """A checked :class:`ccfkit.io.source.FrameSource` of ``paths`` ([data] data_path, labels_path).

    ``geometry``: the CrystFEL file of module-stacked ``paths`` (``ccfkit build --geometry``).
    """
    from ccfkit.io.source import InputError, open_source

    data = config.get("data", {})
    try:
        return open_source(paths, data_path=data.get("data_path"),
                           labels_path=data.get("labels_path"), geometry=geometry)  # fmt: skip
    except InputError as error:
        raise StudyError(str(error)) from None


def ensure_split(plan: StudyPlan, out: Path, n_frames: int) -> Path:
    """``split.npz``: the one train / validation / test split of every arm (made once)."""
    from trainer.config import STUDY_TEST_FRACTION, TrainConfig
    from trainer.data import save_split, split_three_ways

    spec = plan.config.get("split", {})
    record = {
        "n_frames": n_frames,
        "validation": float(spec.get("validation", TrainConfig.eval_fraction)),
        "test": float(spec.get("test", STUDY_TEST_FRACTION)),
        "seed": int(spec.get("seed", 0)),
    }
    path = out / "split.npz"
    if _same_or_new(out / "split.json", record, "a split") and path.is_file():
        return path
    try:
        split = split_three_ways(n_frames, record["validation"], record["test"], record["seed"])
    except ValueError as error:
        raise PlanError(f"[split]: {error}") from None
    if not len(split["test"]) or not len(split["validation"]):
        raise PlanError("[split]: the study needs non-empty validation and test sets")
    save_split(path, split, record["seed"])
    write_json(out / "split.json", record)
    return path


def store_path(out: Path, paths, config: dict, build: dict, geometry: str | None = None,
               content: str | None = None) -> Path:  # fmt: skip
    """Where the store of ``paths`` (module stacks placed by ``geometry``) built with ``build`` lives.

    ``content``: what the files hold (:func:`ccfsort.study_eval.source_content`,
    for an ``--eval-source``: a file rewritten with other frames or labels gets another store).
    """
    data = config.get("data", {})
    source = {"files": list(paths), "data_path": data.get("data_path"),
              "labels_path": data.get("labels_path")}  # fmt: skip
    if geometry is not None:  # flat sources keep the keys they had
        source["geometry"] = geometry
    if content is not None:
        source["content"] = content
    key = _digest({"source": source, "build": build_config(build).parameters()})
    return out / "stores" / f"{Path(paths[0]).stem}-{key}.zarr"


def ensure_store(path: Path, paths, config: dict, build: dict, *, scheduler=None,
                 progress=False, geometry: str | None = None) -> str:  # fmt: skip
    """Build the store at ``path`` unless it is complete; finish it when it is not.

    Raises
    ------
    StudyError
        A complete store at ``path`` built with other parameters, or a build error.
    """
    from ccfkit.build_config import BuildOptions
    from ccfkit.pipeline import build as run_build
    from ccfkit.store import StoreError, StoreRecipe, open_store, read_recipe

    build_cfg = build_config(build)
    options = BuildOptions(**config.get("build_options", {}))
    if path.exists():
        try:
            group = open_store(path)
            if group.attrs.get("status") == "complete":
                changed = read_recipe(group).differences(StoreRecipe.of_build(build_cfg))
                if changed:
                    raise StudyError(f"{path}: built with another {', '.join(changed)} than "
                                     "this study's")  # fmt: skip
                return str(path)
        except StoreError as error:
            raise StudyError(str(error)) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("building %s", path.name)
    try:
        run_build(
            open_frames(paths, config, geometry),
            str(path),
            build_cfg,
            backend=options.backend,
            chunk_frames=options.chunk_frames,
            resume=path.exists(),
            scheduler=scheduler,
            workers=options.workers,
            progress=progress,
        )
    except StoreError as error:
        raise StudyError(str(error)) from None
    return str(path)


# --------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunJob:
    """One arm and seed: everything ``trainer fit`` needs (small, picklable for Dask)."""

    run_dir: str
    store: str
    split_file: str
    seed: int
    model: dict
    train: dict
    threads: int | None = None


def is_finished(run_dir) -> bool:
    """A run is finished when its best checkpoint has been scored on the test split."""
    run_dir = Path(run_dir)
    if not (run_dir / "test.npz").is_file() or not (run_dir / "report.json").is_file():
        return False
    return json.loads((run_dir / "report.json").read_text()).get("test") is not None


def run_job(job: RunJob) -> str:
    """Train (or resume, or skip) one run; returns ``"skipped"``, ``"resumed"`` or ``"trained"``."""
    from trainer import loop
    from trainer.config import TrainConfig
    from trainer.data import inspect_store
    from trainer.model import ModelConfig

    run_dir = Path(job.run_dir)
    if is_finished(run_dir):
        return "skipped"
    if (run_dir / "last.pt").is_file():  # its saved threads, recipe and store
        loop.resume(run_dir, progress=False, store=job.store)
        return "resumed"
    info = inspect_store(job.store, input_kind=job.train.get("input", "ccf"))
    model_cfg = ModelConfig(num_classes=len(info.label_names), **job.model)
    train_cfg = TrainConfig(
        store=info.path,
        split_file=job.split_file,
        seed=job.seed,
        threads=job.threads,
        **job.train,
    )
    # the directory is the study's own: a run that died before its first checkpoint restarts
    loop.fit(run_dir, model_cfg, train_cfg, progress=False, overwrite=True)
    return "trained"


def _run_all(jobs: list[RunJob], scheduler: str | None) -> dict:
    """Run the jobs one after another, or as Dask tasks; returns ``{run_dir: outcome}``."""
    outcomes = {}
    if scheduler is None:
        for number, job in enumerate(jobs, 1):
            started = time.perf_counter()
            outcomes[job.run_dir] = run_job(job)
            log.info("run %d/%d %s: %s in %.0f s", number, len(jobs), job.run_dir,
                     outcomes[job.run_dir], time.perf_counter() - started)  # fmt: skip
        return outcomes
    from distributed import Client, as_completed

    with Client(scheduler) as client:
        futures = {client.submit(run_job, job, pure=False): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            outcomes[job.run_dir] = future.result()
            log.info("run %s: %s", job.run_dir, outcomes[job.run_dir])
    return outcomes


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------


def collect_arm(run_dirs: dict, test_rows: np.ndarray) -> dict | None:
    """The test results of one arm over its finished seeds (None when none finished).

    Parameters
    ----------
    run_dirs : dict
        seed -> run directory.
    test_rows : (N,) int array
        The study's test rows; every run must have been scored on exactly these.

    Returns
    -------
    dict
        ``seeds`` (seed -> test metrics dict), ``counts`` ((S, N, 4) per-frame
        counts, seeds in order), ``summary`` (metric -> mean, std, n),
        ``per_class`` (class -> precision / recall summaries, support),
        ``train_frames``, ``epochs``.
    """
    from trainer.data import load_split
    from trainer.metrics import compute_metrics

    from .verdicts import frame_counts

    seeds, counts = {}, []
    train_frames = epochs = None
    for seed, run_dir in run_dirs.items():
        if not is_finished(run_dir):
            continue
        config = json.loads((Path(run_dir) / "config.json").read_text())
        with np.load(Path(run_dir) / "test.npz") as test:
            rows, probs, labels = test["rows"], test["probs"], test["labels"]
        if not np.array_equal(rows, test_rows):
            raise StudyError(f"{run_dir}: scored on other test rows than the study's split")
        predicted = probs >= config["train"]["threshold"]
        metrics = compute_metrics(
            labels, predicted, config["store"]["label_names"], config["store"]["exclusive_groups"]
        )
        seeds[seed] = metrics.to_dict()
        counts.append(frame_counts(labels, predicted))
        train_frames = len(load_split(Path(run_dir) / "split.npz")["train"])
        epochs = json.loads((Path(run_dir) / "report.json").read_text())["epochs_run"]
    if not seeds:
        return None
    return {
        "seeds": seeds,
        "counts": np.stack(counts),
        "summary": {k: _summary([m[k] for m in seeds.values()]) for k in METRIC_KEYS},
        "per_class": per_class_summary(seeds),
        "train_frames": train_frames,
        "epochs": epochs,
    }


# --------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------


def _train_arms(plan: StudyPlan, run_dirs: dict, stores: dict, split_file: Path, threads,
                scheduler) -> dict:  # fmt: skip
    """Run every unfinished (arm, seed) of ``plan``; ``{run_dir: outcome}`` of every run."""
    jobs = [
        RunJob(
            run_dirs[arm.key][s],
            stores[arm.key],
            str(split_file.resolve()),
            s,
            arm.model,
            arm.train,
            threads,
        )
        for arm in plan.arms.values()
        for s in plan.seeds
    ]
    pending = [job for job in jobs if not is_finished(job.run_dir)]
    log.info("%d runs, %d finished before, %d to run", len(jobs), len(jobs) - len(pending),
             len(pending))  # fmt: skip
    outcomes = {job.run_dir: "skipped" for job in jobs if job not in pending}
    outcomes.update(_run_all(pending, scheduler))
    return outcomes


def _score_eval_source(source: str, frames, plan: StudyPlan, out: Path, run_dirs: dict,
                       results: dict, *, scheduler, progress) -> tuple[dict, str]:  # fmt: skip
    """Every finished run scored on all frames of ``source``, into ``results[arm]["eval_sources"]``.

    The frames (``frames``: ``source`` opened) are built with each arm's own
    build parameters (one store per distinct build and content, reused); the
    scores are cached under ``out/scores`` (:func:`ccfsort.study_eval.score_on_source`,
    :func:`~ccfsort.study_eval.source_result`).
    Returns arm key -> the store of ``source`` built for it, and ``source``'s
    :func:`~ccfsort.study_eval.source_content`.
    """
    built, content = {}, source_content(frames)
    for arm in plan.arms.values():
        if results[arm.key] is None:
            continue
        path = store_path(out, [source], plan.config, arm.build, content=content)
        store = ensure_store(path, [source], plan.config, arm.build, scheduler=scheduler,
                             progress=progress)  # fmt: skip
        built[arm.key] = store
        scores = {
            s: score_on_source(
                Path(d), store, out / "scores" / arm.name / f"seed-{s}" / f"{path.stem}.json"
            )
            for s, d in run_dirs[arm.key].items()
            if is_finished(d)
        }
        results[arm.key].setdefault("eval_sources", {})[source] = source_result(scores)
    return built, content


def arm_source(config: dict, out: Path, arm, main: tuple, sources, progress: bool):
    """``(paths, geometry file)`` of the frames ``arm`` is built from.

    The study's own frames (``main``: their paths and source), or, for an
    arm with ``data.geometry``, the same simulated particles as that
    detector's module stacks (made once). Those must hold the same number of
    frames with the same labels, so that the one split means the same frames.

    Raises
    ------
    StudyError
        ``--source`` given with such an arm; stacks whose labels differ.
    """
    paths, frames = main
    if arm.geometry is None:
        return paths, None
    if sources:
        raise StudyError(f"arm {arm.name}: data.geometry simulates its frames; --source "
                         "cannot replace them")  # fmt: skip
    stack_paths = prepare_data(config, out, None, progress, geometry=arm.geometry)
    geometry = stack_geometry_file(stack_paths, arm.geometry)
    stack = open_frames(stack_paths, config, geometry)
    if stack.n_frames != frames.n_frames or not np.array_equal(stack.labels, frames.labels):
        raise StudyError(f"{stack_paths[0]}: the module stacks do not hold the study's frames "
                         "(another count or other labels)")  # fmt: skip
    return stack_paths, geometry


def _prepare(plan: StudyPlan, out: Path, sources, progress: bool):
    """``(paths, frames, split file)``: the data and the split, made once.

    A study directory this call creates is removed again when the data or
    the split are refused (nothing of a refused study is left behind).
    """
    import shutil

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        paths = prepare_data(plan.config, out, sources, progress)
        frames = open_frames(paths, plan.config)
        return paths, frames, ensure_split(plan, out, frames.n_frames)
    except (PlanError, StudyError):
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def run_study(
    plan: StudyPlan,
    out,
    *,
    sources=None,
    eval_sources=(),
    scheduler: str | None = None,
    threads: int | None = None,
    train: bool = True,
    progress: bool = False,
) -> dict:
    """Make the data, split and stores, run the unfinished arms, write the report.

    Parameters
    ----------
    plan : StudyPlan
    out : str or Path
        The study directory (created; reused on a rerun).
    sources : list of str, optional
        CXI files instead of the plan's ``[data]``.
    eval_sources : sequence of str
        Further labelled CXI files: every run is also scored on all their
        frames, built with the run's own build parameters.
    scheduler : str, optional
        Dask scheduler address: builds and runs become cluster tasks.
    threads : int, optional
        torch CPU threads per run [the study file's ``threads``, else torch's default].
    train : bool
        False: report on the runs already finished, train nothing.
    progress : bool
        Progress bars of simulation and builds.

    Returns
    -------
    dict
        The report (``report.json``'s content).
    """
    from trainer.data import load_split

    from .study_report import write_report

    started = time.perf_counter()
    threads = threads or plan.config.get("threads") or None  # 0: torch's default
    out = Path(out)
    if not train and not (out / "split.npz").is_file():
        raise StudyError(f"{out}: not a study directory (no split.npz); nothing to report")
    config = plan.config
    paths, frames, split_file = _prepare(plan, out, sources, progress)
    split = load_split(split_file)
    record_invocation(out, {
        "config": config, "tables": [t.name for t in plan.tables], "sources": paths,
        "eval_sources": list(eval_sources), "command": " ".join(sys.argv),
        "environment": environment(), "started": datetime.now(UTC).isoformat()})  # fmt: skip
    plan = reuse_arm_directories(plan, out)

    stores, arm_frames = {}, {}
    for arm in plan.arms.values():
        arm_paths, geometry = arm_source(plan.config, out, arm, (paths, frames), sources, progress)
        arm_frames[arm.key] = open_frames(arm_paths, config, geometry) if geometry else frames
        path = store_path(out, arm_paths, config, arm.build, geometry)
        stores[arm.key] = ensure_store(path, arm_paths, config, arm.build, scheduler=scheduler,
                                       progress=progress, geometry=geometry) if train else str(path)  # fmt: skip
    run_dirs = {
        arm.key: {s: str(out / "runs" / arm.name / f"seed-{s}") for s in plan.seeds}
        for arm in plan.arms.values()
    }
    outcomes = {}
    if train:
        outcomes = _train_arms(plan, run_dirs, stores, split_file, threads, scheduler)
    results = {key: collect_arm(run_dirs[key], split["test"]) for key in plan.arms}
    eval_stores = {}  # arm key -> {source: (its store for the arm, its frames, content)}
    for source in (str(Path(s).resolve()) for s in eval_sources):
        eval_frames = open_frames([source], config)
        built, content = _score_eval_source(source, eval_frames, plan, out, run_dirs, results,
                                            scheduler=scheduler, progress=progress)  # fmt: skip
        for key, store in built.items():
            eval_stores.setdefault(key, {})[source] = (store, eval_frames, content)
    some_store = next((stores[k] for k in plan.arms if Path(stores[k]).exists()), None)
    base = constant_baselines(some_store, split, eval_stores) if some_store else {}
    svm = svm_baselines(plan, out, stores, arm_frames, split, eval_stores)
    provenance = {
        "command": " ".join(sys.argv),
        "environment": environment(),
        "wall_seconds": time.perf_counter() - started,
        "runs": outcomes,
        "split": {k: len(v) for k, v in split.items()},
        "sources": paths,
    }
    return write_report(out, plan, results, base, provenance, svm)
