"""Eval results of a run, per checkpoint step: a console table and a PNG of the metrics over steps."""

from __future__ import annotations

from hierpt.eval import plots
from hierpt.eval.plots import pyplot
from hierpt.eval.report import cell
from hierpt.jobs.store import Store

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


def plot(results: list[tuple[int, dict]], run_name: str, url: str) -> str:
    """Bits/byte and word accuracy per language over the evaluated steps, `all` in bold black, a language in the
    same colour in every run's plot; the legend lists the languages top to bottom as their last bits/byte. Step
    0, where a run has it, is the continued run's starting point (a run trained from scratch has no step-0 eval:
    its random init is not evaluated)."""
    from matplotlib.ticker import PercentFormatter

    plt = pyplot()
    figure, axes = plt.subplots(1, len(METRICS), figsize=(6 * len(METRICS), 4), squeeze=False)
    steps = [step for step, _ in results]
    last = results[-1][1].get("bits_per_byte", {})
    colors = plots.language_colors({lang for _, r in results for m in METRICS for lang in r.get(m, {})})
    for axis, metric in zip(axes[0], METRICS, strict=True):
        langs = {lang for _, r in results for lang in r.get(metric, {})}
        for lang in sorted(langs, key=lambda lang: (lang != plots.ALL, -last.get(lang, 0.0), lang)):
            style = plots.ALL_STYLE if lang == plots.ALL else {"linewidth": 1.2, "color": colors[lang]}
            values = [r.get(metric, {}).get(lang, float("nan")) for _, r in results]
            axis.plot(steps, values, marker="o", markersize=3, label=lang, **style)
        plots.step_axis(axis, steps)
        axis.set_ylabel(f"held-out {plots.metric_label(metric)}")
        axis.set_title(plots.metric_name(metric).capitalize())
    accuracy = axes[0][-1]
    accuracy.yaxis.set_major_formatter(PercentFormatter(1.0))  # a fraction
    top = accuracy.get_ylim()[1]
    accuracy.set_ylim(-0.02 * top, top)  # no negative accuracy on the axis; a line at 0% stays visible
    plots.legend_outside(accuracy, title="language")
    figure.suptitle(f"{run_name}: held-out evaluation of each checkpoint")
    return plots.save(figure, url)


def plot_url(store: Store, run_name: str) -> str:
    """Beside the run's evaluations: `<run>/evals.png`, the folder its eval jobs write `step-N/` into."""
    outputs = [job.spec["output"] for job in store.jobs(kind="eval") if job.run_name == run_name]
    return f"{outputs[0].rsplit('/', 2)[0]}/evals.png"
