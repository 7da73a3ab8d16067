"""A store opens in the ecosystem's tools: plain zarr, dask.array and xarray, same values."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from ccfkit.cli import main

xr = pytest.importorskip("xarray")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("eco")
    cxi = root / "sim.cxi"
    runner = CliRunner()
    result = runner.invoke(main, ["simulate", str(cxi), "--n", "24", "--size", "48", "--quiet"])
    assert result.exit_code == 0, result.output
    made = {}
    for name, extra in (("one", []), ("two", ["--orders", "8,2"])):
        out = root / f"{name}.zarr"
        args = ["build", str(cxi), str(out), "--q-bins", "12", "--phi-bins", "32", "--chunk",
                "8", "--keep-images", "--image-size", "16", "--quiet", *extra]  # fmt: skip
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        made[name] = out
    return made


def test_xarray_indexes_the_maps_by_frame_and_radius(stores):
    group = zarr.open_group(str(stores["one"]), mode="r")
    ds = xr.open_zarr(stores["one"], consolidated=False)
    assert ds.ccf.dims == ("frame", "radius", "radius_j")
    np.testing.assert_array_equal(ds.radius.values, group["radius"][:])
    np.testing.assert_array_equal(ds.ccf.values, group["ccf"][:])
    r = float(group["radius"][5])
    np.testing.assert_array_equal(ds.ccf.sel(radius=r).values, group["ccf"][:, 5, :])
    assert "q" in ds.coords and ds.q.dims == ("radius",)
    names = list(group["labels"].attrs["names"])
    assert list(ds.label.values) == names
    first = names[0]
    np.testing.assert_array_equal(ds.labels.sel(label=first).values, group["labels"][:, 0])
    assert ds.images.dims == ("frame", "image_y", "image_x")
    assert ds.mask.dims == ("y", "x")


def test_several_orders_have_an_order_axis(stores):
    ds = xr.open_zarr(stores["two"], consolidated=False)
    assert ds.ccf.dims == ("frame", "order", "radius", "radius_j") and ds.ccf.shape[1] == 2


def test_dask_and_zarr_read_what_the_build_wrote(stores):
    group = zarr.open_group(str(stores["one"]), mode="r")
    for name in ("ccf", "labels", "stats", "index", "images"):
        lazy = da.from_zarr(str(stores["one"]), component=name)
        np.testing.assert_array_equal(lazy.compute(), group[name][:], err_msg=name)
