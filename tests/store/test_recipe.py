"""Reading a store's recipe back (ccfkit.store.recipe): the engine's objects, every mode by value."""

from __future__ import annotations

import enum
import subprocess
import sys

import numpy as np
import pytest

from ccfkit.ccf import Estimator, MapSettings, Precision, Scale
from ccfkit.polar import RingGrid
from ccfkit.settings import MapDtype, NoiseLevel
from ccfkit.store import (
    StoreError,
    StoreLayout,
    StoreRecipe,
    create_store,
    locked_store,
    read_recipe,
)
from ccfkit.store.recipe import BEFORE_THE_PARAMETER

RECIPE = StoreRecipe(
    grid=RingGrid(q_bins=16, phi_bins=32, r_min="auto", r_max=20.0, min_ring_fraction=0.25),
    settings=MapSettings(orders=(4, 2), delta=0.5, estimator="mask-corrected", scale="ring"),
    noise=NoiseLevel.MEAN,
    seed=7,
    image_size=8,
    map_dtype=MapDtype.FLOAT16,
)


def store_of(path, parameters: dict, **attributes):
    """A small store recording ``parameters`` (made without the engine)."""
    layout = StoreLayout(n_frames=3, q_bins=16, channels=2, chunk_frames=2)
    contents = {"radius": (np.linspace(1.0, 20.0, 16), {}), "mask": (np.ones((5, 5), bool), {})}
    with locked_store(path):
        return create_store(path, layout, {"parameters": parameters, **attributes}, contents)


def test_a_recipe_reads_back_as_written(tmp_path):
    group = store_of(tmp_path / "s.zarr", RECIPE.parameters(), r_min=3.5, r_max=20.0)
    for store in (group, tmp_path / "s.zarr", str(tmp_path / "s.zarr")):
        recipe = read_recipe(store)
        assert recipe == RECIPE and recipe.differences(RECIPE) == []
        assert recipe.settings.estimator is Estimator.MASK_CORRECTED
        assert recipe.radii == (3.5, 20.0)
        assert recipe.resolved_grid == RingGrid(16, 32, 3.5, 20.0, 0.25)
    assert RECIPE.resolved_grid is RECIPE.grid  # not read from a store: radii unknown


def test_rings_in_momentum_transfer_read_back_with_the_input_geometry(tmp_path):
    """q_range round-trips (a JSON list read as a tuple); its grid is its own resolution."""
    placed = StoreRecipe(grid=RingGrid(q_bins=16, phi_bins=32, q_range=(0.02, 0.3)),
                         settings=MapSettings(orders=(4, 2)))  # fmt: skip
    described = {"wavelength_m": 2e-9, "distance_m": 0.1, "pixel_size_m": 75e-6}
    group = store_of(tmp_path / "q.zarr", placed.parameters(), r_min=4.1, r_max=70.2,
                     input=described)  # fmt: skip
    recipe = read_recipe(group)
    assert recipe == placed and recipe.grid.q_range == (0.02, 0.3)
    assert recipe.grid.ring_axis == "q" and recipe.resolved_grid == placed.grid
    assert recipe.differences(placed) == []
    other = StoreRecipe(grid=RingGrid(q_bins=16, phi_bins=32, q_range=(0.02, 0.25)),
                        settings=MapSettings(orders=(4, 2)))  # fmt: skip
    assert recipe.differences(other) == ["q_range"]
    scattering = recipe.scattering
    assert (scattering.pixel_size, scattering.distance) == (75e-6, 0.1)
    assert scattering.wavelength_nm == pytest.approx(2.0, rel=1e-15)
    assert read_recipe(store_of(tmp_path / "r.zarr", RECIPE.parameters())).scattering is None


def test_differences_name_the_parameters():
    other = StoreRecipe(grid=RECIPE.grid, settings=MapSettings(orders=(4, 2), delta=0.5),
                        noise="max", seed=7, image_size=8, map_dtype="float16")  # fmt: skip
    assert RECIPE.differences(other) == ["estimator", "scale", "noise"]
    assert other != RECIPE


@pytest.mark.parametrize(
    ("kind", "key"),
    [(Estimator, "estimator"), (Scale, "scale"), (Precision, "precision"),
     (NoiseLevel, "noise"), (MapDtype, "map_dtype")],
)  # fmt: skip
def test_every_member_of_every_mode_reads_back(tmp_path, kind: type[enum.Enum], key):
    for number, member in enumerate(kind):
        parameters = {**RECIPE.parameters(), key: member.value}
        recipe = read_recipe(store_of(tmp_path / f"{number}.zarr", parameters))
        assert recipe.parameters()[key] == member.value
        assert member in (recipe.settings.estimator, recipe.settings.scale,
                          recipe.settings.precision, recipe.noise, recipe.map_dtype)  # fmt: skip


def test_a_schema_1_store_reads_with_the_values_it_was_built_with(tmp_path):
    parameters = RECIPE.parameters()
    parameters["order"] = parameters.pop("orders")[0]
    for key in ("estimator", "min_ring_fraction", "delta", "image_size"):
        del parameters[key]
    recipe = read_recipe(store_of(tmp_path / "old.zarr", parameters))
    assert recipe.settings.orders == (4,)
    assert recipe.grid.min_ring_fraction == BEFORE_THE_PARAMETER["min_ring_fraction"] == 0.0
    assert recipe.settings.estimator is Estimator.RING and recipe.image_size is None


def test_unknown_or_missing_parameters_are_one_line_errors(tmp_path):
    unknown = store_of(tmp_path / "a.zarr", {**RECIPE.parameters(), "scale": "zscore"})
    with pytest.raises(StoreError, match=r"a\.zarr: the store's scale 'zscore' is not one") as e:
        read_recipe(unknown)
    assert "'maxabs'" in str(e.value) and "\n" not in str(e.value)  # the known ones, by value
    lacking = {k: v for k, v in RECIPE.parameters().items() if k not in ("q_bins", "orders")}
    with pytest.raises(StoreError, match="lack q_bins, orders"):
        read_recipe(store_of(tmp_path / "b.zarr", lacking))
    with pytest.raises(StoreError, match="not a recipe"):
        read_recipe(store_of(tmp_path / "c.zarr", {**RECIPE.parameters(), "orders": [4, 4]}))
    with pytest.raises(StoreError, match="records no parameters"):
        read_recipe(store_of(tmp_path / "d.zarr", None))
    with pytest.raises(StoreError, match="no such store"):
        read_recipe(tmp_path / "missing.zarr")


def test_the_stored_parameters_are_the_documented_keys():
    """docs/store-layout.md: ``parameters``, flat, JSON-ready."""
    assert set(RECIPE.parameters()) == {
        "orders", "q_bins", "phi_bins", "r_min", "r_max", "min_ring_fraction", "q_range",
        "delta", "estimator", "scale", "precision", "noise", "seed", "image_size", "map_dtype",
    }  # fmt: skip


def test_reading_a_recipe_loads_neither_numba_nor_dask():
    code = (
        "import sys, ccfkit.store; "
        "print([m for m in ('numba', 'dask', 'ccfkit.engine', 'ccfkit.pipeline') "
        "if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)  # fmt: skip
    assert result.stdout.strip() == "[]"
