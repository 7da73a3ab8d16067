"""Lengths stored in a CXI file (wavelength, detector distance, pixel size) as metres.

CXI stores SI units, but files written elsewhere often keep a wavelength in
ångström, a distance in millimetres, a pixel in micrometres, and say so in
the data set's ``units`` attribute. A known length unit there is converted
to metres (:data:`METRES_PER_UNIT`, any of its usual spellings); an unknown
one is refused. Without the attribute a value is read as metres, and one
that cannot be a length of its kind in metres (:data:`PLAUSIBLE_METRES`: a
wavelength of 1.5 is ångström, a distance of 150 millimetres) is refused
with what to fix, rather than giving momentum transfers off by powers of
ten (docs/build.md, "Input").
"""

from __future__ import annotations

import unicodedata

import numpy as np

from .errors import InputError

__all__ = ["METRES_PER_UNIT", "PLAUSIBLE_METRES", "metres_per_unit", "plausible_metres"]

#: Metres in one of each length unit, by its spellings (compared after
#: Unicode NFKC normalisation, lower case, spaces at the ends removed; so ``µm`` with the
#: micro sign is ``μm``, the ångström sign ``Å`` is ``å``, ``Angstroms`` is
#: ``angstroms``).
_SPELLINGS = {
    1.0: ("m", "meter", "meters", "metre", "metres"),
    1e-2: ("cm", "centimeter", "centimeters", "centimetre", "centimetres"),
    1e-3: ("mm", "millimeter", "millimeters", "millimetre", "millimetres"),
    1e-6: (
        "um",
        "μm",
        "micron",
        "microns",
        "micrometer",
        "micrometers",
        "micrometre",
        "micrometres",
    ),
    1e-9: ("nm", "nanometer", "nanometers", "nanometre", "nanometres"),
    1e-10: ("a", "å", "angstrom", "angstroms", "ångström", "ångströms", "ångstrom", "ångstroms"),
    1e-12: ("pm", "picometer", "picometers", "picometre", "picometres"),
}
METRES_PER_UNIT = {spelling: metres for metres, names in _SPELLINGS.items() for spelling in names}

#: The lengths, in metres, that a value of each kind may take: ``(low, high,
#: low_included)``; X-ray and XUV wavelengths from 1 pm to 1 µm, a detector
#: up to 100 m from the sample, a pixel up to 10 cm.
PLAUSIBLE_METRES = {
    "wavelength": (1e-12, 1e-6, True),
    "distance": (0.0, 100.0, False),
    "pixel_size": (0.0, 0.1, False),
}


def metres_per_unit(units, where: str) -> float:
    """Metres in one ``units`` (a ``units`` attribute: str, bytes, or an array of one).

    Raises
    ------
    InputError
        A unit that is not a length of :data:`METRES_PER_UNIT`.
    """
    text = _text(units)
    key = unicodedata.normalize("NFKC", text).strip().lower()  # "m m" is not "mm"
    if key not in METRES_PER_UNIT:
        raise InputError(
            f"{where} has units {text!r}, not a length unit this reader knows (m, mm, um, nm, "
            "angstrom, ...); give it one of those, or store the value in metres without units"
        )
    return METRES_PER_UNIT[key]


def plausible_metres(values: np.ndarray, kind: str, words: str, where: str, units) -> None:
    """InputError unless every positive finite value (metres) is a plausible length of ``kind``.

    Values that are not positive finite numbers are left to the caller.

    Parameters
    ----------
    values : (k,) float64 ndarray
        Metres.
    kind : {"wavelength", "distance", "pixel_size"}
    words : str
        What the value is called in the message.
    where : str
        The file and data set.
    units : str, bytes, ndarray or None
        The data set's ``units`` attribute, None without one.
    """
    low, high, low_included = PLAUSIBLE_METRES[kind]
    inside = (values >= low if low_included else values > low) & (values <= high)
    outside = np.flatnonzero(np.isfinite(values) & (values > 0) & ~inside)
    if not len(outside):
        return
    value = float(values[outside[0]])
    bounds = f"{'[' if low_included else '('}{low:g}, {high:g}] m"
    if units is None:
        how = ("no units attribute, so it is read as metres; give the data set its units "
               "attribute (e.g. units = \"mm\") or store the value in metres")  # fmt: skip
    else:
        how = f"from units {_text(units)!r}; fix the value or its units attribute"
    raise InputError(f"{where} gives a {words} of {value:g} m, outside {bounds} ({how})")


def _text(units) -> str:
    """A ``units`` attribute as str (an array of several strings as their list, never a unit)."""
    if isinstance(units, np.ndarray):
        if units.size != 1:
            return str([_text(unit) for unit in units.ravel()])
        units = units.ravel()[0]
    return units.decode(errors="replace") if isinstance(units, bytes) else str(units)
