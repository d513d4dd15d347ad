"""The scheduler against a real `ray start` cluster (cluster/local.sh): resubmission after a stopped driver,
one eval per committed checkpoint, a scheduler restart midway, and no blind retry of a job's own error."""

import json
import subprocess
import sys
import time

import pytest

from hierpt.jobs.execute import committed_checkpoints
from hierpt.jobs.scheduler import Scheduler, connect
from hierpt.jobs.specs import parse_spec
from hierpt.jobs.store import ACTIVE, Store
from hierpt.model.hat import HATConfig
from tests.fixtures.shards import sample_documents, write_shard_set

pytestmark = pytest.mark.integration
TINY = HATConfig.from_name("tiny")


def wait_for(condition, scheduler: Scheduler, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        scheduler.tick()
        value = condition()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}: {scheduler.store.jobs()}")


@pytest.fixture
def specs(tmp_path):
    shards = str(tmp_path / "shards")
    write_shard_set(shards, sample_documents(40), TINY.seq_words, TINY.max_word_bytes)
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"text": t, "lang": lang}) + "\n" for _, lang, t in sample_documents(10, 7)))
    pretrain = {
        "kind": "pretrain",
        "name": "sched-run",
        "storage": str(tmp_path / "runs"),
        "data": {"shards": shards},
        "optimizer": {"warmup_steps": 2},
        "steps": 12,
        "global_batch": 4,
        "micro_batch": 2,
        "num_workers": 1,
        "checkpoint": {"every": 4, "keep_last": 5},
        "evaluate": {"text": str(heldout), "prompts": ["The "], "robustness": False},
        "retry": {"backoff_s": 0},
    }
    broken = {**pretrain, "name": "broken-run", "data": {"shards": str(tmp_path / "no-such-shards")}}
    return parse_spec(pretrain), parse_spec(broken)


def test_stopped_run_is_resubmitted_resumes_and_every_checkpoint_is_evaluated_once(ray_head, specs, tmp_path):
    pretrain, broken = specs
    db = tmp_path / "scheduler.db"
    first = Scheduler(Store(db), connect(ray_head))
    job_id = first.submit(pretrain, job_id="train")
    broken_id = first.submit(broken, job_id="broken")

    # a checkpoint is committed, then the driver is stopped from outside (as a drain or `ray job stop` would)
    wait_for(lambda: committed_checkpoints(pretrain.run_url), first, 300, "a first checkpoint")
    first.client.stop_job("train-a0")
    first.store.close()

    # a new scheduler process picks up from the store alone
    second = Scheduler(Store(db), connect(ray_head))
    wait_for(lambda: not second.store.jobs(ACTIVE), second, 600, "all jobs to finish")
    store = second.store

    train = store.job(job_id)
    assert train.state == "succeeded" and train.attempts == 1
    assert [s["ray_status"] for s in store.submissions(job_id)] == ["STOPPED", "SUCCEEDED"]
    summary = json.loads(second.client.get_job_logs("train-a1").strip().splitlines()[-1])
    assert summary["steps"] == 12 and summary["resumed_from_step"] >= 4

    failed = store.job(broken_id)
    assert failed.state == "failed" and failed.attempts == 0  # its own error: never resubmitted
    assert [s["ray_status"] for s in store.submissions(broken_id)] == ["FAILED"]

    steps = [step for step, _ in committed_checkpoints(pretrain.run_url)]
    evals = store.jobs(kind="eval")
    assert steps == [4, 8, 12]
    assert sorted(e.step for e in evals) == steps  # exactly one eval per checkpoint
    assert all(e.state == "succeeded" and e.attempts == 0 for e in evals)
    results = store.results("sched-run")
    assert [step for step, _ in results] == steps
    assert all("bits_per_byte" in r and r["samples"]["The "].startswith("The ") for _, r in results)

    shown = subprocess.run(
        [sys.executable, "-m", "hierpt.cli", "jobs", "results", "sched-run", "--db", str(db), "--plot",
         str(tmp_path / "evals.png")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shown.stdout.splitlines()[0].split()[0] == "step" and len(shown.stdout.splitlines()) >= 4
    assert (tmp_path / "evals.png").stat().st_size > 1000
