"""What the CXI readers take from a file, and what they refuse before a build starts.

Lengths in the units their ``units`` attribute names (or refused when they
cannot be metres), the sources of a virtual data set found where HDF5 finds
them, beam centres one or one per frame, ``--pulses`` counted from the first
pulse of a train, and each file named once.
"""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from ccfkit.cli import main
from ccfkit.io.euxfel import parse_pulses
from ccfkit.io.source import InputError, open_source

DATA = "entry_1/data_1/data"
WAVELENGTH = "entry_1/instrument_1/source_1/wavelength"
DISTANCE = "entry_1/instrument_1/detector_1/distance"
PIXEL = "entry_1/instrument_1/detector_1/x_pixel_size"
CENTER = "entry_1/instrument_1/detector_1/beam_center"
GRID = ["--q-bins", "8", "--phi-bins", "16", "--r-min", "2", "--r-max", "10",
        "--backend", "numpy", "--noise", "none", "--quiet"]  # fmt: skip


def frames(n=4, side=32, seed=0):
    return np.random.default_rng(seed).random((n, side, side), dtype=np.float32)


def cxi(path, *, n=4, lengths=(), center=None):
    """A CXI file of ``n`` random frames; ``lengths``: (path, value, units or None) triples."""
    with h5py.File(path, "w") as handle:
        handle[DATA] = frames(n)
        for where, value, units in lengths:
            stored = handle.create_dataset(where, data=value)
            if units is not None:
                stored.attrs["units"] = units
        if center is not None:
            handle[CENTER] = np.asarray(center, np.float64)
    return path


def build(*args):
    return CliRunner().invoke(main, ["build", *map(str, args)])


def one_line(result, *words):
    """Exit 1, one ``Error:`` line naming ``words``, no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error"), result.output
    for word in words:
        assert word in lines[0], lines[0]


# -- lengths and their units -------------------------------------------------------------


@pytest.mark.parametrize(
    ("wavelength", "distance", "pixel"),
    [
        (("angstrom", 1.5), ("mm", 150.0), ("um", 75.0)),
        (("Å", 1.5), ("millimetre", 150.0), ("µm", 75.0)),  # the micro sign
        (("\u212b", 1.5), ("millimeters", 150.0), ("\u03bcm", 75.0)),  # angstrom sign, mu
        (("Angstroms", 1.5), ("cm", 15.0), ("micron", 75.0)),
        (("nm", 0.15), ("m", 0.15), ("mm", 0.075)),
        ((b"A", 1.5), (" M ", 0.15), ("micrometre", 75.0)),
    ],
)
def test_lengths_are_read_in_the_units_their_attribute_names(tmp_path, wavelength, distance,
                                                            pixel):  # fmt: skip
    lengths = [(WAVELENGTH, wavelength[1], wavelength[0]), (DISTANCE, distance[1], distance[0]),
               (PIXEL, pixel[1], pixel[0])]  # fmt: skip
    source = open_source([cxi(tmp_path / "u.cxi", lengths=lengths)])
    assert source.wavelength == pytest.approx(1.5e-10, rel=1e-12)
    assert source.distance == pytest.approx(0.15, rel=1e-12)
    assert source.pixel_size == pytest.approx(75e-6, rel=1e-12)


def test_lengths_per_frame_are_converted_frame_by_frame(tmp_path):
    energies = np.array([1.0, 1.1, 1.2, 1.3])  # angstrom
    path = cxi(tmp_path / "u.cxi", lengths=[(WAVELENGTH, energies, "angstrom")])
    source = open_source([path])
    np.testing.assert_allclose(source.geometry_per_frame["wavelength"], energies * 1e-10,
                               rtol=1e-12)  # fmt: skip
    assert source.wavelength == pytest.approx(energies.mean() * 1e-10, rel=1e-12)


def test_a_file_in_other_units_agrees_with_one_in_metres(tmp_path):
    metres = cxi(tmp_path / "a.cxi", lengths=[(DISTANCE, 0.15, None)])
    millimetres = cxi(tmp_path / "b.cxi", lengths=[(DISTANCE, 150.0, "mm")])
    assert open_source([metres, millimetres]).distance == pytest.approx(0.15, rel=1e-12)


@pytest.mark.parametrize("units", ["furlong", "keV", "pixel", ""])
def test_a_unit_that_is_no_known_length_is_refused(tmp_path, units):
    path = cxi(tmp_path / "u.cxi", lengths=[(DISTANCE, 0.15, units)])
    with pytest.raises(InputError, match=f"/{DISTANCE}.*units {units!r}"):
        open_source([path])


@pytest.mark.parametrize("units", [np.array([b"m", b"m"]), "m m", "c m"])
def test_units_that_only_join_into_a_length_are_refused(units):
    """Two strings, or a unit with a space inside, are not the unit their letters spell."""
    from ccfkit.io.lengths import metres_per_unit

    with pytest.raises(InputError, match="not a length unit"):
        metres_per_unit(units, "f.cxi: /distance")


@pytest.mark.parametrize(
    ("where", "value", "words"),
    [
        (WAVELENGTH, 1.5, "wavelength of 1.5 m"),  # angstrom without units
        (WAVELENGTH, 2e-6, "wavelength of 2e-06 m"),
        (WAVELENGTH, 5e-13, "wavelength of 5e-13 m"),
        (DISTANCE, 150.0, "detector distance of 150 m"),  # mm without units
        (PIXEL, 75.0, "pixel size of 75 m"),  # um without units
        (PIXEL, 0.2, "pixel size of 0.2 m"),
    ],
)
def test_implausible_lengths_without_units_are_refused(tmp_path, where, value, words):
    path = cxi(tmp_path / "u.cxi", lengths=[(where, value, None)])
    with pytest.raises(InputError, match="no units attribute") as refused:
        open_source([path])
    assert words in str(refused.value) and "units" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_implausible_lengths_in_units_are_refused_too(tmp_path):
    path = cxi(tmp_path / "u.cxi", lengths=[(DISTANCE, 150.0, "m")])
    with pytest.raises(InputError, match="detector distance of 150 m"):
        open_source([path])


def test_the_build_refuses_lengths_it_cannot_read_as_metres_in_one_line(tmp_path):
    path = cxi(tmp_path / "u.cxi", lengths=[(WAVELENGTH, 1.5, None)])
    out = tmp_path / "out.zarr"
    one_line(build(path, out, *GRID), "u.cxi", "wavelength of 1.5 m", "units")
    assert not out.exists()
    with h5py.File(path, "a") as handle:
        handle[WAVELENGTH].attrs["units"] = "parsec"
    one_line(build(path, out, *GRID), "u.cxi", "'parsec'")
    assert not out.exists()


# -- the sources of a virtual data set -----------------------------------------------------


def virtual_file(path, source_name, *, fill=-7.0):
    """A CXI file whose frames are a virtual data set of ``source_name``'s ``data``."""
    layout = h5py.VirtualLayout(shape=(4, 16, 16), dtype=np.float32)
    layout[:] = h5py.VirtualSource(str(source_name), "data", shape=(4, 16, 16))
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_virtual_dataset(DATA, layout, fillvalue=fill)
    return path


def source_file(path, value=None):
    """An HDF5 file holding ``data`` filled with ``value`` (None: a file without ``data``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        if value is None:
            handle["other"] = 1
        else:
            handle["data"] = np.full((4, 16, 16), value, np.float32)
    return path


def values(source) -> list[float]:
    return np.unique(source.reader.read(0, source.n_frames)).tolist()


def test_a_relative_source_is_read_beside_the_virtual_file_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HDF5_VDS_PREFIX", raising=False)
    vds = virtual_file(tmp_path / "sub" / "vds.cxi", "src.h5")
    source_file(tmp_path / "src.h5", 1.0)  # in the working directory only: HDF5 reads it
    assert values(open_source(["sub/vds.cxi"])) == [1.0]
    source_file(tmp_path / "sub" / "src.h5", 2.0)  # beside the virtual file too: that one
    assert values(open_source(["sub/vds.cxi"])) == [2.0]
    source_file(tmp_path / "src.h5")  # the working directory's lacks the data set: no matter
    assert values(open_source(["sub/vds.cxi"])) == [2.0]
    source_file(tmp_path / "src.h5", 1.0)
    source_file(tmp_path / "sub" / "src.h5")  # HDF5 opens this one and finds no data set
    with pytest.raises(InputError, match="src.h5"):
        open_source([vds])
    with h5py.File(vds, "r") as handle:  # what the refusal spares: fill values, silently
        assert np.unique(handle[DATA][:]).tolist() == [-7.0]
    assert sorted(p.name for p in vds.parent.iterdir()) == ["src.h5", "vds.cxi"]  # none written


def test_hdf5_vds_prefix_is_where_a_relative_source_is_looked_for_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vds = virtual_file(tmp_path / "sub" / "vds.cxi", "src.h5")
    source_file(tmp_path / "sub" / "src.h5", 2.0)
    source_file(tmp_path / "prefix" / "src.h5", 3.0)
    monkeypatch.setenv("HDF5_VDS_PREFIX", str(tmp_path / "prefix"))
    assert values(open_source([vds])) == [3.0]
    source_file(tmp_path / "prefix" / "src.h5")
    with pytest.raises(InputError, match="src.h5"):
        open_source([vds])


def test_a_missing_absolute_source_is_found_by_its_name_beside_the_virtual_file(tmp_path,
                                                                              monkeypatch):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HDF5_VDS_PREFIX", raising=False)
    facility = tmp_path / "facility"
    virtual_file(facility / "vds.cxi", facility / "src.h5")
    source_file(facility / "src.h5", 5.0)
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    for name in ("vds.cxi", "src.h5"):
        shutil.copy(facility / name, laptop / name)
    shutil.rmtree(facility)
    assert values(open_source([laptop / "vds.cxi"])) == [5.0]
    os.remove(laptop / "src.h5")
    with pytest.raises(InputError, match="virtual data set source .*src.h5 is missing"):
        open_source([laptop / "vds.cxi"])


def test_a_source_in_the_same_file_must_hold_its_data_set(tmp_path):
    path = tmp_path / "same.cxi"
    layout = h5py.VirtualLayout(shape=(4, 16, 16), dtype=np.float32)
    layout[:] = h5py.VirtualSource(".", "data", shape=(4, 16, 16))
    with h5py.File(path, "w") as handle:
        handle["data"] = np.full((4, 16, 16), 4.0, np.float32)
        handle.create_virtual_dataset(DATA, layout, fillvalue=-7)
    assert values(open_source([path])) == [4.0]
    with h5py.File(path, "a") as handle:
        del handle["data"]
    with pytest.raises(InputError, match="has no data"):
        open_source([path])


# -- beam centres ----------------------------------------------------------------------


def test_centres_of_another_number_than_the_frames_are_refused_by_default(tmp_path):
    centers = [[10.0, 10.0], [20.0, 20.0], [30.0, 12.0]]
    path = cxi(tmp_path / "c.cxi", n=10, center=centers)
    with pytest.raises(InputError, match="c.cxi.* 3 beam centres for 10 frames"):
        open_source([path])
    out = tmp_path / "out.zarr"
    one_line(build(path, out, *GRID), "3 beam centres for 10 frames")
    assert not out.exists()
    good = cxi(tmp_path / "good.cxi", n=3, center=centers)
    with pytest.raises(InputError, match="c.cxi.* 3 beam centres for 10 frames"):
        open_source([good, path])
    assert open_source([good]).centers.shape == (3, 2)
    assert open_source([path], center_use="ignore").center is None


# -- --pulses -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["-1", "-3:", ":-1", "0:-2", "-4:-1:2"])
def test_negative_pulse_indices_are_refused(text):
    with pytest.raises(InputError, match="--pulses .*negative"):
        parse_pulses(text)


def test_pulse_indices_from_the_first_pulse_are_kept():
    assert parse_pulses("1") == slice(1, 2)
    assert parse_pulses("0:4:2") == slice(0, 4, 2)
    assert parse_pulses(":3") == slice(None, 3)


def test_negative_pulses_on_the_command_line_are_one_line(tmp_path):
    run = tmp_path / "r0001"
    run.mkdir()
    out = tmp_path / "out.zarr"
    result = build(run, out, "--detector", "SPB_DET_AGIPD1M-1", "--pulses", "-1", *GRID)
    one_line(result, "--pulses", "negative")
    assert not out.exists()


# -- each file once -------------------------------------------------------------------


def test_a_file_named_twice_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = cxi(tmp_path / "a.cxi"), cxi(tmp_path / "b.cxi")
    for inputs in (["a.cxi", "a.cxi"], ["a.cxi", str(first)], ["a.cxi", "*.cxi"],
                   ["./b.cxi", "b.cxi"]):  # fmt: skip
        with pytest.raises(InputError, match="named twice"):
            open_source(inputs)
    (tmp_path / "link.cxi").symlink_to(first)
    with pytest.raises(InputError, match="link.cxi.*named twice|named twice.*link.cxi"):
        open_source(["a.cxi", "link.cxi"])
    assert open_source([first, second]).n_frames == 8
    out = tmp_path / "out.zarr"
    one_line(build("a.cxi", "*.cxi", out, *GRID), "a.cxi", "named twice")
    assert not out.exists()
