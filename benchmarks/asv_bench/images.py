"""The benchmark geometry and seeded synthetic diffraction-like images, shared by all."""

from __future__ import annotations

import numpy as np

#: Detector shape (H, W) of the benchmark images.
SHAPE = (259, 259)
#: Radial bins Q, angular samples P, and the angular order of the maps (and of the
#: rings' modulation in :func:`make_images`).
Q_BINS, PHI_BINS, ORDER = 224, 512, 8


def make_images(count: int, shape: tuple[int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    """Seeded synthetic diffraction-like images.

    Each image is positive noise plus three Gaussian rings whose intensity is
    modulated at angular order 8 with a random phase, and a radial falloff.

    Parameters
    ----------
    count : int
        Number of images.
    shape : (int, int)
        Image shape (H, W).
    seed : int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    (count, H, W) float32 ndarray
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y -= (height - 1) / 2
    x -= (width - 1) / 2
    radius = np.hypot(x, y)
    angle = np.arctan2(y, x)
    images = rng.random((count, height, width), dtype=np.float32) * 0.3
    images += (50.0 / (radius + 10.0)).astype(np.float32)
    for ring in (35.0, 70.0, 105.0):
        centre = ring + rng.normal(0.0, 2.0, size=(count, 1, 1)).astype(np.float32)
        phase = rng.uniform(0.0, 2 * np.pi, size=(count, 1, 1)).astype(np.float32)
        profile = np.exp(-0.5 * ((radius - centre) / 3.0) ** 2)
        images += profile * (1.0 + 0.5 * np.cos(ORDER * (angle - phase)))
    return images
