"""What `hierpt jobs watch` shows: a live table of the jobs this watch has seen active, and one line per change
(a job's new state or attempt, with the scheduler's message: resubmissions and their reason), which is all a
log gets off a terminal (hierpt.console.Live)."""

from __future__ import annotations

from hierpt.console import Live
from hierpt.jobs.store import ACTIVE, Job


class JobsView:
    def __init__(self, live: Live):
        self.live = live
        self.seen: dict[str, tuple[str, int]] = {}  # job id -> (state, attempts) last shown

    def show(self, jobs: list[Job]) -> None:
        """After each scheduler tick: announce what changed, redraw the table."""
        shown = [job for job in jobs if job.job_id in self.seen or job.state in ACTIVE]
        for job in shown:
            if self.seen.get(job.job_id) != (job.state, job.attempts):
                self.live.say(change_line(job))
                self.seen[job.job_id] = (job.state, job.attempts)
        self.live.update(table(shown))


def change_line(job: Job) -> str:
    resubmits = f" (resubmitted {job.attempts}x)" if job.attempts else ""
    message = f": {job.message}" if job.message else ""
    return f"hierpt jobs: {job.job_id} {job.state}{resubmits}{message}"


def table(jobs: list[Job]):
    from rich.table import Table

    view = Table("job", "kind", "state", "resubmits", "message", box=None, pad_edge=False)
    for job in jobs:
        view.add_row(job.job_id, job.kind, job.state, str(job.attempts), job.message[:80])
    return view
