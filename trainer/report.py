"""The report of a run: report.json, report.md, loss.png and metrics.png (docs/training.md)."""

from __future__ import annotations

from pathlib import Path

from ccfkit.atomic import atomic_output

from .metrics import format_class_table
from .run_dir import write_json

__all__ = ["best_over_training", "plot_history", "write_report"]


def _save_figure(fig, path: Path) -> None:
    with atomic_output(path, overwrite=True) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=100)


def plot_history(run_dir: Path, history: list[dict]) -> None:
    """loss.png (train loss, train BCE, eval BCE) and metrics.png (eval metrics) per epoch."""
    from matplotlib.figure import Figure

    epochs = [row["epoch"] + 1 for row in history]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(epochs, [row["train_loss"] for row in history], label="train loss (BCE + reg.)")
    ax.plot(epochs, [row["train_bce"] for row in history], label="train BCE")
    ax.plot(epochs, [row["eval_loss"] for row in history], label="eval BCE")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, run_dir / "loss.png")
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for key in ("accuracy", "precision", "recall", "violation_rate"):
        ax.plot(epochs, [row[key] for row in history], label=key.replace("_", " "))
    ax.set_xlabel("epoch")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("evaluation split")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, run_dir / "metrics.png")


def best_over_training(history: list[dict]) -> dict:
    """Per metric, its best value over the epochs and the epoch it was reached."""
    out = {}
    for key, larger in (
        ("accuracy", True),
        ("precision", True),
        ("recall", True),
        ("violation_rate", False),
        ("eval_loss", False),
    ):
        values = [row[key] for row in history]
        pick = max if larger else min
        i = values.index(pick(values))
        out[key] = {"value": values[i], "epoch": history[i]["epoch"]}
    return out


def _row(title: str, m: dict) -> str:
    return (
        f"| {title} | {m['accuracy']:.4f} | {m['precision']:.4f} | {m['recall']:.4f} "
        f"| {m['violation_rate']:.4f} |"
    )


def _init_lines(config: dict) -> list[str]:
    """The report's line on the run a fine-tuned run started from (none for a fresh start)."""
    init = config.get("init")
    if init is None:
        return []
    fresh = f"; fresh head rows: {', '.join(init['fresh_labels'])}" if init["fresh_labels"] else ""
    frozen = config["train"].get("freeze", 0)
    return [
        f"- started from `{init['run']}` ({init['checkpoint']}, epoch {init['epoch'] + 1}, "
        f"SHA-256 {init['sha256'][:12]}...){fresh}"
        + (f"; first {frozen} stages frozen" if frozen else "")
    ]


def write_report(
    run_dir: Path,
    config: dict,
    history: list[dict],
    final: dict,
    best: dict,
    test: dict | None = None,
):
    """report.json and report.md from the history and the final / best-checkpoint metrics.

    ``test``: the best checkpoint's metrics on the test split (None without one).
    """
    report = {
        "epochs_run": len(history),
        "store": config["store"]["path"],
        "input": config["train"]["input"],
        "arch": config["model"]["arch"],
        "log_act": config["model"]["log_act"],
        "alpha": config["model"]["alpha"],
        "all_negative_accuracy": final.get("all_negative_accuracy"),
        "final": final,
        "best_checkpoint": best,
        "best_over_training": best_over_training(history),
        "test": test,
        "init": config.get("init"),  # fine-tuning: the run started from (trainer/finetune.py)
    }
    write_json(run_dir / "report.json", report)
    lines = [
        f"# Training report: {run_dir.name}",
        "",
        f"- store: `{report['store']}` ({config['train']['input']}), "
        f"ResNet-{report['arch']}, log activation "
        + (f"alpha={report['alpha']}" if report["log_act"] else "off"),
        f"- epochs run: {len(history)}; eval frames: {final['n_frames']}",
        f"- all-negative baseline accuracy: {report['all_negative_accuracy']:.4f}",
        *_init_lines(config),
        "",
        "## Metrics on the evaluation (validation) split (§3.2, micro over all labels)",
        "",
        "| | accuracy | precision | recall | exclusivity violations |",
        "|---|---:|---:|---:|---:|",
        _row(f"final (epoch {history[-1]['epoch'] + 1})", final),
        _row(f"best checkpoint (epoch {best['epoch'] + 1})", best),
    ]
    bot = report["best_over_training"]
    lines.append(
        "| best over training (each its own epoch) "
        f"| {bot['accuracy']['value']:.4f} (ep. {bot['accuracy']['epoch'] + 1}) "
        f"| {bot['precision']['value']:.4f} (ep. {bot['precision']['epoch'] + 1}) "
        f"| {bot['recall']['value']:.4f} (ep. {bot['recall']['epoch'] + 1}) "
        f"| {bot['violation_rate']['value']:.4f} (ep. {bot['violation_rate']['epoch'] + 1}) |"
    )
    if test is None:
        lines += [
            "",
            (
                "No test split: the best checkpoint is chosen and scored on the same "
                "evaluation split, an optimistic figure (`--test-fraction`, docs/training.md)."
            ),
        ]
    else:
        lines += [
            "",
            f"## Test split ({test['n_frames']} frames), best checkpoint chosen on validation",
            "",
            "| | accuracy | precision | recall | exclusivity violations |",
            "|---|---:|---:|---:|---:|",
            _row(f"best checkpoint (epoch {test['epoch'] + 1})", test),
            "",
            f"All-negative accuracy on the test split: {test['all_negative_accuracy']:.4f}.",
            "",
            format_class_table(test["per_class"]),
        ]
    lines += [
        "",
        "## Per class, final epoch (Supplement Table 4)",
        "",
        format_class_table(final["per_class"]),
        "",
        f"## Per class, best checkpoint (epoch {best['epoch'] + 1})",
        "",
        format_class_table(best["per_class"]),
        "",
        "Exclusive groups: "
        + "; ".join(" / ".join(g) for g in config["store"]["exclusive_groups"])
        + ". A violation is a frame with more than one positive label in a group.",
        "",
        "![loss](loss.png) ![metrics](metrics.png)",
        "",
    ]
    with atomic_output(run_dir / "report.md", overwrite=True) as tmp:
        tmp.write_text("\n".join(lines))
    return report
