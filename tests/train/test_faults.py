"""An injected fault kills its rank once per run: the marker in run storage keeps a restarted worker alive."""

import pytest

from hierpt.train import faults
from hierpt.train.config import DataSpec, FaultSpec, TrainJob


@pytest.fixture
def kills(monkeypatch) -> list[int]:
    """The process ids the injector would have SIGKILLed."""
    killed = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, _signal: killed.append(pid))
    return killed


def job(tmp_path) -> TrainJob:
    fault = [FaultSpec(kill_rank=1, at_step=3), FaultSpec(kill_rank=1, at_step=5, during="checkpoint")]
    return TrainJob(name="r", storage=str(tmp_path), data=DataSpec(shards="/s"), steps=10, faults=fault)


def test_the_fault_fires_once_at_its_rank_step_and_phase(tmp_path, kills):
    other_rank, rank = faults.FaultInjector(job(tmp_path), 0), faults.FaultInjector(job(tmp_path), 1)
    other_rank.maybe_kill(3, "step")
    rank.maybe_kill(2, "step")
    rank.maybe_kill(3, "checkpoint")
    assert kills == []
    rank.maybe_kill(3, "step")
    assert len(kills) == 1
    faults.FaultInjector(job(tmp_path), 1).maybe_kill(3, "step")  # the restarted worker passes step 3 again
    assert len(kills) == 1
    rank.maybe_kill(5, "checkpoint")
    assert len(kills) == 2 and sorted(p.name for p in (tmp_path / "r" / "faults").iterdir()) == [
        "rank1-step3-step", "rank1-step5-checkpoint"
    ]
