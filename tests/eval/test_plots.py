"""The comparison plots from synthetic results (no models, no Ray): what a reader needs to trust them."""

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from hierpt.eval import plots
from hierpt.eval.report import Side, write_plots


@pytest.fixture
def figures(monkeypatch) -> dict:
    """Every figure saved, by file name, kept open for inspection after it was written."""
    saved, save = {}, plots.save

    def keep(figure, url):
        saved[url.rsplit("/", 1)[-1]] = figure
        return save(figure, url)

    monkeypatch.setattr(plots, "save", keep)
    return saved


def legend_is_outside(axis) -> bool:
    renderer = FigureCanvasAgg(axis.figure).get_renderer()  # the closed figure's canvas has none
    return axis.get_legend().get_window_extent(renderer).x0 >= axis.get_window_extent(renderer).x1


def result(bpb: dict, robustness: dict | None = None, step: int | None = None) -> dict:
    return {"bits_per_byte": bpb, "robustness": {k: {"all": v} for k, v in (robustness or {}).items()}, "step": step}


def test_the_comparison_plots_have_readable_axes_legends_off_the_data_and_all_set_apart(figures, tmp_path):
    curve = [{"bytes_seen": 20_000 * step, "bits_per_byte": 8 - step / 20} for step in range(1, 101)]
    a = Side("hat", result({"all": 2.0, "de": 2.5, "en": 1.5}, {"all_caps": 0.4, "delete": 0.001}), curve)
    b = Side("bpe", result({"all": 3.0, "en": 1.0}, {"all_caps": 2.5, "delete": 0.1}), curve)
    written = write_plots(a, b, tmp_path / "report")
    assert [p.name for p in written] == ["loss_vs_bytes.png", "bits_per_byte.png", "robustness.png"]
    assert all(p.parent == tmp_path / "report" and p.stat().st_size > 5000 for p in written)

    (axis,) = figures["loss_vs_bytes.png"].axes
    assert axis.get_ylabel() == "training bits/byte (lower is better)" and axis.get_xlabel() == "bytes seen"
    assert axis.xaxis.get_major_formatter()(2_000_000, 0) == "2 MB"  # not 2.0 with a 1e6 offset
    assert [t.get_text() for t in axis.get_legend().get_texts()] == ["hat (mean of 4 steps)", "bpe (mean of 4 steps)"]
    assert legend_is_outside(axis)

    (axis,) = figures["bits_per_byte.png"].axes
    assert axis.get_ylabel() == "held-out bits/byte (lower is better)"
    ticks = axis.get_xticklabels()
    assert [t.get_text() for t in ticks] == ["all", "de", "en"] and ticks[0].get_fontweight() == "bold"
    assert [len(c) for c in axis.containers] == [3, 2]  # the baseline has no de: no bar, not a zero one
    assert [t.get_text() for t in axis.texts] == ["2.00", "2.50", "1.50", "3.00", "1.00"]  # each bar's value
    assert axis.get_yscale() == "linear"
    assert legend_is_outside(axis)

    (axis,) = figures["robustness.png"].axes
    assert axis.get_yscale() == "log"  # +0.1% next to +250%: on a linear axis the small bars vanish
    assert "lower is better" in axis.get_ylabel()
    assert [t.get_text() for t in axis.get_xticklabels()] == ["ALL CAPS", "a letter deleted\n(10% of words)"]
    assert [t.get_text() for t in axis.texts] == ["+40.0%", "+0.1%", "+250.0%", "+10.0%"]
    assert axis.yaxis.get_major_formatter()(10.0, 0) == "10%"
    assert legend_is_outside(axis)


def test_heldout_vs_step_starts_at_step_0_with_the_evaluated_steps_as_ticks(figures, tmp_path):
    def side(name, fi):
        return Side(name, series=[result({"fi": v, "all": v}, step=25 * i) for i, v in enumerate(fi)])

    write_plots(side("hat", [6.0, 3.0, 1.9]), side("bpe", [6.5, 4.0, 2.5]), tmp_path, {"fi": 2.0})
    (axis,) = figures["heldout_vs_step.png"].axes
    assert list(axis.get_xticks()) == [0, 25, 50] and -2 < axis.get_xlim()[0] < 0
    assert axis.get_xlabel() == "step" and axis.get_ylabel() == "held-out bits/byte (lower is better)"
    assert [t.get_text() for t in axis.get_legend().get_texts()] == ["hat: fi", "bpe: fi", "fi target (2)"]
    assert legend_is_outside(axis)


@pytest.mark.parametrize(
    ("values", "scale"),
    [([1.0, 2.0, 19.0], "linear"), ([0.7, 12.0], "linear"), ([0.1, 40.0, 250.0], "log"), ([0.0, 0.01, 5.0], "symlog"),
     ([-0.2, 30.0], "symlog"), ([0.0, 0.0], "linear")],
)  # fmt: skip
def test_an_axis_goes_logarithmic_when_one_value_dwarfs_the_others(values, scale):
    figure, axis = plots.pyplot().subplots()
    assert plots.choose_scale(axis, values) == scale == axis.get_yscale()
    plots.pyplot().close(figure)


def test_a_plot_is_written_to_any_fsspec_url(tmp_path):
    figure, axis = plots.pyplot().subplots()
    axis.plot([0, 1], [1, 0])
    url = plots.save(figure, f"file://{tmp_path}/deep/er/plot.png")
    assert (tmp_path / "deep" / "er" / "plot.png").read_bytes()[:4] == b"\x89PNG" and url.endswith("plot.png")


def test_a_side_without_robustness_is_named_in_the_legend_not_drawn_in_the_others_colour(figures, tmp_path):
    write_plots(Side("hat", result({"all": 2.0}, {"all_caps": 0.4})), Side("cont", result({"all": 3.0})), tmp_path)
    (axis,) = figures["robustness.png"].axes
    assert {t.get_text() for t in axis.get_legend().get_texts()} == {"hat", "cont: not evaluated"}
    assert [len(c) for c in axis.containers] == [1]
