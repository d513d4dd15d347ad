import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hierpt.jobs.specs import (
    ContinuedPretrainJob,
    EvalJob,
    PretrainJob,
    apply_overrides,
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
        ({"evaluate": {"text": "x.jsonl", "batch_positions": 0}}, "evaluate.batch_positions"),
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


def test_missing_forwarded_variables_are_reported_before_submission(monkeypatch):
    monkeypatch.delenv("HIERPT_TEST_REGION", raising=False)
    spec = parse_spec({**PRETRAIN, "env": ["HIERPT_TEST_REGION"]})
    with pytest.raises(ValueError, match="HIERPT_TEST_REGION"):
        forwarded_env(spec)
    monkeypatch.setenv("HIERPT_TEST_REGION", "eu-north-1")
    assert forwarded_env(spec) == {"HIERPT_TEST_REGION": "eu-north-1"}


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "WANDB_API_KEY",
                                  "HF_TOKEN", "DB_PASSWORD"])  # fmt: skip
def test_secrets_are_not_forwarded_without_the_opt_in_that_says_who_can_read_them(name, monkeypatch):
    """Issue 12.1: `env: [AWS_SECRET_ACCESS_KEY]` put the value into every job's runtime_env."""
    with pytest.raises(ValueError) as error:
        parse_spec({**PRETRAIN, "env": [name]}, source="s.yaml")
    message = str(error.value)
    assert message.startswith("s.yaml: env: ") and name in message and "visible_to_cluster_users" in message
    monkeypatch.setenv(name, "s3cr3t")
    spec = parse_spec({**PRETRAIN, "env_visible_to_cluster_users": [name]})
    assert forwarded_env(spec) == {name: "s3cr3t"} and "s3cr3t" not in spec.model_dump_json()


@pytest.mark.parametrize(
    "change",
    [
        {"storage": "s3://AKIAEXAMPLE:planted-secret@bucket/runs"},
        {"data": {"shards": "s3://AKIAEXAMPLE:planted-secret@bucket/shards"}},
        {"evaluate": {"text": "https://user:planted-secret@example.com/held.jsonl"}},
        {"init_from": "gs://planted-secret@bucket/export", "kind": "continued_pretrain"},
    ],
)
def test_urls_with_credentials_are_refused_in_one_line_that_does_not_repeat_them(change):
    """Issue 12.1: `s3://KEY:SECRET@bucket/...` was accepted and the secret landed in the DB, command line, logs."""
    with pytest.raises(ValueError) as error:
        parse_spec({**PRETRAIN, **change}, source="s.yaml")
    message = str(error.value)
    field = next(iter(k for k in change if k != "kind"))
    assert message.startswith(f"s.yaml: {field}") and "credentials" in message and "\n" not in message
    assert "planted-secret" not in message


def test_stages_of_an_experiment_are_checked_for_credentials_too():
    stage = {**PRETRAIN, "storage": "s3://k:planted-secret@b/runs"}
    with pytest.raises(ValueError, match=r"^x.yaml: stages.0.storage: a URL with credentials") as error:
        parse_spec({"kind": "experiment", "name": "e", "stages": [stage]}, source="x.yaml")
    assert "planted-secret" not in str(error.value)


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", ".hidden", "", "run name", "x" * 129, "/abs"])
def test_run_names_are_one_path_component(name, tmp_path):
    """Issue 12.5: `name: "../../escaped"` wrote checkpoints outside `storage`."""
    with pytest.raises(ValueError, match=r"^s.yaml: name: .*not a run name") as error:
        parse_spec({**PRETRAIN, "name": name}, source="s.yaml")
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="name: .*not a run name"):
        parse_spec({"kind": "experiment", "name": name, "stages": [PRETRAIN]}, source="s.yaml")


@pytest.mark.parametrize(
    ("batch", "valid"),
    [
        ({"global_batch": 10, "micro_batch": 1, "num_workers": 3}, False),  # 10 % 3
        ({"global_batch": 8, "micro_batch": 4, "num_workers": 4}, False),  # 8 % 16
        ({"global_batch": 12, "micro_batch": 1, "num_workers": [1, 4]}, True),  # 1, 2, 3, 4 all divide 12
        ({"global_batch": 16, "micro_batch": 2, "num_workers": [2, 4]}, False),  # 3 x 2 does not divide 16
    ],
)
def test_batch_arithmetic_is_checked_for_every_world_size_before_submission(batch, valid):
    """Issue 12.6: an indivisible global_batch passed validation and failed after 42 s of worker-group attempts."""
    if valid:
        parse_spec({**PRETRAIN, **batch})
        return
    with pytest.raises(ValueError, match="global_batch .* micro_batch .* num_workers") as error:
        parse_spec({**PRETRAIN, **batch}, source="s.yaml")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text", ["kind: pretrain\nname: [unclosed\n", "a: b: c\n", "\tkind: x\n", b"\xff\xfe"])
def test_malformed_yaml_is_one_line_naming_the_file(text, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError) as error:
        load_spec(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


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
    from hierpt.train.run import resolve_start

    spec = parse_spec({**PRETRAIN, "kind": "continued_pretrain", "init_from": "/no/such/run", "optimizer_state": "keep"})
    with pytest.raises(ValueError, match="optimizer_state: keep needs a run or checkpoint"):
        resolve_start(spec)
    with pytest.raises(ValueError, match="cannot freeze"):
        parse_spec({**PRETRAIN, "init_from": "/ckpt", "optimizer_state": "keep", "freeze": ["backbone"]})
    with pytest.raises(ValueError, match="optimizer_state: keep needs init_from"):
        parse_spec({**PRETRAIN, "optimizer_state": "keep"})


def test_removed_fields_are_refused_in_one_line_saying_what_replaced_them():
    renamed = r"^spec: \(top level\): init_from_checkpoint: now init_from with optimizer_state: keep$"
    with pytest.raises(ValueError, match=renamed):
        parse_spec({**PRETRAIN, "init_from_checkpoint": "/ckpt"})
    with pytest.raises(ValueError, match=r"^spec: \(top level\): log_every: removed: every step is logged") as refused:
        parse_spec({**PRETRAIN, "log_every": 10})
    assert "\n" not in str(refused.value)


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
    words = manifest.model_copy(update={"tokens": None})  # the word shards of the same recipe have its shape
    hat_config, bpe_config = hat.model.build_config(words, "words"), bpe.model.build_config(manifest, "tokens")
    deviation = baseline_flops_per_byte(bpe_config, bytes_per_token) / hat_flops_per_byte(hat_config, bytes_per_word)
    assert abs(deviation - 1) <= TOLERANCE
    sequence_bytes = bpe_config.seq_tokens * bytes_per_token / (hat_config.seq_words * bytes_per_word)
    assert abs(sequence_bytes - 1) <= TOLERANCE  # the same bytes per sequence, so per step
    assert manifest.tokens.vocab_size <= bpe_config.vocab_size and hat.global_batch == bpe.global_batch

    continued = load_spec(JOBS / "hat_vs_bpe_continue_fi.yaml").jobs()  # continues these very models
    assert [s.model for s in continued if s.kind == "continued_pretrain"] == [hat.model, bpe.model]
    fi_prep = [s for s in continued if s.kind == "prep" and "sample_fi" in s.recipe]
    fi_recipe = load_recipe(fi_prep[0].recipe)  # ... on shards of the same shape
    assert (fi_recipe.seq_words, fi_recipe.max_word_bytes) == (hat_config.seq_words, hat_config.max_word_bytes)
    assert fi_prep[1].tokens.seq_tokens == bpe_config.seq_tokens


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True) | st.text(max_size=20)
    | st.sampled_from(["s3://k:pl4nted-s3cret@b/x", "../..", "/tmp/x", "pretrain", "eval", "hat", "baseline", "tiny"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
FIELDS = ["kind", "name", "storage", "data", "steps", "global_batch", "micro_batch", "num_workers", "env",
          "env_visible_to_cluster_users", "model", "optimizer", "checkpoint", "faults", "init_from", "retry",
          "evaluate", "stages", "zero_stage", "run", "checkpoint", "text", "output", "recipe", "freeze"]  # fmt: skip
SPECS = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6).map(lambda changes: {**PRETRAIN, **changes}),
    st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=8),
    JSON,
)


@settings(max_examples=1500, deadline=None)
@given(raw=SPECS)
def test_generated_specs_are_accepted_or_refused_in_one_line(raw):
    """Issue 12.6 fuzzing: whatever a spec holds, the validator answers in one line naming the source."""
    try:
        spec = parse_spec(raw, source="gen.yaml")
    except ValueError as error:
        message = str(error)
        assert message.startswith("gen.yaml: ") and "\n" not in message and "pl4nted-s3cret" not in message, message
        return
    if spec.run_name is not None:  # an accepted run stays inside its storage
        assert spec.run_url.rsplit("/", 1) == [spec.storage.rstrip("/"), spec.name]
    assert "pl4nted-s3cret" not in spec.model_dump_json()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_generated_spec_files_are_accepted_or_refused_in_one_line(content, tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_bytes(content)
    try:
        load_spec(path)
    except ValueError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error), str(error)


def test_set_overrides_are_validated_like_the_yaml_and_create_missing_mappings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("kind: pretrain\nname: r\nstorage: runs\ndata: {shards: s}\nsteps: 3\n")
    overrides = ["optimizer.lr=1e-3", "steps=50", "num_workers=[2, 4]", "global_batch=24", "offload_optimizer=true",
                 "tensorboard_dir=null", "data.shards=shards/b", "model.overrides.d_model=64"]  # fmt: skip
    spec = load_spec(tmp_path / "s.yaml", overrides)
    assert spec.optimizer.lr == 1e-3 and spec.optimizer.warmup_steps == 500  # the rest of `optimizer` untouched
    assert spec.steps == 50 and spec.num_workers == (2, 4) and spec.offload_optimizer is True
    assert spec.data.shards == str(tmp_path / "shards/b")  # a relative path, made absolute as in the file
    assert spec.model.overrides == {"d_model": 64}


def test_set_overrides_index_lists_and_leave_the_spec_they_were_given_as_it_was():
    raw = {"kind": "experiment", "stages": [{"steps": 1}, "b.yaml"]}
    assert apply_overrides(raw, ["stages.0.steps=3"])["stages"] == [{"steps": 3}, "b.yaml"]
    assert raw["stages"][0] == {"steps": 1}
    for assignment, message in [("stages.2.steps=3", "'2' is not an index of stages (a list of 2)"),
                                ("stages.1.steps=3", "stages.1 is a value (str), not a mapping")]:  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(message)):
            apply_overrides(raw, [assignment])


@pytest.mark.parametrize(
    ("assignment", "needles"),
    [
        ("optimizer.lrr=1", ["s.yaml with --set: optimizer.lrr: Extra inputs are not permitted"]),
        ("stepz=5", ["stepz: Extra inputs"]),
        ("steps=0", ["s.yaml with --set: steps: "]),
        ("optimizer.lr=-1", ["optimizer.lr: "]),
        ("steps.every=1", ["--set steps.every: steps is a value (int), not a mapping of fields"]),
        ("steps", ["--set 'steps': expected FIELD=VALUE"]),
        ("=5", ["expected FIELD=VALUE"]),
        ("optimizer..lr=1", ["expected FIELD=VALUE"]),
        ("num_workers=[2", ["--set num_workers: '[2' is not a YAML value"]),
        ("s3://AKIA:planted@b.x=1", ["--set: ", "credentials"]),
    ],
)
def test_bad_set_overrides_are_one_line_naming_the_field(assignment, needles, tmp_path):
    (tmp_path / "s.yaml").write_text("kind: pretrain\nname: r\nstorage: runs\ndata: {shards: s}\nsteps: 3\n")
    with pytest.raises(ValueError) as error:
        load_spec(tmp_path / "s.yaml", [assignment])
    message = str(error.value)
    assert "\n" not in message and all(needle in message for needle in needles), message
