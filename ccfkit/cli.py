"""The ``ccfkit`` command line."""

from __future__ import annotations

import contextlib
import gc
import logging
import traceback
from pathlib import Path

import click
import numpy as np

from ._version import __version__
from .backends import NAMES as BACKEND_NAMES
from .build_config import BuildConfig
from .ccf import Estimator, Precision, Scale
from .settings import Compressor, MapDtype, NoiseLevel, WriteMethod, values
from .simulate import DEFAULT_MIX, Kind, Polarization, SimulationConfig

#: What ``--backend`` accepts: ``auto`` and every backend's name.
BACKEND_CHOICES = ("auto", *BACKEND_NAMES)


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
    default=BuildConfig.orders[0],
    show_default=True,
    help="Angular order of the upper triangle.",
)
@click.option(
    "--seed", default=BuildConfig.seed, show_default=True, help="Seed of simulation and noise."
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
    """Parse ``--center``: None, "auto" or "X,Y"."""
    if value is None or value == "auto":
        return value
    try:
        cx, cy = (float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected X,Y in pixels or 'auto', got {value!r}") from None
    return cx, cy


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--noise",
    type=click.Choice(values(NoiseLevel)),
    default=BuildConfig.noise,
    show_default=True,
    help="Uniform noise U(0, b) added before resampling (docs/build.md, noise).",
)
@click.option("--seed", default=BuildConfig.seed, show_default=True, help="Seed of the noise.")
@click.option(
    "--orders",
    default=None,
    metavar="N[,N...]",
    help="Angular orders: the first fills the upper triangle, each further one adds a channel "
    f"with its order map [{','.join(map(str, BuildConfig.orders))}].",
)
@click.option("--order", type=int, default=None, help="One angular order (same as --orders N).")
@click.option(
    "--q-bins",
    default=BuildConfig.q_bins,
    show_default=True,
    help="Radial bins Q (maps are Q x Q).",
)
@click.option(
    "--phi-bins", default=BuildConfig.phi_bins, show_default=True, help="Angular samples P."
)
@click.option(
    "--r-min",
    default=BuildConfig.r_min,
    show_default=True,
    metavar="PIXELS|auto",
    help="Smallest radius, pixels; 'auto': where rings become usable under the mask.",
)
@click.option(
    "--r-max", type=float, default=None, help="Largest radius, pixels [largest full circle]."
)
@click.option(
    "--min-ring-fraction",
    type=click.FloatRange(0, 1),
    default=BuildConfig.min_ring_fraction,
    show_default=True,
    help="Rings with a smaller fraction of valid samples are unused (0 in every map).",
)
@click.option(
    "--delta",
    default=BuildConfig.delta,
    show_default=True,
    help="Angular separation of the full map, rad.",
)
@click.option(
    "--estimator",
    type=click.Choice(values(Estimator)),
    default=BuildConfig.estimator,
    show_default=True,
    help="Order-n map: from each ring's Fourier coefficient (the paper's, Eq. 14), or "
    "mask-corrected over all lags (no leakage of the mask; docs/ccf.md).",
)
@click.option(
    "--scale",
    type=click.Choice(values(Scale)),
    default=BuildConfig.scale,
    show_default=True,
    help="Each triangle divided by its largest |value| (the paper's); 'ring': by the rings' "
    "mean intensities (normalised CCF, clipped to [-1, 1]); or unscaled.",
)
@click.option(
    "--precision",
    type=click.Choice(values(Precision)),
    default=BuildConfig.precision,
    show_default=True,
    help="The full map's product: float32, or bf16 inputs with float32 sums where the "
    "hardware has bf16 units (AMX, AVX512-BF16, GPU tensor cores; float32 elsewhere); "
    "bf16-emulated: bf16's roundings on any hardware (slow; to study their effect).",
)
@click.option(
    "--backend",
    type=click.Choice(BACKEND_CHOICES),
    default="auto",
    show_default=True,
    help="Engine: CuPy on a GPU, else Numba; numpy is the slow reference.",
)
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
@click.option(
    "--center",
    default=None,
    metavar="X,Y|auto",
    help="Beam centre in pixels (x = column), or 'auto' [the file's, else the middle].",
)
@click.option("--keep-images", is_flag=True, help="Also store the noisy frames, resized.")
@click.option(
    "--image-size",
    type=click.IntRange(min=1),
    default=224,
    show_default=True,
    help="Side of the stored frames.",
)
@click.option(
    "--dtype",
    "map_dtype",
    type=click.Choice(values(MapDtype)),
    default=BuildConfig.map_dtype,
    show_default=True,
    help="Stored map dtype (float16 needs --scale maxabs).",
)
@click.option(
    "--compressor",
    type=click.Choice(values(Compressor)),
    default=Compressor.NONE.value,
    show_default=True,
    help="Codec of the stored maps (Blosc: LZ4 with byte shuffle, Zstd with bit shuffle).",
)
@click.option(
    "--chunk",
    "chunk_frames",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Frames per store chunk and per Dask task.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Dask distributed scheduler (tcp://host:8786) [local threads].",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Local threads [CPUs available]."
)
@click.option(
    "--chunk-writer",
    type=click.Choice(values(WriteMethod)),
    default=WriteMethod.ZARR.value,
    show_default=True,
    help="Write map chunks through zarr, or with O_DIRECT (docs/build.md); the same store.",
)
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
@click.option("--quiet", is_flag=True, help="No progress bars.")
def build(
    inputs,
    out,
    noise,
    seed,
    orders,
    order,
    q_bins,
    phi_bins,
    r_min,
    r_max,
    min_ring_fraction,
    delta,
    estimator,
    scale,
    precision,
    backend,
    data_path,
    mask_spec,
    labels_path,
    center,
    keep_images,
    image_size,
    map_dtype,
    compressor,
    chunk_frames,
    scheduler,
    workers,
    chunk_writer,
    overwrite,
    resume,
    force,
    quiet,
):
    """Compute the CCF maps of INPUTS (CXI/HDF5 files or globs) into the Zarr store OUT."""
    from .backends import BackendUnavailableError
    from .io.source import InputError, open_source, read_mask_file
    from .pipeline import build as run_build
    from .store import StoreError, check_not_input

    if overwrite and resume:
        raise click.UsageError("--overwrite and --resume exclude each other")
    with _one_line_errors(InputError, StoreError, BackendUnavailableError, OSError):
        if mask_spec:
            check_not_input(out, [mask_spec.partition(":")[0]])
        mask, mask_origin = read_mask_file(mask_spec) if mask_spec else (None, "")
        source = open_source(
            inputs,
            data_path=data_path,
            mask=mask,
            mask_origin=mask_origin,
            labels_path=labels_path,
        )
        centre, centre_origin = _resolve_center(_center_option(center), source)
        config = BuildConfig(
            orders=_orders_option(orders, order),
            q_bins=q_bins,
            phi_bins=phi_bins,
            r_min=_r_min_option(r_min),
            r_max=r_max,
            min_ring_fraction=min_ring_fraction,
            delta=delta,
            estimator=estimator,
            scale=scale,
            precision=precision,
            noise=noise,
            seed=seed,
            image_size=image_size if keep_images else None,
            map_dtype=map_dtype,
        )
        run_build(
            source,
            str(out),
            config,
            center=centre,
            center_origin=centre_origin,
            backend=backend,
            chunk_frames=chunk_frames,
            compressor=compressor,
            overwrite=overwrite,
            resume=resume,
            force=force,
            scheduler=scheduler,
            workers=workers,
            progress=not quiet,
            write_method=chunk_writer,
        )
    click.echo(f"wrote {out}")


def _orders_option(orders: str | None, order: int | None) -> tuple[int, ...]:
    """``--orders 2,8`` (or ``--order 8``) as a tuple of ints; the default when neither is given."""
    if orders is not None and order is not None:
        raise click.UsageError("give --orders or --order, not both")
    if order is not None:
        return (order,)
    if orders is None:
        return BuildConfig.orders
    try:
        return tuple(int(n) for n in orders.split(","))
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers, got {orders!r}", param_hint="--orders"
        ) from None


def _r_min_option(r_min: str) -> float | str:
    """``--r-min``: a number of pixels, or "auto"."""
    if r_min == "auto":
        return r_min
    try:
        return float(r_min)
    except ValueError:
        raise click.BadParameter(
            f"expected a radius in pixels or 'auto', got {r_min!r}", param_hint="--r-min"
        ) from None


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
@click.option("--verify", is_flag=True, help="Read every chunk and check its crc32c checksum.")
def info(store: Path, verify: bool) -> None:
    """Print the layout, parameters and provenance of a store."""
    from .store import StoreError, open_store, verify_store
    from .summary import describe_store

    with _one_line_errors(StoreError, OSError):
        group = open_store(store)
        click.echo(describe_store(group))
        if verify:
            click.echo(f"\nverified: {verify_store(group)} chunks, every checksum right")


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


def _span(metavar: str = "MIN MAX"):
    """Options taking a MIN MAX pair of floats."""
    return {"nargs": 2, "type": float, "metavar": metavar, "show_default": True}


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
@click.option(
    "--size",
    type=int,
    default=SimulationConfig.size,
    show_default=True,
    help="Detector side in pixels; the half-width always subtends --max-angle.",
)
@click.option(
    "--radius",
    default=SimulationConfig.radius,
    **_span(),
    help="Volume-equivalent particle radius range, nm (uniform).",
)
@click.option(
    "--energy",
    default=SimulationConfig.photon_energy,
    **_span(),
    help="Photon energy range, eV (uniform per frame).",
)
@click.option(
    "--fluence",
    default=SimulationConfig.fluence,
    **_span(),
    help="Scattered photons per frame on the good pixels (log-uniform).",
)
@click.option(
    "--mix",
    default=",".join(f"{kind.name.lower()}={weight:g}" for kind, weight in DEFAULT_MIX.items()),
    show_default=True,
    help=f"What is drawn, KIND=WEIGHT,... ({', '.join(kind.name.lower() for kind in Kind)}), "
    "or 'paper' (label fractions close to the paper's Table 1).",
)
@click.option(
    "--oblate-ratio",
    default=SimulationConfig.oblate_ratio,
    **_span(),
    help="Axis ratio c/a of oblate spheroids (< 1).",
)
@click.option(
    "--prolate-ratio",
    default=SimulationConfig.prolate_ratio,
    **_span(),
    help="Axis ratio c/a of prolate spheroids (> 1).",
)
@click.option(
    "--noise/--no-noise",
    default=SimulationConfig.noise,
    show_default=True,
    help="Poisson photon noise (else expected counts).",
)
@click.option(
    "--background",
    type=float,
    default=SimulationConfig.background,
    show_default=True,
    help="Stray photons per good pixel per frame (flat).",
)
@click.option(
    "--polarization",
    type=click.Choice(values(Polarization)),
    default=SimulationConfig.polarization,
    show_default=True,
    help="Beam polarisation (linear along x or y, unpolarised) or none: no factor.",
)
@click.option(
    "--solid-angle/--no-solid-angle",
    default=SimulationConfig.solid_angle,
    show_default=True,
    help="Weight pixels by their solid angle, cos^3(2 theta).",
)
@click.option(
    "--halo",
    default=SimulationConfig.halo,
    **_span(),
    help="Stray-light halo photons per frame on the good pixels (log-uniform); 0 0: none.",
)
@click.option(
    "--halo-width",
    default=SimulationConfig.halo_width,
    **_span(),
    help="Halo width, degrees of scattering angle (uniform).",
)
@click.option(
    "--mcp/--no-mcp",
    default=SimulationConfig.mcp,
    show_default=True,
    help="MCP + phosphor response: per-photon gain spread and blur.",
)
@click.option(
    "--gain-spread",
    type=float,
    default=SimulationConfig.gain_spread,
    show_default=True,
    help="With --mcp: relative standard deviation of one photon's gain.",
)
@click.option(
    "--blur",
    type=float,
    default=SimulationConfig.blur,
    show_default=True,
    help="With --mcp: phosphor blur, Gaussian standard deviation in pixels.",
)
@click.option(
    "--jitter",
    type=float,
    default=SimulationConfig.jitter,
    show_default=True,
    help="Beam-centre jitter: radius of the disc it is drawn in, px.",
)
@click.option(
    "--beam-offset",
    type=(float, float),
    default=(0.0, 0.0),
    show_default=True,
    metavar="DX DY",
    help="Mean beam centre from the detector middle, px (the jitter disc is around it).",
)
@click.option(
    "--panel-gap",
    type=float,
    default=0.0,
    show_default=True,
    help="Width of the masked gaps between four detector panels, px (0: one panel).",
)
@click.option(
    "--hole",
    type=float,
    default=SimulationConfig.hole_radius,
    show_default=True,
    help="Radius of the detector's central hole (masked), px.",
)
@click.option(
    "--distance",
    type=float,
    default=SimulationConfig.distance,
    show_default=True,
    help="Sample-detector distance, m.",
)
@click.option(
    "--max-angle",
    type=float,
    default=SimulationConfig.max_angle,
    show_default=True,
    help="Scattering angle at the detector half-width, degrees.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=_default_workers,
    show_default="CPUs, at most 4",
    help="Rendering threads.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def simulate(
    out: Path,
    n_frames,
    seed,
    size,
    radius,
    energy,
    fluence,
    mix,
    oblate_ratio,
    prolate_ratio,
    noise,
    background,
    polarization,
    solid_angle,
    halo,
    halo_width,
    mcp,
    gain_spread,
    blur,
    jitter,
    beam_offset,
    panel_gap,
    hole,
    distance,
    max_angle,
    workers,
    overwrite,
    quiet,
) -> None:
    """Write N simulated, labelled diffraction frames to the CXI file OUT.

    Helium-droplet-like spheres, spheroids and pairs of spheres in the Born
    approximation on the Ewald sphere, XUV photons of a linearly polarised
    beam, a flat detector with a central hole, stray light, Poisson noise;
    labels as in the paper's Table 1 (see docs/simulate.md).
    """
    from .simulate.cxi_file import write_simulated

    try:
        config = SimulationConfig(
            size=size,
            distance=distance,
            max_angle=max_angle,
            radius=radius,
            photon_energy=energy,
            fluence=fluence,
            mix=mix,
            oblate_ratio=oblate_ratio,
            prolate_ratio=prolate_ratio,
            noise=noise,
            background=background,
            polarization=polarization,
            solid_angle=solid_angle,
            halo=halo,
            halo_width=halo_width,
            mcp=mcp,
            gain_spread=gain_spread,
            blur=blur,
            jitter=jitter,
            beam_offset=beam_offset,
            hole_radius=hole,
            panel_gap=panel_gap,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        report = write_simulated(
            out, config, n_frames, seed, overwrite=overwrite, workers=workers, progress=not quiet
        )
    except (FileExistsError, FileNotFoundError, IsADirectoryError) as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot write {out}: {error}") from None
    counts = ", ".join(f"{name} {count}" for name, count in report["label_counts"].items())
    click.echo(
        f"wrote {out}: {n_frames} frames in {report['seconds']:.1f} s "
        f"({report['frames_per_second']:.0f} frames/s); labels: {counts}"
    )


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
def simulate_examples(out: Path, seed: int, size: int, noise: bool) -> None:
    """Draw one simulated frame per class (log scale) into the PNG file OUT.

    The frames are those `ccfkit simulate --seed SEED` (default options) makes
    at the indices shown in the titles.
    """
    from .atomic import atomic_output
    from .simulate import draw_examples

    try:
        config = SimulationConfig(size=size, noise=noise)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    try:
        with atomic_output(out, overwrite=True) as partial:
            panels = draw_examples(config, seed, partial)
    except (FileNotFoundError, IsADirectoryError) as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot write {out}: {error}") from None
    for title, index, names in panels:
        click.echo(f"{title:28s} frame {index:5d}: {', '.join(names)}")
    click.echo(f"wrote {out}")


@main.command("estimator-figure")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--frame", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="A frame (.npy, (H, W)) [a simulated one].")  # fmt: skip
@click.option("--mask", "mask_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Its mask (.npy, True = good) [a beam stop and panel gaps].")  # fmt: skip
@click.option("--center", default=None, metavar="X,Y", help="Beam centre [the middle].")
@click.option("--q-bins", default=224, show_default=True)
@click.option("--phi-bins", default=512, show_default=True)
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
