"""Training with everything on object storage: shards and run storage on the test S3 server (SeaweedFS), a
worker SIGKILLed mid-run, and an exact resume (the sample-id log of tests/train/test_run.py)."""

import pytest

from hierpt.data.shards import read_manifest
from hierpt.train import checkpoint
from hierpt.train.run import train
from tests.fixtures.shards import sample_documents, write_shard_set
from tests.train.conftest import TINY
from tests.train.test_run import GLOBAL_BATCH, assert_global_order, assert_reexecuted_steps_match, make_job, read_trace

pytestmark = pytest.mark.integration


def test_shards_on_s3_train_survive_a_sigkill_and_resume_without_a_skipped_or_repeated_sample(s3, ray_local, tmp_path):
    bucket = s3.new_bucket()
    shards = f"s3://{bucket}/shards"
    write_shard_set(shards, sample_documents(40, variant=2), TINY.seq_words, TINY.max_word_bytes, row_group_size=4)
    job = make_job("s3-data", f"s3://{bucket}/runs", shards, tmp_path / "trace", zero_stage=2, steps=6,
                   checkpoint={"every": 2}, faults=[{"kill_rank": 1, "at_step": 3}])  # fmt: skip
    summary = train(job)

    trace = read_trace(tmp_path / "trace")
    assert summary["steps"] == 6 and summary["samples_consumed"] == 6 * GLOBAL_BATCH
    assert summary["resumed_from_step"] in (2, 4)
    assert len({line["pid"] for line in trace if line["rank"] == 1}) == 2, "expected one restart"
    assert assert_reexecuted_steps_match(trace) >= 1
    assert_global_order(trace, 6, read_manifest(shards).total_rows)
    reported = checkpoint.run_result(job.run_url).metrics_dataframe
    assert (reported["data_wait_s"] >= 0).all() and len(reported) >= 3  # every report carries the loader's wait
