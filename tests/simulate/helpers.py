"""Helpers of the simulator's tests: small configurations, hand-made particles, the
command, and the rules every label array obeys.

Small detectors (65-129 px) and few frames keep the tests fast.
"""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from ccfkit import simulate as sim
from ccfkit.cli import main


def config(**overrides) -> sim.SimulationConfig:
    """A small, quiet detector: 65 px, no jitter, no background or halo unless asked."""
    base = {
        "size": 65,
        "jitter": 0.0,
        "hole_radius": 4.0,
        "background": 0.0,
        "halo": (0.0, 0.0),
        "radius": (150.0, 300.0),
    }
    base.update(overrides)
    return sim.SimulationConfig(**base)


def one_particle(
    cfg, *, a, c, axis, energy, fluence=1e5, center=None, kind=sim.Kind.PROLATE, **extra
):
    """FrameParameters of a single hand-made particle (``extra``: partner, halo fields)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    center = cfg.detector.nominal_center if center is None else center
    extra = {key: np.asarray([value], dtype=np.float64) for key, value in extra.items()}
    return sim.FrameParameters(
        index=np.array([0]),
        kind=np.array([kind], dtype=np.uint8),
        radius=np.array([(a * a * c) ** (1 / 3)]),
        semi_axes=np.array([[a, c]], dtype=np.float64),
        axis=axis[None, :],
        photon_energy=np.array([energy], dtype=np.float64),
        wavelength=sim.photon_energy_to_wavelength([energy]),
        fluence=np.array([fluence], dtype=np.float64),
        center=np.array([center], dtype=np.float64),
        **extra,
    )


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def simulate_file(path, *extra, n=16, size=65):
    result = run("simulate", path, "--n", n, "--size", size, "--quiet", *extra)
    assert result.exit_code == 0, result.output
    return path


def check_label_rules(labels: np.ndarray, names) -> None:
    col = {name: labels[:, i].astype(bool) for i, name in enumerate(names)}
    top = col["spherical_oblate"].astype(int) + col["prolate"] + col["empty"]
    assert np.all(top == 1), "every frame is exactly one of Spherical/Oblate, Prolate, Empty"
    assert not np.any(col["round"] & col["elliptical"])
    np.testing.assert_array_equal(col["round"] | col["elliptical"], col["spherical_oblate"])
    for child, parent in sim.PARENTS.items():
        assert np.all(col[parent][col[child]]), f"{child} is a {parent} subclass"
