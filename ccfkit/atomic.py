"""Files that appear whole or not at all.

A file is written to ``NAME.partial`` and renamed to ``NAME`` only once it is
complete (the rename is atomic on one file system): an interrupted writer
never leaves a half-written file under the final name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_output"]

logger = logging.getLogger(__name__)


@contextmanager
def atomic_output(path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield ``PATH.partial`` to write into; rename it to ``PATH`` on success.

    Parameters
    ----------
    path : str or Path
        The final file.
    overwrite : bool
        Replace an existing ``path`` (only once the new file is complete).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FileNotFoundError
        The parent directory does not exist.
    IsADirectoryError
        ``path`` is a directory.

    Notes
    -----
    On any exception, KeyboardInterrupt included, the partial file is removed
    and the exception propagates; an existing ``path`` is left untouched. An
    ``OSError`` that names no file (a full disk) is raised again naming ``path``.
    What may be written where is :mod:`ccfkit.outputs`' question.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist")
    partial = path.with_name(path.name + ".partial")
    if partial.exists():
        logger.warning("removing %s, left by an earlier run that did not finish", partial)
        partial.unlink()
    try:
        yield partial
    except OSError as error:
        partial.unlink(missing_ok=True)
        if error.filename is None and error.errno is not None:  # e.g. a full disk: name the file
            raise type(error)(error.errno, error.strerror, str(path)) from error
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
