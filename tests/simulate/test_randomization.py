"""``ccfkit.simulate.randomization``: randomised detectors (per file and per frame), their
record in the file, the detector response's statistics and the masked beam stops."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import h5py
import numpy as np
import pytest

import ccfkit.store
from ccfkit import simulate as sim
from ccfkit.io import cxi
from ccfkit.io.source import open_source
from ccfkit.simulate.cxi_file import write_simulated
from ccfkit.simulate.randomization import RANDOM_STREAM, file_detector

from .helpers import config, one_particle, run, simulate_file

DETECTOR = "entry_1/instrument_1/detector_1"
#: The new datasets a randomised file adds (absent with the randomisation off).
RANDOM_DATASETS = (f"{DETECTOR}/gain", f"{DETECTOR}/read_noise",
                   "entry_1/instrument_1/source_1/polarization_degree")  # fmt: skip


def test_off_by_default_adds_nothing_to_the_file(tmp_path):
    """With no randomisation field set, the parameters and the layout are those of a
    configuration that never heard of them (the byte-for-byte pin is in test_cxi_file)."""
    cfg = sim.SimulationConfig(size=33)
    assert not any("range" in key for key in cfg.to_dict())
    assert {"randomize", "beam_stop", "panel_grids", "polarization_degree"}.isdisjoint(
        cfg.to_dict()
    )
    assert file_detector(cfg, 5) == cfg.detector
    path = tmp_path / "plain.cxi"
    write_simulated(path, cfg, 3, 0, progress=False)
    with h5py.File(path, "r") as handle:
        assert "randomized_detector" not in handle.attrs
        assert not any(name in handle for name in RANDOM_DATASETS)
        assert handle[f"{DETECTOR}/distance"].shape == ()
        assert handle["entry_1/sample_1/background"].shape == ()


def test_randomisation_leaves_the_particles_and_the_photon_noise_streams_alone():
    plain = config(size=65, jitter=3.0)
    randomized = replace(plain, randomize=True)
    a = sim.draw_parameters(plain, 4, np.arange(50))
    b = sim.draw_parameters(randomized, 4, np.arange(50))
    for name in ("kind", "radius", "semi_axes", "axis", "photon_energy", "fluence", "halo",
                 "partner_radius", "separation"):  # fmt: skip
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    # the centre moves by the file's stop offset only: the jitter is the same draw
    offset = np.subtract(file_detector(randomized, 4).stop_center, plain.detector.nominal_center)
    np.testing.assert_allclose(b.center - a.center, np.broadcast_to(offset, a.center.shape))


@pytest.fixture(scope="module")
def random_file(tmp_path_factory):
    """40 frames of ``ccfkit simulate --randomize`` (65 px)."""
    path = tmp_path_factory.mktemp("rand") / "random.cxi"
    return simulate_file(path, "--seed", 2, "--randomize", n=40)


def test_each_per_frame_quantity_varies_within_its_range_and_is_recorded(random_file):
    ranges = sim.randomized_ranges(65)
    with h5py.File(random_file, "r") as handle:
        params = json.loads(handle.attrs["parameters"])
        det = handle[DETECTOR]
        distance, pixel = det["distance"][()], det["x_pixel_size"][()]
        gain, read_noise = det["gain"][()], det["read_noise"][()]
        degree = handle["entry_1/instrument_1/source_1/polarization_degree"][()]
        background = handle["entry_1/sample_1/background"][()]
        drawn = json.loads(handle.attrs["randomized_detector"])
        assert handle[cxi.DATA_PATH].attrs["units"].startswith("detector units")
    assert params["randomize"] is True
    assert params["max_angle_range_deg"] == [12.0, 40.0]
    assert params["gain_range_units_per_photon"] == [0.5, 4.0]
    angle = np.degrees(np.arctan(32.5 * pixel / distance))
    per_frame = {
        "max_angle_range": angle,
        "background_range": background,
        "polarization_degree": degree,
        "gain_range": gain,
        "read_noise_range": read_noise / gain,
    }
    for name, values in per_frame.items():
        lo, hi = ranges[name]
        assert values.shape == (40,), name
        assert np.all((values >= lo - 1e-9) & (values <= hi + 1e-9)), name
        # 40 uniform draws cover most of the range (P(spread < 0.6) < 1e-8)
        assert values.max() - values.min() > 0.6 * (hi - lo), name
    assert 50e-6 <= pixel <= 200e-6 and drawn["pixel_size_m"] == pytest.approx(pixel)


def test_each_per_file_quantity_varies_over_seeds_within_its_range():
    cfg = sim.SimulationConfig(size=129, randomize=True)
    ranges = sim.randomized_ranges(129)
    detectors = [file_detector(cfg, seed) for seed in range(60)]
    shapes = {(d.beam_stop, d.holder_angle is not None) for d in detectors}
    assert shapes == {("round", False), ("round", True), ("rectangle", False),
                      ("rectangle", True)}  # fmt: skip
    assert {f"{r}x{c}" for r, c in (d.panel_grid for d in detectors)} == set(ranges["panel_grids"])
    for name, values in {
        "beam_stop_range": [d.hole_radius for d in detectors],
        "panel_gap_range": [d.panel_gap for d in detectors],
        "pixel_size_range": [d.pixel_size * 1e6 for d in detectors],
    }.items():
        lo, hi = ranges[name]
        assert lo - 1e-9 <= min(values) and max(values) <= hi + 1e-9, name
        assert max(values) - min(values) > 0.7 * (hi - lo), name
    offsets = np.array([d.offset for d in detectors])
    assert np.all(np.hypot(*offsets.T) <= ranges["beam_offset_range"] + 1e-12)
    assert np.ptp(offsets, axis=0).min() > ranges["beam_offset_range"]
    # the distance follows the pixel size: the half-width still subtends max_angle
    for d in detectors:
        assert math.degrees(math.atan(d.half_width * d.pixel_size / d.distance)) == (
            pytest.approx(cfg.max_angle)
        )


def test_the_per_frame_distance_moves_the_rings_in_pixels():
    """The same sphere at two distances: its first minimum (|q| R = 4.4934) falls where
    the wide-angle geometry puts it, in pixels."""
    cfg = config(size=129, solid_angle=False, polarization="none", max_angle_range=(15.0, 40.0))
    radius_nm, energy = 300.0, 25.0
    k = 2 * math.pi / float(sim.photon_energy_to_wavelength(energy))
    two_theta = 2 * math.asin(4.4934 / radius_nm / (2 * k))
    det = cfg.detector
    for angle in (15.0, 40.0):
        distance = det.half_width * det.pixel_size / math.tan(math.radians(angle))
        one = one_particle(cfg, a=radius_nm, c=radius_nm, axis=(0, 0, 1), energy=energy,
                           kind=sim.Kind.SPHERE, distance=distance)  # fmt: skip
        frame = sim.expected_counts(one, cfg)[0]
        cx, cy = det.nominal_center
        profile = frame[int(cy), int(cx) :]  # along +x from the centre
        want = distance * math.tan(two_theta) / det.pixel_size
        lo = int(want) - 2
        got = lo + int(np.argmin(profile[lo : int(want) + 3]))
        assert abs(got - want) <= 1, (angle, got, want)


def flat_frames(gain, read_noise_photons, level, *, frames=6, size=129):
    """Empty frames of a flat ``level`` photons per pixel through a detector of ``gain``
    and read noise, and the good pixels."""
    cfg = config(size=size, mix="empty=1", background_range=(level, level),
                 gain_range=(gain, gain), read_noise_range=(read_noise_photons,) * 2)  # fmt: skip
    params = sim.draw_parameters(cfg, 1, np.arange(frames))
    good = cfg.detector.good_pixels()
    return sim.render_frames(params, cfg, 1), good


@pytest.mark.parametrize("gain, read_noise, level", [(2.5, 0.4, 3.0), (0.7, 0.0, 6.0),
                                                     (1.0, 1.5, 0.5)])  # fmt: skip
def test_gain_and_read_noise_statistics_of_an_empty_flat_frame(gain, read_noise, level):
    """Mean ``g lambda`` and variance ``g^2 lambda + sigma^2`` (``sigma = g r`` in detector
    units), over ~99,500 good pixels: 6 standard errors."""
    frames, good = flat_frames(gain, read_noise, level)
    values = frames[:, good].astype(np.float64).ravel()
    sigma = gain * read_noise
    mean, variance = gain * level, gain**2 * level + sigma**2
    n = values.size
    assert values.mean() == pytest.approx(mean, abs=6 * math.sqrt(variance / n))
    # var of the sample variance: (mu4 - var^2) / n; mu4 of the sum of a scaled Poisson
    # and a Gaussian: g^4 (lambda + 3 lambda^2) + 6 g^2 lambda sigma^2 + 3 sigma^4
    mu4 = gain**4 * (level + 3 * level**2) + 6 * gain**2 * level * sigma**2 + 3 * sigma**4
    assert values.var() == pytest.approx(variance, abs=6 * math.sqrt((mu4 - variance**2) / n))
    assert np.all(frames[:, ~good] == 0)
    if read_noise == 0:  # whole photons times the gain
        np.testing.assert_allclose(values / gain, np.round(values / gain), atol=1e-5)


def test_read_noise_comes_from_its_own_stream_and_the_seed():
    a, _ = flat_frames(2.0, 0.3, 1.0, frames=2, size=65)
    b, _ = flat_frames(2.0, 0.3, 1.0, frames=2, size=65)
    c, _ = flat_frames(2.0, 0.0, 1.0, frames=2, size=65)
    np.testing.assert_array_equal(a, b)
    # the Poisson counts are the same draws with and without read noise
    residual = (a - c) / 2.0
    assert 0.2 < residual[c != 0].std() < 0.4


def test_polarisation_degree_enters_the_thomson_factor():
    """Expected counts of a sphere at (r, 0) over (0, r): the factor's ratio
    ``(1 - (1 + d)/2 s) / (1 - (1 - d)/2 s)``, ``s = (r / D)^2``; and the fused kernel
    agrees with the NumPy reference."""
    cfg = config(size=129, solid_angle=True, polarization="horizontal",
                 polarization_degree=(0.0, 1.0))  # fmt: skip
    det = cfg.detector
    cx, cy = det.nominal_center
    r = 40
    x_over_l = r * det.pixel_size / det.distance
    s = x_over_l**2 / (1 + x_over_l**2)
    for degree in (0.0, 0.3, 1.0):
        one = one_particle(cfg, a=200.0, c=200.0, axis=(0, 0, 1), energy=30.0,
                           kind=sim.Kind.SPHERE, polarization_degree=degree)  # fmt: skip
        fused = sim.expected_counts(one, cfg)[0]
        reference = sim.expected_counts(one, cfg, engine="numpy")[0]
        np.testing.assert_allclose(fused, reference, rtol=0, atol=1e-5 * reference.max())
        ratio = fused[int(cy), int(cx) + r] / fused[int(cy) + r, int(cx)]
        want = (1 - (1 + degree) / 2 * s) / (1 - (1 - degree) / 2 * s)
        assert ratio == pytest.approx(want, rel=1e-4), degree


def test_randomised_frames_match_the_numpy_reference():
    cfg = config(size=65, jitter=3.0, halo=(1e3, 1e4), randomize=True,
                 mix="sphere=1,oblate=1,prolate=1,empty=1,double=1,newton=1,asymmetric=1")  # fmt: skip
    detector = file_detector(cfg, 7)
    params = sim.draw_parameters(cfg, 7, np.arange(24))
    fused = sim.expected_counts(params, cfg, detector=detector)
    reference = sim.expected_counts(params, cfg, engine="numpy", detector=detector)
    for got, want in zip(fused, reference):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * want.max())
    good = detector.good_pixels()
    sums = fused.sum(axis=(1, 2), dtype=np.float64)
    np.testing.assert_allclose(sums, params.fluence + params.halo + params.background * good.sum(),
                               rtol=1e-4)  # fmt: skip
    with pytest.raises(ValueError, match="per file"):
        sim.expected_counts(params, cfg)  # the detector is the file's, not the config's


@pytest.mark.parametrize("stop", ["rectangle", "round-arm", "rectangle-arm"])
def test_beam_stop_shapes_are_masked_in_the_file_and_the_frames(tmp_path, stop):
    cfg = config(size=65, beam_stop=stop, beam_stop_range=(5.0, 8.0), gain_range=(1.0, 2.0))
    detector = file_detector(cfg, 3)
    good = detector.good_pixels()
    cx, cy = detector.stop_center
    y, x = np.indices(good.shape)
    dx, dy = x - cx, y - cy
    half_w = detector.hole_radius
    half_h = half_w * detector.stop_aspect
    if stop.startswith("rectangle"):
        inside = (np.abs(dx) < half_w) & (np.abs(dy) < half_h)
        assert detector.stop_aspect != 1.0
    else:
        inside = np.hypot(dx, dy) < half_w
    assert not good[inside].any()
    if stop.endswith("-arm"):
        angle, width = detector.holder_angle, detector.holder_width
        along = dx * math.cos(angle) + dy * math.sin(angle)
        across = -dx * math.sin(angle) + dy * math.cos(angle)
        arm = (along >= 0) & (np.abs(across) <= width / 2)
        assert not good[arm].any() and arm.sum() > 20  # out to the edge
        assert good[~arm & ~inside].all()
    else:
        assert good[~inside].all() and detector.holder_angle is None
    path = tmp_path / "stop.cxi"
    write_simulated(path, cfg, 4, 3, progress=False)
    with h5py.File(path, "r") as handle:
        mask = handle[f"{DETECTOR}/mask"][()]
        data = handle[cxi.DATA_PATH][()]
        description = handle[f"{DETECTOR}/mask"].attrs["description"]
    np.testing.assert_array_equal(mask == 0, good)
    assert np.all(data[:, ~good] == 0) and np.all(data[:, good].max(axis=1) > 0)
    assert ("rectangular" in description) == stop.startswith("rectangle")
    assert ("holder arm" in description) == stop.endswith("-arm")


def test_panel_grid_gaps_lie_at_the_panel_borders():
    det = replace(config(size=64).detector, panel_grid=(4, 2), panel_gap=2.0, hole_radius=0.0)
    good = det.good_pixels()
    # two columns: one vertical gap between x = 31 and 32; four rows: gaps at 16, 32, 48
    assert not good[:, 31:33].any() and good[[10, 20, 40, 60]][:, [30, 33]].all()
    for border in (15.5, 31.5, 47.5):
        rows = [int(border - 0.5), int(border + 0.5)]
        assert not good[rows][:, :30].any()
    assert good[[10, 20, 40, 60]][:, :30].all()


def test_the_randomised_file_is_reproducible_with_its_seed(tmp_path):
    a = simulate_file(tmp_path / "a.cxi", "--seed", 5, "--randomize", "--workers", 1, n=6)
    b = simulate_file(tmp_path / "b.cxi", "--seed", 5, "--randomize", "--workers", 2, n=6)
    c = simulate_file(tmp_path / "c.cxi", "--seed", 6, "--randomize", n=6)
    assert a.read_bytes() == b.read_bytes()
    with h5py.File(a, "r") as ha, h5py.File(c, "r") as hc:
        assert ha.attrs["randomized_detector"] != hc.attrs["randomized_detector"]
        assert not np.array_equal(ha[f"{DETECTOR}/gain"][()], hc[f"{DETECTOR}/gain"][()])


def test_a_frame_does_not_depend_on_the_other_frames():
    cfg = config(size=65, randomize=True)
    all_frames = sim.draw_parameters(cfg, 9, np.arange(12))
    one = sim.draw_parameters(cfg, 9, [7])
    for name in ("distance", "background", "polarization_degree", "gain", "read_noise"):
        assert getattr(one, name)[0] == getattr(all_frames, name)[7], name
    u = np.random.default_rng([9, 7, RANDOM_STREAM]).random(8)
    assert one.gain[0] == pytest.approx(0.5 * 8.0 ** u[3])


def test_explicit_ranges_win_over_the_preset_and_need_their_physics():
    cfg = sim.SimulationConfig(size=65, randomize=True, gain_range=(1.0, 1.0), noise=False)
    assert cfg.gain_range == (1.0, 1.0) and cfg.read_noise_range is None  # no noise: none
    assert (
        sim.SimulationConfig(size=65, randomize=True, polarization="none").polarization_degree
        is None
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--beam-stop-range", "5", "2"], "exceeds the maximum"),
        (["--panel-grids", "0x3"], "panel grid"),
        (["--polarization-degree", "0.2", "1.5"], "polarization degree"),
        (
            ["--polarization-degree", "0.2", "1", "--polarization", "none"],
            "horizontal or vertical",
        ),
        (["--gain-range", "0", "2"], "gain range"),
        (["--read-noise-range", "0", "1", "--no-noise"], "read noise needs photon noise"),
        (["--max-angle-range", "10", "85"], "max angle range"),
        (["--beam-offset-range", "20"], "beam offset range"),
        (["--beam-stop", "triangle"], "--beam-stop"),
    ],
)
def test_bad_randomisation_input_is_a_one_line_error(tmp_path, args, message):
    result = run("simulate", tmp_path / "bad.cxi", "--size", 65, "--n", 2, *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_the_build_reads_a_randomised_file(tmp_path):
    """``ccfkit build`` makes maps of a randomised file: its mask (stop, arm, gaps), each
    frame's centre, the mean of the per-frame distances, its labels."""
    path = simulate_file(tmp_path / "random.cxi", "--seed", 3, "--randomize", n=8)
    out = tmp_path / "maps.zarr"
    result = run("build", path, out, "--q-bins", 16, "--phi-bins", 32, "--quiet",
                 "--center", "per-frame")  # fmt: skip
    assert result.exit_code == 0, result.output
    source = open_source([path])
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(source.mask, handle[f"{DETECTOR}/mask"][()] == 0)
        assert source.distance == pytest.approx(handle[f"{DETECTOR}/distance"][()].mean())
        centres = handle[f"{DETECTOR}/beam_center"][()]
    assert source.center == pytest.approx(tuple(centres.mean(axis=0)))
    np.testing.assert_array_equal(source.centers, centres)
    assert source.label_names == sim.LABELS
    store = ccfkit.store.open_store(out)
    assert store["labels"].shape == (8, len(sim.LABELS))
    maps = np.asarray(store["ccf"])
    assert maps.shape[0] == 8 and np.all(np.isfinite(maps))


def test_one_range_on_its_own_draws_what_it_draws_under_the_preset():
    """One uniform slot per quantity: a range given alone draws the same values as under
    ``randomize`` (equal ranges), and leaves the other quantities undrawn."""
    preset = sim.draw_parameters(config(size=65, randomize=True), 2, np.arange(30))
    alone = sim.draw_parameters(config(size=65, gain_range=(0.5, 4.0)), 2, np.arange(30))
    np.testing.assert_array_equal(alone.gain, preset.gain)
    assert alone.distance is None and alone.read_noise is None and alone.background is None
    angle = sim.draw_parameters(config(size=65, max_angle_range=(12.0, 40.0)), 2, np.arange(30))
    # the distance scales with the file's pixel size; the angle it subtends is the same draw
    half = 32.5
    det_preset = file_detector(config(size=65, randomize=True), 2)
    np.testing.assert_allclose(
        np.arctan(half * det_preset.pixel_size / preset.distance),
        np.arctan(half * config(size=65).detector.pixel_size / angle.distance),
        rtol=1e-12,
    )


def test_labels_with_per_frame_distances_equal_those_of_each_frames_own_detector():
    """The label features of frames with drawn distances equal, frame by frame, those
    computed on a detector at that frame's distance (the scalar path)."""
    cfg = config(size=129, max_angle_range=(12.0, 34.0), radius=(150.0, 600.0),
                 mix="sphere=1,oblate=1,prolate=1,double=1,newton=1,asymmetric=1")  # fmt: skip
    params = sim.draw_parameters(cfg, 5, np.arange(60))
    det = cfg.detector
    visible = sim.visible_radius(params, det)
    shift = sim.fringe_shift(params, det, visible)
    partners = sim.partner_features(params, det, visible)
    labels = sim.assign_labels(params, det, shift, partners)
    for row in range(len(params)):
        one = replace(params.take([row]), distance=None)
        own = replace(det, distance=float(params.distance[row]))
        own_visible = sim.visible_radius(one, own)
        assert own_visible[0] == pytest.approx(visible[row], rel=1e-12)
        assert sim.fringe_shift(one, own)[0] == pytest.approx(shift[row], rel=1e-12)
        own_partners = sim.partner_features(one, own)
        for name, values in partners.items():
            assert own_partners[name][0] == pytest.approx(values[row], rel=1e-6, abs=1e-9), name
        np.testing.assert_array_equal(sim.assign_labels(one, own)[0], labels[row])
    assert len({tuple(r) for r in labels}) > 3  # several label sets, not one
