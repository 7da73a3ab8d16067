"""The ``ccfkit build`` options that say what the input is, and opening it.

CXI/HDF5 files of images, module stacks with their CrystFEL geometry
(``--geometry``), or a European XFEL run directory (``--detector``,
``--pulses``, ``--incomplete``); docs/build.md, "Inputs". Light at import
(click only): the readers are imported when a build opens its input.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

__all__ = ["input_options", "open_frames", "open_input"]

_OPTIONS = (
    click.option(
        "--geometry",
        type=click.Path(path_type=Path),
        default=None,
        metavar="FILE",
        help="CrystFEL geometry of module-stacked frames (frame, module, ss, fs), read by "
        "extra-geom; the beam at its origin unless --center (docs/build.md, Inputs).",
    ),
    click.option(
        "--detector",
        default=None,
        metavar="NAME",
        help="Read INPUTS as a European XFEL run directory, this detector (e.g. "
        "SPB_DET_AGIPD1M-1; needs --geometry).",
    ),
    click.option(
        "--pulses",
        default=None,
        metavar="START:STOP:STEP",
        help="With --detector: the pulses taken from every train, by index [all].",
    ),
    click.option(
        "--incomplete",
        type=click.Choice(["skip", "mask"]),
        default="skip",
        show_default=True,
        help="With --detector: trains missing a module are skipped, or kept with it masked.",
    ),
)


def input_options(command):
    """Add ``--geometry``, ``--detector``, ``--pulses`` and ``--incomplete`` to a command."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def open_input(inputs, out, *, mask_spec, center, data_path, labels_path, facility: dict):
    """The build's checked input and the ``--center`` left to resolve.

    Parameters
    ----------
    inputs : sequence of str
        CXI/HDF5 files or globs; with ``--detector``, one run directory.
    out : Path
        The store (a ``--mask`` file may not lie in it).
    mask_spec, center, data_path, labels_path : str or None
        The options of those names.
    facility : dict
        ``geometry``, ``detector``, ``pulses``, ``incomplete`` (:func:`input_options`).

    Returns
    -------
    (FrameSource, str or None)
        ``--center per-frame`` becomes the source's ``center_per_frame``
        and a centre of None. Several files must agree on their mask
        (unless ``--mask``) and beam centre (unless ``--center``); with
        ``--center per-frame`` each file's frames keep its own centre
        (:mod:`ccfkit.io.agreement`).

    Raises
    ------
    InputError
        What the readers refuse; ``--pulses`` or ``--mask`` that do not fit
        the input; ``--center auto`` with a geometry; ``--center per-frame``
        without centres per frame.
    """
    from .io.source import InputError

    center_use = {None: "agree", "per-frame": "per-frame"}.get(center, "ignore")
    source = _open(inputs, out, mask_spec, data_path, labels_path, center_use, **facility)
    if source.pixels is not None and center == "auto":
        raise InputError("--center auto works on images; with --geometry give --center X,Y")
    if center == "per-frame":
        if source.centers is None:
            raise InputError("--center per-frame: the input gives no beam centre per frame")
        return dataclasses.replace(source, center_per_frame=True), None
    return source, center


def _open(inputs, out, mask_spec, data_path, labels_path, center_use, **facility):
    """The input with ``--mask`` read (a ``--mask`` file may not lie in ``out``)."""
    from .io.source import InputError, read_mask_file
    from .store import check_not_input

    mask, origin = None, ""
    if mask_spec:
        if facility.get("detector") is not None:
            raise InputError("--mask with --detector: the run's own mask (image.mask) is used")
        check_not_input(out, [mask_spec.partition(":")[0]])
        mask, origin = read_mask_file(mask_spec)
    return open_frames(inputs, data_path=data_path, labels_path=labels_path, mask=mask,
                       mask_origin=origin, center_use=center_use, **facility)  # fmt: skip


def open_frames(
    inputs,
    *,
    data_path=None,
    labels_path=None,
    mask=None,
    mask_origin="given",
    center_use="agree",
    geometry=None,
    detector=None,
    pulses=None,
    incomplete="skip",
):
    """CXI/HDF5 files (:func:`~ccfkit.io.source.open_source`) or a run (:mod:`ccfkit.io.euxfel`).

    The options of :func:`input_options` as keywords: ``trainer predict``
    opens its frames with this too.

    Parameters
    ----------
    inputs : sequence of str
        Files or globs; with ``detector``, one run directory.
    data_path, labels_path : str, optional
    mask : (H, W) bool ndarray, optional
        True = good, replacing the files' masks (not with ``detector``).
    mask_origin : str
    center_use : {"agree", "ignore", "per-frame"}
        What the files' beam centres are for (:func:`ccfkit.io.agreement.agreed`).
    geometry, detector, pulses, incomplete
        ``--geometry``, ``--detector``, ``--pulses``, ``--incomplete``.

    Returns
    -------
    FrameSource
    """
    from .io.source import InputError, open_source

    if detector is None and pulses is None:
        return open_source(inputs, data_path=data_path, mask=mask, mask_origin=mask_origin,
                           labels_path=labels_path, geometry=geometry,
                           center_use=center_use)  # fmt: skip
    from .io.euxfel import open_run, parse_pulses

    if detector is None:
        raise InputError("--pulses selects pulses of a run: give --detector NAME")
    if len(inputs) != 1:
        raise InputError(f"--detector reads one run directory, not {len(inputs)} inputs")
    if mask is not None:
        raise InputError("--mask with --detector: the run's own mask (image.mask) is used")
    return open_run(
        inputs[0], detector, geometry=geometry, pulses=parse_pulses(pulses), incomplete=incomplete
    )
