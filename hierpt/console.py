"""What a command shows: its own results, one progress line per training step, each warning once; `--verbose`
for the rest.

Quiet is set where each line comes from, not by filtering output: Ray's start-up INFO lines (`ray.init`'s
logging level), Ray Train's per-report and worker-group INFO lines (its `LoggingConfig`), the `(pid=...)`
prefix on forwarded worker lines, DeepSpeed's prints (op build, zero checkpoint parsing), library
deprecation warnings, and every warning of ranks other than 0. `--verbose` (HIERPT_VERBOSE=1, which training
workers inherit) leaves every library at its own level and adds tracebacks to errors.

Off a terminal no ANSI codes are written (Ray's coloured prefixes included), and progress bars (rich, on
stderr) become one plain line per finished task, so CI logs get no redraws.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import TypeVar

VERBOSE = "HIERPT_VERBOSE"
T = TypeVar("T")


def verbose() -> bool:
    return os.environ.get(VERBOSE) == "1"


def is_terminal() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty()


@contextlib.contextmanager
def settings(verbose_flag: bool) -> Iterator[None]:
    """A command's settings, as environment variables its children (Ray, its workers) inherit; set before Ray is
    imported (it reads its prefix setting then) and taken back after, so a caller's process is as it was."""
    saved = dict(os.environ)
    if verbose_flag:
        os.environ[VERBOSE] = "1"
    if not is_terminal():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if not verbose():
        os.environ.setdefault("RAY_DISABLE_WORKER_LOG_PREFIX", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # DeepSpeed's bars in this process too (`worker_env`)
    try:
        yield
    finally:
        for name in (VERBOSE, "RAY_COLOR_PREFIX", "RAY_DISABLE_WORKER_LOG_PREFIX", "TQDM_DISABLE"):
            if name in saved:
                os.environ[name] = saved[name]
            else:
                os.environ.pop(name, None)


def ray_logging_level() -> str:
    """`ray.init`'s: its start-up banner is INFO."""
    return "INFO" if verbose() else "WARNING"


def train_logging_level() -> str:
    """Ray Train's `LoggingConfig`: 'Reporting training result', 'Checkpoint successfully created' and the
    worker group's start are INFO, on the controller and on every rank."""
    return "INFO" if verbose() else "WARNING"


def worker_env() -> dict[str, str]:
    """What a Ray worker needs to know to be as verbose as the driver; quiet, no tqdm bars (DeepSpeed's universal
    checkpoint converter draws them on stderr when a resume changes the world size; tqdm reads this at import)."""
    return {VERBOSE: "1"} if verbose() else {"TQDM_DISABLE": "1"}


def ray_runtime_env() -> dict:
    """The job-level runtime env of the local Ray that hierpt.ray_session starts: `worker_setup` in every worker
    process (the Train controller included), which inherits the driver's verbosity."""
    env = {"worker_process_setup_hook": "hierpt.console.worker_setup"}
    return {**env, "env_vars": worker_env()} if verbose() else env


def worker_setup() -> None:
    """Ray worker process setup hook. A worker's RAY_ADDRESS is its own cluster, so Ray code that finds 'the'
    cluster by discovery (Ray Train's placement group cleaner, its state actor) does not fail with a traceback
    ('Found multiple active Ray instances') on a machine that runs several; and the process is quiet."""
    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    quiet_process()


def quiet_process() -> None:
    """Unless --verbose: no deprecation warnings of the libraries underneath; no 'Reporting training result N:
    TrainingReport(...)' per report and rank (Ray Train logs it at INFO to a logger named by its file path,
    outside `ray.train`, so its LoggingConfig does not reach it); no traceback with Ray Train's own 'safe to
    ignore' notice that a resource request timed out on a busy machine; and one line, not a traceback, for Ray
    Train's 'Graceful shutdown of backend failed. This is expected if one of the workers has crashed' and for
    each 'Error in training function' (a rank whose group is torn down after another rank died prints one)."""
    if verbose():
        return
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    # by name, not by import: this runs in every Ray worker process, most of which never load Ray Train; as a
    # filter, because Ray Train's logging setup resets the levels of the `ray.train` loggers after this ran
    import ray

    train_context = os.path.join(os.path.dirname(ray.__file__), "train", "v2", "_internal", "execution", "context.py")
    logging.getLogger(train_context).addFilter(lambda record: record.levelno >= logging.WARNING)
    logging.getLogger("ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client").addFilter(
        lambda record: record.levelno >= logging.ERROR
    )
    logging.getLogger("ray.train.v2._internal.callbacks.backend_setup").addFilter(_without_traceback)
    logging.getLogger("ray.train.v2._internal.util").addFilter(_without_traceback)


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(: |$)")  # `module.Error: message` in a formatted traceback


def _without_traceback(record: logging.LogRecord) -> bool:
    """A log record's first line and, if its message is a formatted traceback, the exception's line from it."""
    record.exc_info, record.exc_text = None, None
    lines = record.getMessage().splitlines()
    if len(lines) > 1:
        raised = [line for line in lines[1:] if EXCEPTION_LINE.match(line)]
        record.msg, record.args = f"{lines[0]} {raised[-1] if raised else ''} (--verbose: the traceback)", ()
    return True


def quiet_worker(rank: int) -> None:
    """In a training worker (also on a Ray that hierpt did not start): warnings once, rank 0's."""
    quiet_process()
    if rank != 0 and not verbose():
        warnings.simplefilter("ignore")


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Around a library call that prints what only a developer needs (DeepSpeed's op build, its zero checkpoint
    parsing); with --verbose it prints."""
    if verbose():
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()):
        yield


class Task:
    """One line of progress: `advance` by units done, `note` for a short free text (MB/s, the current item)."""

    def __init__(self, bars, task_id, description: str, total: float | None):
        self.bars, self.task_id, self.description, self.total = bars, task_id, description, total
        self.done, self.text, self.started = 0.0, "", time.monotonic()

    def advance(self, amount: float = 1) -> None:
        self.done += amount
        self.bars.update(self.task_id, completed=self.done)

    def note(self, text: str) -> None:
        self.text = text
        self.bars.update(self.task_id, note=text)

    def line(self) -> str:
        count = f"{self.done:g}/{self.total:g}" if self.total is not None else f"{self.done:g}" if self.done else ""
        words = " ".join(part for part in (count, self.text) if part) or "done"
        return f"{self.description}: {words} ({time.monotonic() - self.started:.0f} s)"


_bars = None  # the live rich Progress while any `progress` block is open: nested blocks add their lines to it


@contextlib.contextmanager
def progress(description: str, total: float | None = None) -> Iterator[Task]:
    """A progress line on stderr for the block; nested blocks show below the outer one and go when done.
    Off a terminal: one plain line when the block is done (none for a total of 0, none if it raised)."""
    global _bars
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    owner = _bars is None
    if owner:
        _bars = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"), console=Console(stderr=True), disable=not is_terminal(),
        )  # fmt: skip
        _bars.start()
    bars = _bars
    task = Task(bars, bars.add_task(description, total=total, note=""), description, total)
    finished = False
    try:
        yield task
        finished = True
    finally:
        if bars.disable and finished and total != 0:  # a failure says so itself; nothing to do, nothing said
            print(task.line(), file=sys.stderr, flush=True)
        if owner:
            bars.stop()
            _bars = None
        else:
            bars.remove_task(task.task_id)


def track(description: str, items: Sequence[T]) -> Iterator[T]:
    """`progress` over a sequence: one step per item, counted once the loop body is done with it."""
    with progress(description, total=len(items)) as task:
        for item in items:
            yield item
            task.advance()


class Live:
    """A view redrawn in place on a terminal (`update`), with lines printed above it (`say`); off a terminal only
    the lines, so a log says what changed and holds no redraws."""

    def __init__(self):
        from rich.console import Console
        from rich.live import Live as RichLive

        self.live = RichLive(console=Console(stderr=True), auto_refresh=False) if is_terminal() else None

    def __enter__(self) -> Live:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.stop()

    def update(self, renderable) -> None:
        if self.live is not None:
            self.live.update(renderable, refresh=True)

    def say(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=sys.stderr, flush=True)
