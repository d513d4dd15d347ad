"""Eval results of a run, per checkpoint step: a console table and a PNG of the metrics over steps."""

from __future__ import annotations

from pathlib import Path

from hierpt.eval.report import cell, pyplot

METRICS = ("bits_per_byte", "word_accuracy")
TASK_METRIC = "acc"  # of downstream tasks (EvalJob.tasks), beside bits/byte


def table(results: list[tuple[int, dict]]) -> str:
    if not results:
        return "no evaluated checkpoints yet"
    langs = sorted({lang for _, r in results for lang in r.get("bits_per_byte", {})})
    tasks = sorted({task for _, r in results for task in r.get("tasks", {})})
    header = ["step"] + [f"bpb.{lang}" for lang in langs] + [f"acc.{lang}" for lang in langs]
    header += [f"{task}.{TASK_METRIC}" for task in tasks]
    rows = [header]
    for step, result in results:
        row = [str(step)]
        for metric in METRICS:
            row += [cell(result.get(metric, {}).get(lang)) for lang in langs]
        row += [cell(result.get("tasks", {}).get(task, {}).get(TASK_METRIC)) for task in tasks]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)


def plot(results: list[tuple[int, dict]], run_name: str, output: str | Path) -> Path:
    plt = pyplot()
    figure, axes = plt.subplots(1, len(METRICS), figsize=(6 * len(METRICS), 4), squeeze=False)
    steps = [step for step, _ in results]
    for axis, metric in zip(axes[0], METRICS, strict=True):
        langs = sorted({lang for _, r in results for lang in r.get(metric, {})})
        for lang in langs:
            axis.plot(steps, [r.get(metric, {}).get(lang, float("nan")) for _, r in results], marker="o", label=lang)
        axis.set_xlabel("step")
        axis.set_title(metric.replace("_", " "))
        axis.legend(fontsize="small")
    figure.suptitle(f"{run_name}: eval over checkpoints")
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100)
    plt.close(figure)
    return output
