from pathlib import Path

import pytest

from hierpt.jobs.specs import (
    ContinuedPretrainJob,
    EvalJob,
    PretrainJob,
    forwarded_env,
    load_spec,
    parse_spec,
)

JOBS = Path(__file__).resolve().parents[2] / "jobs"

PRETRAIN = {"kind": "pretrain", "name": "r", "storage": "/tmp/runs", "data": {"shards": "/tmp/shards"}, "steps": 10}


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_is_valid(path):
    load_spec(path)


def test_kinds_pick_their_model():
    assert isinstance(parse_spec(PRETRAIN), PretrainJob)
    cont = parse_spec({**PRETRAIN, "kind": "continued_pretrain", "init_from": "/tmp/export", "freeze": ["backbone"]})
    assert isinstance(cont, ContinuedPretrainJob) and cont.freeze == ["backbone"]
    ev = parse_spec({"kind": "eval", "run": "/tmp/runs/r", "text": "x.jsonl", "output": "/tmp/e"})
    assert isinstance(ev, EvalJob)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"kind": "pretrian"}, "kind"),
        ({"steps": 0}, "steps"),
        ({"optimizer": {"lr": -1}}, "optimizer.lr"),
        ({"zero_stage": 4}, "zero_stage"),
        ({"num_workers": [3, 2]}, "num_workers"),
        ({"env": ["AWS_SECRET_ACCESS_KEY=abc"]}, "env"),
        ({"retry": {"max_resubmits": -1}}, "retry.max_resubmits"),
        ({"stepz": 5}, "stepz"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(change, field):
    with pytest.raises(ValueError) as error:
        parse_spec({**PRETRAIN, **change}, source="bad.yaml")
    message = str(error.value)
    assert message.startswith("bad.yaml: ") and field in message and "\n" not in message


def test_continued_pretraining_needs_a_source_and_eval_needs_one_target():
    with pytest.raises(ValueError, match="init_from"):
        parse_spec({**PRETRAIN, "kind": "continued_pretrain"})
    with pytest.raises(ValueError, match="exactly one"):
        parse_spec({"kind": "eval", "run": "r", "checkpoint": "c", "text": "t", "output": "o"})


def test_missing_credentials_are_reported_before_submission(monkeypatch):
    monkeypatch.delenv("HIERPT_TEST_SECRET", raising=False)
    spec = parse_spec({**PRETRAIN, "env": ["HIERPT_TEST_SECRET"]})
    with pytest.raises(ValueError, match="HIERPT_TEST_SECRET"):
        forwarded_env(spec)
    monkeypatch.setenv("HIERPT_TEST_SECRET", "s3cr3t")
    assert forwarded_env(spec) == {"HIERPT_TEST_SECRET": "s3cr3t"}
    assert "s3cr3t" not in spec.model_dump_json()


def test_retry_backoff_grows_and_is_capped():
    policy = parse_spec(PRETRAIN).retry
    delays = [policy.delay(n) for n in range(1, 12)]
    assert delays == sorted(delays) and delays[-1] == policy.backoff_max_s


def test_relative_local_paths_become_absolute_before_a_spec_travels(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(
        "kind: pretrain\nname: r\nstorage: runs\ndata: {shards: shards/a}\nsteps: 3\n"
        "evaluate: {text: held.jsonl}\ninit_from: s3://bucket/export\n"
    )
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.storage == str(tmp_path / "runs")
    assert spec.data.shards == str(tmp_path / "shards/a")
    assert spec.evaluate.text == str(tmp_path / "held.jsonl")
    assert spec.init_from == "s3://bucket/export"


def test_keeping_the_optimizer_needs_a_checkpoint_and_no_frozen_modules():
    from hierpt.jobs.execute import as_train_job

    spec = parse_spec({**PRETRAIN, "kind": "continued_pretrain", "init_from": "/no/such/run", "optimizer_state": "keep"})
    with pytest.raises(ValueError, match="optimizer_state: keep needs a run or checkpoint"):
        as_train_job(spec)
    with pytest.raises(ValueError, match="cannot freeze"):
        parse_spec({**PRETRAIN, "init_from_checkpoint": "/ckpt", "freeze": ["backbone"]})


@pytest.mark.integration
def test_the_shipped_experiment_trains_hat_and_baseline_at_matched_compute(ray_local, tmp_path):
    """Prepares the sample corpus as the experiment does and measures both models' FLOPs per byte on it."""
    from hierpt.data.prep import prepare
    from hierpt.data.recipe import load_recipe
    from hierpt.data.sample_corpus import write_sample_corpus
    from hierpt.model.compute_match import TOLERANCE, baseline_flops_per_byte, hat_flops_per_byte

    experiment = load_spec(JOBS / "hat_vs_bpe.yaml")
    stages = experiment.jobs()
    token_prep = next(s for s in stages if s.kind == "prep" and s.tokens is not None)
    hat, bpe = (next(s for s in stages if s.kind == "pretrain" and s.model.family == f) for f in ("hat", "baseline"))
    write_sample_corpus(tmp_path / "sample_corpus")  # the defaults of data_prep/make_sample_corpus.py
    recipe_path = tmp_path / "sample.yaml"
    recipe_path.write_text(Path(token_prep.recipe).read_text())
    manifest = prepare(load_recipe(str(recipe_path)), str(tmp_path / "shards"), workers=2, tokens=token_prep.tokens)

    bytes_per_word, bytes_per_token = manifest.bytes_per_word, manifest.bytes_per_token
    hat_config, bpe_config = hat.model.build_config(), bpe.model.build_config()
    deviation = baseline_flops_per_byte(bpe_config, bytes_per_token) / hat_flops_per_byte(hat_config, bytes_per_word)
    assert abs(deviation - 1) <= TOLERANCE
    sequence_bytes = bpe_config.seq_tokens * bytes_per_token / (hat_config.seq_words * bytes_per_word)
    assert abs(sequence_bytes - 1) <= TOLERANCE  # the same bytes per sequence, so per step
    assert manifest.tokens.vocab_size <= bpe_config.vocab_size and hat.global_batch == bpe.global_batch

    continued = load_spec(JOBS / "hat_vs_bpe_continue_fi.yaml").jobs()  # continues these very models
    assert {s.model.build_config() for s in continued if s.kind == "continued_pretrain"} == {hat_config, bpe_config}
