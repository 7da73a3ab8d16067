"""Generated sections of the documentation: text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``.

The benchmarks write their tables into ``docs/*.md`` this way, so that a rerun
replaces its own section and leaves the prose around it as it is.
"""

from __future__ import annotations

import re
from pathlib import Path


def replace_section(page: Path | str, name: str, text: str, *, before: str | None = None) -> None:
    """Put ``text`` between the ``name`` markers of ``page``.

    Parameters
    ----------
    page : path
        A markdown file; created (with a title) when missing.
    name : str
        The section's name in its markers.
    text : str
        The section, without the markers.
    before : str, optional
        Where a page has no such section yet, the new one goes before the first
        line that starts with this text (a heading, say); at the end otherwise.
    """
    page = Path(page)
    doc = page.read_text(encoding="utf-8") if page.exists() else "# Performance\n"
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text.strip(chr(10))}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: block, doc, count=1)
    else:
        anchor = re.search("^" + re.escape(before), doc, re.MULTILINE) if before else None
        if anchor:
            doc = doc[: anchor.start()] + block + "\n\n" + doc[anchor.start() :]
        else:
            doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    page.write_text(doc, encoding="utf-8")
