from dataclasses import replace

from hierpt.jobs.store import Job
from hierpt.jobs.watch import JobsView, table

TRAIN = Job(job_id="tiny-pretrain", kind="pretrain", run_name="tiny", spec={}, state="running", attempts=0,
            retry_at=0.0, message="", parent_job=None, checkpoint=None, step=None, evals_queued=False)  # fmt: skip
OLD = replace(TRAIN, job_id="last-week", state="succeeded")


class Recorder:
    def __init__(self):
        self.lines, self.tables = [], []

    def say(self, line: str) -> None:
        self.lines.append(line)

    def update(self, renderable) -> None:
        self.tables.append(renderable)


def test_a_watch_announces_each_change_once_and_a_resubmission_with_its_reason():
    live = Recorder()
    view = JobsView(live)
    view.show([OLD, TRAIN])
    view.show([OLD, TRAIN])  # nothing changed: nothing said
    resubmitted = replace(TRAIN, state="queued", attempts=1, message="resubmitting after: STOPPED (exit code 143)")
    view.show([OLD, resubmitted])
    view.show([OLD, replace(resubmitted, state="succeeded", message="")])
    assert live.lines == [
        "hierpt jobs: tiny-pretrain running",
        "hierpt jobs: tiny-pretrain queued (resubmitted 1x): resubmitting after: STOPPED (exit code 143)",
        "hierpt jobs: tiny-pretrain succeeded (resubmitted 1x)",
    ]
    # the table holds the jobs seen active in this watch, not the store's history
    assert [table.row_count for table in live.tables] == [1, 1, 1, 1]
    assert table([TRAIN, OLD]).row_count == 2
