"""How a store's maps were made, read back (docs/store-layout.md, ``parameters``).

A store records the recipe of its maps in its root attribute ``parameters``
(a flat JSON object: the polar grid, the map settings, the noise, the
seed, the resized images and the stored dtype) and the radii the build
resolved (``r_min``, ``r_max``: ``--r-min auto`` becomes a number).
:class:`StoreRecipe` is that recipe as the engine's own objects
(:class:`~ccfkit.polar.RingGrid`, :class:`~ccfkit.ccf.MapSettings` and the
enums of :mod:`ccfkit.settings`): the build writes it (:meth:`StoreRecipe.parameters`),
and resuming a build, predicting from frames with a trained model and a
study read it back (:func:`read_recipe`). Enumerations are parsed by value,
so a new mode needs no change here.

Stores written before a parameter existed do not record it; they were built
with the value :data:`BEFORE_THE_PARAMETER` names (e.g. every ring used:
``min_ring_fraction = 0``). Schema 1 recorded one ``order`` instead of
``orders``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import zarr

from ..build_config import BuildConfig, NoiseSettings, OutputSettings, flat_parameters
from ..ccf import Estimator, MapSettings, Precision, Scale
from ..geometry import ScatteringGeometry
from ..polar import RingGrid
from ..settings import MapDtype, NoiseLevel
from .layout import StoreError
from .lifecycle import open_store

__all__ = ["BEFORE_THE_PARAMETER", "StoreRecipe", "read_q_placement", "read_recipe"]

#: The value a store that does not record a parameter was built with (it predates it).
BEFORE_THE_PARAMETER = {
    "min_ring_fraction": 0.0,  # every ring used
    "q_range": None,  # rings placed in pixel radius
    "delta": 0.0,
    "estimator": Estimator.RING.value,
    "scale": Scale.MAXABS.value,
    "precision": Precision.FLOAT32.value,
    "noise": NoiseLevel.NONE.value,
    "seed": 0,
    "image_size": None,
    "map_dtype": MapDtype.FLOAT32.value,
}

#: The parameters every store records.
REQUIRED = ("q_bins", "phi_bins", "r_min", "r_max")


@dataclass(frozen=True)
class StoreRecipe:
    """How a store's maps are made from frames (its ``parameters``).

    Attributes
    ----------
    grid : RingGrid
        The polar grid as asked (``r_min`` may be ``"auto"``; with
        ``q_range`` the rings were placed in momentum transfer, and
        ``grid.ring_axis`` is ``"q"``).
    settings : MapSettings
        Orders, separation, estimator, scale and the precision the maps were
        computed in.
    noise : NoiseLevel
        The noise added to the frames before mapping (docs/build.md).
    seed : int
        Seed of that noise.
    image_size : int or None
        ``S`` of the stored (N, S, S) resized noisy frames; None: none stored.
    map_dtype : MapDtype
        Dtype the maps are stored in.
    radii : (float, float) or None
        ``(r_min, r_max)`` in pixels as the build resolved them; None where
        not known (a recipe not read from a store). Not compared: two recipes
        are equal when they ask for the same maps.
    scattering : ScatteringGeometry or None
        The input's pixel size, distance and wavelength, where the store
        records them (``input``); what places the rings of a grid with
        ``q_range`` on the store's detector. Not compared.
    """

    grid: RingGrid
    settings: MapSettings
    noise: NoiseLevel = NoiseLevel.NONE
    seed: int = 0
    image_size: int | None = None
    map_dtype: MapDtype = MapDtype.FLOAT32
    radii: tuple[float, float] | None = field(default=None, compare=False)
    scattering: ScatteringGeometry | None = field(default=None, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "noise", NoiseLevel(self.noise))
        object.__setattr__(self, "map_dtype", MapDtype(self.map_dtype))
        object.__setattr__(self, "seed", int(self.seed))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", int(self.image_size))

    @classmethod
    def of_build(cls, config: BuildConfig) -> StoreRecipe:
        """The recipe of a build configuration (:class:`~ccfkit.build_config.BuildConfig`)."""
        return cls(
            grid=config.grid,
            settings=config.maps,
            noise=config.noise.level,
            seed=config.noise.seed,
            image_size=config.output.image_size,
            map_dtype=config.output.map_dtype,
        )

    @property
    def resolved_grid(self) -> RingGrid:
        """:attr:`grid` with the radii the build resolved (the grid its maps were made on).

        A grid placed in momentum transfer (``q_range``) is its own resolution:
        its radii follow from each detector's geometry.
        """
        if self.radii is None or self.grid.q_range is not None:
            return self.grid
        return replace(self.grid, r_min=self.radii[0], r_max=self.radii[1])

    def parameters(self) -> dict:
        """The store's ``parameters`` attribute: flat and JSON-ready (docs/store-layout.md)."""
        noise = NoiseSettings(self.noise.value, self.seed)
        output = OutputSettings(self.image_size, self.map_dtype.value)
        parameters = flat_parameters(self.grid, self.settings, noise, output)
        return {**parameters, "orders": list(self.settings.orders)}

    def differences(self, other: StoreRecipe) -> list[str]:
        """Names of the parameters (keys of :meth:`parameters`) in which ``other`` differs."""
        mine, theirs = self.parameters(), other.parameters()
        return [key for key in mine if mine[key] != theirs[key]]

    @classmethod
    def from_attributes(cls, attributes: Mapping) -> StoreRecipe:
        """The recipe recorded in a store's root ``attributes``.

        Raises
        ------
        StoreError
            A parameter is missing, or holds a value this ccfkit does not know.
        """
        if not isinstance(attributes.get("parameters"), Mapping):
            raise StoreError("the store records no parameters: how its maps were made is unknown")
        stored = {**BEFORE_THE_PARAMETER, **attributes["parameters"]}
        missing = [key for key in REQUIRED if key not in stored]
        if "orders" not in stored and "order" not in stored:  # schema 1: one order
            missing.append("orders")
        if missing:
            raise StoreError(f"the store's parameters lack {', '.join(missing)}")
        orders = stored["orders"] if "orders" in stored else [stored["order"]]
        try:
            grid_keys = (*REQUIRED, "min_ring_fraction", "q_range")
            grid = RingGrid(**{key: stored[key] for key in grid_keys})
            settings = MapSettings(
                orders=tuple(orders),
                delta=stored["delta"],
                estimator=_member(Estimator, stored, "estimator"),
                scale=_member(Scale, stored, "scale"),
                precision=_member(Precision, stored, "precision"),
            )
        except (TypeError, ValueError) as error:
            raise StoreError(f"the store's parameters are not a recipe ({error})") from None
        radii = None
        if attributes.get("r_min") is not None and attributes.get("r_max") is not None:
            radii = (float(attributes["r_min"]), float(attributes["r_max"]))
        return cls(
            grid=grid,
            settings=settings,
            noise=_member(NoiseLevel, stored, "noise"),
            seed=stored["seed"],
            image_size=stored["image_size"],
            map_dtype=_member(MapDtype, stored, "map_dtype"),
            radii=radii,
            scattering=_scattering(attributes.get("input")),
        )


def _scattering(described) -> ScatteringGeometry | None:
    """The pixel size, distance and wavelength a store's ``input`` records; None without."""
    keys = ("pixel_size_m", "distance_m", "wavelength_m")
    if not isinstance(described, Mapping) or any(described.get(key) is None for key in keys):
        return None
    try:
        pixel_size, distance, wavelength = (float(described[key]) for key in keys)
        return ScatteringGeometry(pixel_size, distance, wavelength * 1e9)
    except (TypeError, ValueError):
        return None


def _member(kind: type[enum.Enum], stored: Mapping, key: str):
    """The member of ``kind`` whose value ``stored[key]`` is; a one-line StoreError if none."""
    try:
        return kind(stored[key])
    except ValueError:
        known = ", ".join(repr(member.value) for member in kind)
        raise StoreError(
            f"the store's {key} {stored[key]!r} is not one this ccfkit knows ({known}); "
            "a newer ccfkit may have written it"
        ) from None


def read_recipe(store: zarr.Group | str | Path) -> StoreRecipe:
    """The recipe of a store's maps (:class:`StoreRecipe`).

    Parameters
    ----------
    store : zarr.Group, str or Path
        An open store, or its path (opened read-only with
        :func:`~ccfkit.store.open_store`).

    Raises
    ------
    StoreError
        Not a readable ccfkit store, or its parameters are not a recipe this
        ccfkit knows; the message names the store.
    """
    if not isinstance(store, zarr.Group):
        store = open_store(store)
    try:
        return StoreRecipe.from_attributes(store.attrs.asdict())
    except StoreError as error:
        where = getattr(store.store, "root", store.store)
        raise StoreError(f"{where}: {error}") from None


def read_q_placement(store: zarr.Group | str | Path) -> str:
    """Where a store's rings in q sit on its frames (:func:`ccfkit.frame_geometry.place_rings`).

    Returns
    -------
    str
        ``"mean"``: at the frames' mean geometry (``q_placement`` attribute
        ``{"placement": "mean"}``); else ``"per-frame"``: each frame's own
        (one geometry, pixel rings and stores written before the attribute
        are placed alike either way).
    """
    if not isinstance(store, zarr.Group):
        store = open_store(store)
    placement = store.attrs.get("q_placement", {}).get("placement")
    return "mean" if placement == "mean" else "per-frame"
