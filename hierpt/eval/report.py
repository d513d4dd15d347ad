"""Side-by-side comparison of two evaluated models or runs: a table and PNG plots (`hierpt compare A B`).

A side is either an eval result (the JSON `hierpt eval --json` prints, saved to a file) or a directory: a run
directory or an eval job's output. Its evaluations are ``eval.json``, or a series of ``step-NNNNNNNN.json``
(an eval job's output, directly or under ``evals/``) or of ``evals/step-NNNNNNNN/result.json`` (the scheduler's:
one eval job per checkpoint); the last one is the side's result. Training metrics
come from ``metrics.jsonl`` (one step per line with ``bytes_seen`` and ``bits_per_byte`` or ``loss``), or
else the trainer's TensorBoard events under ``tensorboard/`` (``train/*`` scalars; bytes seen = running sum
of bytes_per_s x step_seconds).

Plots: the training curve against bytes seen (bits/byte is comparable between HAT and baseline, their
losses are not), bits/byte per language, robustness per perturbation, and held-out bits/byte against steps
for series. With targets (language -> bits/byte), the report adds the steps each side needed to reach them
and the other languages' forgetting: their bits/byte at the last evaluation against the first (step 0 when
the eval job evaluated the starting point, `init_from`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

EVAL_FILE = "eval.json"
SERIES_DIR = "evals"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
BYTES_SEEN = "bytes_seen"
CURVE_KEYS = ("bits_per_byte", "loss")  # the first one both runs log is plotted
COMPRESSION_RATIOS = (".bytes_per_word", ".bytes_per_token")  # compared; the raw counts are not


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


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend: reports are written on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def _bars(axis, groups: list[str], sides: list[Side], values: list[list[float]]) -> None:
    width = 0.8 / len(sides)
    for i, (side, heights) in enumerate(zip(sides, values)):
        axis.bar([g + i * width for g in range(len(groups))], heights, width, label=side.name)
    axis.set_xticks([g + width * (len(sides) - 1) / 2 for g in range(len(groups))], groups)
    axis.legend()


def write_plots(a: Side, b: Side, output: Path, targets: dict[str, float] | None = None) -> list[Path]:
    """The PNGs both sides have data for; returns their paths."""
    plt = pyplot()
    output.mkdir(parents=True, exist_ok=True)
    sides, written = [a, b], []

    def save(figure, name: str) -> None:
        figure.tight_layout()
        figure.savefig(output / name, dpi=100)
        plt.close(figure)
        written.append(output / name)

    curve_key = next((k for k in CURVE_KEYS if all(any(k in m for m in s.metrics) for s in sides)), None)
    if curve_key:
        figure, axis = plt.subplots(figsize=(6, 4))
        for side in sides:
            points = [(m[BYTES_SEEN], m[curve_key]) for m in side.metrics if BYTES_SEEN in m and curve_key in m]
            axis.plot([p[0] for p in points], [p[1] for p in points], label=side.name)
        axis.set(xlabel="bytes seen", ylabel=curve_key, title=f"training {curve_key} vs bytes seen")
        axis.legend()
        save(figure, "loss_vs_bytes.png")

    if all(s.result for s in sides):
        langs = sorted(set(a.result["bits_per_byte"]) | set(b.result["bits_per_byte"]))
        figure, axis = plt.subplots(figsize=(6, 4))
        _bars(axis, langs, sides, [[s.result["bits_per_byte"].get(lang, 0.0) for lang in langs] for s in sides])
        axis.set(ylabel="bits per byte", title="bits/byte per language")
        save(figure, "bits_per_byte.png")

        kinds = sorted(set(a.result.get("robustness", {})) | set(b.result.get("robustness", {})))
        if kinds:
            figure, axis = plt.subplots(figsize=(6, 4))
            heights = [[s.result.get("robustness", {}).get(k, {}).get("all", 0.0) for k in kinds] for s in sides]
            _bars(axis, kinds, sides, heights)
            axis.set(ylabel="relative bits/byte increase", title="robustness (all languages)")
            save(figure, "robustness.png")

    if all(len(s.series) > 1 for s in sides):
        figure, axis = plt.subplots(figsize=(6, 4))
        for side in sides:
            for lang in sorted(targets or {}) or ["all"]:
                points = [(r.get("step") or 0, r["bits_per_byte"].get(lang)) for r in side.series]
                points = [p for p in points if p[1] is not None]
                axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{side.name} {lang}")
        for lang, target in sorted((targets or {}).items()):
            axis.axhline(target, linestyle=":", color="gray")
        axis.set(xlabel="step", ylabel="held-out bits per byte", title="held-out bits/byte during training")
        axis.legend()
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
