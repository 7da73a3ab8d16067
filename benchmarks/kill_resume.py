"""SIGKILL a build, a training run or a prediction at seeded moments; finishing must give the same.

Usage (from the repository root)::

    nice -n 10 .venv/bin/python benchmarks/kill_resume.py --moments 30 --seed 0
    nice -n 10 .venv/bin/python benchmarks/kill_resume.py --what fit --moments 10
    nice -n 10 .venv/bin/python benchmarks/kill_resume.py --what predict --moments 10

``--what build`` (the default):

1. Simulates a small input (``--frames`` 64 x 64 frames) and builds it once,
   uninterrupted: the reference store, and the build's duration ``T``,
   counted from the moment the build starts (the child has imported
   everything and loaded its kernels before: the kills fall on the build,
   not on Python's start).
2. For each of ``--moments`` moments, drawn from ``--seed`` one in each of
   ``--moments`` equal slices of ``[0, T)`` (so that every part of the
   build's life is hit, the creation of the store included), starts the
   build again in a fresh process, SIGKILLs it at that moment, records what
   the kill left (nothing, an empty directory, a store being created, an
   incomplete store and how many chunks were done) and finishes it: with
   ``--resume`` when the directory exists, else from the start.
3. Checks that the finished store is complete and holds the same arrays,
   value for value, as the reference, and prints one row per moment and a
   summary line.

``--what fit``: ``trainer fit`` on a store of the same input (a few epochs of a
small network, one thread), killed at moments spread over its life (the run
directory's creation included), then finished with ``--resume`` where a
``last.pt`` was left, else with ``--overwrite`` (the run's own files only) or
from the start; the finished run must have the uninterrupted run's weights
(``last.pt``, tensor for tensor) and metrics (``metrics.csv`` without its
timings).

``--what predict``: ``trainer predict RUN STORE -o preds.csv`` over an older
predictions file, killed at moments over its life: what the kill left at
``preds.csv`` must be the older file or the whole new one, never a part;
predicting again must give the uninterrupted prediction.

``tests/test_catalogue.py`` runs a few moments of each.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The build options (small maps, one noise pass and a statistics pass, 4 frames per task).
BUILD = ["--q-bins", "16", "--phi-bins", "32", "--chunk", "4", "--noise", "mean",
         "--backend", "numpy", "--workers", "2", "--quiet"]  # fmt: skip

#: A build that waits for a line on stdin after importing everything and loading its kernels.
CHILD = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import ccfkit.cli, ccfkit.pipeline, ccfkit.store, ccfkit.backends.array
from kill_resume import warm_up
warm_up(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
ccfkit.cli.run()
"""


@dataclass
class Trial:
    """One killed build and its resume."""

    moment: float  # seconds after the build started
    left: str  # what the kill left
    resumed_with: str  # "--resume" or "a fresh build"
    identical: bool


def warm_up(source) -> None:
    """Load the build's Numba kernels (statistics, noise) the way its tasks call them.

    Loading them from Numba's cache takes far longer than the build of the
    small input (docs/performance.md, "Small costs"): without this the kills
    would nearly all fall on it.
    """
    from ccfkit.io.source import open_source
    from ccfkit.noise import add_noise, frame_statistics

    opened = open_source([source])
    (frames,) = opened.reader.pieces(0, 1)
    frame_statistics(frames, opened.mask)
    add_noise(frames, np.arange(1), 1.0, 0)


def start_build(source: Path, out: Path, *extra: str) -> subprocess.Popen:
    """A build process, imports done, waiting for :func:`go`."""
    command = [sys.executable, "-c", CHILD, "build", str(source), str(out), *BUILD, *extra]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout.readline().strip() == "ready"
    return child


def go(child: subprocess.Popen) -> float:
    """Let the build start; return the start time (``time.perf_counter``)."""
    child.stdin.write("go\n")
    child.stdin.flush()
    return time.perf_counter()


def reference(source: Path, out: Path, in_process: bool) -> float:
    """Build ``out`` uninterrupted; return the build's duration, seconds."""
    if in_process:
        warm_up(source)
        started = time.perf_counter()
        plain_build([str(source), str(out)], in_process=True)
        return time.perf_counter() - started
    child = start_build(source, out)
    started = go(child)
    _, errors = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the reference build failed: {errors}")
    return time.perf_counter() - started


def plain_build(args: list[str], in_process: bool) -> None:
    """``ccfkit build ARGS`` (with :data:`BUILD`) in a fresh process, or in this one."""
    if in_process:
        from click.testing import CliRunner

        from ccfkit.cli import main

        result = CliRunner().invoke(main, ["build", *args, *BUILD])
        code, errors = result.exit_code, result.output
    else:
        command = [sys.executable, "-m", "ccfkit.cli", "build", *args, *BUILD]
        result = subprocess.run(command, check=False, capture_output=True, text=True)
        code, errors = result.returncode, result.stderr
    if code != 0:
        raise RuntimeError(f"ccfkit build {' '.join(args)} failed: {errors}")


def what_is_left(out: Path) -> str:
    """What a killed build left at ``out``, in words."""
    import zarr

    from ccfkit.store import OutputState, output_state

    state = output_state(out)
    if state is not OutputState.INCOMPLETE:
        return state.name.lower()
    done = zarr.open_group(str(out), mode="r")["done"][:]
    return f"incomplete, {int(done.sum())}/{done.size} chunks done"


def killed_and_resumed(
    source: Path, out: Path, moment: float, whole: Path, in_process: bool = False
) -> Trial:
    """Kill a build of ``source`` into ``out`` at ``moment``, finish it, compare with ``whole``.

    ``in_process``: finish in this process (faster: no interpreter start).
    """
    shutil.rmtree(out, ignore_errors=True)
    child = start_build(source, out)
    started = go(child)
    time.sleep(max(0.0, moment - (time.perf_counter() - started)))
    child.send_signal(signal.SIGKILL)
    child.communicate()
    left = what_is_left(out)
    extra = ["--resume"] if out.exists() else []
    plain_build([str(source), str(out), *extra], in_process)
    return Trial(moment, left, extra[0] if extra else "a fresh build", same_store(out, whole))


def same_store(a: Path, b: Path) -> bool:
    """Both complete, with the same arrays, value for value, and the same noise attributes."""
    import zarr

    first, second = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    if first.attrs["status"] != "complete" or second.attrs["status"] != "complete":
        return False
    if sorted(first.array_keys()) != sorted(second.array_keys()):
        return False
    if first.attrs["noise"] != second.attrs["noise"]:
        return False
    return all(np.array_equal(first[k][:], second[k][:], equal_nan=first[k].dtype.kind == "f")
               for k in first.array_keys())  # fmt: skip


def moments(count: int, duration: float, seed: int) -> list[float]:
    """One seeded moment in each of ``count`` equal slices of ``[0, duration)``."""
    rng = np.random.default_rng(seed)
    return [(k + rng.random()) * duration / count for k in range(count)]


def run_trials(
    workdir: Path, count: int, seed: int, frames: int, in_process: bool = False
) -> tuple[float, list[Trial]]:
    """The reference build's duration and one :class:`Trial` per moment.

    ``in_process``: the reference build and the finishing builds run in this
    process (the killed ones always run in their own).
    """
    from ccfkit.simulate import SimulationConfig
    from ccfkit.simulate.cxi_file import write_simulated

    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "input.cxi"
    write_simulated(source, SimulationConfig(size=64), frames, seed, overwrite=True,
                    progress=False)  # fmt: skip
    whole = workdir / "whole.zarr"
    shutil.rmtree(whole, ignore_errors=True)
    duration = reference(source, whole, in_process)
    trials = [
        killed_and_resumed(source, workdir / "killed.zarr", moment, whole, in_process)
        for moment in moments(count, duration, seed)
    ]
    return duration, trials


# --------------------------------------------------------------------------
# trainer fit and trainer predict -o
# --------------------------------------------------------------------------

#: A small network for a few epochs on one thread (results reproducible, resume exact).
FIT = ["--epochs", "3", "--width", "8", "--batch-size", "8", "--workers", "0", "--device", "cpu",
       "--threads", "1", "--quiet"]  # fmt: skip

#: A trainer command that waits for a line on stdin after importing torch and the trainer.
TRAINER_CHILD = """
import sys
import torch, trainer.cli, trainer.loop, trainer.inference
print("ready", flush=True)
sys.stdin.readline()
trainer.cli.main()
"""


def start_trainer(*args: str) -> subprocess.Popen:
    """A ``trainer ARGS`` process, imports done, waiting for :func:`go`."""
    command = [sys.executable, "-c", TRAINER_CHILD, *args]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout.readline().strip() == "ready"
    return child


def trainer(*args: str, in_process: bool = False) -> None:
    """``trainer ARGS`` to the end, in a fresh process or in this one; RuntimeError if it fails."""
    if in_process:
        from click.testing import CliRunner

        from trainer.cli import main as program

        result = CliRunner().invoke(program, list(args))
        code, errors = result.exit_code, result.output
    else:
        command = [sys.executable, "-m", "trainer", *args]
        result = subprocess.run(command, check=False, capture_output=True, text=True)
        code, errors = result.returncode, result.stderr
    if code != 0:
        raise RuntimeError(f"trainer {' '.join(args)} failed: {errors}")


def killed_at(moment: float, *args: str) -> None:
    """Start ``trainer ARGS`` and SIGKILL it ``moment`` seconds after it started."""
    child = start_trainer(*args)
    started = go(child)
    time.sleep(max(0.0, moment - (time.perf_counter() - started)))
    child.send_signal(signal.SIGKILL)
    child.communicate()


def timed_trainer(*args: str) -> float:
    """Run ``trainer ARGS`` uninterrupted (imports not counted); its duration, seconds."""
    child = start_trainer(*args)
    started = go(child)
    _, errors = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"trainer {' '.join(args)} failed: {errors}")
    return time.perf_counter() - started


def what_the_run_left(run_dir: Path) -> str:
    """What a killed ``trainer fit`` left, in words."""
    if not run_dir.exists():
        return "missing"
    names = sorted(p.name for p in run_dir.iterdir())
    if "last.pt" in names:
        return "a run with last.pt"
    return "a run directory without last.pt" if names else "an empty directory"


def same_run(a: Path, b: Path) -> bool:
    """The same weights in ``last.pt`` and the same metrics.csv (timings aside)."""
    import csv

    import torch

    first, second = (torch.load(r / "last.pt", weights_only=True)["model"] for r in (a, b))
    if first.keys() != second.keys() or not all(torch.equal(first[k], second[k]) for k in first):
        return False
    timings = {"seconds", "samples_per_s"}
    rows = [[{k: v for k, v in row.items() if k not in timings}
             for row in csv.DictReader((r / "metrics.csv").open())] for r in (a, b)]  # fmt: skip
    return rows[0] == rows[1]


def fit_trials(workdir: Path, store: Path, count: int, seed: int, in_process: bool = False
               ) -> tuple[float, list[Trial]]:  # fmt: skip
    """Kill ``trainer fit`` at ``count`` moments; each finished run compared with the whole one."""
    whole = workdir / "whole_run"
    shutil.rmtree(whole, ignore_errors=True)
    duration = timed_trainer("fit", str(store), "--run-dir", str(whole), *FIT)
    trials = []
    for moment in moments(count, duration, seed):
        run_dir = workdir / "killed_run"
        shutil.rmtree(run_dir, ignore_errors=True)
        killed_at(moment, "fit", str(store), "--run-dir", str(run_dir), *FIT)
        left = what_the_run_left(run_dir)
        extra = {"a run with last.pt": ["--resume"], "missing": []}.get(left, ["--overwrite"])
        trainer("fit", str(store), "--run-dir", str(run_dir), *FIT, *extra, in_process=in_process)
        finished = extra[0] if extra else "a fresh run"
        trials.append(Trial(moment, left, finished, same_run(run_dir, whole)))
    return duration, trials


def predict_trials(workdir: Path, store: Path, run_dir: Path, count: int, seed: int,
                   in_process: bool = False) -> tuple[float, list[Trial]]:  # fmt: skip
    """Kill ``trainer predict -o`` over an older file at ``count`` moments (see the module doc)."""
    whole, older = workdir / "whole.csv", workdir / "older.csv"
    for path in (whole, older):
        path.unlink(missing_ok=True)
    trainer("predict", str(run_dir), str(store), "-o", str(older), "--checkpoint", "last",
            in_process=in_process)  # fmt: skip
    duration = timed_trainer("predict", str(run_dir), str(store), "-o", str(whole))
    old_text, new_text = older.read_text(), whole.read_text()
    trials = []
    for moment in moments(count, duration, seed):
        out = workdir / "killed.csv"
        shutil.copy(older, out)
        killed_at(moment, "predict", str(run_dir), str(store), "-o", str(out))
        text = out.read_text()
        left = {old_text: "the older file", new_text: "the new file"}.get(text, "A TORN FILE")
        trainer("predict", str(run_dir), str(store), "-o", str(out), in_process=in_process)
        identical = left != "A TORN FILE" and out.read_text() == new_text
        trials.append(Trial(moment, left, "predicted again", identical))
    return duration, trials


def print_trials(what: str, duration: float, trials: list[Trial]) -> bool:
    """One Markdown row per trial and a summary line; whether every trial finished identical."""
    print(f"\n{what}: uninterrupted {duration:.2f} s")
    print("| kill at (s) | what the kill left | finished with | identical |")
    print("|---|---|---|---|")
    for t in trials:
        print(
            f"| {t.moment:.3f} | {t.left} | {t.resumed_with} | {'yes' if t.identical else 'NO'} |"
        )
    same = sum(t.identical for t in trials)
    print(f"\n{same} of {len(trials)} killed {what} runs finished identical to the reference")
    return same == len(trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=("build", "fit", "predict"), default="build")
    parser.add_argument("--moments", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ccfkit-kill-resume"))
    args = parser.parse_args()
    from harness import machine

    described = machine()
    print(f"CPU: {described['CPU']}; cores: {described['cores']}")
    count = args.moments if args.what == "build" else 0
    duration, trials = run_trials(args.workdir, count, args.seed, args.frames)
    if args.what == "build":
        print(f"build: {args.frames} frames, {' '.join(BUILD)}")
        success = print_trials("build", duration, trials)
    elif args.what == "fit":
        print(f"trainer fit {' '.join(FIT)} on {args.frames} frames")
        success = print_trials("fit", *fit_trials(args.workdir, args.workdir / "whole.zarr",
                                                  args.moments, args.seed))  # fmt: skip
    else:
        store, run_dir = args.workdir / "whole.zarr", args.workdir / "run"
        shutil.rmtree(run_dir, ignore_errors=True)
        trainer("fit", str(store), "--run-dir", str(run_dir), *FIT)
        print(f"trainer predict -o CSV, {args.frames} frames")
        success = print_trials("predict", *predict_trials(args.workdir, store, run_dir,
                                                          args.moments, args.seed))  # fmt: skip
    if not success:
        sys.exit(1)


if __name__ == "__main__":
    main()
