"""May a command write this file? The one check every output path passes (docs/build.md, "Safety").

A command writes an output only where nothing of value is lost:

- a path that does not exist yet, or one that holds a file the tool itself
  wrote before (recognised by its content: each writer says how, with a
  ``recognise`` function such as :func:`csv_with_header`, :func:`json_with_keys`
  or :func:`marked`);
- never one of the command's own inputs (compared resolved, and with
  :func:`os.path.samefile`, so a hard link or another name of the same file
  is caught too), nor a directory above one;
- never a file inside a Zarr store (a directory above it holds a
  ``zarr.json``): a store is rewritten only by ``ccfkit build``, whole.

A refusal is an :class:`OutputRefused` (an ``OSError``, so both command lines
report it in one line) naming the path and why. Light: the standard library
only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "HTML_MARKER",
    "PNG_MARKER",
    "PNG_SIGNATURE",
    "OutputRefused",
    "csv_with_header",
    "inside_store",
    "json_with_keys",
    "marked",
    "our_picture",
    "writable_output",
]

#: The PNG text chunk a picture of this tool carries (``Software``: ``ccfkit ...``).
PNG_MARKER = b"Software\x00ccfkit"
#: The first bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: The meta tag a page of this tool carries.
HTML_MARKER = b'<meta name="generator" content="ccfkit'

#: How much of a file's beginning the recognisers read, bytes.
_HEAD = 1 << 16


class OutputRefused(OSError):
    """An output path the command may not write (one line, naming it)."""


def writable_output(
    path,
    *,
    inputs: Iterable = (),
    recognise: Callable[[Path], bool] | None = None,
    what: str = "the output",
) -> Path:
    """Check that ``path`` may be written; return it (as given, a Path).

    Parameters
    ----------
    path : str or Path
        The file the command is about to write (to a temporary name first).
    inputs : iterable of str or Path
        Every file or directory the command reads (a store, input files).
    recognise : callable, optional
        ``recognise(path) -> bool``: whether an existing ``path`` is a file
        this tool wrote (then it may be replaced). None: an existing path is
        refused.
    what : str
        The option's name for the message, e.g. ``"-o"``.

    Raises
    ------
    OutputRefused
        ``path`` is a directory, one of ``inputs`` (or above one), inside a
        Zarr store, or an existing file the tool did not write.
    """
    path = Path(path)
    resolved = path.resolve()
    for given in inputs:
        _refuse_input(path, resolved, Path(given), what)
    store = inside_store(resolved)
    if store is not None:
        raise OutputRefused(
            f"{what} {path} is inside the Zarr store {store}: a store is only written by "
            "`ccfkit build`; choose a path outside it"
        )
    if path.is_dir():
        raise OutputRefused(f"{what} {path} exists and is a directory: refusing to replace it")
    ours = recognise is not None and path.is_file() and _recognised(path, recognise)
    if (path.exists() or path.is_symlink()) and not ours:
        raise OutputRefused(
            f"{what} {path} exists and is not a file this tool wrote: refusing to replace "
            "it; remove it or choose another name"
        )
    return path


def _refuse_input(path: Path, resolved: Path, given: Path, what: str) -> None:
    """Refuse ``path`` if it is ``given`` (an input) or a directory above it."""
    target = given.resolve()
    same = target == resolved
    if not same and path.exists() and given.exists():
        try:
            same = os.path.samefile(path, given)
        except OSError:
            same = False
    if same:
        raise OutputRefused(f"{what} {path} is an input of this command ({given}): "
                            "choose another output")  # fmt: skip
    if resolved in target.parents:
        raise OutputRefused(f"{what} {path} contains the input {given}: choose another output")
    if target in resolved.parents and given.is_dir():
        raise OutputRefused(f"{what} {path} is inside the input {given}: choose another output")


def inside_store(path: Path) -> Path | None:
    """The Zarr store (a directory holding ``zarr.json``) above ``path``, or None."""
    for parent in Path(path).resolve().parents:
        if (parent / "zarr.json").is_file():
            while (parent.parent / "zarr.json").is_file():  # the root of nested groups
                parent = parent.parent
            return parent
    return None


def _recognised(path: Path, recognise: Callable[[Path], bool]) -> bool:
    try:
        return bool(recognise(path))
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(_HEAD)


def marked(signature: bytes, marker: bytes) -> Callable[[Path], bool]:
    """A recogniser of files that start with ``signature`` and hold ``marker`` near their start.

    E.g. a PNG with the text chunk ``Software`` = ``ccfkit ...`` (:data:`PNG_MARKER`), or an
    HTML page with ``<meta name="generator" content="ccfkit ...">`` (:data:`HTML_MARKER`).
    """

    def recognise(path: Path) -> bool:
        head = _head(path)
        return head.startswith(signature) and marker in head

    return recognise


def our_picture(path: Path) -> bool:
    """Whether ``path`` is a PNG this tool drew (its ``Software`` text chunk says ``ccfkit``)."""
    return marked(PNG_SIGNATURE, PNG_MARKER)(path)


def csv_with_header(*first_columns: str, prefix: str = "p_") -> Callable[[Path], bool]:
    """A recogniser of CSV files whose header starts ``first_columns`` then ``prefix`` columns."""

    def recognise(path: Path) -> bool:
        header = _head(path).split(b"\n", 1)[0].decode().strip().split(",")
        lead = list(first_columns)
        return (
            header[: len(lead)] == lead
            and len(header) > len(lead)
            and header[len(lead)].startswith(prefix)
        )

    return recognise


def json_with_keys(*keys: str) -> Callable[[Path], bool]:
    """A recogniser of JSON files holding an object with every one of ``keys``."""

    def recognise(path: Path) -> bool:
        data = json.loads(path.read_text())
        return isinstance(data, dict) and all(key in data for key in keys)

    return recognise
