"""Helpers of the label-page and gallery tests: a tiny store, a 1-epoch run, headless Chromium.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``; ``make test``
installs it where it can), driven by Playwright's Python package, which
brings its own driver and downloads nothing. Where either is missing the
browser tests skip and say why, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

#: Debian's Chromium (the package ``chromium``).
CHROMIUM = Path(os.environ.get("CCFKIT_CHROMIUM", "/usr/bin/chromium"))
#: Every network wait of a test, milliseconds: a page that hangs fails, it does not block.
TIMEOUT_MS = 20_000


def invoke(main, *args):
    """Run a click command; returns the result (exit code and output)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def make_store(root: Path, *, n: int = 40, keep_images: bool = True, seed: int = 3) -> Path:
    """A tiny simulated, labelled store (48 px frames, 16 x 16 maps) in ``root``."""
    from ccfkit.cli import main as ccfkit_main

    cxi, store = root / "sim.cxi", root / "maps.zarr"
    result = invoke(ccfkit_main, "simulate", cxi, "--n", n, "--size", 48, "--seed", seed,
                    "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    images = ["--keep-images", "--image-size", 32] if keep_images else []
    result = invoke(ccfkit_main, "build", cxi, store, "--q-bins", 16, "--phi-bins", 32,
                    "--chunk", 16, "--backend", "numpy", "--quiet", *images)  # fmt: skip
    assert result.exit_code == 0, result.output
    return store


def make_run(store: Path, run_dir: Path, **train) -> Path:
    """A 1-epoch, 8-channel run on ``store`` (CPU, no workers)."""
    from trainer.config import TrainConfig
    from trainer.data import inspect_store
    from trainer.loop import fit
    from trainer.model import ModelConfig

    names = inspect_store(store).label_names
    config = TrainConfig(store=str(store), epochs=1, batch_size=16, workers=0, device="cpu",
                         **train)  # fmt: skip
    fit(run_dir, ModelConfig(num_classes=len(names), width=8), config, progress=False)
    return run_dir


def store_labels(store: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """``(names, (N, C) uint8)``: the simulator's true labels kept in the store."""
    import zarr

    labels = zarr.open_group(str(store), mode="r")["labels"]
    return tuple(labels.attrs["names"]), labels[:]


def browser_missing() -> str | None:
    """Why no browser test can run here, or None."""
    if shutil.which(str(CHROMIUM)) is None:
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; `make test` does as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ModuleNotFoundError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (Playwright), closed after the module's tests."""
    reason = browser_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run under CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        chromium = driver.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"],
            timeout=TIMEOUT_MS,
        )  # fmt: skip
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    """``(page, problems)``: ``url`` loaded; ``problems`` collects console errors and failures."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
    page.goto(url, wait_until="load")
    return page, problems


def assert_not_uniform(png_path: Path) -> None:
    """A screenshot with more than a few colours (a blank page has one)."""
    from matplotlib.image import imread

    pixels = imread(str(png_path))
    flat = pixels.reshape(-1, pixels.shape[-1])
    colours = np.unique(np.round(flat * 255).astype(np.uint8), axis=0)
    assert len(colours) > 50, f"{png_path}: only {len(colours)} colours"
    assert flat.std(axis=0).max() > 0.05


def run_names(run_dir: Path) -> list[str]:
    return json.loads((run_dir / "config.json").read_text())["store"]["label_names"]
