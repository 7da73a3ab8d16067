"""``ccfkit.simulate.cxi_file``: the labelled CXI file, its layout, how the build reads it,
and writing it atomically and reproducibly."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

import ccfkit
import ccfkit.store
from ccfkit import simulate as sim
from ccfkit.io import cxi
from ccfkit.io.source import InputError, open_source
from ccfkit.simulate import cxi_file as cxi_file_module
from ccfkit.simulate.cxi_file import write_simulated

from .helpers import check_label_rules, run, simulate_file


def test_file_labels_names_and_groups(cxi_file):
    with h5py.File(cxi_file, "r") as handle:
        labels = handle[cxi.LABELS_PATH][()]
        attrs = handle[cxi.LABELS_PATH].attrs
        names = [str(n) for n in attrs["names"]]
        display = [str(n) for n in attrs["display_names"]]
        groups = json.loads(attrs["exclusive_groups"])
        kind = handle["entry_1/sample_1/kind"][()]
    assert names == list(sim.LABELS)
    assert display[names.index("spherical_oblate")] == "Spherical/Oblate"
    assert display[names.index("double_rings")] == "Double Rings"
    assert groups == [list(g) for g in sim.EXCLUSIVE_GROUPS]
    assert labels.dtype == np.uint8 and labels.shape == (32, len(names))
    check_label_rules(labels, names)
    np.testing.assert_array_equal(labels[:, names.index("empty")], kind == sim.Kind.EMPTY)


def test_file_layout_units_and_provenance(cxi_file):
    with h5py.File(cxi_file, "r") as handle:
        data = handle[cxi.DATA_PATH]
        assert data.dtype == np.float32 and data.shape == (32, 65, 65)
        assert data.chunks == (1, 65, 65)
        assert handle["entry_1/instrument_1/detector_1/data"].shape == data.shape  # soft link
        det = handle["entry_1/instrument_1/detector_1"]
        assert det["distance"][()] == pytest.approx(0.065)
        pixel = det["x_pixel_size"][()]
        assert pixel == det["y_pixel_size"][()]
        assert pixel == pytest.approx(2 * 0.065 * math.tan(math.radians(30)) / 65)
        wavelength = handle["entry_1/instrument_1/source_1/wavelength"][()]
        energy = handle["entry_1/instrument_1/source_1/energy"][()]
        assert wavelength.shape == (32,)
        # 19-35 eV is 35-65 nm; E = h c / lambda
        assert np.all((wavelength > 35e-9) & (wavelength < 66e-9))
        np.testing.assert_allclose(energy * wavelength, 6.62607015e-34 * 299792458, rtol=1e-9)
        centers = det["beam_center"][()]
        assert centers.shape == (32, 2)
        assert np.all(np.hypot(centers[:, 0] - 32, centers[:, 1] - 32) <= 3.0)  # --jitter 3
        sample = handle["entry_1/sample_1"]
        semi = sample["semi_axes"][()]
        radius = sample["radius"][()]
        hit = radius > 0
        np.testing.assert_allclose(semi[hit, 0] ** 2 * semi[hit, 1], radius[hit] ** 3, rtol=1e-12)
        assert np.all((radius[hit] >= 150e-9) & (radius[hit] <= 300e-9))
        np.testing.assert_allclose(np.linalg.norm(sample["axis"][()], axis=1), 1.0, rtol=1e-12)
        assert handle.attrs["seed"] == 3
        params = json.loads(handle.attrs["parameters"])
        assert params["radius_nm"] == [150.0, 300.0] and params["size"] == 65
        # the instrument physics is in the provenance, with its formulas
        assert params["polarization"] == "horizontal" and params["solid_angle"] is True
        assert params["halo_photons"] == [1e3, 2e4] and params["mcp"] is False
        formulas = json.loads(handle.attrs["formulas"])
        assert {"polarization", "solid_angle", "halo"} <= set(formulas)
        assert handle.attrs["schema"] == "ccfkit-simulate/2"
        halo = sample["halo"][()]
        assert np.all((halo >= 1e3) & (halo <= 2e4))
        assert handle.attrs["ccfkit_version"] == ccfkit.__version__


def test_masked_pixels_are_masked(cxi_file):
    with h5py.File(cxi_file, "r") as handle:
        mask = handle[cxi.MASK_PATH][()]
        assert handle[cxi.MASK_PATH].attrs["convention"] == "cxi"
        data = handle[cxi.DATA_PATH][()]
    y, x = np.indices(mask.shape)
    hole = np.hypot(x - 32, y - 32) < 10  # default --hole 10 around the detector middle
    np.testing.assert_array_equal(mask != 0, hole)
    assert np.all(mask[hole] == cxi.PIXEL_IS_MISSING)
    assert np.all(data[:, hole] == 0)  # nothing is recorded in the hole
    assert np.all(data[:, ~hole].sum(axis=1) > 0)
    # The build's reader sees the same mask.
    source = open_source([cxi_file])
    np.testing.assert_array_equal(source.mask, ~hole)


def test_panel_gaps_and_an_offset_beam_make_partial_rings(tmp_path):
    """Gaps through the detector middle, a beam beside it: rings around the beam are cut."""
    path = simulate_file(tmp_path / "gaps.cxi", "--panel-gap", 3, "--beam-offset", 6, -4,
                         "--jitter", 1, "--seed", 2)  # fmt: skip
    with h5py.File(path, "r") as handle:
        mask = handle[cxi.MASK_PATH][()]
        data = handle[cxi.DATA_PATH][()]
        centres = handle["entry_1/instrument_1/detector_1/beam_center"][()]
    y, x = np.indices(mask.shape)
    gaps = (np.abs(x - 32) < 1.5) | (np.abs(y - 32) < 1.5)  # 3 px wide through the middle
    hole = np.hypot(x - 32, y - 32) < 10
    np.testing.assert_array_equal(mask != 0, gaps | hole)
    assert np.all(data[:, gaps] == 0)
    # every centre lies in the 1 px jitter disc around the offset
    assert np.all(np.hypot(centres[:, 0] - 38, centres[:, 1] - 28) <= 1 + 1e-9)
    # around the mean beam centre, rings keep between 50 % and all of their samples
    plan = ccfkit.make_polar_plan(mask.shape, center=(38.0, 28.0), mask=mask == 0, q_bins=16,
                                  phi_bins=64, r_min="auto")  # fmt: skip
    fraction = plan.valid.mean(axis=1)[plan.ring_used]
    assert np.any((fraction > 0.5) & (fraction < 1)), fraction


def test_the_build_reader_opens_the_file(cxi_file):
    source = open_source([cxi_file])
    assert source.n_frames == 32 and source.frame_shape == (65, 65)
    assert source.label_names == sim.LABELS
    assert source.exclusive_groups == sim.EXCLUSIVE_GROUPS
    assert source.center == pytest.approx((32.0, 32.0), abs=3.0)
    assert source.distance == pytest.approx(0.065)
    with h5py.File(cxi_file, "r") as handle:
        stored = handle[cxi.DATA_PATH][0:4]
    np.testing.assert_array_equal(source.reader[0:4], stored)


def test_the_build_carries_label_display_names_into_the_store(cxi_file, tmp_path):
    store = tmp_path / "maps.zarr"
    result = run("build", cxi_file, store, "--q-bins", 16, "--phi-bins", 32, "--quiet")
    assert result.exit_code == 0, result.output
    labels = ccfkit.store.open_store(store)["labels"]
    assert list(labels.attrs["names"]) == list(sim.LABELS)
    assert list(labels.attrs["display_names"]) == [sim.DISPLAY_NAMES[n] for n in sim.LABELS]


def write_minimal(path, *, labels_at, center_at, center):
    """Frames, labels and a beam centre at the given CXI-like locations."""
    with h5py.File(path, "w") as handle:
        handle["entry_1/data_1/data"] = np.ones((3, 20, 20), dtype=np.float32)
        labels = handle.create_dataset(labels_at, data=np.eye(3, 2, dtype=np.uint8))
        labels.attrs["names"] = ["Round", "Newton rings"]
        handle[center_at] = center


@pytest.mark.parametrize(
    "labels_at", ["entry_1/labels", "entry_1/data_1/labels", "entry_1/sample_1/labels"]
)
@pytest.mark.parametrize(
    "center_at",
    [
        "entry_1/instrument_1/detector_1/beam_center",
        "entry_1/instrument_1/detector_1/center",
        "entry_1/data_1/beam_center",
    ],
)
def test_labels_and_centres_are_found_at_the_cxi_like_locations(tmp_path, labels_at, center_at):
    """Centres are (cx, cy), x = column first: one pair or one per frame (the mean)."""
    path = tmp_path / "in.cxi"
    per_frame = np.array([[8.0, 11.0], [9.0, 12.0], [10.0, 13.0]])
    write_minimal(path, labels_at=labels_at, center_at=center_at, center=per_frame)
    source = open_source([path])
    assert source.label_names == ("Round", "Newton rings")
    np.testing.assert_array_equal(source.labels, np.eye(3, 2, dtype=np.uint8))
    assert source.center == (9.0, 12.0)
    write_minimal(path, labels_at=labels_at, center_at=center_at, center=[7.5, 4.0])
    assert open_source([path]).center == (7.5, 4.0)


def test_a_centre_that_is_not_pairs_is_a_clear_error(tmp_path):
    path = tmp_path / "in.cxi"
    write_minimal(
        path, labels_at="entry_1/labels", center_at="entry_1/instrument_1/detector_1/center",
        center=[1.0, 2.0, 3.0],
    )  # fmt: skip
    with pytest.raises(InputError, match=r"expected \(2,\) or \(N, 2\)"):
        open_source([path])


def test_compute_maps_on_a_frame_of_the_file(cxi_file):
    with h5py.File(cxi_file, "r") as handle:
        kind = handle["entry_1/sample_1/kind"][()]
        centers = handle[cxi.CENTER_PATH][()]
    index = int(np.flatnonzero(kind != sim.Kind.EMPTY)[0])
    source = open_source([cxi_file])
    frame, good = source.reader[index], source.mask
    maps = ccfkit.compute_maps(
        frame, center=tuple(centers[index]), mask=good, q_bins=24, phi_bins=64, backend="numpy"
    )
    assert maps.shape == (24, 24)
    assert np.all(np.isfinite(maps))
    assert np.abs(maps).max() == pytest.approx(1.0)  # maxabs scaling: the maps are not empty


def test_same_seed_gives_the_same_file(tmp_path):
    a = simulate_file(tmp_path / "a.cxi", "--seed", 9, "--workers", 1)
    b = simulate_file(tmp_path / "b.cxi", "--seed", 9, "--workers", 2)
    c = simulate_file(tmp_path / "c.cxi", "--seed", 10)

    def datasets(path):
        out = {}
        with h5py.File(path, "r") as handle:
            handle.visititems(
                lambda name, obj: (
                    out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
                )
            )
        return out

    da, db = datasets(a), datasets(b)
    assert da.keys() == db.keys()
    for name in da:
        assert np.array_equal(da[name], db[name]), name  # bitwise, whatever the threads
    assert a.read_bytes() == b.read_bytes()  # no time stamps in the file either
    assert not np.array_equal(da["entry_1/data_1/data"], datasets(c)["entry_1/data_1/data"])


#: Three small files: every kind; MCP response, panel gaps, an offset beam, vertical
#: polarisation, no solid angle; expected counts (no noise) blurred by the MCP, the paper's mix.
PINNED_CASES = {
    "every kind": (
        {"size": 40, "mix": "sphere=1,oblate=1,prolate=1,empty=1,double=1,newton=1,asymmetric=1"},
        14,
        7,
    ),
    "mcp, panels": (
        {
            "size": 33,
            "mcp": True,
            "panel_gap": 2.0,
            "beam_offset": (2.0, 1.0),
            "polarization": "vertical",
            "solid_angle": False,
        },
        6,
        3,
    ),
    "no noise": (
        {"size": 33, "noise": False, "mcp": True, "polarization": "unpolarised", "mix": "paper"},
        5,
        11,
    ),
}
#: Attributes that name the installed versions (not the content).
VERSION_ATTRS = {"ccfkit_version", "numpy_version"}
#: ``file_digests`` of ``PINNED_CASES``, from the code before the simulator became a package.
PINNED_DIGESTS = {
    "every kind": {
        "/": "38496d0b5ca1",
        "/cxi_version": "b6f40a216f6e",
        "/entry_1": "6fe681ca26ac",
        "/entry_1/data_1": "60138eede552",
        "/entry_1/data_1/data": "eeaf8a82a485",
        "/entry_1/instrument_1": "30bcf3093643",
        "/entry_1/instrument_1/detector_1": "35a274742ad5",
        "/entry_1/instrument_1/detector_1/beam_center": "23a207a8aa88",
        "/entry_1/instrument_1/detector_1/data": "52e4c63b6377",
        "/entry_1/instrument_1/detector_1/distance": "0dc034a7b78e",
        "/entry_1/instrument_1/detector_1/mask": "9db75da7f5a9",
        "/entry_1/instrument_1/detector_1/x_pixel_size": "255834a0871d",
        "/entry_1/instrument_1/detector_1/y_pixel_size": "255834a0871d",
        "/entry_1/instrument_1/source_1": "ebd8dec49810",
        "/entry_1/instrument_1/source_1/energy": "01a9ea3c9610",
        "/entry_1/instrument_1/source_1/wavelength": "d55515a055fd",
        "/entry_1/labels": "19035d62907a",
        "/entry_1/sample_1": "3ee28b5f9a68",
        "/entry_1/sample_1/axis": "060a71d3a0fb",
        "/entry_1/sample_1/background": "98b913ff72db",
        "/entry_1/sample_1/fluence": "17dbd2c8426d",
        "/entry_1/sample_1/fringe_shift": "b2786c3f4248",
        "/entry_1/sample_1/halo": "4dcfbf8abf1d",
        "/entry_1/sample_1/halo_width": "e25a8665f766",
        "/entry_1/sample_1/kind": "69df0b62a9b0",
        "/entry_1/sample_1/name": "5bf560772230",
        "/entry_1/sample_1/partner_radius": "2ed2ee8cc846",
        "/entry_1/sample_1/projected_semi_axes": "aebf183ff9e7",
        "/entry_1/sample_1/radius": "491ce0903143",
        "/entry_1/sample_1/semi_axes": "ecf61afbd8d5",
        "/entry_1/sample_1/separation": "7b4d124c2b19",
        "/entry_1/sample_1/visible_radius": "1e5581dee347",
    },
    "mcp, panels": {
        "/": "b6dd80ca8203",
        "/cxi_version": "b6f40a216f6e",
        "/entry_1": "6fe681ca26ac",
        "/entry_1/data_1": "60138eede552",
        "/entry_1/data_1/data": "47228d208398",
        "/entry_1/instrument_1": "30bcf3093643",
        "/entry_1/instrument_1/detector_1": "35a274742ad5",
        "/entry_1/instrument_1/detector_1/beam_center": "6d23db822c78",
        "/entry_1/instrument_1/detector_1/data": "52e4c63b6377",
        "/entry_1/instrument_1/detector_1/distance": "0dc034a7b78e",
        "/entry_1/instrument_1/detector_1/mask": "c0ab95c14898",
        "/entry_1/instrument_1/detector_1/x_pixel_size": "9121d3ca1dbb",
        "/entry_1/instrument_1/detector_1/y_pixel_size": "9121d3ca1dbb",
        "/entry_1/instrument_1/source_1": "ebd8dec49810",
        "/entry_1/instrument_1/source_1/energy": "2287688c14ed",
        "/entry_1/instrument_1/source_1/wavelength": "9a2d1df93b57",
        "/entry_1/labels": "6b765406aa50",
        "/entry_1/sample_1": "3ee28b5f9a68",
        "/entry_1/sample_1/axis": "cd75648f9a71",
        "/entry_1/sample_1/background": "98b913ff72db",
        "/entry_1/sample_1/fluence": "212e6804c685",
        "/entry_1/sample_1/fringe_shift": "f846fcedc466",
        "/entry_1/sample_1/halo": "20ae73c41f1a",
        "/entry_1/sample_1/halo_width": "1f6ea0c02275",
        "/entry_1/sample_1/kind": "854972336cb5",
        "/entry_1/sample_1/name": "5bf560772230",
        "/entry_1/sample_1/partner_radius": "f4c3a36e42c8",
        "/entry_1/sample_1/projected_semi_axes": "ceb4b7ed72ba",
        "/entry_1/sample_1/radius": "fb25af7e9263",
        "/entry_1/sample_1/semi_axes": "3ef61044d2bb",
        "/entry_1/sample_1/separation": "b3c400c9e3f2",
        "/entry_1/sample_1/visible_radius": "8909fd0c47ec",
    },
    "no noise": {
        "/": "55db88febcea",
        "/cxi_version": "b6f40a216f6e",
        "/entry_1": "6fe681ca26ac",
        "/entry_1/data_1": "60138eede552",
        "/entry_1/data_1/data": "fed7e1d653be",
        "/entry_1/instrument_1": "30bcf3093643",
        "/entry_1/instrument_1/detector_1": "35a274742ad5",
        "/entry_1/instrument_1/detector_1/beam_center": "a5bfcb66f5c2",
        "/entry_1/instrument_1/detector_1/data": "52e4c63b6377",
        "/entry_1/instrument_1/detector_1/distance": "0dc034a7b78e",
        "/entry_1/instrument_1/detector_1/mask": "385b67584360",
        "/entry_1/instrument_1/detector_1/x_pixel_size": "9121d3ca1dbb",
        "/entry_1/instrument_1/detector_1/y_pixel_size": "9121d3ca1dbb",
        "/entry_1/instrument_1/source_1": "ebd8dec49810",
        "/entry_1/instrument_1/source_1/energy": "8bdeef7f96ad",
        "/entry_1/instrument_1/source_1/wavelength": "e61cac0693aa",
        "/entry_1/labels": "829cec119340",
        "/entry_1/sample_1": "3ee28b5f9a68",
        "/entry_1/sample_1/axis": "1e06e4a835d9",
        "/entry_1/sample_1/background": "98b913ff72db",
        "/entry_1/sample_1/fluence": "7d634490c7dc",
        "/entry_1/sample_1/fringe_shift": "a53956c335ac",
        "/entry_1/sample_1/halo": "50556366be0b",
        "/entry_1/sample_1/halo_width": "ce84f2c6ea96",
        "/entry_1/sample_1/kind": "8921bb8c654e",
        "/entry_1/sample_1/name": "5bf560772230",
        "/entry_1/sample_1/partner_radius": "6f9dc1b74983",
        "/entry_1/sample_1/projected_semi_axes": "e472da09f1f9",
        "/entry_1/sample_1/radius": "a94aaec06c37",
        "/entry_1/sample_1/semi_axes": "a314e3b4be66",
        "/entry_1/sample_1/separation": "d9c302a860d2",
        "/entry_1/sample_1/visible_radius": "c4d6adc1e020",
    },
}


def _value_bytes(value) -> bytes:
    array = np.asarray(value)
    if array.dtype.kind in "OSU":  # strings: their text
        return repr(value.tolist() if isinstance(value, np.ndarray) else value).encode()
    return f"{array.dtype.str}{array.shape}".encode() + array.tobytes()


def file_digests(path) -> dict[str, str]:
    """``{HDF5 path: first 12 hex digits of a SHA-256}`` of every group, dataset and link.

    A group's digest covers its attributes (sorted, without :data:`VERSION_ATTRS`); a
    dataset's its attributes, dtype, shape and bytes; a soft link its target.
    """
    out = {}
    with h5py.File(path, "r") as handle:
        names = [""]
        handle.visit_links(names.append)
        for name in names:
            digest = hashlib.sha256()
            link = handle.get(name, getlink=True) if name else None
            if isinstance(link, h5py.SoftLink):
                digest.update(f"soft link to {link.path}".encode())
            else:
                obj = handle[name] if name else handle
                for key in sorted(set(obj.attrs) - VERSION_ATTRS):
                    digest.update(key.encode() + _value_bytes(obj.attrs[key]))
                if isinstance(obj, h5py.Dataset):
                    digest.update(_value_bytes(obj[()]))
            out["/" + name] = digest.hexdigest()[:12]
    return out


@pytest.mark.parametrize("case", list(PINNED_CASES))
def test_the_same_seed_writes_the_file_it_wrote_before(tmp_path, case):
    """Every dataset and attribute of three small files equals, bit for bit, what the
    simulator wrote before it was split into a package.

    How the pinned digests were produced: with the single-module simulator (commit
    9d07eda, ``ccfkit/simulate.py`` and ``ccfkit/simulated_file.py``), each case of
    :data:`PINNED_CASES` written by ``write_simulated(path, SimulationConfig(**overrides),
    n, seed, workers=2, block=4)`` and digested by :func:`file_digests`, on x86-64
    (Intel Xeon, AVX-512 and AMX) with NumPy 2.4.6 and Numba 0.68.1.
    The whole files were byte-identical too. The float data depend on the NumPy and
    Numba builds and the CPU's vector units (NumPy's SIMD ``sin``/``cos``, fused
    multiply-adds): on another platform only the random draws (:data:`DRAWN`) and the
    file's layout are compared.
    """
    overrides, n_frames, seed = PINNED_CASES[case]
    path = tmp_path / "pinned.cxi"
    config = sim.SimulationConfig(**overrides)
    write_simulated(path, config, n_frames, seed, workers=2, block=4, progress=False)
    got = file_digests(path)
    want = PINNED_DIGESTS[case]
    assert got.keys() == want.keys()
    # the random draws are the same on every platform; computed floats only on the recorded one
    compared = (
        set(want)
        if _on_pinned_platform()
        else {name for name in want if name.rpartition("/")[2] in DRAWN}
    )
    assert compared, "nothing compared"
    assert {name for name in compared if got[name] != want[name]} == set()


#: Datasets that hold the parameters' random draws (NumPy's Generator gives the same values
#: on every platform), as opposed to values computed with SIMD maths.
DRAWN = {
    "kind",
    "name",
    "radius",
    "semi_axes",
    "axis",
    "separation",
    "partner_radius",
    "fluence",
    "background",
    "halo",
    "halo_width",
}


def _on_pinned_platform() -> bool:
    """Whether this is the platform the digests were recorded on (see the test's docstring).

    The floats depend on the processor, not only on its AVX-512 (Numba compiles for
    the host's microarchitecture): with the same versions an AMD Zen 5 writes other
    data in the no-noise case. The digests are compared on an Intel processor with
    AVX-512 and AMX, as the recording's.
    """
    import numba

    from ccfkit.provenance import CPUINFO

    cpuinfo = CPUINFO.read_text() if CPUINFO.exists() else ""
    intel_with_amx = "GenuineIntel" in cpuinfo and all(
        f" {flag} " in cpuinfo for flag in ("avx512f", "amx_tile")
    )
    return (np.__version__, numba.__version__) == ("2.4.6", "0.68.1") and intel_with_amx


def test_existing_file_needs_overwrite_and_missing_directory_is_an_error(tmp_path):
    out = simulate_file(tmp_path / "x.cxi", n=2)
    before = out.read_bytes()
    result = run("simulate", out, "--n", 2, "--size", 65, "--seed", 1)
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert out.read_bytes() == before
    result = run("simulate", out, "--n", 2, "--size", 65, "--seed", 1, "--overwrite", "--quiet")
    assert result.exit_code == 0 and out.read_bytes() != before
    result = run("simulate", tmp_path / "nowhere" / "x.cxi", "--n", 2, "--size", 65)
    assert result.exit_code == 1 and "does not exist" in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.cxi"]


def test_a_failure_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    calls = []

    def failing(params, cfg, seed, good=None):
        calls.append(len(params))
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if Ctrl-C arrived mid-way
        return np.zeros((len(params), *cfg.detector.shape), dtype=np.float32)

    monkeypatch.setattr(cxi_file_module, "render_frames", failing)
    result = run("simulate", tmp_path / "x.cxi", "--n", 40, "--size", 65, "--workers", 1)
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == []


def test_simulate_reports_and_writes_atomically(tmp_path):
    out = tmp_path / "ok.cxi"
    result = run("simulate", out, "--n", 6, "--size", 65, "--no-noise", "--quiet")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "frames/s" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.cxi"]
    with h5py.File(out, "r") as handle:
        data = handle[cxi.DATA_PATH][()]
        assert handle[cxi.DATA_PATH].attrs["units"] == "expected photons"
    assert np.any(data != np.round(data))  # expected counts, not Poisson draws
