from types import SimpleNamespace

from hierpt.jobs.scheduler import is_interruption
from hierpt.jobs.store import Store


def test_store_survives_reopening_and_records_each_submission_once(tmp_path):
    store = Store(tmp_path / "s.db")
    assert store.add_job("j1", "pretrain", {"a": 1}, "run")
    assert not store.add_job("j1", "pretrain", {"a": 1}, "run")
    job = store.job("j1")
    assert store.record_submission(job) == store.record_submission(job) == "j1-a0"
    store.close()
    reopened = Store(tmp_path / "s.db")
    assert reopened.submission("j1-a0")["job_id"] == "j1" and reopened.submission("j1-a1") is None
    assert reopened.job("j1").spec == {"a": 1}


def test_one_eval_job_per_checkpoint_of_a_run(tmp_path):
    store = Store(tmp_path / "s.db")
    assert store.add_job("e1", "eval", {}, "run", checkpoint="/runs/run/checkpoint_1", step=5)
    assert not store.add_job("e2", "eval", {}, "run", checkpoint="/runs/run/checkpoint_1", step=5)
    assert store.add_job("e3", "eval", {}, "other-run", checkpoint="/runs/run/checkpoint_1", step=5)


def test_interruptions_are_told_apart_from_own_failures():
    assert is_interruption("STOPPED", None)
    assert is_interruption("FAILED", None)  # driver or node vanished
    assert is_interruption("FAILED", -9) and is_interruption("FAILED", 137)  # killed by a signal
    assert is_interruption("FAILED", 75)  # hierpt run: workers lost beyond the run's retries
    assert not is_interruption("FAILED", 2)  # bad spec or data
    assert not is_interruption("FAILED", 1)  # a bug: resubmitting fails the same way


class StartingCluster:
    """A Jobs API that refuses the first submission, as a freshly started cluster does ("No available agent")."""

    def __init__(self):
        self.accepted: list[str] = []
        self.refusals = 1

    def get_job_info(self, submission_id):
        if submission_id not in self.accepted:
            raise RuntimeError(f"Request failed with status code 404: Job {submission_id} does not exist.")
        return SimpleNamespace(status="RUNNING", message="", driver_exit_code=None)

    def submit_job(self, *, submission_id, **_):
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError("Request failed with status code 500: No available agent to submit job")
        self.accepted.append(submission_id)


def test_a_cluster_that_is_not_ready_delays_the_submission_without_losing_or_doubling_it(tmp_path):
    from hierpt.jobs.scheduler import Scheduler
    from hierpt.jobs.specs import parse_spec

    spec = parse_spec({"kind": "prep", "recipe": "r.yaml", "output": str(tmp_path / "out")})
    cluster = StartingCluster()
    scheduler = Scheduler(Store(tmp_path / "s.db"), cluster)
    job_id = scheduler.submit(spec, job_id="p")
    assert scheduler.store.job(job_id).state == "queued" and "No available agent" in scheduler.store.job(job_id).message
    scheduler.tick()
    scheduler.tick()
    assert scheduler.store.job(job_id).state == "running" and cluster.accepted == ["p-a0"]


class DownCluster:
    """A Jobs API whose cluster went away: every request fails to connect."""

    def get_job_info(self, submission_id):
        raise ConnectionError(f"Failed to connect to Ray at address: http://127.0.0.1:1 ({submission_id})")

    submit_job = get_job_info


def test_a_cluster_that_stays_down_is_said_once_and_ends_a_watch_with_the_jobs_kept(tmp_path, capsys):
    """Issue 12.4: 51 retry lines in 2.5 min, and `watch --until-idle` never returned."""
    import pytest

    from hierpt.jobs.scheduler import ClusterUnreachable, Scheduler
    from hierpt.jobs.specs import parse_spec

    spec = parse_spec({"kind": "prep", "recipe": "r.yaml", "output": str(tmp_path / "out")})
    scheduler = Scheduler(Store(tmp_path / "s.db"), DownCluster())
    scheduler.submit(spec, job_id="p")
    for _ in range(5):
        scheduler.tick()
    assert capsys.readouterr().err.count("cluster not answering") == 1
    with pytest.raises(ClusterUnreachable, match="has not answered for 0 s"):
        scheduler.run(poll_s=0, until_idle=True, give_up_after_s=0)
    assert scheduler.store.job("p").state == "queued"
