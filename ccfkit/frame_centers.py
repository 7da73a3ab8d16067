"""Maps of frames that each have their own beam centre.

Where a file gives one beam centre per frame (a jittering beam), the build
uses their mean and says so (:func:`say_mean_center`), or, asked to
(``--center per-frame``), resamples each frame around its own centre: the polar plan of frame ``k`` is the
build's plan moved to ``centers[k]``, with the build's radial range (one
``radius`` for the whole store). Frames with the same centre share one plan;
the maps are those of building each frame alone at its centre with that
range (tested). A plan costs far more than a map (docs/performance.md,
"Facility inputs"), so this is exact, not cheap: a file whose centres
repeat pays one plan per distinct centre.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from .io.errors import InputError
from .polar import PlanSpec, PolarPlan, RegularGrid

logger = logging.getLogger(__name__)

__all__ = ["check_centers", "fixed_range", "say_mean_center"]


def say_mean_center(source) -> None:
    """One warning line: the file gives a centre per frame, and the build uses their mean.

    The spread is in the store too (``input.center_per_frame``).
    """
    spread = source.describe_centers()
    logger.warning(
        "one beam centre per frame in the input: every frame uses their mean (%.2f, %.2f); "
        "they spread %.2f px (rms), at most %.2f px from it (recorded as "
        "input.center_per_frame; --center per-frame resamples each frame at its own)",
        *source.center, spread["std_px"], spread["max_px"],
    )  # fmt: skip


def fixed_range(spec: PlanSpec, plan: PolarPlan) -> PlanSpec:
    """``spec`` with the radial range ``plan`` resolved (``r_min="auto"`` becomes a number).

    Rings placed in momentum transfer have their radii already (the same at every centre).
    """
    if spec.grid.q_range is not None:
        return spec
    return replace(spec, grid=replace(spec.grid, r_min=plan.r_min, r_max=plan.r_max))


def check_centers(spec: PlanSpec, centers: np.ndarray, n_frames: int) -> None:
    """InputError unless there is one centre per frame, each one a plan can be built around.

    Parameters
    ----------
    spec : PlanSpec
        The build's plan (its pixel layout and shape).
    centers : (N, 2) float64
        ``(cx, cy)`` per frame, pixels.
    n_frames : int
        Frames of the input.
    """
    if len(centers) != n_frames:
        raise InputError(
            f"the input gives {len(centers)} beam centres for {n_frames} frames; give --center X,Y"
        )
    plan = spec.plan()
    pixels = spec.pixels or RegularGrid(spec.shape)
    for centre in np.unique(centers, axis=0):
        try:
            pixels.check_center((float(centre[0]), float(centre[1])))
        except ValueError as error:
            raise InputError(f"a frame's beam centre: {error}") from None
    logger.info(
        "one beam centre per frame: each frame is resampled at its own (%d distinct; "
        "radii %.2f to %.2f px for all)",
        len(np.unique(centers, axis=0)), plan.r_min, plan.r_max,
    )  # fmt: skip
