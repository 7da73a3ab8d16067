"""What determines the content of a store, and how it is built (docs/build.md).

A store's recipe, :class:`BuildConfig`, is composed of the engine's own
settings, each defined once: the polar grid (:class:`~ccfkit.polar.RingGrid`),
the maps (:class:`~ccfkit.ccf.MapSettings`), the noise (:class:`NoiseSettings`)
and what else the store holds (:class:`OutputSettings`). :class:`BuildOptions`
says how the store is built without changing its content. The paper's map is
one named recipe, :data:`PAPER_RECIPE`.

Light on purpose (the standard library, NumPy through :mod:`ccfkit.ccf`): the
``ccfkit build`` command line takes its options from here without loading
Dask, Zarr or the engine: :mod:`ccfkit.cli_options` makes them from the
fields, their docstrings and ``metadata``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

from .backends import NAMES as BACKEND_NAMES
from .ccf import Estimator, MapSettings, Precision, Scale
from .polar import RingGrid
from .settings import Compressor, MapDtype, NoiseLevel, WriteMethod

__all__ = [
    "BACKEND_CHOICES",
    "BUILD_GRID",
    "BUILD_MAPS",
    "PAPER_RECIPE",
    "RECIPES",
    "BuildConfig",
    "BuildOptions",
    "NoiseSettings",
    "OutputSettings",
    "flat_parameters",
    "parameter_key",
    "ring_rule",
]

#: What a build's ``backend`` may be: ``auto`` and every backend's name.
BACKEND_CHOICES = ("auto", *BACKEND_NAMES)

#: The build's polar grid: the library's (:class:`~ccfkit.polar.RingGrid`: 224 x 512,
#: ``r_min = 0``) with every ring that has a valid sample (``min_ring_fraction = 0``),
#: the paper's: the former default (``r_min="auto"``, rings at least half valid)
#: dropped the partial rings next to an offset beam that carry the signal at max
#: noise (docs/ccf.md, "Defaults").
BUILD_GRID = RingGrid(min_ring_fraction=0.0)

#: The build's maps: the merged map of order 2 (the ring estimator, ``maxabs``);
#: order 2 beat order 8 and images at max noise in the studies (docs/ccf.md,
#: "Defaults"). The library's :class:`~ccfkit.ccf.MapSettings` stays the paper's.
BUILD_MAPS = MapSettings(orders=(2,))


def _choice(default: enum.Enum, **metadata):
    """A field holding one of an enum's values (a ``str``), offered as a choice of them all."""
    return field(default=default.value, metadata={"choices": type(default), **metadata})


@dataclass(frozen=True)
class NoiseSettings:
    """The noise added to the frames before they are resampled.

    Attributes
    ----------
    level : str
        Uniform noise U(0, b) added before resampling (docs/build.md, noise;
        the paper's Table 6). A :class:`~ccfkit.settings.NoiseLevel` value,
        stored as the parameter ``noise``.
    seed : int
        Seed of the noise: frame i gets the noise drawn from (seed, i).
    """

    level: str = _choice(NoiseLevel.NONE, key="noise")
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "level", NoiseLevel(self.level).value)
        if isinstance(self.seed, float) or not 0 <= int(self.seed) < 2**64:
            raise ValueError(f"the seed must be an integer in [0, 2^64), not {self.seed}")
        object.__setattr__(self, "seed", int(self.seed))


@dataclass(frozen=True)
class OutputSettings:
    """What the store holds besides the maps' values.

    Attributes
    ----------
    image_size : int or None
        Side of the stored frames, noisy and resized (with ``--keep-images``);
        None: no frames stored.
    map_dtype : str
        Stored map dtype, a :class:`~ccfkit.settings.MapDtype` value
        (float16 needs a scale: unscaled maps overflow it).
    """

    image_size: int | None = field(
        default=None, metadata={"option_default": 224, "range": {"min": 1}}
    )
    map_dtype: str = _choice(MapDtype.FLOAT32, option="--dtype")

    def __post_init__(self):
        if self.map_dtype not in {member.value for member in MapDtype}:
            values = " or ".join(member.value for member in MapDtype)
            raise ValueError(f"map dtype must be {values}, not {self.map_dtype}")
        object.__setattr__(self, "map_dtype", MapDtype(self.map_dtype).value)


#: The parts of a recipe: the :class:`BuildConfig` field each type fills.
_PARTS = {"grid": RingGrid, "maps": MapSettings, "noise": NoiseSettings, "output": OutputSettings}


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the content of a store (docs/build.md).

    Attributes
    ----------
    grid : RingGrid
        The polar grid (default :data:`BUILD_GRID`).
    maps : MapSettings
        Orders, separation, estimator, scale and precision of the maps
        (default :data:`BUILD_MAPS`).
    noise : NoiseSettings
        The noise added to the frames and its seed.
    output : OutputSettings
        The stored frames' size and the maps' dtype.

    The store keeps the recipe flat, each setting under its name
    (:meth:`parameters`, docs/store-layout.md); :meth:`from_parameters`
    reads such a mapping (a store's, a study's ``[build]`` table) back.
    """

    grid: RingGrid = BUILD_GRID
    maps: MapSettings = BUILD_MAPS
    noise: NoiseSettings = field(default_factory=NoiseSettings)
    output: OutputSettings = field(default_factory=OutputSettings)

    def __post_init__(self):
        for name, kind in _PARTS.items():
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"BuildConfig.{name} must be a {kind.__name__}")
        try:
            self.maps.check_phi_bins(self.grid.phi_bins)
        except ValueError as error:
            raise _input_error(f"--orders, --phi-bins: {error}") from error
        if self.output.map_dtype == MapDtype.FLOAT16 and self.maps.scale is Scale.NONE:
            raise _input_error("float16 maps need a --scale (unscaled maps overflow float16)")

    def parameters(self) -> dict:
        """The recipe flat, as a store's ``parameters`` hold it (JSON-ready but for tuples).

        Returns
        -------
        dict
            ``{key: value}`` for every field of every part; enums as their values.
        """
        return flat_parameters(*(getattr(self, name) for name in _PARTS))

    @classmethod
    def parameter_keys(cls) -> list[str]:
        """The keys of :meth:`parameters` (and of :meth:`from_parameters`), in order."""
        return [parameter_key(item) for kind in _PARTS.values() for item in fields(kind)]

    @classmethod
    def map_parameter_keys(cls) -> list[str]:
        """The keys of the settings that make the maps: the grid's and the map settings'."""
        return [parameter_key(item) for kind in (RingGrid, MapSettings) for item in fields(kind)]

    def map_differences(self, parameters: Mapping) -> list[str]:
        """The keys of ``parameters`` that ask for other maps than this recipe's.

        Parameters
        ----------
        parameters : mapping
            Flat settings (keys of :meth:`parameter_keys`; lists read as
            tuples). Only the map settings (:meth:`map_parameter_keys`) are
            compared, each after its part has read it (``0`` equals ``0.0``,
            ``"ring"`` the estimator); a value its part refuses differs.

        Returns
        -------
        list of str
            In the order of :meth:`map_parameter_keys`.
        """
        differ = []
        for part in (self.grid, self.maps):
            for item in fields(part):
                key = parameter_key(item)
                if key not in parameters:
                    continue
                try:
                    same = replace(part, **{item.name: _tuple(parameters[key])}) == part
                except (TypeError, ValueError):
                    same = False
                if not same:
                    differ.append(key)
        return differ

    @classmethod
    def from_parameters(cls, parameters: Mapping, base: BuildConfig | None = None) -> BuildConfig:
        """The recipe of flat ``parameters``, the others as in ``base``.

        Parameters
        ----------
        parameters : mapping
            Keys of :meth:`parameter_keys` (lists are read as tuples), and
            optionally ``recipe``: the name of a recipe in :data:`RECIPES`
            that replaces ``base``.
        base : BuildConfig, optional
            Where the settings not given come from; default ``BuildConfig()``.

        Raises
        ------
        InputError
            An unknown key, an unknown recipe name, or a value a part refuses.
        """
        given = dict(parameters)
        name = given.pop("recipe", None)
        if name is not None and name not in RECIPES:
            raise _input_error(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
        base = RECIPES[name] if name is not None else cls() if base is None else base
        unknown = sorted(set(given) - set(cls.parameter_keys()))
        if unknown:
            known = cls.parameter_keys()
            raise _input_error(f"unknown build parameter(s) {unknown}; known: {known}")
        parts = {}
        for part, kind in _PARTS.items():
            values = {
                item.name: _tuple(given[parameter_key(item)])
                for item in fields(kind)
                if parameter_key(item) in given
            }
            try:
                parts[part] = replace(getattr(base, part), **values)
            except ValueError as error:  # named: the settings given that differ from the base's
                named = [k for k, v in values.items() if v != getattr(getattr(base, part), k)]
                raise _input_error(f"{', '.join(named or values)}: {error}") from error
        return cls(**parts)


def flat_parameters(*parts) -> dict:
    """Every field of the recipe's ``parts`` (RingGrid, MapSettings, ...) by its key.

    Enums become their values; nothing is checked across the parts (a store's
    recipe read back is what it is).
    """
    return {
        parameter_key(item): _plain(getattr(part, item.name))
        for part in parts
        for item in fields(part)
    }


def parameter_key(item) -> str:
    """The flat key of a part's field: ``metadata["key"]``, else its name."""
    return item.metadata.get("key", item.name)


def ring_rule(grid: RingGrid) -> str:
    """What a ring of ``grid`` needs to be used, in words: "50% valid samples", "a valid sample"."""
    fraction = grid.min_ring_fraction
    return f"{fraction:.0%} valid samples" if fraction > 0 else "a valid sample"


def _input_error(message: str) -> Exception:
    """:class:`~ccfkit.io.source.InputError` (imported here: the command line reads this light)."""
    from .io.source import InputError

    return InputError(message)


def _plain(value):
    return value.value if isinstance(value, enum.Enum) else value


def _tuple(value):
    return tuple(value) if isinstance(value, list) else value


#: The paper's map (§5.3): rings from the beam centre (r_min 0), every ring with
#: a valid sample, the merged map of order 8, the ring estimator (Eq. 14), each
#: triangle scaled by its largest |value|, on the 224 x 512 grid. Written out
#: in full, so that no default of the library or the build can change it; the
#: build's defaults differ from it in the order only (docs/ccf.md, "Defaults").
PAPER_RECIPE = BuildConfig(
    grid=RingGrid(q_bins=224, phi_bins=512, r_min=0.0, r_max=None, min_ring_fraction=0.0,
                  q_range=None),
    maps=MapSettings(orders=(8,), delta=0.0, estimator=Estimator.RING, scale=Scale.MAXABS,
                     precision=Precision.FLOAT32),
)  # fmt: skip

#: Named recipes: what a study's ``[build]`` table may start from (``recipe = "paper"``).
RECIPES: dict[str, BuildConfig] = {"build": BuildConfig(), "paper": PAPER_RECIPE}


@dataclass(frozen=True)
class BuildOptions:
    """How a store is built: none of these change its content (docs/build.md).

    Attributes
    ----------
    backend : str
        Engine: ``auto`` (CuPy on a GPU, else Numba) or a backend's name;
        numpy is the slow reference.
    chunk_frames : int
        Frames per store chunk and per Dask task.
    compressor : str
        Codec of the stored maps, a :class:`~ccfkit.settings.Compressor` value
        (Blosc: LZ4 with byte shuffle, Zstd with bit shuffle).
    write_method : str
        How map chunks are written, a :class:`~ccfkit.settings.WriteMethod`
        value: through zarr, or with O_DIRECT (docs/build.md); the same store.
    scheduler : str or None
        A Dask distributed scheduler's address (tcp://host:8786); none: local
        threads.
    workers : int or None
        Local threads; none: as many as CPUs available.
    """

    backend: str = field(default="auto", metadata={"choices": BACKEND_CHOICES})
    chunk_frames: int = field(default=64, metadata={"option": "--chunk", "range": {"min": 1}})
    compressor: str = _choice(Compressor.NONE)
    write_method: str = _choice(WriteMethod.ZARR, option="--chunk-writer")
    scheduler: str | None = field(default=None, metadata={"metavar": "ADDRESS"})
    workers: int | None = field(default=None, metadata={"range": {"min": 1}})
