import pytest

from hierpt.cli import main as cli
from hierpt.train import checkpoint
from hierpt.train.config import TrainJob
from hierpt.train.loop import shard_inputs


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
