"""`hierpt jobs results`: one row per evaluated step, a column per language and task, `-` where none, and a plot of
them in the run's folder."""

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex

from hierpt.eval import plots
from hierpt.jobs.results import plot, plot_url, table
from hierpt.jobs.store import Store


def test_table_has_a_row_per_step_and_a_dash_for_missing_values():
    results = [
        (10, {"bits_per_byte": {"en": 3.25, "fi": 5.5}, "word_accuracy": {"en": 0.125}}),
        (20, {"bits_per_byte": {"en": 3.0}, "tasks": {"arc_easy": {"acc": 0.5}}}),
    ]
    header, first, second = (line.split() for line in table(results).splitlines())
    assert header == ["step", "bpb.en", "bpb.fi", "acc.en", "acc.fi", "arc_easy.acc"]
    assert first == ["10", "3.2500", "5.5000", "0.1250", "-", "-"]
    assert second == ["20", "3.0000", "-", "-", "-", "0.5000"]


def test_no_results_say_so():
    assert table([]) == "no evaluated checkpoints yet"


def test_the_plot_draws_step_0_all_in_bold_and_labels_the_languages_outside_the_axes(monkeypatch, tmp_path):
    figures, save = [], plots.save
    monkeypatch.setattr(plots, "save", lambda figure, url: figures.append(figure) or save(figure, url))
    results = [
        (step, {"bits_per_byte": {"all": 3.0, "en": 2.0 + step / 100, "fi": 6.0 - step / 25},
                "word_accuracy": {"all": 0.3, "en": 0.5, "fi": 0.1 + step / 500}})
        for step in (0, 25, 50)
    ]  # fmt: skip
    assert plot(results, "cont", str(tmp_path / "runs" / "cont" / "evals.png")) == str(tmp_path / "runs/cont/evals.png")
    assert (tmp_path / "runs" / "cont" / "evals.png").stat().st_size > 5000
    bits, accuracy = figures[0].axes
    for axis in (bits, accuracy):
        assert list(axis.get_xticks()) == [0, 25, 50] and -2 < axis.get_xlim()[0] < 0 and axis.get_xlabel() == "step"
    assert bits.get_ylabel() == "held-out bits/byte (lower is better)"
    assert accuracy.get_ylabel() == "held-out word accuracy (higher is better)"
    assert accuracy.yaxis.get_major_formatter()(0.25, 0) in ("25%", "25.0%")  # a fraction, shown in percent
    assert all(tick >= 0 for tick in accuracy.get_yticks() if accuracy.get_ylim()[0] <= tick)
    lines = {line.get_label(): line for line in bits.get_lines()}
    assert lines["all"].get_color() == "black" and lines["all"].get_linewidth() > lines["en"].get_linewidth()
    assert [to_hex(lines[lang].get_color()) for lang in ("en", "fi")] == ["#1f77b4", "#ff7f0e"]  # by name, every run
    legend = accuracy.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["all", "fi", "en"]  # then by last bits/byte, highest first
    renderer = FigureCanvasAgg(figures[0]).get_renderer()
    assert legend.get_window_extent(renderer).x0 >= accuracy.get_window_extent(renderer).x1


def test_the_plot_goes_beside_the_runs_evaluations(tmp_path):
    store = Store(tmp_path / "s.db")
    spec = {"output": "s3://bucket/runs/t/evals/step-00000004"}
    store.add_job("t-eval-4", "eval", spec, "t", checkpoint="s3://bucket/runs/t/step-00000004_x", step=4)
    assert plot_url(store, "t") == "s3://bucket/runs/t/evals.png"
