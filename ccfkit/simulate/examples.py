"""The example figure of ``ccfkit simulate-examples``: one simulated frame per class.

Matplotlib is imported only when the figure is drawn (no pyplot: no global
backend state).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from .config import Kind, SimulationConfig
from .labels import DISPLAY_NAMES, LABELS, assign_labels
from .parameters import FrameParameters, draw_parameters
from .randomization import file_detector
from .rendering import render_frames

logger = logging.getLogger(__name__)

__all__ = ["EXAMPLE_PANELS", "draw_examples", "draw_randomized_examples", "example_frames"]

#: The panels of the example grid: a title and the rule a frame must satisfy.
EXAMPLE_PANELS = (
    ("Round (sphere)", lambda lab, kind: lab["round"] and kind == Kind.SPHERE),
    ("Round (oblate)", lambda lab, kind: lab["round"] and kind == Kind.OBLATE),
    ("Elliptical", lambda lab, kind: lab["elliptical"]),
    ("Prolate", lambda lab, kind: lab["prolate"] and not lab["streak"]),
    ("Streak", lambda lab, kind: lab["streak"]),
    ("Empty", lambda lab, kind: lab["empty"]),
    ("Double Rings", lambda lab, kind: lab["double_rings"] and kind == Kind.DOUBLE),
    ("Newton rings", lambda lab, kind: lab["newton_rings"] and kind == Kind.NEWTON),
    ("Asymmetric", lambda lab, kind: lab["asymmetric"] and kind == Kind.ASYMMETRIC),
)


def example_frames(config: SimulationConfig, seed: int, *, search: int = 2000):
    """Find, among frames ``0..search-1`` of ``seed``, the first of each example panel.

    Returns
    -------
    list of (str, int, FrameParameters, (C,) uint8, (H, W) float32)
        Panel title, frame index, its parameters, labels and data.
    """
    detector = file_detector(config, seed)
    params = draw_parameters(config, seed, np.arange(search))
    labels = assign_labels(params, detector)
    found = []
    for title, rule in EXAMPLE_PANELS:
        for row in range(search):
            lab = dict(zip(LABELS, labels[row].astype(bool)))
            if rule(lab, Kind(params.kind[row])):
                one = params.take([row])
                data = render_frames(one, config, seed, detector=detector)[0]
                found.append((title, int(params.index[row]), one, labels[row], data))
                break
        else:
            logger.warning("no frame for panel %r among the first %d", title, search)
    return found


def _describe(one: FrameParameters) -> str:
    """Two lines on what was drawn for one frame (for the example titles)."""
    kind = Kind(int(one.kind[0]))
    halo = f"halo {one.halo[0]:.0f}"
    if kind == Kind.EMPTY:
        return f"nothing hit, {one.photon_energy[0]:.0f} eV, {halo}"
    a, c = one.semi_axes[0]
    tilt = math.degrees(math.acos(min(1.0, abs(float(one.axis[0, 2])))))
    shape = {
        Kind.SPHERE: "sphere",
        Kind.OBLATE: f"oblate c/a={c / a:.2f}, axis {tilt:.0f}° off the beam",
        Kind.PROLATE: f"prolate c/a={c / a:.2f}, axis {tilt:.0f}° off the beam",
    }.get(kind)
    if shape is None:  # two spheres
        d = one.separation[0]
        shape = (
            f"{kind.name.lower()}: R2={one.partner_radius[0]:.0f} nm, "
            f"d=({d[0]:.0f}, {d[1]:.0f}, {d[2]:.0f}) nm"
        )
    return (
        f"{shape}\nR={one.radius[0]:.0f} nm, {one.photon_energy[0]:.0f} eV, "
        f"{one.fluence[0]:.1e} photons, {halo}"
    )


def draw_examples(config: SimulationConfig, seed: int, path, *, search: int = 2000):
    """Draw one example frame per class (log scale) into ``path`` (PNG).

    Returns
    -------
    list of (str, int, tuple of str)
        Panel title, frame index and label names of each example.
    """
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    examples = example_frames(config, seed, search=search)
    detector = file_detector(config, seed)
    good = detector.good_pixels()
    cols = 3
    rows = max(1, math.ceil(len(examples) / cols))
    fig = Figure(figsize=(4.4 * cols, 4.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    summary = []
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.6")  # masked pixels: grey
    for ax, (title, index, one, labels, data) in zip(axes.ravel(), examples):
        names = tuple(DISPLAY_NAMES[name] for name, on in zip(LABELS, labels) if on)
        what = _describe(one)
        shown = np.ma.masked_array(np.log10(1 + data), mask=~good)
        image = ax.imshow(shown, cmap=cmap, interpolation="nearest")
        fig.colorbar(image, ax=ax, shrink=0.8, label="log10(1 + photons)")
        ax.set_title(f"#{index}: {', '.join(names)}\n{what}", fontsize=8.5)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        summary.append((title, index, names))
    for ax in axes.ravel()[len(examples) :]:
        ax.axis("off")
    fig.suptitle(
        f"ccfkit simulate, seed {seed}: one frame per class; "
        f"{detector.shape[1]}x{detector.shape[0]} px, {config.max_angle:g}° at the edge, "
        "hole masked",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    return summary


def _describe_detector(one: FrameParameters, detector) -> str:
    """Two lines on a randomised frame's detector (for the randomised examples' titles)."""
    stop = detector.beam_stop + (" + arm" if detector.holder_angle is not None else "")
    rows, cols = detector.panel_grid
    angle = math.degrees(math.atan(detector.half_width * detector.pixel_size
                                   / float(one.distance[0] if one.distance is not None
                                           else detector.distance)))  # fmt: skip
    gain = "" if one.gain is None else f", gain {one.gain[0]:.2f}"
    noise = "" if one.read_noise is None else f", read noise {one.read_noise[0]:.2f}"
    degree = "" if one.polarization_degree is None else f", pol. {one.polarization_degree[0]:.2f}"
    return (
        f"{stop} r={detector.hole_radius:.1f} px, panels {rows}x{cols}, "
        f"{angle:.0f}° at the edge\n{one.photon_energy[0]:.0f} eV{degree}{gain}{noise}"
    )


def draw_randomized_examples(config: SimulationConfig, seeds, path, *, kind=Kind.SPHERE):
    """Draw, for each seed, the first frame of ``kind`` that ``ccfkit simulate --seed
    SEED`` makes with ``config`` (a randomised one): one detector per seed.

    Returns
    -------
    list of (int, int, str)
        Seed, frame index and the panel's description.
    """
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    cols = 3
    rows = max(1, math.ceil(len(seeds) / cols))
    fig = Figure(figsize=(4.4 * cols, 4.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.6")  # masked pixels: grey
    summary = []
    for ax, seed in zip(axes.ravel(), seeds):
        params = draw_parameters(config, seed, np.arange(200))
        row = int(np.argmax(params.kind == kind))
        one = params.take([row])
        detector = file_detector(config, seed)
        data = render_frames(one, config, seed, detector=detector)[0]
        gain = 1.0 if one.gain is None else float(one.gain[0])
        shown = np.ma.masked_array(
            np.log10(np.clip(1 + data / gain, 1, None)), mask=~detector.good_pixels()
        )
        image = ax.imshow(shown, cmap=cmap, interpolation="nearest")
        fig.colorbar(image, ax=ax, shrink=0.8, label="log10(1 + value / gain)")
        what = _describe_detector(one, detector)
        ax.set_title(f"seed {seed}, #{row}: R={one.radius[0]:.0f} nm\n{what}", fontsize=8.5)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        summary.append((seed, row, what.replace("\n", "; ")))
    for ax in axes.ravel()[len(seeds) :]:
        ax.axis("off")
    fig.suptitle(
        "ccfkit simulate --randomize: one detector per seed (file); masked pixels grey",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    return summary
