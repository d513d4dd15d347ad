import json
import re

import pytest

from hierpt.cli import main
from hierpt.eval.report import compare

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def two_runs(hat_export, baseline_export, eval_results, tmp_path_factory):
    """Run directories with eval.json and a metrics.jsonl training curve."""
    runs = []
    for name, (_, losses) in (("hat", hat_export), ("baseline", baseline_export)):
        run = tmp_path_factory.mktemp(name)
        (run / "eval.json").write_text(json.dumps(eval_results[name]))
        lines = [json.dumps({"step": i, "bytes_seen": 1000 * (i + 1), "loss": loss}) for i, loss in enumerate(losses)]
        (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        runs.append(run)
    return runs


def test_compare_prints_side_by_side_table_and_writes_plots(two_runs, tmp_path, capsys):
    hat_run, baseline_run = two_runs
    main(["compare", str(hat_run), str(baseline_run), "--output", str(tmp_path / "report")])
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["metric", hat_run.name[:12], baseline_run.name[:12]]
    hat_eval = json.loads((hat_run / "eval.json").read_text())
    baseline_eval = json.loads((baseline_run / "eval.json").read_text())
    row = next(r for r in rows if r.startswith("bits_per_byte.en "))
    _, a, b, ratio = row.split()
    assert float(a) == pytest.approx(hat_eval["bits_per_byte"]["en"], abs=1e-4)
    assert float(b) == pytest.approx(baseline_eval["bits_per_byte"]["en"], abs=1e-4)
    assert float(ratio) == pytest.approx(float(b) / float(a), rel=1e-2)
    assert any(re.match(r"robustness\.all_caps\.de\s", r) for r in rows)
    _, a, b, _ = next(r for r in rows if r.startswith("word_accuracy.all ")).split()
    assert float(a) == pytest.approx(hat_eval["word_accuracy"]["all"], abs=1e-4)
    assert float(b) == pytest.approx(baseline_eval["word_accuracy"]["all"], abs=1e-4)
    _, a, b, _ = next(r for r in rows if r.startswith("compression.all.bytes_per_token ")).split()
    assert a == "-" and float(b) > 1  # the HAT was evaluated without a tokenizer
    for name in ("loss_vs_bytes.png", "bits_per_byte.png", "robustness.png"):
        png = tmp_path / "report" / name
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
        assert f"wrote {png}" in out
    assert (tmp_path / "report" / "comparison.txt").read_text().startswith(header)


def test_compare_of_eval_files_without_metrics_skips_the_training_curve(two_runs, tmp_path):
    table, plots = compare(str(two_runs[0] / "eval.json"), str(two_runs[1] / "eval.json"), str(tmp_path))
    assert table.splitlines()[0].split()[1:3] == ["A:eval", "B:eval"]
    assert sorted(p.name for p in plots) == ["bits_per_byte.png", "robustness.png"]


def test_compare_refuses_what_is_not_a_result(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other.json").write_text('{"loss": 1}')
    for bad, message in (
        (tmp_path / "empty", "needs eval.json, step-*.json or evals/step-*/result.json evaluations, metrics.jsonl or "
         "tensorboard/ events"),
        (tmp_path / "other.json", "not an eval result"),
    ):
        with pytest.raises(SystemExit):
            main(["compare", str(bad), str(bad), "--output", str(tmp_path / "out")])
        assert message in capsys.readouterr().err


def test_training_curve_comes_from_the_trainers_tensorboard_events(tmp_path):
    """A run directory as hierpt's trainer leaves it: train/* scalars under tensorboard/, no metrics.jsonl."""
    from torch.utils.tensorboard import SummaryWriter

    from hierpt.eval.report import load_side

    run = tmp_path / "hat-run"
    writer = SummaryWriter(str(run / "tensorboard"))
    for step, (bits, bytes_per_s) in enumerate([(8.0, 100.0), (6.0, 200.0), (5.0, 200.0)], start=1):
        for key, value in (("bits_per_byte", bits), ("bytes_per_s", bytes_per_s), ("step_seconds", 2.0)):
            writer.add_scalar(f"train/{key}", value, step)
    writer.close()
    side = load_side(str(run))
    assert [(m["bytes_seen"], m["bits_per_byte"]) for m in side.metrics] == [(200.0, 8.0), (600.0, 6.0), (1000.0, 5.0)]
    baseline_run = tmp_path / "baseline-run"
    baseline_run.mkdir()
    (baseline_run / "metrics.jsonl").write_text('{"bytes_seen": 300, "bits_per_byte": 7.0}\n')
    _, plots = compare(str(run), str(baseline_run), str(tmp_path / "out"))
    assert [p.name for p in plots] == ["loss_vs_bytes.png"]


def _series(root, name, fi, de):
    """An eval job's output: one result per step (step 0 = the starting point) with fi and de bits/byte."""
    directory = root / name / "evals"
    directory.mkdir(parents=True)
    for step, (fi_bpb, de_bpb) in enumerate(zip(fi, de)):
        result = {"step": step * 10, "bits_per_byte": {"fi": fi_bpb, "de": de_bpb, "all": (fi_bpb + de_bpb) / 2}}
        (directory / f"step-{step * 10:08d}.json").write_text(json.dumps(result))
    return root / name


def test_series_report_steps_to_target_and_forgetting(tmp_path, capsys):
    hat = _series(tmp_path, "hat", fi=[6.0, 3.0, 1.9, 1.5], de=[2.0, 2.1, 2.2, 2.3])
    bpe = _series(tmp_path, "bpe", fi=[6.5, 4.0, 2.5, 1.95], de=[2.0, 2.0, 2.4, 3.0])
    main(["compare", str(hat), str(bpe), "--output", str(tmp_path / "out"), "--target", "fi=2.0"])
    out = capsys.readouterr().out
    assert re.search(r"^fi\s+2\.000\s+20\s+30\s+1\.500$", out, re.M)
    assert re.search(r"^hat\s+de\s+step 0: 2\.0000 -> 2\.3000\s+\(\+15\.0%\)$", out, re.M)
    assert re.search(r"^bpe\s+de\s+step 0: 2\.0000 -> 3\.0000\s+\(\+50\.0%\)$", out, re.M)
    data = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert data["steps_to_target"]["fi"] == {"target": 2.0, "hat": 20, "bpe": 30}
    assert data["metrics"]["bits_per_byte.fi"] == [1.5, 1.95]  # the last evaluation is each side's result
    assert (tmp_path / "out" / "heldout_vs_step.png").read_bytes()[:8] == PNG_MAGIC

    compare(str(hat), str(bpe), str(tmp_path / "out2"), {"fi": 1.0})
    assert json.loads((tmp_path / "out2" / "comparison.json").read_text())["steps_to_target"]["fi"]["hat"] is None
    with pytest.raises(SystemExit):
        main(["compare", str(hat), str(bpe), "--output", str(tmp_path / "out3"), "--target", "fi"])
    assert "expected LANG=BITS_PER_BYTE" in capsys.readouterr().err


def _scheduler_evals(root, name, fi):
    """What `hierpt jobs watch` leaves in a run: evals/step-N/result.json, one eval job per checkpoint (no step
    inside: each evaluated one named checkpoint)."""
    for step, fi_bpb in zip((4, 2), fi):  # written out of order
        directory = root / name / "evals" / f"step-{step:08d}"
        directory.mkdir(parents=True)
        result = {"step": None, "bits_per_byte": {"fi": fi_bpb, "all": fi_bpb}}
        (directory / "result.json").write_text(json.dumps(result))
    return root / name


def test_compare_reads_the_schedulers_evals_and_prints_whole_run_names(tmp_path, capsys):
    a = _scheduler_evals(tmp_path, "tiny-continue-fi-hat", fi=[2.0, 3.0])
    b = _scheduler_evals(tmp_path, "tiny-continue-fi-baseline", fi=[2.5, 4.0])
    main(["compare", str(a), str(b), "--output", str(tmp_path / "out"), "--target", "fi=2.2"])
    out = capsys.readouterr().out
    assert "no eval results" not in out
    assert re.search(r"^metric\s+.*tiny-continue-fi-hat\s+tiny-continue-fi-baseline\s+B/A$", out, re.M)
    assert re.search(r"^bits_per_byte\.fi\s+2\.0000\s+2\.5000\s+1\.250$", out, re.M)  # step 4: the last
    data = json.loads((tmp_path / "out" / "comparison.json").read_text())
    reached = data["steps_to_target"]["fi"]
    assert reached == {"target": 2.2, "tiny-continue-fi-hat": 4, "tiny-continue-fi-baseline": None}
