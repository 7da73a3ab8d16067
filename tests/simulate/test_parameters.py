"""``ccfkit.simulate.parameters``: what is drawn for each frame."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ccfkit import simulate as sim

from .helpers import config


def test_fluence_is_log_uniform_over_the_range():
    cfg = config(fluence=(1e4, 1e6), mix="sphere=1")
    fluence = sim.draw_parameters(cfg, 0, np.arange(4000)).fluence
    assert fluence.min() >= 1e4 and fluence.max() <= 1e6
    logs = np.log10(fluence)
    # log10 is uniform on [4, 6]: mean 5, sd 2 / sqrt(12); 5 sigma of the mean of 4000.
    assert logs.mean() == pytest.approx(5.0, abs=5 * (2 / math.sqrt(12)) / math.sqrt(4000))
