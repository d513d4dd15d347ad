"""`hierpt jobs results`: one row per evaluated step, a column per language and task, `-` where none."""

from hierpt.jobs.results import table


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
