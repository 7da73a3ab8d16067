"""How much the wavelength and the detector distance vary over an input's frames.

A CXI file may record one wavelength or distance per frame (``ccfkit simulate``
draws a photon energy per frame); the input's geometry is then their mean
(:mod:`ccfkit.io.source`). Rings placed in momentum transfer with that mean are
off for every frame whose own value differs (docs/ccf.md, "Rings in momentum
transfer"), so the build asks here how far apart the values lie.
"""

from __future__ import annotations

import h5py
import numpy as np

__all__ = ["SPREAD_PATHS", "geometry_spread"]

#: Where a CXI file records the values whose spread is measured (metres).
SPREAD_PATHS = {
    "wavelength": "entry_1/instrument_1/source_1/wavelength",
    "detector distance": "entry_1/instrument_1/detector_1/distance",
}


def geometry_spread(files) -> dict[str, tuple[float, float]]:
    """The smallest and largest value of each of :data:`SPREAD_PATHS` over ``files``.

    Parameters
    ----------
    files : iterable of str
        HDF5/CXI files; one that cannot be opened, or that records neither
        value, adds nothing.

    Returns
    -------
    dict of str -> (float, float)
        ``name -> (min, max)`` in metres, for the values some file records.
    """
    spread: dict[str, tuple[float, float]] = {}
    for path in files:
        try:
            with h5py.File(path, "r") as handle:
                for name, where in SPREAD_PATHS.items():
                    if where not in handle:
                        continue
                    values = np.asarray(handle[where][()], dtype=np.float64).ravel()
                    low, high = spread.get(name, (np.inf, -np.inf))
                    spread[name] = (min(low, values.min()), max(high, values.max()))
        except OSError:
            continue
    return {name: (float(low), float(high)) for name, (low, high) in spread.items()}
