"""The ``trainer`` command line: fit, evaluate, predict, explain, label, gallery (docs/training.md)."""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
from dataclasses import fields
from datetime import datetime
from pathlib import Path

import click

from ccfkit.cli_inputs import input_options
from ccfkit.cli_options import apply_options, field_options, take_fields

from .config import DEVICES, TrainConfig
from .data import DataError
from .model import ARCHS, ModelConfig

#: ``--checkpoint``: the run's checkpoints.
CHECKPOINTS = ("best", "last")
#: ``demo-stack --detector``: the keys of :data:`ccfkit.simulate.stack.DETECTORS`, written
#: here because importing that module loads the file writer (h5py); a test keeps them equal.
SIMULATED_DETECTORS = ("agipd", "jungfrau", "pnccd")


def _clean_errors(func):
    """Turn the trainer's expected failures into one-line click errors (exit status 1).

    Only the trainer's and ccfkit's own error types and ``OSError`` (a file
    that cannot be read or written): anything else is a bug and keeps its
    traceback.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as error:
            if isinstance(error, _expected_errors()):
                raise click.ClickException(_one_line(error)) from error
            raise

    return wrapper


def _expected_errors() -> tuple[type[Exception], ...]:
    """The error types that mean bad input or a file problem (imported when one is raised)."""
    from ccfkit.backends import BackendUnavailableError
    from ccfkit.io.source import InputError
    from ccfkit.store import StoreError

    from .run_dir import RunError

    return (DataError, RunError, StoreError, InputError, BackendUnavailableError, OSError)


def _one_line(error: Exception) -> str:
    """The error's message on one line.

    An error raised in a DataLoader worker comes back with the worker's
    traceback in its message; its last line is the original message.
    """
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and "Traceback" in str(error):
        _, _, message = lines[-1].partition(f"{type(error).__name__}: ")
        return message or lines[-1]
    return " ".join(lines)


def _label_map_option(ctx, param, value):
    """``--label-map FILE`` read and checked, or a one-line usage error."""
    if value is None:
        return None
    from .labels import read_label_map

    try:
        return read_label_map(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _configs(make, **options):
    """``make(**options)``; a ValueError (a setting out of range) becomes a usage error."""
    try:
        return make(**options)
    except ValueError as error:
        raise click.UsageError(str(error)) from None


# --------------------------------------------------------------------------
# Output guards (ccfkit.outputs): what a command reads, so that it never writes over it
# --------------------------------------------------------------------------


def _run_files(run, checkpoint: str, *inputs) -> list:
    """The files of RUN a command reads (its config, split and checkpoint), and ``inputs``."""
    run = Path(run)
    return [run / "config.json", run / "split.npz", run / f"{checkpoint}.pt",
            *(i for i in inputs if i is not None)]  # fmt: skip


def _expanded(inputs) -> list[str]:
    """INPUTS with their globs expanded (what a command will read)."""
    import glob

    return [name for given in inputs for name in (sorted(glob.glob(given)) or [given])]


def _is_store(inputs, facility: dict) -> bool:
    """Whether INPUTS is one ccfkit store (not frames); UsageError for frames' options with it.

    ``facility``: the options of :func:`ccfkit.cli_inputs.input_options`
    (``--geometry``, ``--detector``, ``--pulses`` read frames).
    """
    if not (len(inputs) == 1 and (Path(inputs[0]) / "zarr.json").is_file()):
        return False
    if any(facility[key] is not None for key in ("geometry", "detector", "pulses")):
        raise click.UsageError("--geometry, --detector, --pulses apply to frames, not stores")
    return True


def _allow_recipe_mismatch_option(command):
    """``--allow-recipe-mismatch`` (evaluate, predict): :func:`trainer.inference.check_recipe`."""
    return click.option(
        "--allow-recipe-mismatch", is_flag=True,
        help="Apply the run to a store whose maps were made with another recipe (said in the "
             "output).",
    )(command)  # fmt: skip


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
def main(verbose: bool) -> None:
    """Train and use the paper's noise-robust pre-activation ResNet on ccfkit stores."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )


def _resume_overrides() -> dict:
    """``fit``'s options that may change a run on ``--resume``: no default of their own.

    Not given, they take TrainConfig's default in a new run and the saved
    value on ``--resume``.
    """
    overrides = {}
    for item in fields(TrainConfig):
        if item.metadata.get("resume"):
            help_text = item.metadata.get("help", "")
            if item.default is not None:
                help_text = f"{help_text} [{item.default}; on --resume: the saved value]".strip()
            overrides[item.name] = {"option_default": None, "help": help_text}
    return overrides


#: ModelConfig fields that are no option: the store's (classes, channels), Eq. 11's constants.
MODEL_FROM_STORE_OR_PAPER = ("num_classes", "in_channels", "c0", "c1")
#: What ModelConfig's annotations do not say.
MODEL_OPTIONS = {
    "arch": {"choices": tuple(ARCHS)},
    "log_act": {
        "help": "--no-log-act: LeakyReLU after the first conv (the paper's 'unmodified')."
    },
}


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@apply_options(
    field_options(ModelConfig, exclude=MODEL_FROM_STORE_OR_PAPER, overrides=MODEL_OPTIONS),
    field_options(TrainConfig, overrides=_resume_overrides()),
)
@click.option("--run-dir", type=click.Path(path_type=Path), default=None, help="[runs/<time>]")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from last.pt.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the run in --run-dir (its own files only; anything else is refused).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_clean_errors
def fit(store, run_dir, resume, overwrite, quiet, **settings):
    """Train on the labelled frames of STORE (a complete `ccfkit build` store).

    With --resume only --epochs, --workers, --device (when given) and STORE
    (the same store, moved or copied) change the saved run; --threads must be
    the saved value (it changes results); the other recipe options are ignored.
    With --init RUN the network starts from RUN's weights and takes RUN's
    model options (docs/training.md, "Fine-tuning from few labels").
    """
    from . import loop
    from .data import inspect_store

    model_settings = take_fields(ModelConfig, settings)
    if resume:
        if run_dir is None:
            raise click.ClickException("--resume needs --run-dir")
        changes = {name: settings[name] for name in _resume_overrides()}
        report = loop.resume(run_dir, progress=not quiet, store=str(store), **changes)
    else:
        if run_dir is None:
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                raise click.ClickException("--run-dir is required under torchrun")
            run_dir = Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
        labels = settings["labels"]  # a label table: its frames and labels, not the store's
        info = inspect_store(store, input_kind=settings["input"], need_labels=labels is None)
        if labels is not None:
            from .label_table import labelled_store_info

            info = labelled_store_info(info, labels)
        if settings["init"] is not None:
            model_settings = _init_model_settings(settings["init"], model_settings)
        model_cfg = _configs(ModelConfig, num_classes=len(info.label_names), **model_settings)
        unset = [name for name in _resume_overrides() if settings[name] is None]
        for name in unset:
            settings.pop(name)  # TrainConfig's default
        train_cfg = _configs(TrainConfig, store=info.path, **settings)
        report = loop.fit(run_dir, model_cfg, train_cfg, progress=not quiet, overwrite=overwrite)
    if report:
        final = report["final"]
        click.echo(
            f"{run_dir}: final accuracy {final['accuracy']:.4f}, precision "
            f"{final['precision']:.4f}, recall {final['recall']:.4f}, violations "
            f"{final['violation_rate']:.4f}; see {Path(run_dir) / 'report.md'}"
        )
        test = report.get("test")
        if test:
            click.echo(
                f"test split ({test['n_frames']} frames, best checkpoint of epoch "
                f"{test['epoch'] + 1}): accuracy {test['accuracy']:.4f}, precision "
                f"{test['precision']:.4f}, recall {test['recall']:.4f}"
            )


def _init_model_settings(init, model_settings: dict) -> dict:
    """With --init: the init run's network, but the model options given on the command line."""
    from click.core import ParameterSource

    from .finetune import init_model_settings

    ctx = click.get_current_context()
    given = {k: v for k, v in model_settings.items()
             if ctx.get_parameter_source(k) is not ParameterSource.DEFAULT}  # fmt: skip
    return {**init_model_settings(init), **given}


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("store", required=False, type=click.Path(path_type=Path))
@click.option("--checkpoint", type=click.Choice(CHECKPOINTS), default="best", show_default=True)
@click.option("--subset", type=click.Choice(["eval", "test", "all"]), default=None,
              help="[eval for the run's own store, all for another]")  # fmt: skip
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--workers", type=int, default=0, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Also write the metrics here.")  # fmt: skip
@click.option("--label-map", type=click.Path(path_type=Path), default=None,
              callback=_label_map_option,
              help='JSON {"store label": "run label"} for names that differ in more than '
                   "case and punctuation.")  # fmt: skip
@_allow_recipe_mismatch_option
@_clean_errors
def evaluate(run, store, checkpoint, subset, device, workers, json_out, label_map,
             allow_recipe_mismatch):  # fmt: skip
    """§3.2 metrics of RUN's checkpoint on STORE [the run's eval split]."""
    from .inference import evaluate_run
    from .metrics import format_class_table

    if json_out is not None:
        from ccfkit.outputs import json_with_keys, writable_output

        writable_output(json_out, inputs=_run_files(run, checkpoint, store), what="--json",
                        recognise=json_with_keys("accuracy", "subset", "store"))  # fmt: skip
    metrics, extra = evaluate_run(
        run, None if store is None else str(store), which=checkpoint, subset=subset,
        device=device, workers=workers,
        label_map=label_map, allow_recipe_mismatch=allow_recipe_mismatch,
    )  # fmt: skip
    if extra["recipe_mismatch"]:
        click.echo("recipe mismatch allowed (--allow-recipe-mismatch): "
                   + "; ".join(extra["recipe_mismatch"]))  # fmt: skip
    trained = extra["epochs_trained"]  # the same number as --json's epochs_trained
    click.echo(
        f"{extra['store']} ({extra['subset']}, {metrics.n_frames} frames), {checkpoint} "
        f"checkpoint (after {trained} epoch{'s' * (trained != 1)})"
    )
    for key, what in (
        ("unscored_labels", "not in the store"),
        ("ignored_labels", "not in the run"),
    ):
        if extra[key]:
            click.echo(f"labels {what}, not scored: {', '.join(extra[key])}")
    click.echo(
        f"accuracy {metrics.accuracy:.4f}  precision {metrics.precision:.4f}  "
        f"recall {metrics.recall:.4f}  exclusivity violations {metrics.violation_rate:.4f}  "
        f"(all-negative accuracy {extra['all_negative_accuracy']:.4f})"
    )
    click.echo(format_class_table(metrics.per_class))
    if json_out is not None:
        from ccfkit.atomic import atomic_output

        with atomic_output(json_out, overwrite=True) as partial:
            partial.write_text(json.dumps({**metrics.to_dict(), **extra}, indent=2) + "\n")


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True,
    help="CSV file; for frames also .h5/.hdf5 or .zarr (index, probabilities, labels).",
)  # fmt: skip
@click.option("--checkpoint", type=click.Choice(CHECKPOINTS), default="best", show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="Loader workers (store).")
@click.option("--backend", default="auto", show_default=True, help="Map engine (frames).")
@click.option("--data-path", default=None, help="Data set of the frames [CXI conventions].")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--label-map", type=click.Path(path_type=Path), default=None,
              callback=_label_map_option,
              help='JSON {"store label": "run label"}: match a store\'s labels (true_* columns).')  # fmt: skip
@_allow_recipe_mismatch_option
@input_options
@_clean_errors
def predict(run, inputs, output, checkpoint, device, workers, backend, data_path, batch_size,
            quiet, label_map, allow_recipe_mismatch, **facility):  # fmt: skip
    """Per-frame probabilities and 0/1 labels of RUN on a store or on frames (INPUTS).

    INPUTS is one `ccfkit build` store, or CXI/HDF5 files and globs (module
    stacks with --geometry, a European XFEL run with --detector, as `ccfkit
    build` reads them): those frames are mapped with the parameters of the
    run's training store (centre, mask, radii, orders, estimator, scale) and
    classified on the way, without writing a store (docs/training.md,
    "Sorting a run").
    """
    from .inference import check_prediction_output

    check_prediction_output(output, _run_files(run, checkpoint, *_expanded(inputs)))
    if _is_store(inputs, facility):
        from .inference import predict_run

        n = predict_run(
            run, inputs[0], output, which=checkpoint, device=device, workers=workers,
            label_map=label_map, allow_recipe_mismatch=allow_recipe_mismatch,
        )  # fmt: skip
        click.echo(f"wrote {output}: {n} frames")
        return
    if label_map is not None:
        raise click.UsageError("--label-map applies to a store (its labels), not to frames")
    from ccfsort.sorting import predict_frames, write_predictions

    result = predict_frames(
        run, inputs, which=checkpoint, device=device, backend=backend, data_path=data_path,
        batch_size=batch_size, progress=not quiet, facility=facility,
    )  # fmt: skip
    write_predictions(result, output)
    seconds = result["seconds"]
    n = len(result["index"])
    click.echo(
        f"wrote {output}: {n} frames in {seconds['total']:.1f} s "
        f"({n / max(seconds['total'], 1e-9):.0f} frames/s; read {seconds['read']:.1f} s, "
        f"maps {seconds['maps']:.1f} s, model {seconds['model']:.1f} s)"
    )


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--index", "row", type=int, required=True, help="Row of the store.")
@click.option("--class", "class_name", default=None, help="Label to explain [the most probable].")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="PNG file.")
@click.option("--checkpoint", type=click.Choice(CHECKPOINTS), default="best", show_default=True)
@_clean_errors
def explain(run, store, row, class_name, output, checkpoint):
    """Grad-CAM++ heatmap of one frame of STORE for one label (§6)."""
    import numpy as np
    import torch

    from ccfkit.outputs import our_picture, writable_output

    from .data import StoreDataset, inspect_store
    from .explain import grad_cam_pp, save_heatmap
    from .inference import load_run

    writable_output(output, inputs=_run_files(run, checkpoint, store), recognise=our_picture,
                    what="-o")  # fmt: skip
    model, config, _ = load_run(run, checkpoint, "cpu")
    train = TrainConfig.from_dict(config["train"])
    info = inspect_store(store, need_labels=False, input_kind=train.input)
    if not 0 <= row < info.n_frames:
        raise click.ClickException(f"--index {row} is outside 0..{info.n_frames - 1}")
    names = config["store"]["label_names"]
    x, y, _ = StoreDataset(str(store), train.input, normalize=train.input_normalize)[
        (0, np.array([row]))
    ]
    if class_name is None:
        with torch.no_grad():
            k = int(model(x)[0].argmax())
    elif class_name in names:
        k = names.index(class_name)
    else:
        raise click.ClickException(f"--class {class_name!r} is not one of {names}")
    heatmap, prob = grad_cam_pp(model, x, k)
    truth = _true_labels(names, info.label_names, y[0].numpy()) if y.shape[1] else ""
    if not heatmap.any():  # trainer/explain.py: nothing stands out (e.g. a 1 x 1 feature map)
        truth += "; flat heatmap: no part of the input stands out"
    save_heatmap(output, x[0, 0].numpy(), heatmap, f"row {row}: {names[k]} p={prob:.3f}{truth}")
    click.echo(f"wrote {output}: {names[k]} (p = {prob:.3f}){truth}")


def _true_labels(run_names, store_names, store_row) -> str:
    """``"; true: a, b"``: the run's names of the store's labels set in ``store_row``, matched by
    name (:func:`trainer.labels.match_labels`), or ``""`` when no store label matches."""
    from .labels import match_labels

    try:
        match = match_labels(run_names, store_names)
    except ValueError:
        return ""
    return "; true: " + (", ".join(match.present(store_row)) or "none")


@main.command()
@click.argument("study")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Study directory [studies/<name>]; a rerun skips finished arms.")  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a study-file value, e.g. train.epochs=5 or seeds=[0,1,2].")  # fmt: skip
@click.option("--seeds", default=None, metavar="S,S,...", help="Training seeds of every arm.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs of every arm.")
@click.option("--tables", default=None, metavar="NAME,...", help="Only these tables [all].")
@click.option("--source", "sources", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Labelled CXI file(s) to use instead of the study's [data].")  # fmt: skip
@click.option("--eval-source", "eval_sources", multiple=True,
              type=click.Path(exists=True, dir_okay=False),
              help="Also score every arm on all frames of this labelled CXI file.")  # fmt: skip
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Dask scheduler: builds and arms run as its tasks [one after another here].")  # fmt: skip
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads per run."
)
@click.option("--report-only", is_flag=True, help="Train nothing; report the finished runs.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@_clean_errors
def study(study, out, overrides, seeds, epochs, tables, sources, eval_sources, scheduler, threads,
          report_only, quiet):  # fmt: skip
    """Run the paper's experiments (Tables 4-6) from STUDY (a .toml file or a preset name:
    smoke, cpu, cpu-maps, paper) with seeds, a three-way split and a report (docs/study.md)."""
    from ccfsort.study import StudyError, run_study
    from ccfsort.study_plan import PlanError, load_config, make_plan

    if not quiet:
        logging.getLogger("ccfsort.study").setLevel(logging.INFO)
    overrides = list(overrides)
    if seeds is not None:
        overrides.append(f"seeds=[{seeds}]")
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    try:  # the study's own errors (the other expected ones: _clean_errors)
        config = load_config(study, overrides)
        plan = make_plan(config, None if tables is None else tables.split(","))
        out = Path("studies") / plan.name if out is None else out
        report = run_study(
            plan, out, sources=list(sources) or None, eval_sources=eval_sources,
            scheduler=scheduler, threads=threads, train=not report_only, progress=not quiet,
        )  # fmt: skip
    except (PlanError, StudyError) as error:
        raise click.ClickException(_one_line(error)) from error
    for claim in report["claims"]:
        if claim["verdict"] == "not run":
            click.echo(f"{claim['text']}: not run")
        else:
            low, high = claim["ci"]
            click.echo(f"{claim['text']}: {claim['verdict']}, Δ {claim['metric']} = "
                       f"{claim['delta']:+.3f} [{low:+.3f}, {high:+.3f}]")  # fmt: skip
    click.echo(f"wrote {out / 'report.md'}")


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Label table (CSV) written after every frame; an existing one is continued.")  # fmt: skip
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="Show this run's probabilities and the frames it is least sure of first.")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (127.0.0.1: this machine only).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True,
              help="Order of the frames without --run (random).")  # fmt: skip
@click.option("--checkpoint", type=click.Choice(CHECKPOINTS), default="best", show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="cpu", show_default=True)
@_clean_errors
def label(store, out, run_dir, port, host, seed, checkpoint, device):
    """Label the frames of STORE in the browser (docs/training.md, "Labelling a run").

    Serves a page at http://HOST:PORT/ showing one frame at a time (image, CCF
    map and, with --run, the model's probabilities) with one toggle per label;
    keys tick labels, Space saves and shows the next frame, Backspace undoes.
    """
    from ccfkit.outputs import writable_output
    from ccfsort.frames import FramesError
    from ccfsort.label.app import LabelServer
    from ccfsort.label.session import LabelError, open_session

    # an existing table is continued: the session checks that it is one
    writable_output(out, inputs=_run_files(run_dir, checkpoint, store) if run_dir else [store],
                    recognise=lambda path: True, what="--out")  # fmt: skip
    try:
        session = open_session(store, out, run=run_dir, seed=seed, device=device,
                               which=checkpoint)  # fmt: skip
        server = LabelServer(session, host=host, port=port)
    except (FramesError, LabelError) as error:
        raise click.ClickException(str(error)) from None
    if not logging.getLogger().isEnabledFor(logging.INFO):  # a line per request only with -v
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    progress = session.progress()
    click.echo(
        f"labelling {store} ({progress['labelled']} of {progress['total']} frames labelled) "
        f"at {server.url}; saved to {out} after every frame; Ctrl-C stops"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo(f"stopped; {session.progress()['labelled']} frames labelled in {out}")


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("source", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="HTML file (self-contained: pictures embedded).")  # fmt: skip
@click.option("--per-class", type=click.IntRange(min=1), default=8, show_default=True,
              help="Thumbnails per predicted class.")  # fmt: skip
@click.option("--uncertain", type=click.IntRange(min=0), default=12, show_default=True,
              help="Thumbnails of the least certain frames.")  # fmt: skip
@click.option("--checkpoint", type=click.Choice(CHECKPOINTS), default="best", show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--backend", default="auto", show_default=True, help="Map engine (frames).")
@click.option("--data-path", default=None, help="Data set of the frames [CXI conventions].")
@input_options
@_clean_errors
def gallery(run, source, output, per_class, uncertain, checkpoint, device, backend, data_path,
            **facility):  # fmt: skip
    """One HTML page of what RUN sorted in SOURCE (a store, or frames as `predict` takes them).

    Per predicted class its count and the frames of highest probability, the
    least certain frames, and the class counts along the run. Module stacks
    (--geometry, or the geometry the run's store recorded) are shown
    assembled; frames of a European XFEL run (--detector) are named by train
    and pulse.
    """
    from ccfkit.outputs import HTML_MARKER, marked, writable_output
    from ccfsort.frames import FramesError
    from ccfsort.gallery import gallery as make

    writable_output(output, inputs=_run_files(run, checkpoint, *_expanded(source)), what="-o",
                    recognise=marked(b"<!doctype html>", HTML_MARKER))  # fmt: skip
    _is_store(source, facility)  # refuses the options of frames with a store
    try:
        summary = make(run, source, output, which=checkpoint, device=device,
                       per_class=per_class, uncertain=uncertain, backend=backend,
                       data_path=data_path, facility=facility)  # fmt: skip
    except FramesError as error:
        raise click.ClickException(str(error)) from None
    counts = ", ".join(f"{name} {n}" for name, n in summary["counts"].items())
    click.echo(f"wrote {output}: {summary['frames']} frames ({counts}); "
               f"{summary['shown']} shown")  # fmt: skip


@main.command("demo-stack")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--detector", type=click.Choice(SIMULATED_DETECTORS), default="agipd",
              show_default=True, help="The simulated detector (extra-geom's geometry).")  # fmt: skip
@click.option("--frames", type=click.IntRange(min=8), default=96, show_default=True,
              help="Frames to train on (the frames sorted: a third of that).")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--backend", default="auto", show_default=True, help="Map engine.")
@_clean_errors
def demo_stack(out_dir, detector, frames, epochs, backend):
    """The demo on module stacks: simulate, build with --geometry, fit, predict, gallery.

    Writes into OUT_DIR the simulated stacks with their geometry, the store,
    the run, predictions.csv and gallery.html; prints each step as the
    command that does it (ccfsort/demo_stack.py).
    """
    from ccfsort.demo_stack import run_stack_demo

    summary = run_stack_demo(out_dir, detector=detector, frames=frames,
                             new_frames=max(4, frames // 3), epochs=epochs, backend=backend,
                             say=click.echo)  # fmt: skip
    click.echo(
        f"sorted {summary['sorted']} new {detector} frames {summary['stack_shape']} after "
        f"{epochs} epoch(s) on {frames}: per-label accuracy {summary['accuracy']:.3f}; "
        f"see {summary['files']['gallery.html']}"
    )


def run() -> None:
    """The ``trainer`` program: the command, then a quick exit (as :func:`ccfkit.cli.run`).

    PyTorch's objects add to what the interpreter's last garbage collection
    walks (docs/performance.md, "Small costs"); they are frozen out of its way.
    """
    try:
        main()
    finally:
        gc.freeze()
