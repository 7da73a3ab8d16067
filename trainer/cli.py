"""The ``trainer`` command line (the training loop lands with its own issue)."""

import click


@click.group()
def main() -> None:
    """Train the noise-robust ResNet-18 on ccfkit stores (not implemented yet)."""
