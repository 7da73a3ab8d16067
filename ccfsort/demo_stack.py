"""The demo on module stacks: a real detector's frames, from simulation to a sorted gallery.

``trainer demo-stack OUT_DIR`` (``make demo-stack``) runs the path of
multi-module detectors end to end on data it makes itself, the same steps
as these commands (docs/build.md, "Inputs"; docs/training.md)::

    ccfkit simulate train.h5 --n 96 --geometry agipd --jitter 0   # writes train.geom
    ccfkit simulate new.h5 --n 32 --geometry agipd --jitter 0 --seed 1
    ccfkit build train.h5 train.zarr --geometry train.geom --r-min 60 --r-max 400 ...
    trainer fit train.zarr --run-dir run --epochs 2 --width 16
    trainer predict run new.h5 -o predictions.csv      # the store's recorded geometry
    trainer gallery run new.h5 -o gallery.html         # thumbnails assembled by extra-geom

The frames are ``(frame, module, ss, fs)`` stacks of a built-in detector
(:data:`ccfkit.simulate.stack.DETECTORS`: AGIPD 1M by default); the maps
sample the true pixel positions, the new frames are sorted without
``--geometry`` (the training store recorded it), and the labels the
simulator drew tell how well a briefly trained network did.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

__all__ = ["DEMO_FILES", "DEMO_MANIFEST", "STACK_MAPS", "run_stack_demo"]

logger = logging.getLogger(__name__)

#: Written into OUT first: the files of OUT the demo wrote (a rerun replaces only those).
DEMO_MANIFEST = "demo-stack.json"
#: What the demo writes into OUT.
DEMO_FILES = ("train.h5", "train.geom", "new.h5", "new.geom", "train.zarr", "run",
              "predictions.csv", "gallery.html")  # fmt: skip

#: The demo's map recipe, every setting named (radii in pixels of the geometry).
STACK_MAPS = {
    "q_bins": 112,
    "phi_bins": 256,
    "r_min": 60.0,
    "r_max": 400.0,
    "min_ring_fraction": 0.3,
    "orders": (8,),
    "estimator": "ring",
    "scale": "maxabs",
    "noise": "none",
}


def run_stack_demo(
    out_dir,
    *,
    detector: str = "agipd",
    frames: int = 96,
    new_frames: int = 32,
    epochs: int = 2,
    width: int = 16,
    maps: dict | None = None,
    seed: int = 0,
    backend: str = "auto",
    say=logger.warning,
) -> dict:
    """Simulate module stacks, build with their geometry, fit briefly, predict and draw.

    Parameters
    ----------
    out_dir : path
        Created if needed. Receives ``train.h5``, ``train.geom``, ``new.h5``,
        ``new.geom``, ``train.zarr``, ``run/``, ``predictions.csv`` and
        ``gallery.html``, and first :data:`DEMO_MANIFEST`: on a rerun the
        demo's own files are replaced, anything else in their place is refused.
    detector : str
        A built-in detector (``agipd``, ``jungfrau``, ``pnccd``).
    frames, new_frames : int
        Frames to train on and frames to sort.
    epochs, width : int
        The brief fit: epochs, and the network's first-stage channels.
    maps : dict, optional
        Build parameters replacing :data:`STACK_MAPS`' (e.g. a smaller grid).
    seed : int
        Seed of the training frames (the new ones: ``seed + 1``) and the fit.
    backend : str
        The engine's backend.
    say : callable
        Receives one line per step (the equivalent command).

    Returns
    -------
    dict
        ``stack_shape``, ``frames``, ``sorted`` (new frames), ``accuracy``
        (per-label accuracy on the new frames, at the run's threshold),
        ``files`` (name -> path).

    Raises
    ------
    ccfkit.outputs.OutputRefused
        A file or directory where the demo writes one that no earlier demo
        wrote (nothing is written then).
    """
    from ccfkit.simulate import SimulationConfig
    from ccfkit.simulate.stack import write_simulated_stack

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _claim_outputs(out_dir)
    files = {name: out_dir / name for name in ("train.h5", "new.h5", "train.zarr", "run",
                                                 "predictions.csv", "gallery.html")}  # fmt: skip
    simulation = dataclasses.replace(SimulationConfig(), jitter=0.0)
    reports = {}
    for name, n, offset in (("train.h5", frames, 0), ("new.h5", new_frames, 1)):
        say(f"ccfkit simulate {files[name]} --n {n} --geometry {detector} --jitter 0 "
            f"--seed {seed + offset}")  # fmt: skip
        reports[name] = write_simulated_stack(files[name], simulation, n, seed + offset,
                                              detector, overwrite=True)  # fmt: skip
    report, geometry = reports["train.h5"], Path(reports["train.h5"]["geometry"])
    _build(files["train.h5"], files["train.zarr"], geometry, {**STACK_MAPS, **(maps or {})},
           backend, say)  # fmt: skip
    names = _fit(files["train.zarr"], files["run"], epochs, width, seed, say)
    result, truth = _predict(files, backend, say)
    predicted = _predicted_labels(result, names)
    return {
        "stack_shape": tuple(report["stack_shape"]),
        "frames": frames,
        "sorted": len(predicted),
        "accuracy": float((predicted == truth).mean()),
        "files": {name: str(path) for name, path in files.items()},
    }


def _claim_outputs(out_dir: Path) -> None:
    """Refuse what is in the place of :data:`DEMO_FILES` unless the demo wrote it; list them.

    Raises
    ------
    ccfkit.outputs.OutputRefused
        Such a path not listed by ``out_dir``'s :data:`DEMO_MANIFEST`, or a
        manifest the demo did not write.
    """
    import json

    from ccfkit.atomic import atomic_output
    from ccfkit.outputs import OutputRefused

    manifest = out_dir / DEMO_MANIFEST
    ours: set[str] = set()
    if manifest.exists() or manifest.is_symlink():
        try:
            recorded = json.loads(manifest.read_text())
            ours = set(recorded["files"]) if recorded.get("tool") == "trainer demo-stack" else None
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            ours = None
        if ours is None:
            raise OutputRefused(f"{manifest} exists and was not written by trainer demo-stack: "
                                "refusing to replace it; choose another OUT")  # fmt: skip
    for name in DEMO_FILES:
        path = out_dir / name
        if (path.exists() or path.is_symlink()) and name not in ours:
            raise OutputRefused(
                f"{path} exists and was not written by trainer demo-stack: refusing to replace "
                "it; move it or choose another OUT"
            )
    with atomic_output(manifest, overwrite=True) as partial:
        partial.write_text(json.dumps({"tool": "trainer demo-stack", "files": DEMO_FILES}) + "\n")


def _build(frames: Path, store: Path, geometry: Path, parameters: dict, backend: str, say):
    """``ccfkit build FRAMES STORE --geometry GEOMETRY`` with ``parameters``."""
    from ccfkit.build_config import BuildConfig
    from ccfkit.io.source import open_source
    from ccfkit.pipeline import build

    options = " ".join(f"--{key.replace('_', '-')} {_option(value)}"
                       for key, value in parameters.items())  # fmt: skip
    say(f"ccfkit build {frames} {store} --geometry {geometry} {options}")
    source = open_source([frames], geometry=geometry)
    config = BuildConfig.from_parameters(parameters)
    build(source, str(store), config, backend=backend, overwrite=True, progress=False)


def _option(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _fit(store: Path, run: Path, epochs: int, width: int, seed: int, say) -> list[str]:
    """``trainer fit STORE RUN`` briefly, on the CPU; the run's label names."""
    from trainer.config import TrainConfig
    from trainer.data import inspect_store
    from trainer.loop import fit
    from trainer.model import ModelConfig

    say(f"trainer fit {store} --run-dir {run} --epochs {epochs} --width {width} --seed {seed} "
        "--device cpu")  # fmt: skip
    names = list(inspect_store(store).label_names)
    config = TrainConfig(store=str(store), epochs=epochs, batch_size=16, workers=0,
                         device="cpu", seed=seed)  # fmt: skip
    fit(run, ModelConfig(num_classes=len(names), width=width), config, progress=False,
        overwrite=True)  # fmt: skip
    return names


def _predict(files: dict, backend: str, say) -> tuple[dict, np.ndarray]:
    """Predict and draw the new frames without ``--geometry``, predicted once.

    Returns :func:`ccfsort.sorting.predict_frames`'s result and the frames'
    true labels (N, C) uint8.
    """
    from ccfkit.cli_inputs import open_frames

    from .gallery import gallery
    from .sorting import predict_frames, write_predictions

    new, run = files["new.h5"], files["run"]
    say(f"trainer predict {run} {new} -o {files['predictions.csv']}")
    result = predict_frames(run, [str(new)], backend=backend, progress=False)
    write_predictions(result, files["predictions.csv"])
    say(f"trainer gallery {run} {new} -o {files['gallery.html']}")
    gallery(run, [str(new)], files["gallery.html"], backend=backend, predicted=result)
    return result, open_frames([str(new)], geometry=new.with_suffix(".geom")).labels


def _predicted_labels(result: dict, names: list[str]) -> np.ndarray:
    """(N, C) uint8: the 0/1 labels of a prediction at its threshold, in ``names`` order."""
    columns = [list(result["names"]).index(name) for name in names]
    return (result["probabilities"][:, columns] >= result["threshold"]).astype(np.uint8)
