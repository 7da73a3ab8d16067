"""The ``ccfkit`` command line."""

from __future__ import annotations

import contextlib
import gc
import logging
import traceback
from dataclasses import fields
from pathlib import Path

import click
import numpy as np

from ._version import __version__
from .build_config import (
    BACKEND_CHOICES,
    PAPER_RECIPE,
    BuildConfig,
    BuildOptions,
    NoiseSettings,
)
from .cli_inputs import input_options, open_input
from .cli_options import apply_options, field_options, take_fields
from .polar import RingGrid
from .simulate import DEFAULT_MIX, Kind, Polarization, SimulationConfig


@click.group()
@click.version_option(__version__, prog_name="ccfkit")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Two-point cross-correlation maps of diffraction images."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--frames", default=96, show_default=True, help="Frames to simulate.")
@click.option(
    "--order",
    default=BuildConfig().maps.orders[0],
    show_default=True,
    help="Angular order of the upper triangle.",
)
@click.option(
    "--seed", default=NoiseSettings.seed, show_default=True, help="Seed of simulation and noise."
)
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True)
def demo(out_dir: Path, frames: int, order: int, seed: int, backend: str) -> None:
    """Simulate frames, build their stores (noise none and max), draw them into OUT_DIR."""
    from .demo import run_demo

    for path in run_demo(out_dir, frames=frames, order=order, backend=backend, seed=seed):
        click.echo(f"wrote {path}")


@contextlib.contextmanager
def _one_line_errors(*types: type[BaseException]):
    """An error of ``types`` (the library's own, ``OSError``) becomes one line and exit status 1.

    Only those: any other exception is a bug and keeps its traceback. The
    frames of the error's traceback are cleared at once, so what they hold
    (an HDF5 data set of a file that is closed) is released now rather than
    while the interpreter shuts down (where h5py crashed, SIGSEGV).
    """
    try:
        yield
    except types as error:
        traceback.clear_frames(error.__traceback__)
        raise click.ClickException(" ".join(str(error).split())) from None


def _center_option(value: str | None):
    """Parse ``--center``: None, "auto", "per-frame" or "X,Y"."""
    if value in (None, "auto", "per-frame"):
        return value
    try:
        cx, cy = (float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected X,Y in pixels or 'auto', got {value!r}") from None
    return cx, cy


def recipe_options(recipe: BuildConfig) -> list:
    """The options of every setting of a store's recipe, defaults from ``recipe``."""
    parts = [getattr(recipe, part.name) for part in fields(recipe)]
    return [option for part in parts for option in field_options(type(part), defaults=part)]


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.argument("out", type=click.Path(path_type=Path))
@apply_options(recipe_options(BuildConfig()))
@click.option("--order", type=int, default=None, help="One angular order (same as --orders N).")
@click.option(
    "--paper",
    is_flag=True,
    help="The paper's map (PAPER_RECIPE: order 8, r-min 0, every ring with a valid sample, "
    "ring estimator, maxabs, 224 x 512); a map option that asks otherwise is refused.",
)
@apply_options(field_options(BuildOptions))
@click.option("--data-path", default=None, help="Data set of the frames [CXI conventions].")
@click.option(
    "--mask",
    "mask_spec",
    default=None,
    metavar="FILE[:PATH]",
    help="Mask file (.npy, or HDF5 with a data set path): True/1 = good pixel; integers at "
    "a CXI mask path are a CXI bit mask (a 'convention' attribute overrides; docs/build.md).",
)
@click.option("--labels-path", default=None, help="Data set of the labels [CXI-like locations].")
@input_options
@click.option(
    "--center",
    default=None,
    metavar="X,Y|auto|per-frame",
    help="Beam centre in pixels (x = column), or 'auto', or 'per-frame': each frame at the "
    "file's centre for it (exact, slower) [the file's (their mean), else the middle].",
)
@click.option("--keep-images", is_flag=True, help="Also store the noisy frames, resized.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing ccfkit store (or fill an empty directory); nothing else.",
)
@click.option("--resume", is_flag=True, help="Finish an interrupted build.")
@click.option(
    "--force",
    is_flag=True,
    help="Accept fewer than 1 % good pixels, or --r-max beyond the detector.",
)
@click.option(
    "--q-placement",
    type=click.Choice(["per-frame", "mean"]),
    default="per-frame",
    show_default=True,
    help="--q-range on frames of several wavelengths or distances: each frame's rings at its "
    "own (grouped to 1e-3), or all at their mean (off in q by the frames' spread).",
)
@click.option(
    "--mask-bad-maps",
    is_flag=True,
    help="Store a map with NaN/inf values as 0 and record its frame, instead of stopping.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def build(ctx, inputs, out, order, paper, data_path, mask_spec, labels_path, center, keep_images,
          overwrite, resume, force, q_placement, mask_bad_maps, quiet, geometry, detector,
          pulses, incomplete, **settings):  # fmt: skip
    """Compute the CCF maps of INPUTS (CXI/HDF5 files, globs, or a run) into the store OUT."""
    from .backends import BackendUnavailableError
    from .io.source import InputError
    from .pipeline import build as run_build
    from .store import StoreError

    if overwrite and resume:
        raise click.UsageError("--overwrite and --resume exclude each other")
    if order is not None:
        if ctx.get_parameter_source("orders") is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError("give --orders or --order, not both")
        settings["orders"] = (order,)
    if paper:
        settings.update(_paper_map(ctx, settings, order))
    pixel_range = [
        f"--{name.replace('_', '-')}"
        for name in ("r_min", "r_max")
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    ]
    if settings.get("q_range") is not None and pixel_range:
        raise click.UsageError(f"give --q-range or {'/'.join(pixel_range)}, not both")
    if not keep_images:
        settings["image_size"] = None
    options = take_fields(BuildOptions, settings)
    with _one_line_errors(InputError, StoreError, BackendUnavailableError, OSError):
        config = BuildConfig.from_parameters(settings)
        facility = {
            "geometry": geometry,
            "detector": detector,
            "pulses": pulses,
            "incomplete": incomplete,
        }
        source, center = open_input(
            inputs, out, mask_spec=mask_spec, center=center, data_path=data_path,
            labels_path=labels_path, facility=facility,
        )  # fmt: skip
        centre, centre_origin = _resolve_center(_center_option(center), source)
        run_build(source, str(out), config, center=centre, center_origin=centre_origin,
                  overwrite=overwrite, resume=resume, force=force, progress=not quiet,
                  mask_bad_maps=mask_bad_maps, q_placement=q_placement, **options)  # fmt: skip
    click.echo(f"wrote {out}")


def _paper_map(ctx, settings: dict, order: int | None) -> dict:
    """The map settings of ``--paper``: PAPER_RECIPE's, by their parameter keys.

    Raises
    ------
    click.UsageError
        One line naming the map options given on the command line whose
        values ask for other maps than the paper's (its own values may be
        given again).
    """
    given = {
        key: settings[key]
        for key in BuildConfig.map_parameter_keys()
        if ctx.get_parameter_source(key) is not click.core.ParameterSource.DEFAULT
        or (key == "orders" and order is not None)
    }
    contradicting = PAPER_RECIPE.map_differences(given)
    if contradicting:
        names = {key: key.replace("_", "-") for key in contradicting}
        if order is not None and "orders" in names:
            names["orders"] = "order"
        named = ", ".join(f"--{names[key]} {_shown(given[key])}" for key in contradicting)
        raise click.UsageError(
            f"--paper is the paper's map (PAPER_RECIPE); {named} "
            f"{'asks' if len(contradicting) == 1 else 'ask'} for another: drop --paper "
            'and give --order 8 with the options that differ (docs/ccf.md, "Defaults")'
        )
    paper = PAPER_RECIPE.parameters()
    return {key: paper[key] for key in BuildConfig.map_parameter_keys()}


def _shown(value) -> str:
    """A setting as it is written on the command line (``8,2``; ``0.02 0.12``)."""
    if isinstance(value, tuple):
        return ("," if all(isinstance(v, int) for v in value) else " ").join(map(str, value))
    return str(value)


def _resolve_center(center, source):
    """The centre to use and where it came from (None: the pipeline's default)."""
    if center != "auto":
        return center, "given" if center else "file"
    from .center import estimate_center
    from .io.source import InputError

    picks = np.linspace(0, source.n_frames - 1, min(source.n_frames, 256)).astype(int)
    frames = np.stack([source.reader[int(i)] for i in np.unique(picks)])
    try:
        estimate = estimate_center(frames, source.mask)
    except ValueError as error:
        raise InputError(f"--center auto: {error}; give --center X,Y") from None
    logging.getLogger(__name__).info("estimated beam centre: (%.2f, %.2f)", *estimate)
    return estimate, f"auto (centro-symmetry of {len(frames)} frames)"


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--verify", is_flag=True, help="Check every array, chunk, checksum and digest.")
def info(store: Path, verify: bool) -> None:
    """Print the layout, parameters and provenance of a store."""
    from .store import StoreError, open_store, verify_store
    from .summary import describe_store

    with _one_line_errors(StoreError, OSError):
        group = open_store(store)
        click.echo(describe_store(group))
        if verify:
            click.echo(f"\nverified: {verify_store(group)} chunks, checksums and digests right")


@main.command()
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--index", "frame", default=0, show_default=True, help="Frame (row of the store).")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="PNG file.")
def show(store: Path, frame: int, output: Path) -> None:
    """Draw one frame as in the paper's Fig 4: image, noisy image, merged map."""
    from .io.source import InputError
    from .store import StoreError, open_store
    from .summary import draw_frame

    with _one_line_errors(StoreError, InputError, IndexError, OSError):
        draw_frame(open_store(store), frame, output)
    click.echo(f"wrote {output}")


def _default_workers() -> int:
    """Rendering threads of ``simulate``: the CPUs this process may use, at most 4."""
    from .provenance import usable_cpus

    return min(4, usable_cpus())


#: The simulator's options where its fields' types and docstring are not enough
#: (the help of the others is SimulationConfig's description of the field).
SIMULATION_OPTIONS = {
    "photon_energy": {"option": "--energy"},
    "hole_radius": {"option": "--hole"},
    "beam_offset": {"metavar": "DX DY"},
    "polarization": {"choices": Polarization},
    "mix": {
        "type": str,
        "option_default": ",".join(
            f"{kind.name.lower()}={weight:g}" for kind, weight in DEFAULT_MIX.items()
        ),
        "help": f"What is drawn, KIND=WEIGHT,... ({', '.join(kind.name.lower() for kind in Kind)}),"
        " or 'paper' (label fractions close to the paper's Table 1).",
    },
}


@main.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--n",
    "n_frames",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Number of frames.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed: frame i depends only on (seed, i) and the options.",
)
@apply_options(field_options(SimulationConfig, overrides=SIMULATION_OPTIONS))
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=_default_workers,
    show_default="CPUs, at most 4",
    help="Rendering threads.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--geometry", default=None, metavar="FILE|NAME",
              help="Module stacks (frame, module, ss, fs) at this detector's pixels: a CrystFEL "
              "file, or agipd, jungfrau, pnccd (written beside OUT as .geom); docs/simulate.md.")  # fmt: skip
def simulate(out: Path, n_frames, seed, workers, overwrite, quiet, geometry, **settings) -> None:
    """Write N simulated, labelled diffraction frames to the CXI file OUT.

    Helium-droplet-like spheres, spheroids and pairs of spheres in the Born
    approximation on the Ewald sphere, XUV photons of a linearly polarised
    beam, a flat detector with a central hole, stray light, Poisson noise;
    labels as in the paper's Table 1 (see docs/simulate.md).
    """
    from .simulate.cxi_file import write_simulated

    try:
        config = SimulationConfig(**settings)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        if geometry is not None:
            report = _simulate_stack(out, config, n_frames, seed, geometry, overwrite)
        else:
            report = write_simulated(out, config, n_frames, seed, overwrite=overwrite,
                                     workers=workers, progress=not quiet)  # fmt: skip
    except (FileExistsError, FileNotFoundError, IsADirectoryError) as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot write {out}: {error}") from None
    counts = ", ".join(f"{name} {count}" for name, count in report["label_counts"].items())
    click.echo(
        f"wrote {out}: {n_frames} frames in {report['seconds']:.1f} s "
        f"({report['frames_per_second']:.0f} frames/s); labels: {counts}"
    )


def _simulate_stack(out, config, n_frames, seed, geometry, overwrite) -> dict:
    """``ccfkit simulate --geometry``: module stacks (:mod:`ccfkit.simulate.stack`)."""
    from .simulate.stack import write_simulated_stack

    try:
        report = write_simulated_stack(out, config, n_frames, seed, geometry, overwrite=overwrite)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"geometry: {report['geometry']}, frames of {report['stack_shape']}")
    return report


@main.command("simulate-examples")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--size",
    type=int,
    default=SimulationConfig.size,
    show_default=True,
    help="Detector side, pixels.",
)
@click.option(
    "--noise/--no-noise",
    default=SimulationConfig.noise,
    show_default=True,
    help="Poisson photon noise.",
)
@click.option("--randomize", is_flag=True,
              help="One sphere per seed SEED..SEED+8 of `simulate --randomize`: 9 detectors.")  # fmt: skip
def simulate_examples(out: Path, seed: int, size: int, noise: bool, randomize: bool) -> None:
    """Draw one simulated frame per class (log scale) into the PNG file OUT.

    The frames are those `ccfkit simulate --seed SEED` (default options) makes
    at the indices shown in the titles; with --randomize, a sphere from each of
    nine randomised detectors.
    """
    from .atomic import atomic_output
    from .simulate import draw_examples, draw_randomized_examples

    try:
        config = SimulationConfig(size=size, noise=noise, randomize=randomize)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        with atomic_output(out, overwrite=True) as partial:
            if randomize:
                panels = draw_randomized_examples(config, range(seed, seed + 9), partial)
            else:
                panels = draw_examples(config, seed, partial)
    except (FileNotFoundError, IsADirectoryError) as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot write {out}: {error}") from None
    for title, index, names in panels:
        names = names if isinstance(names, str) else ", ".join(names)
        click.echo(f"{title!s:28s} frame {index:5d}: {names}")
    click.echo(f"wrote {out}")


@main.command("estimator-figure")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--frame", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A frame (.npy, (H, W)) [a simulated one].")  # fmt: skip
@click.option("--mask", "mask_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Its mask (.npy, True = good) [a beam stop and panel gaps].")  # fmt: skip
@click.option("--center", default=None, metavar="X,Y", help="Beam centre [the middle].")
@click.option("--q-bins", default=RingGrid.q_bins, show_default=True)
@click.option("--phi-bins", default=RingGrid.phi_bins, show_default=True)
def estimator_figure(out: Path, frame, mask_path, center, q_bins, phi_bins) -> None:
    """Draw the paper's map beside usable rings / mask-corrected / ring scale into OUT (PNG).

    Also the isotropic leakage of each order-n estimator under the mask
    (docs/ccf.md, "What the estimators and scalings show").
    """
    from .atomic import atomic_output
    from .plotting import estimators_figure

    image, mask = _figure_frame(frame, mask_path)
    if center is None:
        centre = ((image.shape[1] - 1) / 2, (image.shape[0] - 1) / 2)
    else:
        centre = _center_option(center)
    try:
        fig = estimators_figure(image, mask, centre, q_bins=q_bins, phi_bins=phi_bins)
        with atomic_output(out, overwrite=True) as partial:
            fig.savefig(partial, dpi=80, format="png")
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot write {out}: {error}") from None
    click.echo(f"wrote {out}")


def _figure_frame(frame: Path | None, mask_path: Path | None):
    """The (image, mask) of ``estimator-figure``: the files given, or a simulated frame."""
    if frame is not None:
        image = np.load(frame).astype(np.float64)
    else:
        from .simulate import SimulationConfig, draw_parameters, render_frames

        config = SimulationConfig(size=259)
        image = render_frames(draw_parameters(config, 3, [0]), config, 3)[0].astype(np.float64)
    if mask_path is not None:
        mask = np.load(mask_path).astype(bool)
    else:  # a beam stop and two panel gaps, like a segmented detector
        height, width = image.shape
        y, x = np.indices(image.shape)
        mask = np.hypot(x - (width - 1) / 2, y - (height - 1) / 2) > 0.06 * min(image.shape)
        mask[:, width // 2 - 3 : width // 2 + 2] = False
        mask[height // 3 : height // 3 + 4, :] = False
    if mask.shape != image.shape:
        raise click.UsageError(f"mask {mask.shape} and frame {image.shape} differ in shape")
    return image, mask


def run() -> None:
    """The ``ccfkit`` program: the command, then a quick exit.

    The interpreter's last garbage collection walks every object the
    libraries created (Numba's type system, zarr, Dask: a noticeable part of
    a short command, docs/performance.md "Small costs"); nothing is left to
    collect when the process ends, so the objects are frozen out of its way
    first (``gc.freeze``).
    """
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    run()
