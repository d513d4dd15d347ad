"""The scheduler against a real `ray start` cluster (cluster/local.sh): resubmission after a stopped driver,
one eval per committed checkpoint, a scheduler restart midway, and no blind retry of a job's own error."""

import json
import subprocess
import sys
import time

import pytest

from hierpt import console
from hierpt.cli import main as cli
from hierpt.jobs.execute import committed_checkpoints
from hierpt.jobs.scheduler import Scheduler, connect, job_env
from hierpt.jobs.specs import parse_spec
from hierpt.jobs.store import ACTIVE, Store
from hierpt.model.hat import HATConfig
from tests.fixtures.shards import sample_documents, write_shard_set

pytestmark = pytest.mark.integration
TINY = HATConfig.from_name("tiny")


def attempt_history(store: Store, job_id: str) -> list:
    """The job's submission rows, first attempt first (`<job>-a<n>` for every attempt so far)."""
    return [store.submission(f"{job_id}-a{n}") for n in range(store.job(job_id).attempts + 1)]


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


def jobs_cli(capsys, *args) -> tuple[int, str, str]:
    """`hierpt jobs ARGS` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    try:
        cli(["jobs", *args])
        code = 0
    except SystemExit as exited:
        code = exited.code
    out, err = capsys.readouterr()
    return code, out, err


def test_stopped_run_is_resubmitted_resumes_and_every_checkpoint_is_evaluated_once(ray_head, specs, tmp_path, capsys):
    pretrain, broken = specs
    db = tmp_path / "scheduler.db"
    first = Scheduler(Store(db), connect(ray_head))
    job_id = first.submit(pretrain, job_id="train")
    broken_id = first.submit(broken, job_id="broken")
    with pytest.raises(ValueError, match="run sched-run is already being trained by job train"):
        first.submit(pretrain)  # one live job per run name (the run's lease stops trainers from elsewhere)

    # a checkpoint is committed, then the driver is stopped from outside (as a drain or `ray job stop` would)
    wait_for(lambda: committed_checkpoints(pretrain.run_url), first, 300, "a first checkpoint")
    first.client.stop_job("train-a0")
    deadline = time.monotonic() + 60
    while str(first.client.get_job_status("train-a0")) not in ("STOPPED", "JobStatus.STOPPED"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    # issue 12.4: `status` asks Ray, so the stop shows on the next query (no `watch` running)
    code, out, _ = jobs_cli(capsys, "status", "train", "--db", str(db), "--address", ray_head)
    status = json.loads(out)
    assert code == 0 and status["state"] == "queued" and "STOPPED" in status["message"], status
    first.store.close()

    # a new scheduler process picks up from the store alone
    second = Scheduler(Store(db), connect(ray_head))
    wait_for(lambda: not second.store.jobs(ACTIVE), second, 600, "all jobs to finish")
    store = second.store

    train = store.job(job_id)
    assert train.state == "succeeded" and train.attempts == 1
    assert [s["ray_status"] for s in attempt_history(store, job_id)] == ["STOPPED", "SUCCEEDED"]
    summary = json.loads(second.client.get_job_logs("train-a1").strip().splitlines()[-1])
    assert summary["steps"] == 12 and summary["resumed_from_step"] >= 4

    failed = store.job(broken_id)
    assert failed.state == "failed" and failed.attempts == 0  # its own error: never resubmitted
    assert [s["ray_status"] for s in attempt_history(store, broken_id)] == ["FAILED"]

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

    # issue 12.4: cancelling a finished job changes nothing and says so
    code, _, err = jobs_cli(capsys, "cancel", "train", "--db", str(db), "--address", ray_head)
    assert code == 2 and err.strip() == "hierpt jobs: error: job train already succeeded: nothing to cancel, nothing changed"
    assert Store(db).job("train").state == "succeeded"


def test_two_concurrent_submissions_of_one_run_train_it_once(ray_head, specs, tmp_path):
    """Issue 12.2: the same spec submitted twice (here by two schedulers, so the scheduler's own refusal cannot
    help) ran two trainers on one run directory, interleaving checkpoints and steps."""
    pretrain, _ = specs
    spec = pretrain.model_copy(update={"name": "twice", "steps": 6, "evaluate": None, "trace_dir": str(tmp_path / "trace"),
                                       "checkpoint": pretrain.checkpoint.model_copy(update={"every": 2, "keep_last": 2})})  # fmt: skip
    schedulers = [Scheduler(Store(tmp_path / f"{who}.db"), connect(ray_head)) for who in ("alice", "bob")]
    for who, scheduler in zip(("alice", "bob"), schedulers):
        scheduler.submit(spec, job_id=who)
    deadline = time.monotonic() + 400
    while any(s.store.jobs(ACTIVE) for s in schedulers):
        assert time.monotonic() < deadline, [s.store.jobs() for s in schedulers]
        for scheduler in schedulers:
            scheduler.tick()
        time.sleep(1.0)
    outcome = {s.store.jobs()[0].state: s.store.jobs()[0] for s in schedulers}
    assert sorted(outcome) == ["failed", "succeeded"], outcome
    refused = outcome["failed"]
    assert refused.attempts == 0 and "exit code 2" in refused.message  # its own error: not resubmitted
    assert "refusing a second trainer" in refused.message and "twice" in refused.message

    steps = [json.loads(line)["step"] for line in (tmp_path / "trace" / "rank0.jsonl").read_text().splitlines()]
    assert steps == list(range(6))  # one trainer: every step once, in order
    assert [step for step, _ in committed_checkpoints(spec.run_url)] == [4, 6]  # keep_last 2, one writer


def test_a_job_lost_in_a_cluster_restart_is_resubmitted_and_a_cluster_that_is_down_is_one_line(
    s3, specs, tmp_path, capsys
):
    """Issue 12.4: after a cluster restart Ray answered 404 for the job, the scheduler took that for "cluster not
    answering" forever, and `jobs submit/status` with the cluster down printed a 28-frame traceback."""
    from tests.fixtures.ray_cluster import local_cluster, local_cluster_env

    env = local_cluster_env(f"/tmp/hierpt-test-restart-{tmp_path.name[-12:]}")
    address = local_cluster("start", env)
    db = tmp_path / "scheduler.db"
    spec = parse_spec({"kind": "eval", "checkpoint": str(tmp_path / "no-such-export"), "text": str(tmp_path / "t"),
                       "output": str(tmp_path / "evals"), "retry": {"backoff_s": 0}})  # fmt: skip
    try:
        scheduler = Scheduler(Store(db), connect(address))
        scheduler.submit(spec, job_id="lost")
        assert scheduler.store.job("lost").state == "running"
        local_cluster("stop", env)

        spec_file = tmp_path / "spec.json"
        spec_file.write_text(json.dumps(spec.model_dump(mode="json")))
        for args in (("status", "lost"), ("logs", "lost"), ("submit", str(spec_file)), ("watch", "--until-idle")):
            code, _, err = jobs_cli(capsys, *args, "--db", str(db), "--address", address)
            assert code == 1 and err.count("\n") == 1 and "cannot reach the Ray cluster" in err, (args, err)
        assert "last recorded state of lost: running" in jobs_cli(capsys, "status", "lost", "--db", str(db),
                                                                  "--address", address)[2]  # fmt: skip
        scheduler.tick()  # the old client: the cluster does not answer, the job keeps its state
        assert scheduler.store.job("lost").state == "running"

        local_cluster("start", env)  # a fresh cluster: it has never heard of the submission
        restarted = Scheduler(Store(db), connect(address))
        wait_for(lambda: restarted.store.job("lost").state == "failed", restarted, 180, "the resubmitted job to end")
        job = restarted.store.job("lost")
        assert job.attempts == 1 and "no-such-export" in job.message  # resubmitted, then failed by its own error
        assert [s["ray_status"] for s in attempt_history(restarted.store, "lost")] == ["LOST", "FAILED"]
    finally:
        local_cluster("stop", env)


def test_a_continued_runs_starting_point_is_evaluated_as_step_0(tmp_path):
    """No cluster needed: the eval jobs a tick would queue for a continued run before its first checkpoint."""
    spec = parse_spec({
        "kind": "continued_pretrain", "name": "cont", "storage": str(tmp_path / "runs"),
        "init_from": str(tmp_path / "runs" / "base"), "data": {"shards": str(tmp_path / "shards")}, "steps": 10,
        "evaluate": {"text": str(tmp_path / "heldout.jsonl")},
    })  # fmt: skip
    scheduler = Scheduler(Store(tmp_path / "s.db"), client=None)
    scheduler.store.add_job("cont", spec.kind, spec.model_dump(mode="json"), spec.name)
    scheduler._queue_checkpoint_evals()
    (evaluation,) = scheduler.store.jobs(kind="eval")
    assert (evaluation.step, evaluation.checkpoint) == (0, str(tmp_path / "runs" / "base"))
    assert evaluation.spec["output"] == f"{tmp_path}/runs/cont/evals/step-00000000"


@pytest.mark.parametrize("verbose", [False, True])
def test_a_job_gets_the_store_settings_and_the_senders_verbosity_and_no_credentials(tmp_path, monkeypatch, verbose):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://store:8333")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("HIERPT_TEST_SETTING", "on")
    monkeypatch.setenv(console.VERBOSE, "1" if verbose else "0")
    spec = parse_spec({"kind": "eval", "checkpoint": str(tmp_path / "export"), "text": str(tmp_path / "held.jsonl"),
                       "output": str(tmp_path / "evals"), "env": ["HIERPT_TEST_SETTING"]})  # fmt: skip
    env = job_env(spec, {"OWNER": "job-a0"})
    assert env["AWS_ENDPOINT_URL"] == "http://store:8333" and "s3cr3t" not in env.values()
    assert env["HIERPT_TEST_SETTING"] == "on" and env["OWNER"] == "job-a0"
    assert (env.get(console.VERBOSE), env.get("TQDM_DISABLE")) == (("1", None) if verbose else (None, "1"))
