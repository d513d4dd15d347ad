"""The scheduler: submits job specs to a Ray cluster (Jobs API), resubmits interrupted ones, and evaluates
every checkpoint of the training runs it launched.

Ray runs a job once and never retries it, so retries live here. A training
job is resubmitted under the same run name and storage, so it resumes from its latest committed checkpoint.
What counts as an interruption: a driver stopped by someone else (a node drain, `ray job stop`), killed by a
signal, or lost with its node, or exit code 75 from `hierpt run` (Ray workers lost beyond the run's own
retries). A job that failed by its own error (exit code 2: bad spec or data; other exit codes: a bug) stays
failed: resubmitting it would fail the same way.

All state is in the SQLite store; `tick()` is idempotent, so a scheduler can be killed and restarted at any
point without losing or duplicating a job (hierpt/jobs/store.py).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import fsspec

from hierpt import console
from hierpt.jobs.execute import EXIT_INFRASTRUCTURE, committed_checkpoints
from hierpt.jobs.specs import EvalJob, JobSpec, forwarded_env, parse_spec
from hierpt.jobs.store import ACTIVE, Job, Store
from hierpt.storage_env import storage_settings
from hierpt.train.lease import LEASE_ATTEMPT, LEASE_JOB

TRAINING = ("pretrain", "continued_pretrain")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class ClusterUnreachable(ConnectionError):
    """The Ray cluster did not answer: one line for the user, no traceback."""


def connect(address: str | None = None):
    """A Jobs API client. Ray 2.60 clusters use token auth by default: the token is sent explicitly (from
    $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), whatever RAY_AUTH_MODE was at import."""
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ValueError("no Ray cluster address: pass --address or set RAY_ADDRESS (e.g. http://127.0.0.1:8265)")
    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except (ConnectionError, RuntimeError, OSError) as error:
        raise ClusterUnreachable(f"cannot reach the Ray cluster at {address}: {_first_line(error)}") from None


def auth_headers() -> dict[str, str]:
    token = os.environ.get("RAY_AUTH_TOKEN")
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if token is None and path.is_file():
        token = path.read_text().strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


class Scheduler:
    def __init__(self, store: Store, client, entrypoint: str | None = None):
        self.store = store
        self.client = client
        # How a cluster node starts hierpt; the default suits clusters that share this machine's environment.
        self.entrypoint = entrypoint or f"{shlex.quote(sys.executable)} -m hierpt.cli"
        self.unreachable_since: float | None = None

    # -- user commands -------------------------------------------------------------------------------
    def submit(self, spec: JobSpec, job_id: str | None = None) -> str:
        """Queue a validated spec; it is sent on the next tick. Forwarded variables are checked now, not on the
        cluster; a run already being trained from this store is refused (two trainers would interleave its
        checkpoints; the run's lease stops trainers submitted from elsewhere)."""
        forwarded_env(spec)
        if spec.kind in TRAINING:
            for other in self.store.jobs(ACTIVE):
                if other.kind in TRAINING and other.run_name == spec.run_name:
                    raise ValueError(
                        f"run {spec.run_name} is already being trained by job {other.job_id} ({other.state}): "
                        "wait for it, cancel it, or give this spec another name"
                    )
        job_id = job_id or _new_id(spec.kind)
        raw = spec.model_dump(mode="json")
        if not self.store.add_job(job_id, spec.kind, raw, spec.run_name):
            raise ValueError(f"job {job_id!r} exists already")
        self.tick()
        return job_id

    def cancel(self, job_id: str) -> str:
        """Stop an active job (Ray first, so a cluster that does not answer leaves the store as it was)."""
        job = self.store.job(job_id)
        if job.state not in ACTIVE:
            raise ValueError(f"job {job_id} already {job.state}: nothing to cancel, nothing changed")
        submission = self.store.submission(job.current_submission)
        if submission is not None and self._lookup(job.current_submission) is not None:
            self.client.stop_job(job.current_submission)
        self.store.update_job(job_id, state="cancelled", message="cancelled by user")
        return f"job {job_id} cancelled"

    def refresh(self, job_id: str) -> Job:
        """The job as Ray reports it now (a `ray job stop` or a lost cluster shows at once); errors propagate."""
        job = self.store.job(job_id)
        if job.state == "running":
            self._observe(job)
        return self.store.job(job_id)

    # -- the reconcile loop ------------------------------------------------------------------------------
    def tick(self) -> None:
        for job in self.store.jobs(ACTIVE):
            try:
                if job.state == "queued" and time.time() >= job.retry_at:
                    self._send(job)
                elif job.state == "running":
                    self._observe(job)
                self.unreachable_since = None
            except (RuntimeError, ConnectionError, OSError) as error:
                # The cluster did not answer (starting up, restarting, unreachable): the job keeps its state
                # and the next tick asks again. Nothing was recorded as sent that Ray did not accept.
                self.unreachable_since = self.unreachable_since or time.time()
                message = f"cluster not answering, retrying: {_first_line(error)}"
                if message != job.message:  # said once, not on every poll
                    print(f"hierpt jobs: {job.job_id}: {message}", file=sys.stderr)
                    self.store.update_job(job.job_id, message=message)
            except ValueError as error:  # e.g. a variable the spec forwards is no longer in this environment
                self.store.update_job(job.job_id, state="failed", message=str(error))
        self._queue_checkpoint_evals()

    def run(
        self, poll_s: float = 5.0, until_idle: bool = False, give_up_after_s: float = 900.0,
        show: Callable[[list[Job]], None] | None = None,
    ) -> None:  # fmt: skip
        """Tick until idle (or forever); a cluster silent for `give_up_after_s` ends the watch, jobs kept.
        `show` gets every job after each tick (hierpt.jobs.watch)."""
        while True:
            self.tick()
            if show is not None:
                show(self.store.jobs())
            if until_idle and not self.store.jobs(ACTIVE):
                return
            if self.unreachable_since and time.time() - self.unreachable_since > give_up_after_s:
                raise ClusterUnreachable(
                    f"the Ray cluster has not answered for {give_up_after_s:.0f} s; jobs keep their state, "
                    "run `hierpt jobs watch` again once it is back"
                )
            time.sleep(poll_s)

    def _send(self, job: Job) -> None:
        submission_id = self.store.record_submission(job)
        if not self.store.submission(submission_id)["sent"] and self._lookup(submission_id) is None:
            spec = parse_spec(job.spec, source=f"job {job.job_id}")
            # The run's lease names this job: a later attempt of it takes the run over from an attempt Ray has
            # ended or forgotten (hierpt/train/lease.py); any other trainer of the run is refused.
            owner = {LEASE_JOB: job.job_id, LEASE_ATTEMPT: str(job.attempts)}
            self.client.submit_job(
                entrypoint=f"{self.entrypoint} run --spec-json {shlex.quote(json.dumps(job.spec))}",
                submission_id=submission_id,
                runtime_env={"env_vars": job_env(spec, owner)},
                metadata={"hierpt_job": job.job_id, "attempt": str(job.attempts)},
                entrypoint_num_cpus=spec.entrypoint_num_cpus,
            )
        self.store.update_submission(submission_id, sent=1)
        self.store.update_job(job.job_id, state="running")

    def _lookup(self, submission_id: str):
        """Ray's record of a submission, or None when Ray does not know it (never sent, or forgotten by a
        restarted cluster); other failures (cluster not answering) propagate."""
        try:
            return self.client.get_job_info(submission_id)
        except RuntimeError as error:
            if "status code 404" in str(error) or "does not exist" in str(error):
                return None
            raise

    def _observe(self, job: Job) -> None:
        submission_id = job.current_submission
        info = self._lookup(submission_id)
        if info is None:  # the cluster restarted and took the driver with it: a lost job, resubmitted
            self.store.update_submission(submission_id, ray_status="LOST", message="unknown to Ray")
            self._resubmit(job, f"Ray no longer knows submission {submission_id} (cluster restarted?)")
            return
        status = str(info.status.value if hasattr(info.status, "value") else info.status)
        self.store.update_submission(submission_id, ray_status=status, message=info.message or "")
        if status not in TERMINAL:
            return
        if status == "SUCCEEDED":
            self.store.update_job(job.job_id, state="succeeded", message="")
            if job.kind == "eval":
                self._ingest_eval(job)
            return
        if is_interruption(status, info.driver_exit_code):
            self._resubmit(job, f"{status} (exit code {info.driver_exit_code}): {info.message}")
        else:
            self.store.update_job(job.job_id, state="failed", message=f"{status}: {info.message}")

    def _resubmit(self, job: Job, reason: str) -> None:
        policy = parse_spec(job.spec).retry
        if job.attempts >= policy.max_resubmits:
            self.store.update_job(job.job_id, state="failed", message=f"resubmit budget spent; last: {reason}")
            return
        self.store.update_job(
            job.job_id,
            state="queued",
            attempts=job.attempts + 1,
            retry_at=time.time() + policy.delay(job.attempts + 1),
            message=f"resubmitting after: {reason}",
        )

    # -- checkpoint evaluation ---------------------------------------------------------------------------
    def _queue_checkpoint_evals(self) -> None:
        """One eval job per committed checkpoint of every training job launched here that asks for evals.

        A run is watched while it is active and scanned once more after it ends, for its last checkpoint. A
        continued run's starting point (`init_from`) is evaluated as its step 0: the reference its plots and its
        forgetting start from.
        """
        for job in self.store.jobs(kind=None):
            if job.kind not in TRAINING or not job.spec.get("evaluate") or job.evals_queued:
                continue
            training = parse_spec(job.spec)
            checkpoints = committed_checkpoints(training.run_url)
            if training.init_from:
                checkpoints = [(0, training.init_from), *checkpoints]
            for step, checkpoint in checkpoints:
                spec = EvalJob(
                    kind="eval",
                    checkpoint=checkpoint,
                    output=f"{training.run_url}/evals/step-{step:08d}",
                    env=training.env,
                    env_visible_to_cluster_users=training.env_visible_to_cluster_users,
                    tracking=training.run_tracking(),
                    **training.evaluate.model_dump(),
                )
                self.store.add_job(
                    f"{job.job_id}-eval-{step:08d}",
                    "eval",
                    spec.model_dump(mode="json"),
                    job.run_name,
                    parent_job=job.job_id,
                    checkpoint=checkpoint,
                    step=step,
                )
            if job.state not in ACTIVE:
                self.store.update_job(job.job_id, evals_queued=1)

    def _ingest_eval(self, job: Job) -> None:
        spec = parse_spec(job.spec)
        with fsspec.open(f"{spec.output}/result.json") as f:
            result = json.load(f)
        self.store.put_result(job.run_name, job.step, result)


def is_interruption(status: str, exit_code: int | None) -> bool:
    """Stopped from outside, killed, or lost with its node; not the job's own failure."""
    if status == "STOPPED":
        return True
    if exit_code is None or exit_code < 0 or exit_code >= 128:
        return True  # no exit code: the driver or its node vanished; >= 128 / < 0: killed by a signal
    return exit_code == EXIT_INFRASTRUCTURE


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _new_id(kind: str) -> str:
    return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}"


def job_env(spec: JobSpec, owner: dict[str, str]) -> dict[str, str]:
    """A submitted job's environment: where the object store is (hierpt.storage_env, never credentials), the
    sender's verbosity (`--verbose` on `jobs submit` or `jobs watch` reaches the job and its workers), the
    variables the spec names, and the run's lease owner."""
    return {**storage_settings(), **console.worker_env(), **forwarded_env(spec), **owner, "RAY_TRAIN_V2_ENABLED": "1"}
