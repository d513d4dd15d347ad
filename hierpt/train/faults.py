"""Demo and test aids: injected worker kills (one-shot per run) and a per-rank trace of executed steps.

A kill is a real SIGKILL of the worker process, as a crashed or reclaimed machine would look to Ray. Its
one-shot marker lives in run storage, so the restarted worker (and a relaunched driver) skip it.
"""

from __future__ import annotations

import json
import os
import signal
import time

import fsspec
import ray

from hierpt.train.config import FaultSpec, TrainJob


class FaultInjector:
    def __init__(self, job: TrainJob, rank: int):
        self.rank = rank
        self.faults = [f for f in job.faults if f.kill_rank == rank]
        self.marker_dir = f"{job.run_url}/faults"

    def maybe_kill(self, step: int, during: str) -> None:
        for fault in self.faults:
            if fault.at_step == step and fault.during == during:
                self._kill_once(fault)

    def _kill_once(self, fault: FaultSpec) -> None:
        fs, root = fsspec.core.url_to_fs(f"{self.marker_dir}/rank{fault.kill_rank}-step{fault.at_step}-{fault.during}")
        if fs.exists(root):
            return
        fs.makedirs(os.path.dirname(root), exist_ok=True)
        with fs.open(root, "w") as f:
            f.write(str(os.getpid()))
        print(f"fault injection: SIGKILL rank {self.rank} (pid {os.getpid()}) at step {fault.at_step}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


class StepTrace:
    """Appends one JSON line per executed step per rank: which samples it trained on, the global loss, where and
    when it ran; and one line per just-in-time checkpoint after a preemption notice."""

    def __init__(self, trace_dir: str | None, rank: int, world_size: int):
        self.path = None if trace_dir is None else os.path.join(trace_dir, f"rank{rank}.jsonl")
        self.rank, self.world_size = rank, world_size
        if self.path:
            os.makedirs(trace_dir, exist_ok=True)

    def record(self, step: int, micro_batches, metrics: dict) -> None:
        if self.path is None:
            return
        line = {
            "step": step,
            "rank": self.rank,
            "world_size": self.world_size,
            "positions": [p for m in micro_batches for p in m.positions],
            "rows": [r for m in micro_batches for r in m.rows],
            "loss": metrics["loss"],
            "resumed_from": metrics["resumed_from_step"],
            "seconds": metrics["step_seconds"],
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "time": time.time(),
        }
        self._append(self.path, line)

    def preemption(self, step: int, info, saved_at: float, committed_at: float) -> None:
        """A just-in-time checkpoint of `step` (the next step to run) after a preemption notice; rank 0 also
        prints it, as the user's record of how much of the drain window the checkpoint took."""
        deadline = None if info.deadline_ms is None else info.deadline_ms / 1000
        line = {"step": step, "rank": self.rank, "world_size": self.world_size, "ranks": info.preempted_ranks,
                "saved_at": saved_at, "committed_at": committed_at, "deadline": deadline}  # fmt: skip
        if self.rank == 0:
            left = "no deadline" if deadline is None else f"{deadline - committed_at:.1f} s before the deadline"
            print(f"preemption notice for rank(s) {info.preempted_ranks}: just-in-time checkpoint of step {step} "
                  f"committed in {committed_at - saved_at:.1f} s, {left}", flush=True)  # fmt: skip
        if self.path is not None:
            self._append(os.path.join(os.path.dirname(self.path), f"preemption-rank{self.rank}.jsonl"), line)

    @staticmethod
    def _append(path: str, line: dict) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")
