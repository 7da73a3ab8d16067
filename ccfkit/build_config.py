"""What determines the content of a store: :class:`BuildConfig` (docs/build.md).

Light on purpose (the standard library, NumPy through :mod:`ccfkit.ccf`): the
``ccfkit build`` command line takes its defaults from here without loading
Dask, Zarr or the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .ccf import Estimator, MapSettings, Precision, Scale
from .polar import MAX_PHI_BINS, RingGrid
from .settings import MapDtype, NoiseLevel, values

__all__ = ["BuildConfig"]


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the content of a store (stored as ``parameters``).

    Attributes mirror the ``ccfkit build`` options; see ``docs/build.md``.
    """

    orders: tuple[int, ...] = (8,)
    q_bins: int = 224
    phi_bins: int = 512
    r_min: float | str = "auto"
    r_max: float | None = None
    min_ring_fraction: float = 0.5
    delta: float = 0.0
    estimator: str = Estimator.RING.value
    scale: str = Scale.MAXABS.value
    precision: str = Precision.FLOAT32.value
    noise: str = NoiseLevel.NONE.value
    seed: int = 0
    image_size: int | None = None
    map_dtype: str = MapDtype.FLOAT32.value

    def __post_init__(self):
        from .io.source import InputError  # here, not at import: the CLI reads the defaults light

        NoiseLevel(self.noise)
        _check_numbers(self)
        try:
            settings = self.map_settings
            settings.check_phi_bins(self.phi_bins)
        except ValueError as error:
            raise InputError(f"--orders, --estimator, --scale, --precision: {error}") from error
        object.__setattr__(self, "orders", settings.orders)
        if isinstance(self.r_min, str) and self.r_min != "auto":
            raise InputError(f"--r-min must be a number of pixels or 'auto', not {self.r_min!r}")
        if not 0.0 <= self.min_ring_fraction <= 1.0:
            raise InputError(
                f"--min-ring-fraction must lie in [0, 1], not {self.min_ring_fraction}"
            )
        if self.map_dtype not in values(MapDtype):
            raise InputError(
                f"map dtype must be {' or '.join(values(MapDtype))}, not {self.map_dtype}"
            )
        if self.map_dtype == MapDtype.FLOAT16 and settings.scale is Scale.NONE:
            raise InputError("float16 maps need a --scale (unscaled maps overflow float16)")

    @property
    def grid(self) -> RingGrid:
        """The polar grid of this build (:class:`~ccfkit.polar.RingGrid`)."""
        return RingGrid(
            q_bins=self.q_bins,
            phi_bins=self.phi_bins,
            r_min=self.r_min,
            r_max=self.r_max,
            min_ring_fraction=self.min_ring_fraction,
        )

    @property
    def map_settings(self) -> MapSettings:
        """The engine's :class:`~ccfkit.ccf.MapSettings` of this build."""
        return MapSettings(
            orders=self.orders,
            delta=self.delta,
            estimator=self.estimator,
            scale=self.scale,
            precision=self.precision,
        )


def _check_numbers(config: BuildConfig) -> None:
    """Refuse sizes, seeds and angles no build can use, naming the option (before any work)."""
    from .io.source import InputError

    if not isinstance(config.seed, int) or not 0 <= config.seed < 2**64:
        raise InputError(f"--seed must be an integer in [0, 2^64), not {config.seed}")
    if not math.isfinite(config.delta):
        raise InputError(f"--delta must be a finite angle in radians, not {config.delta}")
    if config.q_bins < 1:
        raise InputError(f"--q-bins must be at least 1, not {config.q_bins}")
    if config.phi_bins < 2 or config.phi_bins % 2 or config.phi_bins > MAX_PHI_BINS:
        raise InputError(f"--phi-bins must be even, in [2, {MAX_PHI_BINS}], not {config.phi_bins}")
    if config.image_size is not None and config.image_size < 1:
        raise InputError(f"--image-size must be at least 1, not {config.image_size}")
    for name, value in (("--r-min", config.r_min), ("--r-max", config.r_max)):
        if isinstance(value, float | int) and not (math.isfinite(value) and value >= 0):
            raise InputError(f"{name} must be a finite radius >= 0 in pixels, not {value}")
