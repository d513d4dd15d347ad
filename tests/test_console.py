import io
import logging
import os
import warnings

import pytest

from hierpt import console


@pytest.fixture
def quiet(monkeypatch):
    for name in (console.VERBOSE, "RAY_COLOR_PREFIX", "RAY_DISABLE_WORKER_LOG_PREFIX", "TQDM_DISABLE"):
        monkeypatch.delenv(name, raising=False)


def test_off_a_terminal_ray_writes_no_colour_codes_and_quiet_drops_the_worker_prefix(quiet, monkeypatch):
    monkeypatch.setattr(console, "is_terminal", lambda: False)
    with console.settings(verbose_flag=False):
        assert os.environ["RAY_COLOR_PREFIX"] == "0" and os.environ["RAY_DISABLE_WORKER_LOG_PREFIX"] == "1"
        assert os.environ["TQDM_DISABLE"] == "1"  # the driver's DeepSpeed bars (an export's shard loading)
        assert console.ray_logging_level() == "WARNING" and console.train_logging_level() == "WARNING"
        assert console.ray_runtime_env() == {"worker_process_setup_hook": "hierpt.console.worker_setup"}
        assert console.worker_env() == {"TQDM_DISABLE": "1"}
    assert "RAY_COLOR_PREFIX" not in os.environ and "TQDM_DISABLE" not in os.environ, "a command's settings end"


def test_verbose_reaches_the_workers_and_keeps_every_library_at_its_own_level(quiet, monkeypatch):
    monkeypatch.setattr(console, "is_terminal", lambda: True)
    with console.settings(verbose_flag=True):
        assert console.verbose() and "RAY_COLOR_PREFIX" not in os.environ
        assert "RAY_DISABLE_WORKER_LOG_PREFIX" not in os.environ and "TQDM_DISABLE" not in os.environ
        assert console.train_logging_level() == "INFO"
        assert console.ray_runtime_env()["env_vars"] == {console.VERBOSE: "1"}
    assert not console.verbose()


def test_library_prints_are_hidden_unless_verbose(quiet, monkeypatch, capsys):
    with console.quiet_stdout():
        print("DeepSpeed ... built successfully")
    monkeypatch.setenv(console.VERBOSE, "1")
    with console.quiet_stdout():
        print("shown")
    assert capsys.readouterr().out == "shown\n"


@pytest.mark.parametrize("rank", [0, 1])
def test_a_worker_shows_warnings_once_on_rank_0_and_no_library_deprecations(quiet, rank):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        console.quiet_worker(rank)
        warnings.warn("deprecated inside a library", FutureWarning)
        warnings.warn("the user's data looks odd", UserWarning)
    assert [str(w.message) for w in seen] == (["the user's data looks odd"] if rank == 0 else [])


def logged_verbose_then_quiet(monkeypatch, name: str, log) -> str:
    """What logger `name` writes when `log(logger)` runs once with --verbose and once without, in that order
    (the quiet filters, once added, stay)."""
    logger = logging.getLogger(name)
    monkeypatch.setattr(logger, "filters", [])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        for flag in ("1", "0"):
            monkeypatch.setenv(console.VERBOSE, flag)
            console.quiet_process()
            log(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_ray_trains_expected_shutdown_warning_after_a_crash_is_one_line_unless_verbose(quiet, monkeypatch):
    """What the demo's deliberate worker kill printed: the warning and a 20-line traceback of the dead actor."""

    def warn(logger):
        try:
            raise RuntimeError("the actor died")
        except RuntimeError:
            logger.warning("Graceful shutdown of backend failed.", exc_info=True)

    written = logged_verbose_then_quiet(monkeypatch, "ray.train.v2._internal.callbacks.backend_setup", warn)
    verbose_lines, quiet_lines = written.split("Graceful shutdown of backend failed.\n")[1:]
    assert quiet_lines == "" and "RuntimeError: the actor died" in verbose_lines


def test_a_training_function_error_is_one_line_naming_the_exception_unless_verbose(quiet, monkeypatch):
    """What the surviving rank printed when the demo killed the other one: a 25-line traceback."""
    formatted = (
        "Traceback (most recent call last):\n  File \"loop.py\", line 65, in train_worker\n    preemption = ...\n"
        "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.\n"
        "\tclass_name: SynchronizationActor\nThe actor is dead because it was killed by `ray.kill`.\n"
    )
    written = logged_verbose_then_quiet(
        monkeypatch, "ray.train.v2._internal.util", lambda log: log.error(f"Error in training function:\n{formatted}")
    )
    shown = written.splitlines()
    assert shown[1:8] == [*formatted.splitlines(), ""]  # verbose: the whole traceback
    assert shown[8:] == [
        "Error in training function: ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing "
        "this task. (--verbose: the traceback)"
    ]


def test_off_a_terminal_progress_is_one_plain_line_per_finished_task(quiet, monkeypatch, capsys):
    monkeypatch.setattr(console, "is_terminal", lambda: False)
    with console.progress("eval", total=2) as outer:
        for lang in ("en", "de"):
            with console.progress(f"eval {lang}", total=3) as inner:
                inner.advance(3)
                inner.note("12.5 MB/s")
            outer.advance()
    lines = capsys.readouterr().err.splitlines()
    shown = [line.rsplit(" (", 1)[0] for line in lines]
    assert shown == ["eval en: 3/3 12.5 MB/s", "eval de: 3/3 12.5 MB/s", "eval: 2/2"]
    assert all(line.endswith(" s)") and "\x1b" not in line for line in lines)


def test_on_a_terminal_progress_redraws_in_place_and_prints_no_extra_lines(quiet, monkeypatch, capsys):
    monkeypatch.setattr(console, "is_terminal", lambda: True)
    with console.progress("export", total=None) as task:
        task.advance()
    assert "export: 1 " not in capsys.readouterr().err


def test_off_a_terminal_a_tracked_loop_and_a_live_view_print_only_their_lines(quiet, monkeypatch, capsys):
    monkeypatch.setattr(console, "is_terminal", lambda: False)
    assert list(console.track("eval run: checkpoints", ["step-2", "step-4"])) == ["step-2", "step-4"]
    with console.progress("compare a b"), console.progress("nothing to do", total=0):
        pass
    with console.Live() as live:
        live.update("a table no log wants redrawn")
        live.say("hierpt jobs: tiny-pretrain succeeded")
    lines = [line.rsplit(" (", 1)[0] for line in capsys.readouterr().err.splitlines()]
    assert lines == ["eval run: checkpoints: 2/2", "compare a b: done", "hierpt jobs: tiny-pretrain succeeded"]


def test_a_task_that_failed_says_nothing_of_itself(quiet, monkeypatch, capsys):
    monkeypatch.setattr(console, "is_terminal", lambda: False)
    with pytest.raises(ValueError), console.progress("export", total=3) as task:
        task.advance()
        raise ValueError("no config.json")
    assert capsys.readouterr().err == ""
