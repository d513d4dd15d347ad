"""The run lease on local storage and on a real S3 server: one winner of a race, refusal in one line, expiry of a
dead holder, and the takeover by the next attempt of the same scheduler job."""

import threading
import time

import fsspec
import pytest

from hierpt.train.lease import LEASE_ATTEMPT, LEASE_JOB, Lease, RunBusy


@pytest.fixture(params=["local", "s3"])
def run_url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "run")
    return f"s3://{request.getfixturevalue('s3').new_bucket()}/runs/run"


def test_of_trainers_starting_at_once_exactly_one_holds_the_run(run_url):
    leases = [Lease(run_url, ttl_s=60) for _ in range(6)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(leases))

    def contend(lease):
        barrier.wait()
        try:
            lease.acquire()
            outcomes.append("won")
        except RunBusy as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=contend, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("won") == 1, outcomes
    assert all(o == "won" or (run_url in o and "\n" not in o) for o in outcomes)
    for lease in leases:
        lease.release()
    with Lease(run_url, ttl_s=60):  # released: the next trainer takes the run at once
        pass


def test_a_lease_file_still_being_written_holds_the_run_until_it_expires(run_url):
    fs, root = fsspec.core.url_to_fs(run_url)
    fs.makedirs(f"{root}/_lease", exist_ok=True)
    fs.pipe_file(f"{root}/_lease/00000001.json", b"")  # a winner's exclusive create, before its first write
    with pytest.raises(RunBusy, match="refusing a second trainer"):
        Lease(run_url, ttl_s=60).acquire()
    time.sleep(1.6)  # past a 0.5 s ttl even at S3's one-second modification times: a writer that died mid-write
    with Lease(run_url, ttl_s=0.5) as successor:
        assert successor.generation == 2


def test_a_live_holder_refuses_others_and_a_dead_one_blocks_only_until_its_lease_expires(run_url):
    holder = Lease(run_url, ttl_s=2, heartbeat_s=0.3)
    holder.acquire()
    time.sleep(2.5)  # heartbeats keep it alive past its ttl
    with pytest.raises(RunBusy, match="refusing a second trainer"):
        Lease(run_url).acquire()
    holder._stop.set()  # the holder dies without releasing (SIGKILL, lost node): no more heartbeats
    holder._thread.join()
    with pytest.raises(RunBusy):
        Lease(run_url).acquire()
    time.sleep(2.5)
    with Lease(run_url, ttl_s=60) as successor:
        assert successor.generation == 2
        assert not holder._still_mine()


def test_the_next_attempt_of_the_same_job_takes_over_and_other_jobs_are_refused(run_url, monkeypatch):
    monkeypatch.setenv(LEASE_JOB, "train-1")
    monkeypatch.setenv(LEASE_ATTEMPT, "0")
    first = Lease(run_url, ttl_s=600)
    first.acquire()
    first._stop.set()  # attempt 0 was stopped by Ray (`ray job stop`): its lease is still fresh
    monkeypatch.setenv(LEASE_JOB, "train-2")
    with pytest.raises(RunBusy, match="job train-1 attempt 0"):
        Lease(run_url).acquire()
    monkeypatch.setenv(LEASE_JOB, "train-1")
    with pytest.raises(RunBusy):  # the same attempt again is not a successor
        Lease(run_url).acquire()
    monkeypatch.setenv(LEASE_ATTEMPT, "1")
    with Lease(run_url) as second:
        assert second.generation == 2
