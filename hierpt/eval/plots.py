"""What every hierpt figure does so that a reader can trust it at a glance: metric names in words with their
better direction, k/M/G on byte axes, whole-number step ticks, the aggregate `all` set apart from the languages,
legends outside the data, bars labelled with their values, and a logarithmic axis where one value dwarfs the
others (a linear one would flatten them to nothing)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import fsspec

from hierpt.eval.perturb import RATE

ALL = "all"  # the aggregate over languages in an eval result (hierpt.eval.evaluate.ALL)
MAX_STEP_TICKS = 12  # evaluated steps up to this many are the ticks themselves
LOG_SCALE_RATIO = 20.0  # largest over smallest nonzero magnitude above which an axis goes logarithmic
METRICS = {  # key -> (name, which way is better)
    "bits_per_byte": ("bits/byte", "lower"),
    "loss": ("loss", "lower"),
    "word_accuracy": ("word accuracy", "higher"),
}
PERTURBATION_LABELS = {
    "permute": f"letters shuffled\n({RATE:.0%} of words)",
    "replace": f"a letter replaced\n({RATE:.0%} of words)",
    "delete": f"a letter deleted\n({RATE:.0%} of words)",
    "all_caps": "ALL CAPS",
}
ALL_STYLE = {"color": "black", "linewidth": 2.5, "zorder": 3}  # `all` over the per-language lines


def language_colors(langs) -> dict[str, str]:
    """A colour per language by its place in the sorted names, so it keeps its colour from run to run."""
    cycle = pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    return {lang: cycle[i % len(cycle)] for i, lang in enumerate(sorted(set(langs) - {ALL}))}


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend: reports are written on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_name(key: str) -> str:
    return METRICS[key][0] if key in METRICS else key.replace("_", " ")


def metric_label(key: str) -> str:
    """The name and which way is better, for an axis."""
    return f"{metric_name(key)} ({METRICS[key][1]} is better)" if key in METRICS else metric_name(key)


def byte_axis(axis) -> None:
    """Byte counts as 500 kB, 2 MB, ... instead of a 1e6 offset in the corner."""
    from matplotlib.ticker import EngFormatter

    axis.xaxis.set_major_formatter(EngFormatter(unit="B"))


def step_axis(axis, steps: Sequence[int]) -> None:
    """Step ticks from step 0 (where training, or a continued run, started): the evaluated steps themselves when
    they are few, else whole numbers."""
    from matplotlib.ticker import MaxNLocator

    if len(set(steps)) <= MAX_STEP_TICKS:
        axis.set_xticks(sorted(set(steps)))
    else:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlim(left=-0.03 * max(steps, default=1))  # step 0's marker clear of the axis line
    axis.set_xlabel("step")


def percent_axis(axis) -> None:
    """y ticks of values in percent as 0.1%, 1%, 10%, on any scale (no 10^k powers)."""
    from matplotlib.ticker import FuncFormatter

    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}%"))


def legend_outside(axis, **options) -> None:
    """The legend right of the axes, where it can hide no data."""
    axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small", **options)


def choose_scale(axis, values: Sequence[float]) -> str:
    """Logarithmic when the largest nonzero magnitude is over LOG_SCALE_RATIO times the smallest; symmetric-log
    (linear around zero) when some values are zero or negative. Returns the scale set."""
    magnitudes = [abs(v) for v in values if v]
    if not magnitudes or max(magnitudes) <= LOG_SCALE_RATIO * min(magnitudes):
        return "linear"
    if all(v > 0 for v in values):
        axis.set_yscale("log")
        return "log"
    axis.set_yscale("symlog", linthresh=min(magnitudes))
    return "symlog"


def grouped_bars(axis, groups: list[str], heights: dict[str, list[float | None]], value_format: str,
                 unit: str = "") -> str:
    """A bar per series in each group, labelled with its value; a missing value is no bar, not a zero one. The
    group `all` comes first, set apart by a gap, a shaded background and a bold tick label. Returns the y scale."""
    ordered = sorted(groups, key=lambda group: group != ALL)  # stable: the other groups keep their order
    positions = [i + (0.5 if ordered[0] == ALL and i > 0 else 0.0) for i in range(len(ordered))]
    width = 0.8 / len(heights)
    colors = pyplot().rcParams["axes.prop_cycle"].by_key()["color"]  # a series' colour whatever the others lack
    for i, (name, values) in enumerate(heights.items()):
        if all(v is None for v in values):
            axis.plot([], [], " ", label=f"{name}: not evaluated")
            continue
        by_group = dict(zip(groups, values, strict=True))
        shown = [(x + (i - (len(heights) - 1) / 2) * width, by_group[g]) for x, g in zip(positions, ordered)]
        shown = [(x, v) for x, v in shown if v is not None]
        bars = axis.bar([x for x, _ in shown], [v for _, v in shown], width, label=name, color=colors[i % len(colors)])
        axis.bar_label(bars, labels=[format(v, value_format) + unit for _, v in shown], fontsize=7, padding=1)
    axis.set_xticks(positions, [PERTURBATION_LABELS.get(g, g) for g in ordered])
    if ordered[0] == ALL:
        axis.axvspan(positions[0] - 0.5, positions[0] + 0.5, color="0.9", zorder=0)
        axis.get_xticklabels()[0].set_fontweight("bold")
    scale = choose_scale(axis, [v for values in heights.values() for v in values if v is not None])
    axis.margins(y=0.12)  # room for the value labels
    legend_outside(axis)
    return scale


def save(figure, url: str) -> str:
    """Write the figure as a PNG to a local path or any fsspec URL (a run folder on s3:// included)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")  # tight: the outside legend is kept
    pyplot().close(figure)
    with fsspec.open(url, "wb", auto_mkdir=True) as f:
        f.write(buffer.getvalue())
    return url
