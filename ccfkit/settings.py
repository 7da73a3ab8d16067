"""The named settings of a build, one enum each (the command line's choices come from here).

A light module: it imports only the standard library, so the command line
can offer its choices without loading Numba, Zarr or the engine. The
settings of the maps themselves (:class:`~ccfkit.ccf.Estimator`,
:class:`~ccfkit.ccf.Scale`) live with the math in :mod:`ccfkit.ccf`.
"""

from __future__ import annotations

import enum

__all__ = ["Compressor", "MapDtype", "NoiseLevel", "WriteMethod", "values"]


class NoiseLevel(str, enum.Enum):
    """The upper bound ``b`` of the added ``U(0, b)`` noise (docs/ccf.md, "Noise").

    The paper's four data sets (Table 6) take ``b`` from the data set's
    statistics; ``max-frame`` takes it from each frame's own maximum, so a
    frame gets the same noise in every data set.
    """

    NONE = "none"
    MEAN = "mean"
    MEAN_STD = "mean+std"
    MAX = "max"
    MAX_FRAME = "max-frame"


class Compressor(str, enum.Enum):
    """Codec of the stored maps (:data:`ccfkit.store.COMPRESSORS` holds their parameters)."""

    NONE = "none"
    LZ4 = "lz4"
    ZSTD = "zstd"


class MapDtype(str, enum.Enum):
    """Stored dtype of the maps (float16 needs a scale: unscaled maps overflow it)."""

    FLOAT32 = "float32"
    FLOAT16 = "float16"


class WriteMethod(str, enum.Enum):
    """How the build puts a chunk of maps into the store (:class:`ccfkit.store.ChunkWriter`)."""

    #: zarr-python's public API: zarr's codecs, zarr's store (the default).
    ZARR = "zarr"
    #: The same bytes, written with O_DIRECT to a temporary file then renamed (local stores).
    DIRECT = "direct"


def values(kind: type[enum.Enum]) -> list[str]:
    """The values of an enum's members, in definition order (for ``click.Choice``)."""
    return [member.value for member in kind]
