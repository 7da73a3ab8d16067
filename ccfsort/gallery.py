"""``trainer gallery``: what a run sorted, as one self-contained HTML page.

Per predicted class (probability at or above the run's threshold) the page
shows the count and the frames of highest probability, image and CCF map
side by side; then a row of the frames the model is least sure of
(:func:`ccfsort.selection.uncertainty`); and a plot of the class counts along
the run (frame index, or train id where the store has one). Every picture is
embedded as a ``data:`` URI: the file opens anywhere, without a server.

A fixed number of thumbnails per class (``per_class``, ``uncertain``) is
picked with :func:`ccfsort.selection.top_k` (O(N)), so the page of 10^6
predictions is made in seconds: only the chosen frames are read.
"""

from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .render import data_uri, image_png, map_png
from .selection import top_k, uncertainty

__all__ = [
    "Selection",
    "counts_along_run",
    "gallery",
    "gallery_html",
    "make_gallery",
    "select_frames",
]

#: Bins of the counts-along-the-run plot, at most (fewer when there are fewer frames) ...
PLOT_BINS = 120
#: ... so that a bin holds at least this many frames.
FRAMES_PER_BIN = 10


@dataclass(frozen=True)
class Selection:
    """The frames a gallery shows.

    Attributes
    ----------
    counts : (C,) int64
        Frames predicted in each class.
    best : list of (k_c,) int64 arrays
        Per class, its predicted frames of highest probability, highest first.
    uncertain : (u,) int64
        The least certain frames, least certain first.
    """

    counts: np.ndarray
    best: list[np.ndarray]
    uncertain: np.ndarray
    rows: np.ndarray = field(init=False)

    def __post_init__(self):
        chosen = np.concatenate([*self.best, self.uncertain]).astype(np.int64)
        object.__setattr__(self, "rows", np.unique(chosen))


def select_frames(
    probabilities: np.ndarray, threshold: float, *, per_class: int = 8, uncertain: int = 12
) -> Selection:
    """Pick the frames of a gallery: O(N C), no full sort.

    Parameters
    ----------
    probabilities : (N, C) array
        Sigmoid probabilities.
    threshold : float
        A frame is predicted in class c when ``p_c >= threshold``.
    per_class, uncertain : int
        Thumbnails per class, and of the least certain frames.

    Returns
    -------
    Selection
    """
    probabilities = np.asarray(probabilities)
    predicted = probabilities >= threshold
    best = []
    for c in range(probabilities.shape[1]):
        best.append(top_k(probabilities[:, c], per_class, np.flatnonzero(predicted[:, c])))
    return Selection(
        counts=predicted.sum(axis=0).astype(np.int64),
        best=best,
        uncertain=top_k(uncertainty(probabilities, threshold), uncertain),
    )


def counts_along_run(
    probabilities: np.ndarray, threshold: float, position: np.ndarray, bins: int = PLOT_BINS
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted frames per class in equal bins of the position along the run.

    Returns
    -------
    edges : (B + 1,) float64
        Bin edges in units of ``position`` (frame index or train id).
    counts : (B, C) int64
        Frames of each class in each bin.
    """
    position = np.asarray(position, dtype=np.float64)
    n_bins = max(1, min(int(bins), len(position) // FRAMES_PER_BIN))
    low, high = (position.min(), position.max()) if len(position) else (0.0, 1.0)
    edges = np.linspace(low, max(high, low + 1.0), n_bins + 1)
    which = np.clip(np.searchsorted(edges, position, side="right") - 1, 0, n_bins - 1)
    predicted = np.asarray(probabilities) >= threshold
    columns = [np.bincount(which, weights=predicted[:, c], minlength=n_bins)
               for c in range(predicted.shape[1])]  # fmt: skip
    counts = np.stack(columns, axis=1).astype(np.int64)
    return edges, counts


def counts_plot_png(edges, counts, names, position_name: str) -> bytes:
    """The counts along the run as a PNG (one line per class; matplotlib, no pyplot)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 3.2), dpi=100, facecolor="#1e2127")
    ax = figure.add_subplot()
    ax.set_facecolor("#1e2127")
    centres = 0.5 * (edges[1:] + edges[:-1])
    for c, name in enumerate(names):
        if not counts[:, c].any():  # a class never predicted: named in the title instead
            continue
        ax.plot(centres, counts[:, c], label=name, linewidth=1.4, drawstyle="steps-mid")
    ax.set_ylim(0, max(1, int(counts.max())) * 1.08)
    never = [name for c, name in enumerate(names) if not counts[:, c].any()]
    if never:
        ax.set_title("never predicted: " + ", ".join(never), color="#9aa1ab", fontsize=9,
                     loc="right")  # fmt: skip
    ax.set_xlabel(position_name, color="#c9ced6")
    ax.set_ylabel(f"frames per bin ({edges[1] - edges[0]:.3g} wide)", color="#c9ced6")
    ax.tick_params(colors="#c9ced6")
    for spine in ax.spines.values():
        spine.set_color("#4a505a")
    if len(never) < len(names):
        legend = ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        for text in legend.get_texts():
            text.set_color("#e6e8eb")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor=figure.get_facecolor())
    return buffer.getvalue()


def make_gallery(out, probabilities, names, threshold, frames, *, title: dict,
                 per_class: int = 8, uncertain: int = 12) -> Selection:  # fmt: skip
    """Select, draw and write a gallery to ``out`` (atomically; replaces an older one).

    Parameters
    ----------
    out : path
        The HTML file.
    probabilities : (N, C) array
    names : list of str
        The C label names.
    threshold : float
    frames : StoreFrames or FileFrames
        Where the chosen frames' images and maps are read.
    title : dict
        What the page says it shows (run, source, checkpoint ...): str -> str.
    per_class, uncertain : int
        Thumbnails per class and of the least certain frames.

    Returns
    -------
    Selection
        The frames shown.
    """
    from ccfkit.atomic import atomic_output

    selection = select_frames(probabilities, threshold, per_class=per_class, uncertain=uncertain)
    position, position_name = frames.along_run()
    edges, counts = counts_along_run(probabilities, threshold, position)
    plot = data_uri(counts_plot_png(edges, counts, names, position_name))
    rows = selection.rows
    images, maps, named = frames.images(rows), frames.maps(rows), frames.frame_names(rows)
    pictures = {
        int(row): (data_uri(image_png(image)), data_uri(map_png(merged)), name)
        for row, image, merged, name in zip(rows, images, maps, named)
    }
    page = gallery_html(selection, probabilities, names, threshold, pictures, plot,
                        position, position_name, title)  # fmt: skip
    with atomic_output(Path(out), overwrite=True) as partial:
        partial.write_text(page, encoding="utf-8")
    return selection


def _thumbnail(row, probabilities, names, pictures, position, position_name) -> str:
    image, merged, name = pictures[row]
    name = f" · {html.escape(name)}" if name else ""
    p = probabilities[row]
    shown = sorted(range(len(names)), key=lambda c: -p[c])[:3]
    everything = ", ".join(f"{n} {v:.3f}" for n, v in zip(names, p))
    lines = "".join(
        f'<span class="p"><i style="width:{100 * p[c]:.0f}%"></i>{html.escape(names[c])} '
        f"{p[c]:.2f}</span>"
        for c in shown
    )
    return (
        f'<figure class="thumb" title="{html.escape(everything)}">'
        f'<div class="pair"><img src="{image}" alt="image of row {row}">'
        f'<img src="{merged}" alt="CCF map of row {row}"></div>'
        f"<figcaption><b>row {row}</b>{name} · {position_name} {int(position[row])}{lines}"
        "</figcaption>"
        "</figure>"
    )


def gallery_html(selection, probabilities, names, threshold, pictures, plot, position,
                 position_name, title) -> str:  # fmt: skip
    """The gallery page as one HTML string (styles inline, pictures as data URIs)."""
    n = len(probabilities)

    def strip(rows) -> str:
        if not len(rows):
            return '<p class="none">no frame predicted</p>'
        cards = (_thumbnail(int(r), probabilities, names, pictures, position, position_name)
                 for r in rows)  # fmt: skip
        return f'<div class="strip">{"".join(cards)}</div>'

    sections = []
    for c, name in enumerate(names):
        count = int(selection.counts[c])
        share = 100.0 * count / max(n, 1)
        sections.append(
            f'<section><h2>{html.escape(name)} <span class="count">{count} frames '
            f'({share:.1f} %)</span></h2><p class="sub">highest probability first</p>'
            f"{strip(selection.best[c])}</section>"
        )
    sections.append(
        '<section><h2>Least certain <span class="count">the probability nearest the '
        f"threshold {threshold:g}</span></h2>{strip(selection.uncertain)}</section>"
    )
    facts = "".join(f"<span><b>{html.escape(k)}</b> {html.escape(str(v))}</span>"
                    for k, v in title.items())  # fmt: skip
    made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="ccfkit trainer gallery">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Gallery · {html.escape(str(title.get("run", "")))}</title>
<link rel="icon" href="data:,">
<style>{STYLE}</style></head>
<body><header><h1>What the run sorted</h1><div class="facts">{facts}
<span><b>frames</b> {n}</span><span><b>threshold</b> {threshold:g}</span>
<span><b>made</b> {made}</span></div></header>
<main><section><h2>Classes along the run</h2>
<img class="plot" src="{plot}" alt="predicted frames per class along the run"></section>
{"".join(sections)}
<p class="sub">Each thumbnail: the image (log<sub>10</sub> intensity) and its CCF map
(full map lower left, order-n map upper right), the store row (with its train and pulse
where the input has them), its position along the run and the three largest probabilities
(all of them on hover). Module stacks are shown assembled by extra-geom.</p></main></body></html>
"""


STYLE = """
:root{--bg:#15171b;--panel:#1e2127;--line:#2c3038;--text:#e6e8eb;--muted:#9aa1ab;
--bar:#3a4250;--fill:#d9a441}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--text);
font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
header{padding:14px 22px;background:var(--panel);border-bottom:1px solid var(--line)}
h1{font-size:20px;margin:0 0 6px}.facts{display:flex;flex-wrap:wrap;gap:4px 18px;
color:var(--muted)}.facts b{color:var(--text);font-weight:600;margin-right:4px}
main{padding:8px 22px 30px}section{margin:18px 0}h2{font-size:16px;margin:0 0 8px}
.count{color:var(--muted);font-weight:400;font-size:14px;margin-left:8px}
.sub{color:var(--muted);font-size:12px;margin:-4px 0 8px}.none{color:var(--muted)}
.plot{max-width:100%;border:1px solid var(--line);border-radius:6px}
.strip{display:flex;gap:10px;overflow-x:auto;padding-bottom:6px}
.thumb{margin:0;flex:none;width:260px;background:var(--panel);border:1px solid var(--line);
border-radius:6px;padding:6px}.pair{display:flex;gap:4px}.pair img{width:122px;height:122px;
object-fit:contain;background:#000;image-rendering:pixelated;border-radius:3px}
figcaption{font-size:12px;color:var(--muted);margin-top:4px;font-variant-numeric:tabular-nums}
figcaption b{color:var(--text)}.p{display:block;position:relative;padding:1px 4px;
margin-top:2px;color:var(--text)}.p i{position:absolute;left:0;top:0;bottom:0;
background:var(--bar);z-index:-1;border-radius:2px}.p{z-index:0}
"""


def gallery(run, source, out, *, which: str = "best", device: str = "cpu", per_class: int = 8,
            uncertain: int = 12, backend: str = "auto", data_path: str | None = None,
            progress: bool = False, facility: dict | None = None,
            predicted: dict | None = None) -> dict:  # fmt: skip
    """Predict ``source`` with ``run`` and write its gallery to ``out``.

    Parameters
    ----------
    run : path
        A ``trainer fit`` run directory.
    source : sequence of str
        One ``ccfkit build`` store, or CXI/HDF5 files and globs, or a European
        XFEL run directory (mapped with the run's recipe on the way, as
        ``trainer predict`` does).
    out : path
        The HTML file.
    facility : dict, optional
        ``geometry``, ``detector``, ``pulses``, ``incomplete`` of frames
        (:func:`ccfsort.sorting.predict_frames`).
    predicted : dict, optional
        What ``run`` (its checkpoint ``which``) predicted on ``source``
        already: ``probabilities`` (N, C), ``names``, ``threshold`` of
        :func:`ccfsort.sorting.predict_frames` or
        :func:`trainer.inference.store_probabilities` [predicted here].

    Returns
    -------
    dict
        ``frames`` (predicted), ``shown`` (thumbnails' frames), ``counts``
        (label name -> frames predicted in it).
    """
    import json

    from .frames import FileFrames, StoreFrames

    source = [str(s) for s in source]
    if len(source) == 1 and (Path(source[0]) / "zarr.json").is_file():
        from trainer.inference import store_probabilities

        frames = StoreFrames(source[0])
        result = predicted or store_probabilities(run, source[0], which=which, device=device)
    else:
        from .sorting import predict_frames

        config = json.loads((Path(run) / "config.json").read_text())
        frames = FileFrames(source, config, data_path=data_path, backend=backend,
                            facility=facility)  # fmt: skip
        result = predicted or predict_frames(run, source, which=which, device=device,
                                             backend=backend, progress=progress,
                                             prepared=frames.prepared)  # fmt: skip
    title = {"run": str(run), "source": ", ".join(source), "checkpoint": which}
    selection = make_gallery(out, result["probabilities"], result["names"], result["threshold"],
                             frames, title=title, per_class=per_class, uncertain=uncertain)  # fmt: skip
    return {
        "frames": len(result["probabilities"]),
        "shown": len(selection.rows),
        "counts": dict(zip(result["names"], selection.counts.tolist())),
    }
