import subprocess
import sys

import ray.exceptions
from ray.train import ControllerError, WorkerGroupError

from hierpt.jobs.execute import EXIT_INFRASTRUCTURE, EXIT_OWN_ERROR, exit_code_for


def test_exit_codes_separate_own_errors_from_lost_infrastructure():
    assert exit_code_for(FileNotFoundError("no shards")) == EXIT_OWN_ERROR
    assert exit_code_for(WorkerGroupError("x", {0: ValueError("fingerprint mismatch")})) == EXIT_OWN_ERROR
    lost = WorkerGroupError("x", {1: ray.exceptions.ActorDiedError()})
    assert exit_code_for(lost) == EXIT_INFRASTRUCTURE
    assert exit_code_for(ControllerError(RuntimeError("worker group failed to start"))) == EXIT_INFRASTRUCTURE
    assert exit_code_for(ZeroDivisionError()) == 1


def test_run_refuses_an_invalid_spec_with_exit_code_2_and_one_line(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("kind: pretrain\nname: r\nstorage: /tmp/x\ndata: {shards: /tmp/y}\nsteps: -3\n")
    result = subprocess.run([sys.executable, "-m", "hierpt.cli", "run", str(spec)], capture_output=True, text=True)
    assert result.returncode == EXIT_OWN_ERROR
    assert result.stderr.strip().count("\n") == 0 and "steps" in result.stderr
