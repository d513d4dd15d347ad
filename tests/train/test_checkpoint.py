import pytest

from hierpt.cli import main as cli
from hierpt.data.bpe import BPETokenizer
from hierpt.model.baseline import Baseline, save_baseline_export
from hierpt.model.export import save_export
from hierpt.model.hat import HAT
from hierpt.train import checkpoint
from hierpt.train.config import TrainJob
from hierpt.train.loop import build_model, shard_inputs
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
    with pytest.raises(ValueError, match="model seq_words=128 but the shards .* seq_words=64"):
        shard_inputs(job, job.model.build_config())


def test_a_baseline_starts_only_from_a_baseline_export_with_the_shards_tokenizer(token_shards, tmp_path):
    model = {"family": "baseline", "preset": "tiny", "overrides": {"seq_tokens": TOKEN_SEQ}}
    job = TrainJob.model_validate({"name": "t", "storage": str(tmp_path), "data": {"shards": token_shards},
                                   "steps": 1, "model": model})  # fmt: skip
    config = job.model.build_config()
    _, tokenizer = shard_inputs(job, config)
    same = save_baseline_export(Baseline(config).state_dict(), config, tokenizer, str(tmp_path / "same"))
    other_vocab = BPETokenizer.train(["a different corpus, a different vocabulary"] * 3, vocab_size=tokenizer.vocab_size)
    other = save_baseline_export(Baseline(config).state_dict(), config, other_vocab, str(tmp_path / "other"))
    hat = save_export(HAT(TINY).state_dict(), TINY, str(tmp_path / "hat"))

    assert isinstance(build_model(job.model_copy(update={"init_from": same}), config, tokenizer, True), Baseline)
    with pytest.raises(ValueError, match=f"init_from {other} was trained with another tokenizer than data.shards"):
        build_model(job.model_copy(update={"init_from": other}), config, tokenizer, True)
    with pytest.raises(ValueError, match=f"init_from {hat} is not a baseline export"):
        build_model(job.model_copy(update={"init_from": hat}), config, tokenizer, True)
