"""A study's report: ``report.md``, ``report.json`` and one PNG per table (docs/study.md).

Tables follow the paper's layout (Tables 4-6: one column per arm, one row per
metric), each cell the mean ± standard deviation (ddof 1) over the seeds of
the test-split metrics of the checkpoint chosen on validation. Beside every
table: the all-negative and the best constant predictor on the same test
frames. One verdict line per claim (:mod:`ccfsort.verdicts`).
"""

from __future__ import annotations

import math
from pathlib import Path

from .study_plan import StudyPlan
from .verdicts import compare

__all__ = ["judge_claims", "write_report"]

METRIC_ROWS = (
    ("accuracy", "Accuracy"),
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("violation_rate", "Exclusivity violations"),
)


def _cell(summary: dict | None) -> str:
    """``0.912 ± 0.008`` (± omitted with one seed), ``—`` when not run."""
    if summary is None:
        return "—"
    if summary["n"] < 2 or math.isnan(summary["std"]):
        return f"{summary['mean']:.3f}"
    return f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def judge_claims(plan: StudyPlan, results: dict) -> list[dict]:
    """Each claim's comparison (:func:`ccfsort.verdicts.compare`) with its text and arms.

    A claim whose arms have not both finished the same seeds is ``"not run"``.
    """
    stats = plan.statistics
    out = []
    for claim in plan.claims:
        entry = {"text": claim.text, "table": claim.table, "metric": claim.metric,
                 "a": plan.arms[claim.a].name, "b": plan.arms[claim.b].name}  # fmt: skip
        a, b = results.get(claim.a), results.get(claim.b)
        if a is None or b is None or list(a["seeds"]) != list(b["seeds"]):
            out.append({**entry, "verdict": "not run"})
            continue
        comparison = compare(
            a["counts"], b["counts"], claim.metric, resamples=int(stats["bootstrap"]),
            seed=int(stats["seed"]), level=float(stats["level"]), alpha=float(stats["alpha"]),
        )  # fmt: skip
        out.append({**entry, **comparison})
    return out


def verdict_line(claim: dict) -> str:
    """``"TEXT: yes, Δ precision = +0.031 [95 % CI +0.012, +0.050]; ..."``."""
    if claim["verdict"] == "not run":
        return f"- {claim['text']}: not run (its arms have not finished the same seeds)"
    low, high = claim["ci"]
    test = claim["t_test"]
    p = test["p_greater"] if claim["delta"] >= 0 else test["p_less"]
    seeds = ", ".join(f"{d:+.3f}" for d in claim["per_seed"])
    return (
        f"- {claim['text']}: **{claim['verdict']}**, Δ {claim['metric']} = "
        f"{claim['delta']:+.3f} [{100 * claim['level']:.0f} % CI {low:+.3f}, {high:+.3f}] "
        f"(bootstrap over {claim['n_frames']} test frames; paired t-test over "
        f"{claim['n_seeds']} seeds, one-sided p = {p:.3f}; per seed: {seeds})"
    )


def _metric_table(columns, summaries: list[dict], rows=METRIC_ROWS) -> list[str]:
    """A Markdown table: one column per arm, one row per metric (the paper's layout)."""
    lines = [
        "| | " + " | ".join(c.label for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for key, title in rows:
        lines.append(f"| {title} | " + " | ".join(_cell(s.get(key)) for s in summaries) + " |")
    return lines


def _table_lines(table, results: dict, base: dict) -> list[str]:
    columns = table.columns
    finished = [results.get(c.arm) or {} for c in columns]
    lines = [
        f"## {table.title}",
        "",
        *_metric_table(columns, [r.get("summary", {}) for r in finished]),
    ]
    for key, title in (("train_frames", "training frames"), ("epochs", "epochs run")):
        cells = [str(r.get(key, "—")) for r in finished]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    seeds = sorted({len(r.get("seeds", {})) for r in finished})
    lines += ["", f"Mean ± std over {'/'.join(map(str, seeds))} seeds, test split."]
    for name, m in base.items():
        lines.append(
            f"Baseline {name}: accuracy {m['accuracy']:.3f}, precision {m['precision']:.3f}, "
            f"recall {m['recall']:.3f}."
        )
    lines += ["", f"![{table.name}]({table.name}.png)", ""]
    for source in sorted({s for r in finished for s in r.get("eval_sources", {})}):
        summaries = [
            r.get("eval_sources", {}).get(source, {}).get("summary", {}) for r in finished
        ]
        lines += [f"On every frame of `{source}` (same build parameters, same checkpoints):", "",
                  *_metric_table(columns, summaries, METRIC_ROWS[:3]), ""]  # fmt: skip
    return lines


def _class_lines(table, results: dict) -> list[str]:
    """Per-class precision / recall (mean ± std over seeds) of a table's arms."""
    finished = [c for c in table.columns if results.get(c.arm)]
    if not finished:
        return []
    classes = list(results[finished[0].arm]["per_class"])
    lines = [
        f"### {table.title}: per class (precision / recall, test split)",
        "",
        "| class | support | " + " | ".join(c.label for c in finished) + " |",
        "|---|---:|" + "---|" * len(finished),
    ]
    for name in classes:
        rows = [results[c.arm]["per_class"][name] for c in finished]
        cells = [f"{_cell(r['precision'])} / {_cell(r['recall'])}" for r in rows]
        lines.append(f"| {name} | {rows[0]['support']} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_table(path: Path, table, results: dict, base: dict) -> None:
    """Metric vs the first varied parameter (e.g. noise), one line per other value, ± std."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    from ccfkit.atomic import atomic_output

    first = table.axes[0] if table.axes else None
    groups: dict[str, list] = {}
    for column in table.columns:
        rest = {p: v for p, v in column.values.items() if p in table.axes[1:]}
        name = ", ".join(f"{p.rsplit('.', 1)[-1]}={v}" for p, v in rest.items()) or table.name
        x = str(column.values[first]) if first else column.label
        groups.setdefault(name, []).append((x, results.get(column.arm)))
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    for ax, (key, title) in zip(axes, METRIC_ROWS[:3]):
        for name, points in groups.items():
            done = [(x, r["summary"][key]) for x, r in points if r]
            if not done:
                continue
            xs = [x for x, _ in done]
            means = [s["mean"] for _, s in done]
            stds = [0.0 if math.isnan(s["std"]) else s["std"] for _, s in done]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=name)
        for (bname, m), style in zip(base.items(), (":", "--")):
            ax.axhline(m[key], color="grey", linestyle=style, linewidth=1, label=bname)
        ax.set_title(title)
        ax.set_xlabel(first.rsplit(".", 1)[-1] if first else "arm")
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(axis="x", labelrotation=20)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{table.title} (test split, mean ± std over seeds)", fontsize=9)
    fig.tight_layout()
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def write_report(out: Path, plan: StudyPlan, results: dict, base: dict, provenance: dict) -> dict:
    """Write ``report.md``, ``report.json`` and the table PNGs into ``out``; return the JSON dict.

    Parameters
    ----------
    out : Path
        The study directory.
    plan : StudyPlan
    results : dict
        arm key -> :func:`ccfsort.study.collect_arm` (None: not finished).
    base : dict
        :func:`ccfsort.study.baselines`.
    provenance : dict
        Command, environment, wall time, run outcomes.
    """
    from ccfkit.atomic import atomic_output
    from trainer.run_dir import write_json

    claims = judge_claims(plan, results)
    lines = _head_lines(plan, claims, provenance)
    for table in plan.tables:
        lines += _table_lines(table, results, base)
        plot_table(out / f"{table.name}.png", table, results, base)
    lines += ["## Per class", ""]
    for table in plan.tables:
        lines += _class_lines(table, results)
    lines += [
        "## Arms",
        "",
        "| arm | build | model | train | seeds finished |",
        "|---|---|---|---|---:|",
    ]
    for arm in plan.arms.values():
        done = len((results.get(arm.key) or {}).get("seeds", {}))
        lines.append(f"| `runs/{arm.name}` | {arm.build} | {arm.model} | {arm.train} | {done} |")
    with atomic_output(out / "report.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    report = {
        "study": plan.name,
        "config": plan.config,
        "seeds": list(plan.seeds),
        "provenance": provenance,
        "baselines": base,
        "claims": claims,
        "tables": [
            {
                "name": t.name,
                "title": t.title,
                "columns": [
                    {"label": c.label, "arm": plan.arms[c.arm].name, "values": c.values}
                    for c in t.columns
                ],
            }
            for t in plan.tables
        ],
        "arms": {
            arm.name: {
                "build": arm.build,
                "model": arm.model,
                "train": arm.train,
                **{k: v for k, v in (results.get(arm.key) or {}).items() if k != "counts"},
            }
            for arm in plan.arms.values()
        },
    }
    write_json(out / "report.json", report)
    return report


def _head_lines(plan: StudyPlan, claims: list, provenance: dict) -> list[str]:
    """The report's title, provenance and verdicts (Markdown lines)."""
    env = provenance["environment"]
    split = provenance["split"]
    return [
        f"# Study `{plan.name}`",
        "",
        f"- command: `{provenance['command']}`",
        (
            f"- CPU: {env['cpu']}; torch {env['torch']}, ccfkit {env['ccfkit']}, "
            f"wall time of this invocation {provenance['wall_seconds'] / 60:.1f} min"
        ),
        (
            f"- data: {', '.join(f'`{s}`' for s in provenance['sources'])}; split (train / "
            f"validation / test): {split['train']} / {split['validation']} / {split['test']} "
            "frames"
        ),
        (
            f"- seeds: {list(plan.seeds)}; {len(plan.arms)} arms; checkpoint chosen on "
            "validation accuracy, every number below on the test split"
        ),
        "",
        "## Verdicts",
        "",
        *(verdict_line(c) for c in claims),
        "",
        (
            "yes: the bootstrap interval lies above 0 and the paired t-test says > 0 "
            f"(alpha {plan.statistics['alpha']}); no: both say < 0; otherwise not resolved "
            "(docs/study.md)."
        ),
        "",
    ]
