"""A study's report: ``report.md``, ``report.json`` and one PNG per table (docs/study.md).

Tables follow the paper's layout (Tables 4-6: one column per arm, one row per
metric), each cell the mean ± standard deviation (ddof 1) over the seeds of
the test-split metrics of the checkpoint chosen on validation. Beside every
table: the all-negative and the best constant predictor on the same test
frames, and the RBF SVM on ring features (:mod:`ccfsort.study_baseline`),
with a verdict on whether the table's best arm beats it. One verdict line per
claim (:mod:`ccfsort.verdicts`).

A study directory keeps one report for all its tables: a run of some tables
(``--tables``) replaces those tables' sections and claims in ``report.md`` and
``report.json`` and keeps the others' (:func:`merge_reports`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .study_plan import StudyPlan
from .verdicts import ONE_SEED, compare

__all__ = ["judge_claims", "merge_reports", "verdict_line", "write_report"]

#: How the classical baseline is named in the tables.
SVM_NAME = "RBF SVM (ring features)"

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


def _judge(entry: dict, a: dict | None, b: dict | None, stats: dict) -> dict:
    """``entry`` with the comparison of the results ``a`` and ``b`` (or ``"not run"``)."""
    if a is None or b is None or list(a["seeds"]) != list(b["seeds"]):
        return {**entry, "verdict": "not run"}
    comparison = compare(
        a["counts"], b["counts"], entry["metric"], resamples=int(stats["bootstrap"]),
        seed=int(stats["seed"]), level=float(stats["level"]), alpha=float(stats["alpha"]),
    )  # fmt: skip
    return {**entry, **comparison}


def judge_claims(plan: StudyPlan, results: dict) -> list[dict]:
    """Each claim's comparison (:func:`ccfsort.verdicts.compare`) with its text and arms.

    A claim on the test split has one entry; a claim ``on = "eval-source"``
    one per eval source (on every frame of it, its text naming the file), or
    one ``"not run"`` entry when no eval source was scored. A claim whose arms
    have not both finished the same seeds is ``"not run"``.
    """
    stats = plan.statistics
    out = []
    for claim in plan.claims:
        entry = {"text": claim.text, "table": claim.table, "metric": claim.metric,
                 "a": plan.arms[claim.a].name, "b": plan.arms[claim.b].name}  # fmt: skip
        a, b = results.get(claim.a), results.get(claim.b)
        if claim.on == "test":
            out.append(_judge(entry, a, b, stats))
            continue
        on_a, on_b = (r.get("eval_sources", {}) if r else {} for r in (a, b))
        if not on_a and not on_b:
            out.append({**entry, "on": "eval-source", "verdict": "not run",
                        "reason": "no --eval-source scored"})  # fmt: skip
        for source in sorted(set(on_a) | set(on_b)):
            named = {**entry, "text": f"{claim.text} (on every frame of `{Path(source).name}`)",
                     "on": "eval-source", "source": source, "frames": "frames of the source"}  # fmt: skip
            out.append(_judge(named, on_a.get(source), on_b.get(source), stats))
    return out


def verdict_line(claim: dict) -> str:
    """``"TEXT: yes, Δ precision = +0.031 [95 % CI +0.012, +0.050]; ..."``."""
    if claim["verdict"] == "not run":
        reason = claim.get("reason", "its arms have not finished the same seeds")
        return f"- {claim['text']}: not run ({reason})"
    low, high = claim["ci"]
    frames = f"{claim['n_frames']} {claim.get('frames', 'test frames')}"
    if claim["verdict"] == ONE_SEED:
        return (
            f"- {claim['text']}: **no verdict possible with one seed** (the paired test over "
            f"seeds needs two or more), Δ {claim['metric']} = {claim['delta']:+.3f} "
            f"[{100 * claim['level']:.0f} % CI {low:+.3f}, {high:+.3f}] (bootstrap over "
            f"{frames})"
        )
    test = claim["t_test"]
    p = test["p_greater"] if claim["delta"] >= 0 else test["p_less"]
    seeds = ", ".join(f"{d:+.3f}" for d in claim["per_seed"])
    return (
        f"- {claim['text']}: **{claim['verdict']}**, Δ {claim['metric']} = "
        f"{claim['delta']:+.3f} [{100 * claim['level']:.0f} % CI {low:+.3f}, {high:+.3f}] "
        f"(bootstrap over {frames}; paired t-test over "
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


def _on(result: dict | None, source: str | None) -> dict | None:
    """An arm's (or its SVM's) result on the test split, or on every frame of ``source``."""
    if not result or source is None:
        return result
    return result.get("eval_sources", {}).get(source)


def _svm_comparison(table, results: dict, svm: dict, stats: dict, source: str | None = None
                    ) -> dict | None:  # fmt: skip
    """The table's best arm (mean accuracy) against the SVM on its frames, or None.

    On the test split, or (``source``) on every frame of that eval source.
    """
    done = [c for c in table.columns
            if _on(results.get(c.arm), source) and _on(svm.get(c.arm), source)]  # fmt: skip
    if not done:
        return None
    best = max(done, key=lambda c: _on(results[c.arm], source)["summary"]["accuracy"]["mean"])
    counts = np.asarray(_on(results[best.arm], source)["counts"])
    comparison = compare(
        counts, np.broadcast_to(_on(svm[best.arm], source)["counts"], counts.shape), "accuracy",
        resamples=int(stats["bootstrap"]), seed=int(stats["seed"]), level=float(stats["level"]),
        alpha=float(stats["alpha"]),
    )  # fmt: skip
    text = f"The best arm, {best.label}, beats the {SVM_NAME}"
    if source is not None:
        text += f" on every frame of `{Path(source).name}`"
        comparison = {**comparison, "source": source, "frames": "frames of the source"}
    return {"text": text, "column": best.label, **comparison}


def _svm_rows(columns, on_svm: list) -> list[str]:
    """The SVM's metric rows under a table (``on_svm``: each column's SVM result, or None)."""
    if not any(on_svm):
        return []
    return [f"| {title}, {SVM_NAME} | " + " | ".join(
                f"{r['summary'][key]:.3f}" if r else "—" for r in on_svm) + " |"
            for key, title in METRIC_ROWS]  # fmt: skip


def _constants(base: dict, source: str | None = None) -> dict:
    """The constant baselines on the test split (``source`` None) or on every frame of a source.

    ``base``: :func:`ccfsort.study.baselines` of the test split, with
    ``eval_sources``: source -> its baselines there.
    """
    if source is not None:
        return base.get("eval_sources", {}).get(source, {})
    return {name: m for name, m in base.items() if name != "eval_sources"}


def _baseline_lines(base: dict, comparison) -> list[str]:
    """The constants' line each, and the verdict of the best arm against the SVM."""
    lines = [f"Baseline {name}: accuracy {m['accuracy']:.3f}, precision {m['precision']:.3f}, "
             f"recall {m['recall']:.3f}." for name, m in base.items()]  # fmt: skip
    if comparison is None:
        return lines
    frames = "one SVM per column's frames (the same noise, rings and split"
    if "source" in comparison:
        frames = ("each column's SVM, trained on its training split, on these frames (with the "
                  "noise and rings of the column's maps of them")  # fmt: skip
    return [*lines, f"Baseline {SVM_NAME}: the rows above, {frames}; docs/study.md). Against it:",
            verdict_line(comparison)]  # fmt: skip


def _table_lines(table, results: dict, base: dict, svm: dict, comparisons: dict, command: str
                 ) -> list[str]:  # fmt: skip
    """A table's section: the metrics, the baselines (constants and SVM), its command.

    ``comparisons``: :func:`_svm_comparison` on the test split (key None) and
    on each eval source (its path).
    """
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
    lines += _svm_rows(columns, [svm.get(c.arm) for c in columns])
    seeds = sorted({len(r.get("seeds", {})) for r in finished})
    seeds_line = f"Mean ± std over {'/'.join(map(str, seeds))} seeds, test split; "
    if seeds == [1]:
        seeds_line = "One seed (no ± std), test split; "
    lines += ["", seeds_line + f"command: `{command}`.",
              *_baseline_lines(_constants(base), comparisons.get(None)),
              "", f"![{table.name}]({table.name}.png)", ""]  # fmt: skip
    for source in _eval_sources(finished):
        scored = [r.get("eval_sources", {}).get(source, {}) for r in finished]
        on_svm = [_on(svm.get(c.arm), source) for c in columns]
        lines += [f"On every frame of `{source}` (same build parameters, same checkpoints):", "",
                  *_metric_table(columns, [r.get("summary", {}) for r in scored]),
                  *_svm_rows(columns, on_svm), "", _label_line(source, scored),
                  *_baseline_lines(_constants(base, source), comparisons.get(source)),
                  ""]  # fmt: skip
    return lines


def _eval_sources(results) -> list[str]:
    """The eval sources any of ``results`` (arm results or None) was scored on, sorted."""
    return sorted({s for r in results if r for s in r.get("eval_sources", {})})


def _label_line(source: str, scored: list[dict]) -> str:
    """Which labels of the runs ``source`` could not score, and which of its own it ignored."""
    unscored = sorted({n for r in scored for n in r.get("unscored_labels", [])})
    ignored = sorted({n for r in scored for n in r.get("ignored_labels", [])})
    return (
        f"Labels of the runs that `{Path(source).name}` does not have, not scored: "
        f"{', '.join(unscored) or 'none'}; its labels that the runs do not have, ignored: "
        f"{', '.join(ignored) or 'none'}."
    )


def _class_lines(table, results: dict, source: str | None = None) -> list[str]:
    """Per-class precision / recall (mean ± std over seeds) of a table's arms.

    On the test split, or (``source``) on every frame of that eval source.
    """
    scored = {c.arm: results[c.arm] for c in table.columns if results.get(c.arm)}
    if source is not None:
        scored = {k: r["eval_sources"][source] for k, r in scored.items()
                  if source in r.get("eval_sources", {})}  # fmt: skip
    finished = [c for c in table.columns if c.arm in scored]
    if not finished:
        return []
    where = "test split" if source is None else f"every frame of `{source}`"
    classes = list(scored[finished[0].arm]["per_class"])
    lines = [
        f"### {table.title}: per class (precision / recall, {where})",
        "",
        "| class | support | " + " | ".join(c.label for c in finished) + " |",
        "|---|---:|" + "---|" * len(finished),
    ]
    for name in classes:
        rows = [scored[c.arm]["per_class"][name] for c in finished]
        cells = [f"{_cell(r['precision'])} / {_cell(r['recall'])}" for r in rows]
        lines.append(f"| {name} | {rows[0]['support']} | " + " | ".join(cells) + " |")
    return lines + [""]


def plot_table(path: Path, table, results: dict, base: dict, svm: dict | None = None) -> None:
    """Metric vs the first varied parameter (e.g. noise), one line per other value, ± std.

    The constant baselines are horizontal lines, the SVM of each column's frames a cross.
    """
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    from ccfkit.atomic import atomic_output

    first = table.axes[0] if table.axes else None
    groups: dict[str, list] = {}
    svm_at: dict[str, dict] = {}  # x -> the SVM's test metrics there
    for column in table.columns:
        rest = {p: v for p, v in column.values.items() if p in table.axes[1:]}
        name = ", ".join(f"{p.rsplit('.', 1)[-1]}={v}" for p, v in rest.items()) or table.name
        x = str(column.values[first]) if first else column.label
        groups.setdefault(name, []).append((x, results.get(column.arm)))
        if (svm or {}).get(column.arm):
            svm_at[x] = svm[column.arm]["summary"]
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
        if svm_at:
            ax.scatter(list(svm_at), [m[key] for m in svm_at.values()], marker="x",
                       color="black", zorder=3, label=SVM_NAME)  # fmt: skip
        for (bname, m), style in zip(_constants(base).items(), (":", "--")):
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


def _table_entry(table, plan: StudyPlan, results: dict, base: dict, svm: dict,
                 command: str) -> dict:  # fmt: skip
    """A table's part of ``report.json``, its Markdown included (kept by later reports)."""
    sources = _eval_sources(results.get(c.arm) for c in table.columns)
    comparisons = {source: _svm_comparison(table, results, svm, plan.statistics, source)
                   for source in [None, *sources]}  # fmt: skip
    return {
        "name": table.name,
        "title": table.title,
        "study": plan.name,
        "command": command,
        "seeds": list(plan.seeds),
        "columns": [
            {"label": c.label, "arm": plan.arms[c.arm].name, "values": c.values}
            for c in table.columns
        ],
        "svm": {
            "columns": [
                _without_counts(svm[c.arm]) if svm.get(c.arm) else None for c in table.columns
            ],
            "comparison": comparisons[None],
            "eval_source_comparisons": {s: comparisons[s] for s in sources},
        },
        "markdown": _table_lines(table, results, base, svm, comparisons, command),
        "per_class_markdown": _class_lines(table, results)
        + [line for source in sources for line in _class_lines(table, results, source)],
    }


def merge_reports(previous: dict | None, report: dict) -> dict:
    """``report`` with the tables of ``previous`` it does not replace.

    A table of ``report`` replaces the table of the same name in place; the
    other tables of ``previous`` (those written with their Markdown) keep
    their place, claims and arms; new tables come last.
    """
    if not previous:
        return report
    fresh = {t["name"]: t for t in report["tables"]}
    tables = [fresh.pop(t["name"], t) for t in previous.get("tables", []) if "markdown" in t]
    tables += list(fresh.values())
    order = {t["name"]: k for k, t in enumerate(tables)}
    replaced = {t["name"] for t in report["tables"]}
    claims = [c for c in previous.get("claims", [])
              if c.get("table") in order and c.get("table") not in replaced]  # fmt: skip
    claims = sorted(claims + report["claims"], key=lambda c: order[c["table"]])
    used = {c["arm"] for t in tables for c in t["columns"]}
    arms = {name: arm for name, arm in {**previous.get("arms", {}), **report["arms"]}.items()
            if name in used}  # fmt: skip
    return {**report, "tables": tables, "claims": claims, "arms": arms}


def _previous_report(path: Path) -> dict | None:
    """The study directory's ``report.json``, or None (absent or unreadable)."""
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) else None


def write_report(out: Path, plan: StudyPlan, results: dict, base: dict, provenance: dict,
                 svm: dict | None = None) -> dict:  # fmt: skip
    """Write ``report.md``, ``report.json`` and the table PNGs into ``out``; return the JSON dict.

    The tables of an earlier report in ``out`` that this plan does not have
    are kept (:func:`merge_reports`).

    Parameters
    ----------
    out : Path
        The study directory.
    plan : StudyPlan
    results : dict
        arm key -> :func:`ccfsort.study.collect_arm` (None: not finished).
    base : dict
        :func:`ccfsort.study.baselines` on the test split, with ``eval_sources``
        (optional): source -> :func:`~ccfsort.study.baselines` on its frames.
    provenance : dict
        Command, environment, wall time, run outcomes.
    svm : dict, optional
        arm key -> :func:`ccfsort.study_baseline.svm_baseline` of its frames.
    """
    from ccfkit.atomic import atomic_output
    from trainer.run_dir import write_json

    svm = svm or {}
    tables = [_table_entry(t, plan, results, base, svm, provenance["command"])
              for t in plan.tables]  # fmt: skip
    for table in plan.tables:
        plot_table(out / f"{table.name}.png", table, results, base, svm)
    arms = {
        arm.name: {
            "build": arm.build,
            "model": arm.model,
            "train": arm.train,
            **({"data": arm.data} if arm.data else {}),
            **_without_counts(results.get(arm.key) or {}),
        }
        for arm in plan.arms.values()
    }
    report = {
        "study": plan.name,
        "config": plan.config,
        "seeds": list(plan.seeds),
        "provenance": provenance,
        "baselines": base,
        "claims": judge_claims(plan, results),
        "tables": tables,
        "arms": arms,
    }
    report = merge_reports(_previous_report(out / "report.json"), report)
    lines = _head_lines(plan, report, provenance)
    for table in report["tables"]:
        lines += table["markdown"]
    lines += ["## Per class", ""]
    for table in report["tables"]:
        lines += table["per_class_markdown"]
    lines += _arm_lines(report["arms"])
    with atomic_output(out / "report.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_json(out / "report.json", report)
    return report


def _without_counts(result: dict) -> dict:
    """An arm's results without the per-frame count arrays (on the test split and each source)."""
    out = {k: v for k, v in result.items() if k != "counts"}
    if "eval_sources" in out:
        out["eval_sources"] = {s: _without_counts(r) for s, r in out["eval_sources"].items()}
    return out


def _arm_lines(arms: dict) -> list[str]:
    """The arms of the report's tables, their recipes and finished seeds."""
    lines = [
        "## Arms",
        "",
        "| arm | build | model | train | seeds finished |",
        "|---|---|---|---|---:|",
    ]
    for name, arm in arms.items():
        done = len(arm.get("seeds", {}))
        lines.append(f"| `runs/{name}` | {arm['build']} | {arm['model']} | {arm['train']} "
                     f"| {done} |")  # fmt: skip
    return lines


def _head_lines(plan: StudyPlan, report: dict, provenance: dict) -> list[str]:
    """The report's title, this command's provenance and every verdict (Markdown lines)."""
    env = provenance["environment"]
    split = provenance["split"]
    names = list(dict.fromkeys(t.get("study", plan.name) for t in report["tables"]))
    return [
        f"# Study {' + '.join(f'`{n}`' for n in names)}",
        "",
        f"- last command: `{provenance['command']}` (each table names its own below)",
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
        *(verdict_line(c) for c in report["claims"]),
        *([] if report["claims"] else ["No claims in the study file for these tables."]),
        "",
        (
            "yes: the bootstrap interval lies above 0 and the paired t-test says > 0 "
            f"(alpha {plan.statistics['alpha']}); no: both say < 0; otherwise not resolved; "
            "one seed: no verdict (docs/study.md)."
        ),
        "",
    ]
