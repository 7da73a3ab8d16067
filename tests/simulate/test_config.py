"""``ccfkit.simulate.config``: the configuration, its checks, and the package's names."""

from __future__ import annotations

import math

import pytest

from ccfkit import simulate as sim
from ccfkit.simulate import instrument, rendering

from .helpers import run


@pytest.mark.parametrize(
    "args, message",
    [
        (["--radius", "300", "100"], "exceeds the maximum"),
        (["--radius", "0", "100"], "radius"),
        (["--energy", "-5", "20"], "photon energy"),
        (["--fluence", "1e5", "1e3"], "fluence"),
        (["--mix", "sphere=1,cube=2"], "unknown kind 'cube'"),
        (["--mix", "sphere=-1"], ">= 0"),
        (["--mix", "sphere=0"], "no positive weight"),
        (["--oblate-ratio", "0.5", "1.5"], "oblate ratio"),
        (["--jitter", "-1"], "jitter"),
        (["--hole", "40"], "hole radius"),
        (["--size", "8"], "size"),
        (["--n", "0"], "--n"),
        (["--seed", "-1"], "--seed"),
        (["--radius", "100"], "--radius"),
        (["--halo", "0", "100"], "halo: the minimum must be > 0"),
        (["--halo-width", "5", "2"], "halo width"),
        (["--gain-spread", "-1"], "gain spread"),
        (["--polarization", "circular"], "--polarization"),
        (["--panel-gap", "-2"], "panel gap"),
        (["--beam-offset", "15", "0"], "beam offset plus the jitter"),
    ],
)
def test_bad_input_is_a_one_line_error_and_leaves_no_file(tmp_path, args, message):
    out = tmp_path / "bad.cxi"
    result = run("simulate", out, "--size", 65, "--n", 4, *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert list(tmp_path.iterdir()) == []


#: The public names of the single-module simulator (``ccfkit/simulate.py`` before the
#: package), including those it imported from the instrument module.
FORMER_NAMES = (
    "ASYMMETRIC_COS_TILT", "ASYMMETRY_MIN_PHASE", "DEFAULT_MIX", "DISPLAY_NAMES",
    "DOUBLE_MIN_DRIFT", "DOUBLE_SEPARATION_NM", "Detector", "EMPTY_BELOW_PHOTONS",
    "EXAMPLE_PANELS", "EXCLUSIVE_GROUPS", "FrameParameters", "HC_EV_NM", "Kind", "LABELS",
    "MIN_FRINGE_CONTRAST", "NEWTON_MIN_FRINGES", "NEWTON_SEPARATION_NM", "PAPER_MIX", "PARENTS",
    "PARTNER_MIN_INTENSITY", "PARTNER_RATIO", "POISSON_CUT", "PROLATE_MIN_ASPECT",
    "Polarization", "STREAK_MIN_ASPECT", "SimulationConfig", "TWO_SPHERE_KINDS",
    "VISIBLE_FRINGE_SHIFT", "VISIBLE_PHOTONS", "assign_labels", "draw_examples",
    "draw_parameters", "example_frames", "expected_counts", "fringe_shift", "fringe_visibility",
    "label_rules", "mcp_response", "momentum_transfer", "parse_mix", "particle_intensity",
    "partner_features", "photon_energy_to_wavelength", "poisson_counts",
    "polarization_coefficients", "polarization_factor", "projected_semi_axes", "q_vectors",
    "render_frames", "solid_angle_factor", "sphere_form_factor", "stray_light_halo",
    "visible_radius",
)  # fmt: skip


def test_every_former_name_still_imports_from_the_package():
    exported = set(sim.__all__)
    assert set(FORMER_NAMES) <= exported, set(FORMER_NAMES) - exported
    assert all(hasattr(sim, name) for name in exported)  # what __all__ promises, resolved
    assert sim.render_frames is rendering.render_frames
    assert sim.Polarization is instrument.Polarization


def test_a_mix_is_parsed_normalised_and_checked():
    mix = sim.parse_mix("sphere=3, empty=1")
    assert mix[sim.Kind.SPHERE] == 0.75 and mix[sim.Kind.EMPTY] == 0.25
    assert sum(mix.values()) == pytest.approx(1.0) and mix[sim.Kind.NEWTON] == 0.0
    assert sim.parse_mix("paper") == pytest.approx(sim.PAPER_MIX)
    assert sim.SimulationConfig(mix={"prolate": 2}).mix[sim.Kind.PROLATE] == 1.0
    with pytest.raises(ValueError, match="is not KIND=WEIGHT"):
        sim.parse_mix("sphere")


def test_to_dict_names_units_and_the_detector_follows_the_config():
    cfg = sim.SimulationConfig(size=101, distance=0.1, max_angle=20.0, hole_radius=5.0)
    record = cfg.to_dict()
    assert record["distance_m"] == 0.1 and record["max_angle_deg"] == 20.0
    assert record["mix"]["sphere"] == pytest.approx(0.4) and record["radius_nm"] == [150.0, 600.0]
    det = cfg.detector
    assert det.shape == (101, 101) and det.nominal_center == (50.0, 50.0)
    assert det.pixel_size == pytest.approx(2 * 0.1 * math.tan(math.radians(20.0)) / 101)
    good = det.good_pixels()
    assert not good[50, 50] and not good[50, 54] and good[50, 55]  # the 5 px hole
