import json
import subprocess
import sys

import pytest
import ray.exceptions
from ray.train import ControllerError, WorkerGroupError

from hierpt.data.sample_corpus import write_sample_corpus
from hierpt.jobs.execute import EXIT_INFRASTRUCTURE, EXIT_OWN_ERROR, execute, exit_code_for
from hierpt.jobs.specs import load_spec


def test_exit_codes_separate_own_errors_from_lost_infrastructure():
    assert exit_code_for(FileNotFoundError("no shards")) == EXIT_OWN_ERROR
    assert exit_code_for(WorkerGroupError("x", {0: ValueError("fingerprint mismatch")})) == EXIT_OWN_ERROR
    lost = WorkerGroupError("x", {1: ray.exceptions.ActorDiedError()})
    assert exit_code_for(lost) == EXIT_INFRASTRUCTURE
    assert exit_code_for(ControllerError(RuntimeError("worker group failed to start"))) == EXIT_INFRASTRUCTURE
    assert exit_code_for(ZeroDivisionError()) == 1


def test_run_refuses_an_invalid_spec_with_exit_code_2_and_one_line(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("kind: pretrain\nname: r\nstorage: /tmp/x\ndata: {shards: /tmp/y}\nsteps: -3\n")
    result = subprocess.run([sys.executable, "-m", "hierpt.cli", "run", str(spec)], capture_output=True, text=True)
    assert result.returncode == EXIT_OWN_ERROR
    assert result.stderr.strip().count("\n") == 0 and "steps" in result.stderr


RECIPE = """seq_words: 64
sources:
  - {url: corpus/train/en/, lang: en}
  - {url: corpus/train/de/, lang: de}
"""

EXPERIMENT = """kind: experiment
name: toy
stages:
  - {kind: prep, recipe: recipe.yaml, output: shards/words}
  - {kind: prep, recipe: recipe.yaml, output: shards/tokens, tokens: {seq_tokens: 80, vocab_size: 400}}
  - kind: pretrain
    name: hat
    model: {preset: tiny}  # seq_words 64 and max_word_bytes 100 (not the preset's 32) from the shards
    data: {shards: shards/words}
    <<: &train
      {storage: runs, global_batch: 4, micro_batch: 2, steps: 2, num_workers: 1, checkpoint: {every: 1, keep_last: 2}}
  - kind: pretrain
    name: bpe
    model: {family: baseline, preset: tiny, overrides: {backbone: {layers: 1}}}
    data: {shards: shards/tokens}
    <<: *train
  - {kind: eval, run: runs/hat, text: corpus/heldout.jsonl, output: runs/hat/evals, robustness: false}
  - {kind: eval, run: runs/bpe, text: corpus/heldout.jsonl, output: runs/bpe/evals, robustness: false}
compare: {a: runs/hat, b: runs/bpe, output: report, targets: {de: 100.0}}
"""


@pytest.mark.integration
def test_an_experiment_runs_its_stages_and_compares_and_a_rerun_redoes_nothing(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_sample_corpus(tmp_path / "corpus", train_bytes=15_000, eval_bytes=2_000, languages=("en", "de"))
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "toy.yaml").write_text(EXPERIMENT)
    spec = load_spec(tmp_path / "toy.yaml")
    first = execute(spec)

    trained = [s for s in first["stages"] if "final_loss" in s]
    assert [s["steps"] for s in trained] == [2, 2]
    for run in ("hat", "bpe"):
        assert sorted(p.name for p in (tmp_path / "runs" / run / "evals").glob("*.json")) == [
            "step-00000001.json", "step-00000002.json"
        ]
    report = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert report["steps_to_target"]["de"] == {"target": 100.0, "hat": 1, "bpe": 1}
    assert 0 < report["metrics"]["bits_per_byte.all"][1] < 9
    assert {"loss_vs_bytes.png", "bits_per_byte.png", "heldout_vs_step.png"} <= {
        p.name for p in (tmp_path / "report").glob("*.png")
    }

    results = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/evals/*.json")}
    second = execute(spec)
    assert [s for s in second["stages"] if "final_loss" in s] == trained
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/evals/*.json")} == results

    # the same output evaluated on other text is recomputed, not taken from the earlier results
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": "Ein ganz anderer Text.", "lang": "de"}) + "\n")
    stage = next(s for s in spec.jobs() if s.kind == "eval")
    execute(stage.model_copy(update={"text": str(other)}))
    for path in (tmp_path / "runs" / "hat" / "evals").glob("step-*.json"):
        assert json.loads(path.read_text())["text"] == str(other)
