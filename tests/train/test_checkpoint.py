from pathlib import Path

import pytest

from hierpt.cli import main as cli
from hierpt.data.bpe import BPETokenizer
from hierpt.data.shards import read_manifest
from hierpt.model.baseline import Baseline
from hierpt.model.export import save_export
from hierpt.model.hat import HAT
from hierpt.train import checkpoint
from hierpt.train.config import TrainJob
from hierpt.train.loop import build_model
from tests.train.conftest import TINY, TOKEN_SEQ


def test_export_of_something_that_is_not_a_run_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        cli(["export", str(tmp_path / "empty-run"), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "neither a hierpt checkpoint nor a run directory" in error
    assert not (tmp_path / "out").exists()


def test_state_file_is_required_to_call_a_directory_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="hierpt_state.json"):
        checkpoint.read_state(tmp_path)


def test_shards_prepared_for_another_word_shape_are_refused(shards_a):
    job = TrainJob.model_validate({"name": "t", "storage": "/tmp/x", "data": {"shards": shards_a}, "steps": 1,
                                   "model": {"preset": "tiny", "overrides": {"seq_words": 128}}})  # fmt: skip
    with pytest.raises(ValueError, match="model.overrides.seq_words=128 but the shards .* seq_words=64"):
        job.model.build_config(read_manifest(shards_a), shards_a)


def test_a_baseline_starts_only_from_a_baseline_export_with_the_shards_tokenizer(token_shards, tmp_path):
    model = {"family": "baseline", "preset": "tiny"}
    job = TrainJob.model_validate({"name": "t", "storage": str(tmp_path), "data": {"shards": token_shards},
                                   "steps": 1, "model": model})  # fmt: skip
    manifest = read_manifest(token_shards)
    config = job.model.build_config(manifest, token_shards)
    assert config.seq_tokens == TOKEN_SEQ
    _, tokenizer = job.model.model_family.inputs(config, manifest, token_shards)
    same = save_export(Baseline(config).state_dict(), config, str(tmp_path / "same"), tokenizer=tokenizer)
    other_vocab = BPETokenizer.train(["a different corpus, a different vocabulary"] * 3, vocab_size=tokenizer.vocab_size)
    other = save_export(Baseline(config).state_dict(), config, str(tmp_path / "other"), tokenizer=other_vocab)
    hat = save_export(HAT(TINY).state_dict(), TINY, str(tmp_path / "hat"))

    assert isinstance(build_model(job.model_copy(update={"init_from": same}), config, tokenizer, True), Baseline)
    with pytest.raises(ValueError, match=f"init_from {other} was trained with another tokenizer than data.shards"):
        build_model(job.model_copy(update={"init_from": other}), config, tokenizer, True)
    with pytest.raises(ValueError, match=f"init_from {hat} is not a baseline export"):
        build_model(job.model_copy(update={"init_from": hat}), config, tokenizer, True)


def test_a_truncated_state_file_is_one_line_naming_it(tmp_path):
    """Issue 12.3: a truncated hierpt_state.json gave a pydantic error naming no file."""
    (tmp_path / checkpoint.STATE_FILE).write_text('{"step": 4, "loader": {"fingerprint": "ab')
    with pytest.raises(checkpoint.CorruptCheckpoint) as error:
        checkpoint.read_state(tmp_path)
    message = str(error.value)
    assert message.startswith(str(tmp_path / checkpoint.STATE_FILE)) and "\n" not in message


@pytest.mark.integration
def test_a_damaged_latest_checkpoint_is_named_and_skipped_by_resume_and_export_and_none_left_exits_2(
    ray_local, shards_a, tmp_path, capsys, monkeypatch
):
    """Issue 12.3: a truncated optimizer shard was fatal, retried as infrastructure (exit 75), and `hierpt export`
    of the run died with a traceback (and issue 12.6: a relative run path gave "URI has empty scheme")."""
    import json
    import subprocess
    import sys

    import yaml

    from hierpt.train.run import train

    spec = {"name": "damaged", "storage": str(tmp_path / "runs"), "data": {"shards": shards_a}, "steps": 4,
            "global_batch": 2, "micro_batch": 1, "num_workers": 1, "zero_stage": 2, "max_failures": 3,
            "optimizer": {"warmup_steps": 1}, "checkpoint": {"every": 2, "keep_last": 5}}  # fmt: skip
    run = f"{spec['storage']}/damaged"
    train(TrainJob.model_validate(spec))
    latest = checkpoint.resolve(run).path
    assert Path(latest).name.startswith("step-00000004_")  # named by step (issue 16)
    shard = next(Path(latest).glob("ds/*optim_states.pt"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    capsys.readouterr()

    monkeypatch.chdir(tmp_path)
    cli(["export", "runs/damaged", "--output", "export"])
    skipped = capsys.readouterr().err.splitlines()[0]  # then DeepSpeed's own progress bar
    assert skipped.startswith("hierpt: skipping a damaged checkpoint") and latest in skipped and shard.name in skipped
    exported = json.loads((tmp_path / "export" / "config.json").read_text())
    assert exported["hierpt"]["step"] == 2
    (tmp_path / "heldout.jsonl").write_text(json.dumps({"text": "the run itself is evaluated", "lang": "en"}) + "\n")
    cli(["eval", "--checkpoint", "runs/damaged", "--text", "heldout.jsonl", "--json"])  # exported on the fly
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["checkpoint"] == "runs/damaged"
    assert "hierpt: exporting" in captured.err

    resumed = train(TrainJob.model_validate({**spec, "steps": 6}))
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == 6
    assert latest in capsys.readouterr().err

    for state in Path(run).glob("step-*/" + checkpoint.STATE_FILE):  # now no intact checkpoint is left
        state.write_text(state.read_text()[:40])
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"kind": "pretrain", **spec, "steps": 8}))
    refused = subprocess.run([sys.executable, "-m", "hierpt.cli", "train", str(tmp_path / "spec.yaml")],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    last = refused.stderr.strip().splitlines()[-1]
    assert refused.returncode == 2, refused.stderr
    assert "no intact checkpoint left" in last and checkpoint.STATE_FILE in last and "Traceback" not in refused.stderr


def test_an_init_from_export_of_another_family_is_refused_before_ray_starts(shards_a, tmp_path):
    """Issue 12.6: a HAT `init_from` a baseline export failed only after 4 worker-group attempts."""
    from hierpt.model.baseline import BaselineConfig
    from hierpt.train.run import train

    config = BaselineConfig.from_name("tiny")
    tokenizer = BPETokenizer.train(["a small vocabulary for a small test"] * 3, vocab_size=config.vocab_size)
    export = save_export(Baseline(config).state_dict(), config, str(tmp_path / "bpe"), tokenizer=tokenizer)
    job = TrainJob.model_validate({"name": "t", "storage": str(tmp_path / "runs"), "data": {"shards": shards_a},
                                   "steps": 1, "init_from": export})  # fmt: skip
    with pytest.raises(ValueError, match=f"init_from {export} is a baseline export, but model.family is hat"):
        train(job)
    assert not (tmp_path / "runs").exists()  # refused before the run's lease or any checkpoint was touched
