"""The ``ccfkit`` command line."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="ccfkit")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Two-point cross-correlation maps of diffraction images."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", default=259, show_default=True, help="Image side in pixels.")
@click.option("--order", default=8, show_default=True, help="Angular order of the upper triangle.")
@click.option(
    "--backend",
    type=click.Choice(["auto", "numpy", "numba", "cupy"]),
    default="auto",
    show_default=True,
)
def demo(out_dir: Path, size: int, order: int, backend: str) -> None:
    """Compute maps of generated patterns and draw them into OUT_DIR."""
    from .demo import run_demo

    written = run_demo(out_dir, size=size, order=order, backend=backend)
    for path in written:
        click.echo(f"wrote {path}")
