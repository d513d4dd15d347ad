"""Where a run's scalars go: TensorBoard by default, Weights & Biases and MLflow when the spec's `tracking` lists them.

Rank 0's `MetricsLog` writes training scalars (``train/*``) at each completed step, with the run's spec once as
hyperparameters; an eval job of the scheduler writes a checkpoint's results (``eval/*``) at that checkpoint's
step into the same run (`log_eval`). W&B and MLflow take their settings from their own environment variables
(``WANDB_MODE``, ``WANDB_PROJECT``, ``WANDB_DIR``, ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``; a spec
forwards them with ``env``); hierpt names the project or experiment ``hierpt`` when they do not.

A resumed run repeats the steps after its checkpoint. TensorBoard gets ``purge_step``: readers drop what the
interrupted attempt logged from that step on, so every step keeps one value, the resumed attempt's. W&B ignores a
step at or below the last one it holds, so there the interrupted attempt's value stays; MLflow keeps every value
it is sent, so a repeated step holds both attempts' values in its history.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time

from hierpt.train.config import RunTracking


def _leaves(tree: dict, separator: str, prefix: str = "") -> dict[str, object]:
    """The leaves of nested dicts under their keys joined by `separator`."""
    leaves = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        leaves |= _leaves(value, separator, f"{name}{separator}") if isinstance(value, dict) else {name: value}
    return leaves


def flat_scalars(tree: dict) -> dict[str, float]:
    """The numbers of a nested result (an eval result JSON) under slash-joined keys; other leaves are left out."""
    return {
        name: float(value)
        for name, value in _leaves(tree, "/").items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def flat_params(tree: dict) -> dict[str, str | float | bool]:
    """A spec as dotted hyperparameters: numbers, strings and flags as they are, lists and nulls as text."""
    return {
        name: value if isinstance(value, (str, int, float, bool)) else str(value)
        for name, value in _leaves(tree, ".").items()
    }


def _run_id(tracking: RunTracking, job_type: str) -> str:
    """A stable W&B run id per run (and job type): a resumed run continues its own W&B run."""
    name = re.sub(r"[^A-Za-z0-9_-]", "-", os.path.basename(tracking.run_url.rstrip("/")))
    return f"{name}-{hashlib.sha256(tracking.run_url.encode()).hexdigest()[:8]}-{job_type}"


class TensorBoardSink:
    def __init__(self, directory: str, first_step: int, suffix: str = ""):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(directory, purge_step=first_step if first_step > 1 else None, filename_suffix=suffix)

    def hparams(self, params: dict, metrics: list[str]) -> None:
        """In this run's own event file (`add_hparams` would start a separate run beside it)."""
        from torch.utils.tensorboard.summary import hparams

        for summary in hparams(params, {metric: math.nan for metric in metrics}):
            self.writer.file_writer.add_summary(summary)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """One W&B run per hierpt run for training, and one beside it in the same group for its evals (two processes
    cannot write one W&B run); eval results are plotted against `checkpoint_step`, in whatever order they come."""

    def __init__(self, tracking: RunTracking, job_type: str):
        import wandb

        name = os.path.basename(tracking.run_url.rstrip("/"))
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "hierpt"), id=_run_id(tracking, job_type), resume="allow",
            name=name if job_type == "train" else f"{name}-{job_type}", group=name, job_type=job_type,
        )  # fmt: skip
        self.by_checkpoint = job_type != "train"
        if self.by_checkpoint:
            self.run.define_metric("checkpoint_step")
            self.run.define_metric("eval/*", step_metric="checkpoint_step")

    def hparams(self, params: dict, metrics: list[str]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log(self, scalars: dict[str, float], step: int) -> None:
        if self.by_checkpoint:
            self.run.log({**scalars, "checkpoint_step": step})
        else:
            self.run.log(scalars, step=step, commit=True)  # the step is complete: not held until the next

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    """The MLflow run tagged with the hierpt run's URL (made on first use): training and evals log into it."""

    TAG = "hierpt.run_url"

    def __init__(self, tracking: RunTracking):
        from mlflow import MlflowClient

        self.client = MlflowClient()
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "hierpt")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        found = self.client.search_runs([experiment_id], f"tags.`{self.TAG}` = '{tracking.run_url}'", max_results=1)
        if found:
            self.run_id = found[0].info.run_id
        else:
            run_name = os.path.basename(tracking.run_url.rstrip("/"))
            created = self.client.create_run(experiment_id, run_name=run_name, tags={self.TAG: tracking.run_url})
            self.run_id = created.info.run_id

    def hparams(self, params: dict, metrics: list[str]) -> None:
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        fresh = [Param(key, str(value)) for key, value in params.items() if key not in logged]  # params are immutable
        for start in range(0, len(fresh), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=fresh[start : start + 100])

    def log(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in scalars.items() if math.isfinite(value)]
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def close(self) -> None:
        pass  # the run stays open: a resume or a later eval logs into it again


class Tracker:
    """Every tracker a run lists; `first_step` is the first step this process logs (a resume's purge point)."""

    def __init__(self, tracking: RunTracking, first_step: int = 1, job_type: str = "train"):
        self.sinks = []
        for name in tracking.trackers:
            if name == "tensorboard" and tracking.tensorboard_dir:
                suffix = "" if job_type == "train" else f".{job_type}"
                self.sinks.append(TensorBoardSink(tracking.tensorboard_dir, first_step, suffix))
            elif name == "wandb":
                self.sinks.append(WandbSink(tracking, job_type))
            elif name == "mlflow":
                self.sinks.append(MlflowSink(tracking))

    def hparams(self, params: dict, metrics: list[str]) -> None:
        flat = flat_params(params)
        for sink in self.sinks:
            sink.hparams(flat, metrics)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.log(scalars, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def log_eval(tracking: RunTracking, result: dict, step: int) -> None:
    """A checkpoint's eval result (`hierpt.jobs.execute.evaluate_checkpoints`) as ``eval/*`` scalars at its step."""
    scalars = {f"eval/{key}": value for key, value in flat_scalars(result).items() if key != "step"}
    tracker = Tracker(tracking, job_type="eval")
    try:
        tracker.log(scalars, step)
    finally:
        tracker.close()
