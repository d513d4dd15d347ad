"""Side-by-side comparison of two evaluated models or runs: a table and PNG plots (`hierpt compare A B`).

A side is either an eval result (the JSON `hierpt eval --json` prints, saved to a file) or a directory: a run
directory or an eval job's output. Its evaluations are ``eval.json``, or a series of ``step-NNNNNNNN.json``
(an eval job's output, directly or under ``evals/``) or of ``evals/step-NNNNNNNN/result.json`` (the scheduler's:
one eval job per checkpoint); the last one is the side's result. Training metrics
come from ``metrics.jsonl`` (one step per line with ``bytes_seen`` and ``bits_per_byte`` or ``loss``), or
else the trainer's TensorBoard events under ``tensorboard/`` (``train/*`` scalars; bytes seen = running sum
of bytes_per_s x step_seconds).

Plots (conventions in `hierpt.eval.plots`): the training curve against bytes seen (bits/byte is comparable
between HAT and baseline, their losses are not; every step faint, a running mean bold), bits/byte per language,
robustness per perturbation (on a log axis when one perturbation dwarfs the rest), and held-out bits/byte
against steps for series, from step 0 where the series has it (a continued run's starting point). With targets
(language -> bits/byte), the report adds the steps each side needed to reach them and the other languages'
forgetting: their bits/byte at the last evaluation against the first (step 0 when the eval job evaluated the
starting point, `init_from`).
"""

from __future__ import annotations

import itertools
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from hierpt.eval import plots
from hierpt.eval.plots import pyplot

EVAL_FILE = "eval.json"
SERIES_DIR = "evals"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
BYTES_SEEN = "bytes_seen"
CURVE_KEYS = ("bits_per_byte", "loss")  # the first one both runs log is plotted
COMPRESSION_RATIOS = (".bytes_per_word", ".bytes_per_token")  # compared; the raw counts are not
CURVE_SMOOTHING = 25  # the training curve's running mean spans 1/25 of its steps: per-step values are noisy


@dataclass(frozen=True)
class Side:
    name: str
    result: dict = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    series: list[dict] = field(default_factory=list)  # eval results by step, oldest first


def load_side(path: str) -> Side:
    """An eval result file, or a directory with evaluations and/or training metrics; errors name the path."""
    location = Path(path)
    if location.is_file():
        return Side(location.stem, _read_result(location))
    if not location.is_dir():
        raise FileNotFoundError(f"{path}: no such eval result or run directory")
    series = _read_series(location)
    if series:
        result = series[-1]
    else:
        result = _read_result(location / EVAL_FILE) if (location / EVAL_FILE).is_file() else {}
    if (location / METRICS_FILE).is_file():
        metrics = _read_metrics(location / METRICS_FILE)
    elif (location / TENSORBOARD_DIR).is_dir():
        metrics = _read_tensorboard(location / TENSORBOARD_DIR)
    else:
        metrics = []
    if not result and not metrics:
        evaluations = f"step-*.json or {SERIES_DIR}/step-*/result.json evaluations"
        needs = f"{EVAL_FILE}, {evaluations}, {METRICS_FILE} or {TENSORBOARD_DIR}/ events"
        raise ValueError(f"{path}: a directory needs {needs}")
    return Side(location.name, result, metrics, series)


def _read_series(location: Path) -> list[dict]:
    """Eval results by step, oldest first; of the scheduler's layout the step is the directory's (its eval jobs
    evaluate one named checkpoint, so their results carry none)."""
    files = sorted(location.glob("step-*.json")) or sorted((location / SERIES_DIR).glob("step-*.json"))
    series = [_read_result(path) for path in files]
    for path in sorted((location / SERIES_DIR).glob("step-*/result.json")):
        step = path.parent.name.removeprefix("step-")
        if step.isdigit():
            series.append({**_read_result(path), "step": int(step)})
    return sorted(series, key=lambda r: r.get("step") or 0)


def _read_metrics(path: Path) -> list[dict]:
    metrics = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                metrics.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
    return metrics


def _read_tensorboard(directory: Path) -> list[dict]:
    """Per-step records from the trainer's `train/<key>` scalars; a step logged twice (resume) counts once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps: dict[int, dict] = {}
    for events in sorted({p.parent for p in directory.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                steps.setdefault(event.step, {})[tag.removeprefix("train/")] = event.value
    metrics, seen = [], 0.0
    for step in sorted(steps):
        record = steps[step]
        if "bytes_per_s" in record and "step_seconds" in record:
            seen += record["bytes_per_s"] * record["step_seconds"]
            metrics.append({"step": step, BYTES_SEEN: seen, **record})
    return metrics


def _read_result(path: Path) -> dict:
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error.msg})") from None
    if not isinstance(result, dict) or "bits_per_byte" not in result:
        raise ValueError(f"{path}: not an eval result (no bits_per_byte)")
    return result


def flatten(result: dict) -> dict[str, float]:
    """Dotted metric names -> values: every metric (downstream tasks as `tasks.<task>.acc`), and of compression
    the ratios only."""
    rows: dict[str, float] = {}
    for section in ("bits_per_byte", "word_accuracy", "tasks", "robustness", "compression"):
        stack = [(section, result.get(section, {}))]
        while stack:
            prefix, node = stack.pop()
            if isinstance(node, dict):
                stack.extend((f"{prefix}.{key}", value) for key, value in node.items())
            elif isinstance(node, (int, float)) and not isinstance(node, bool):
                if section != "compression" or prefix.endswith(COMPRESSION_RATIOS):
                    rows[prefix] = float(node)
    return dict(sorted(rows.items()))


def format_result(result: dict) -> str:
    """One eval result as `metric  value` lines."""
    rows = flatten(result)
    width = max(len(name) for name in rows)
    return "\n".join(f"{name:<{width}}  {value:.4f}" for name, value in rows.items())


def comparison_rows(a: Side, b: Side) -> list[tuple[str, float | None, float | None]]:
    flat_a, flat_b = flatten(a.result), flatten(b.result)
    return [(name, flat_a.get(name), flat_b.get(name)) for name in sorted(flat_a.keys() | flat_b.keys())]


def cell(value: float | None) -> str:
    """A metric as a table shows it: four decimals, `-` where there is none."""
    return "-" if value is None else f"{value:.4f}"


def format_table(a: Side, b: Side) -> str:
    """Metric | A | B | B/A, one metric per line; '-' where a side lacks the metric."""
    rows = comparison_rows(a, b)
    width, side = max([len("metric"), *(len(name) for name, _, _ in rows)]), _side_width(a, b)
    lines = [f"{'metric':<{width}}  {a.name:>{side}}  {b.name:>{side}}  {'B/A':>8}"]
    for name, value_a, value_b in rows:
        ratio = "-" if value_a in (None, 0.0) or value_b is None else f"{value_b / value_a:.3f}"
        lines.append(f"{name:<{width}}  {cell(value_a):>{side}}  {cell(value_b):>{side}}  {ratio:>8}")
    return "\n".join(lines)


def _side_width(a: Side, b: Side) -> int:
    """A column per side, as wide as its full name (run names are not cut)."""
    return max(12, len(a.name), len(b.name))


def steps_to_target(side: Side, lang: str, target: float) -> int | None:
    """The first evaluated step at which held-out bits/byte of `lang` is at or below `target`."""
    for result in side.series or [side.result]:
        value = result.get("bits_per_byte", {}).get(lang)
        if value is not None and value <= target:
            return result.get("step")
    return None


def forgetting(side: Side, targets: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per language without a target: bits/byte at the first and last evaluation, and the relative increase."""
    if len(side.series) < 2:
        return {}
    first, last = side.series[0], side.series[-1]
    langs = sorted(set(first["bits_per_byte"]) & set(last["bits_per_byte"]) - set(targets) - {"all"})
    return {
        lang: {
            "from_step": first.get("step"),
            "first": first["bits_per_byte"][lang],
            "last": last["bits_per_byte"][lang],
            "increase": last["bits_per_byte"][lang] / first["bits_per_byte"][lang] - 1,
        }
        for lang in langs
    }


def target_report(a: Side, b: Side, targets: dict[str, float]) -> tuple[str, dict]:
    """Steps to each target and the forgetting of both sides, as text and as data."""
    data = {
        "steps_to_target": {
            lang: {"target": target, a.name: steps_to_target(a, lang, target), b.name: steps_to_target(b, lang, target)}
            for lang, target in sorted(targets.items())
        },
        "forgetting": {a.name: forgetting(a, targets), b.name: forgetting(b, targets)},
    }
    width = _side_width(a, b)
    lines = ["", "steps to reach the held-out bits/byte target (- = not reached)"]
    lines.append(f"{'lang':<8}{'target':>8}  {a.name:>{width}}  {b.name:>{width}}  {'B/A':>8}")
    for lang, row in data["steps_to_target"].items():
        step_a, step_b = row[a.name], row[b.name]
        ratio = f"{step_b / step_a:.3f}" if step_a and step_b is not None else "-"
        steps = f"{_steps(step_a):>{width}}  {_steps(step_b):>{width}}"
        lines.append(f"{lang:<8}{row['target']:>8.3f}  {steps}  {ratio:>8}")
    lines += ["", "forgetting: held-out bits/byte, first -> last evaluation (relative increase)"]
    for side in (a, b):
        for lang, row in data["forgetting"][side.name].items():
            lines.append(
                f"{side.name:<{width}}  {lang:<6}  step {row['from_step']}: {row['first']:.4f} -> "
                f"{row['last']:.4f}  ({row['increase']:+.1%})"
            )
    return "\n".join(lines), data


def _steps(step: int | None) -> str:
    return "-" if step is None else str(step)


def _running_mean(values: list[float], window: int) -> list[float]:
    """Each value's mean with the `window - 1` before it (fewer at the start)."""
    return [statistics.fmean(values[max(0, i + 1 - window) : i + 1]) for i in range(len(values))]


def write_plots(a: Side, b: Side, output: Path, targets: dict[str, float] | None = None) -> list[Path]:
    """The PNGs both sides have data for; returns their paths. Conventions in `hierpt.eval.plots`."""
    plt = pyplot()
    sides, written = [a, b], []

    def save(figure, name: str) -> None:
        written.append(Path(plots.save(figure, str(output / name))))

    curve_key = next((k for k in CURVE_KEYS if all(any(k in m for m in s.metrics) for s in sides)), None)
    if curve_key:
        figure, axis = plt.subplots(figsize=(7, 4))
        for side in sides:
            points = [(m[BYTES_SEEN], m[curve_key]) for m in side.metrics if BYTES_SEEN in m and curve_key in m]
            seen, values = [p[0] for p in points], [p[1] for p in points]
            window = max(1, len(values) // CURVE_SMOOTHING)
            (line,) = axis.plot(seen, values, linewidth=0.8, alpha=0.3)
            label = side.name if window == 1 else f"{side.name} (mean of {window} steps)"
            axis.plot(seen, _running_mean(values, window), color=line.get_color(), linewidth=2, label=label)
        plots.byte_axis(axis)
        axis.set(xlabel="bytes seen", ylabel=f"training {plots.metric_label(curve_key)}",
                 title=f"Training {plots.metric_name(curve_key)} vs bytes seen (faint: every step)")  # fmt: skip
        plots.legend_outside(axis)
        save(figure, "loss_vs_bytes.png")

    if all(s.result for s in sides):
        langs = sorted(set(a.result["bits_per_byte"]) | set(b.result["bits_per_byte"]))
        figure, axis = plt.subplots(figsize=(8, 4))
        heights = {s.name: [s.result["bits_per_byte"].get(lang) for lang in langs] for s in sides}
        plots.grouped_bars(axis, langs, heights, ".2f")
        axis.set(ylabel=f"held-out {plots.metric_label('bits_per_byte')}", title="Held-out bits/byte per language")
        save(figure, "bits_per_byte.png")

        kinds = sorted(set(a.result.get("robustness", {})) | set(b.result.get("robustness", {})))
        if kinds:
            figure, axis = plt.subplots(figsize=(8, 4))
            increases = [[s.result.get("robustness", {}).get(k, {}).get(plots.ALL) for k in kinds] for s in sides]
            in_percent = {s.name: [None if v is None else 100 * v for v in row] for s, row in zip(sides, increases)}
            scale = plots.grouped_bars(axis, kinds, in_percent, "+.1f", "%")
            axis.axhline(0, color="black", linewidth=0.8)
            plots.percent_axis(axis)
            note = ", log scale" if scale != "linear" else ""
            axis.set(ylabel="bits/byte increase over clean text\n(lower is better)",
                     title=f"Robustness: perturbed held-out text, all languages{note}")  # fmt: skip
            save(figure, "robustness.png")

    if all(len(s.series) > 1 for s in sides):
        figure, axis = plt.subplots(figsize=(7, 4))
        langs = sorted(targets or {}) or [plots.ALL]
        steps = [r.get("step") or 0 for side in sides for r in side.series]
        for side, color in zip(sides, plt.rcParams["axes.prop_cycle"].by_key()["color"]):  # as in the bar plots
            for lang, linestyle in zip(langs, itertools.cycle(("-", "--", "-.", ":"))):
                points = [(r.get("step") or 0, r["bits_per_byte"].get(lang)) for r in side.series]
                points = [p for p in points if p[1] is not None]
                axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", linestyle=linestyle,
                          color=color, label=f"{side.name}: {lang}")  # fmt: skip
        for lang, target in sorted((targets or {}).items()):
            axis.axhline(target, linestyle=":", color="gray", label=f"{lang} target ({target:g})")
        plots.step_axis(axis, steps)
        axis.set(ylabel=f"held-out {plots.metric_label('bits_per_byte')}",
                 title="Held-out bits/byte per evaluated checkpoint")  # fmt: skip
        plots.legend_outside(axis)
        save(figure, "heldout_vs_step.png")
    return written


def compare(
    path_a: str, path_b: str, output: str, targets: dict[str, float] | None = None
) -> tuple[str, list[Path]]:
    """Load both sides, write the table (comparison.txt, and as data comparison.json) and the plots into
    `output`; returns table and PNGs."""
    a, b = load_side(path_a), load_side(path_b)
    if a.name == b.name:
        a, b = (Side(f"{tag}:{s.name}", s.result, s.metrics, s.series) for tag, s in (("A", a), ("B", b)))
    table = format_table(a, b) if a.result or b.result else "(no eval results to compare)"
    data = {"a": a.name, "b": b.name, "metrics": {name: [va, vb] for name, va, vb in comparison_rows(a, b)}}
    if targets:
        text, target_data = target_report(a, b, targets)
        table += "\n" + text
        data.update(target_data)
    directory = Path(output)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "comparison.txt").write_text(table + "\n")
    (directory / "comparison.json").write_text(json.dumps(data, indent=2) + "\n")
    return table, write_plots(a, b, directory, targets)
