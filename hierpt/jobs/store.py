"""The scheduler's memory: an embedded SQLite database, so a scheduler restart loses and repeats nothing.

Every Ray submission is written here *before* it is sent, under a submission id derived from the job and
attempt (``<job>-a<attempt>``). A scheduler that died between the write and the send finds the row on
restart and asks Ray whether that id exists, so no job is ever submitted twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    run_name TEXT,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,            -- queued | running | succeeded | failed | cancelled
    attempts INTEGER NOT NULL DEFAULT 0,
    retry_at REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    parent_job TEXT,                -- eval jobs: the training job whose checkpoint they evaluate
    checkpoint TEXT,                -- eval jobs: the checkpoint they evaluate (unique per run)
    step INTEGER,
    evals_queued INTEGER NOT NULL DEFAULT 0,  -- training jobs: ended, and every checkpoint has its eval job
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_eval_per_checkpoint ON jobs(run_name, checkpoint) WHERE kind = 'eval';
CREATE TABLE IF NOT EXISTS submissions (
    submission_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(job_id),
    attempt INTEGER NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    ray_status TEXT NOT NULL DEFAULT 'UNKNOWN',
    message TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_name TEXT NOT NULL,
    step INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_name, step)
);
"""

ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class Job:
    job_id: str
    kind: str
    run_name: str | None
    spec: dict
    state: str
    attempts: int
    retry_at: float
    message: str
    parent_job: str | None
    checkpoint: str | None
    step: int | None
    evals_queued: bool

    @property
    def current_submission(self) -> str:
        return f"{self.job_id}-a{self.attempts}"


class Store:
    def __init__(self, path: str | Path, create: bool = True):
        """`create=False` for commands that only read or act on recorded jobs: a mistyped `--db` is then one
        line instead of a new empty database that answers "no such job"."""
        if not create and not Path(path).is_file():
            raise FileNotFoundError(
                f"no scheduler database at {path} (`hierpt jobs submit` creates it; "
                "--db or HIERPT_SCHEDULER_DB names another)"
            )
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def add_job(
        self,
        job_id: str,
        kind: str,
        spec: dict,
        run_name: str | None,
        parent_job: str | None = None,
        checkpoint: str | None = None,
        step: int | None = None,
    ) -> bool:
        """Insert a queued job; False when the job (or an eval of the same checkpoint) already exists."""
        now = time.time()
        try:
            self.db.execute(
                "INSERT INTO jobs (job_id, kind, run_name, spec, state, parent_job, checkpoint, step, created, updated)"
                " VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (job_id, kind, run_name, json.dumps(spec), parent_job, checkpoint, step, now, now),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def job(self, job_id: str) -> Job:
        row = self.db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise ValueError(f"no job {job_id!r} in this scheduler's store")
        return _job(row)

    def jobs(self, states: tuple[str, ...] | None = None, kind: str | None = None) -> list[Job]:
        query, args = "SELECT * FROM jobs WHERE 1=1", []
        if states:
            query += f" AND state IN ({','.join('?' * len(states))})"
            args += list(states)
        if kind:
            query += " AND kind = ?"
            args.append(kind)
        return [_job(r) for r in self.db.execute(query + " ORDER BY created, job_id", args)]

    def update_job(self, job_id: str, **fields) -> None:
        fields["updated"] = time.time()
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE jobs SET {assignments} WHERE job_id = ?", (*fields.values(), job_id))

    def record_submission(self, job: Job) -> str:
        """Write the intent to submit attempt `job.attempts` (idempotent); returns its submission id."""
        submission_id = job.current_submission
        self.db.execute(
            "INSERT OR IGNORE INTO submissions (submission_id, job_id, attempt, created) VALUES (?, ?, ?, ?)",
            (submission_id, job.job_id, job.attempts, time.time()),
        )
        return submission_id

    def submission(self, submission_id: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM submissions WHERE submission_id = ?", (submission_id,)).fetchone()

    def update_submission(self, submission_id: str, **fields) -> None:
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE submissions SET {assignments} WHERE submission_id = ?", (*fields.values(), submission_id))

    def put_result(self, run_name: str, step: int, metrics: dict) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO results (run_name, step, metrics) VALUES (?, ?, ?)",
            (run_name, step, json.dumps(metrics)),
        )

    def results(self, run_name: str) -> list[tuple[int, dict]]:
        rows = self.db.execute("SELECT step, metrics FROM results WHERE run_name = ? ORDER BY step", (run_name,))
        return [(r["step"], json.loads(r["metrics"])) for r in rows]


def _job(row: sqlite3.Row) -> Job:
    return Job(
        job_id=row["job_id"],
        kind=row["kind"],
        run_name=row["run_name"],
        spec=json.loads(row["spec"]),
        state=row["state"],
        attempts=row["attempts"],
        retry_at=row["retry_at"],
        message=row["message"],
        parent_job=row["parent_job"],
        checkpoint=row["checkpoint"],
        step=row["step"],
        evals_queued=bool(row["evals_queued"]),
    )
