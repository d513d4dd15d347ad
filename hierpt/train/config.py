"""The training job spec: typed, validated once, plain data (stored in checkpoints, passed to Ray workers).

YAML loads into `TrainJob`; a bad field is reported with its path (e.g. ``optimizer.warmup_steps``).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from torch import nn

from hierpt.data.loader import batch_splits
from hierpt.data.shards import Manifest
from hierpt.model.family import FAMILIES, Family, FamilyName

# A run name becomes one directory under `storage`: one path component, never `..` or a nested path.
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Fields older specs may still hold, and what replaced them.
REMOVED_FIELDS = {
    "init_from_checkpoint": "now init_from with optimizer_state: keep",
    "log_every": "removed: every step is logged (progress, trackers); Ray Train hears of the run with each "
    "checkpoint only (a report every N steps held training to one step per Ray Train health check, 2 s)",
}


def check_run_name(value: str) -> str:
    if not RUN_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a run name: one path component of letters, digits, '.', '_' and '-' "
            "(not starting with '.' or '-', at most 128 characters)"
        )
    return value


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Spec):
    """A family's preset plus field overrides; `build_config` is the one place a model config is made.

    The shape fields (`seq_words` and `max_word_bytes`, `seq_tokens`) come from the shards' manifest: a spec
    leaves them out. `family: baseline` trains the paper's BPE baseline (hierpt/model/baseline.py) on token shards.
    """

    family: FamilyName = "hat"
    preset: str = "tiny"
    overrides: dict = Field(default_factory=dict)

    @property
    def model_family(self) -> Family:
        return FAMILIES[self.family]

    def build_config(self, shards: Manifest | None = None, url: str = ""):
        """The model config; with the manifest of the shard set at `url`, shaped as those shards."""
        return self.model_family.config(self.preset, self.overrides, shards, url)

    def build(self) -> nn.Module:
        return self.model_family.model_type(self.build_config())


class DataSpec(Spec):
    shards: str  # shard-set URL (directory holding manifest.json)
    seed: int = 0


class OptimizerSpec(Spec):
    """AdamW with linear warmup and cosine decay; defaults from the HAT paper."""

    lr: float = Field(3e-4, gt=0)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(500, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    grad_clip: float = Field(1.0, ge=0)  # 0 = no clipping


class CheckpointSpec(Spec):
    every: int = Field(100, ge=1)  # steps between checkpoints; one is always written at the end
    keep_last: int = Field(3, ge=1)
    # "async": periodic checkpoints upload in the background while training goes on (the next checkpoint
    # waits for it; a crash before it is committed falls back to the one before); "sync": the step waits for
    # the upload. A preemption checkpoint always uploads at once.
    upload: Literal["sync", "async"] = "sync"


class ElasticSpec(Spec):
    """Spot capacity: how often a healthy run checks for capacity to grow into, and how many node
    preemptions it resumes from (counted apart from `max_failures`, which is for real crashes)."""

    resize_monitor_interval_s: float = Field(60.0, gt=0)  # Ray's elastic_resize_monitor_interval_s
    max_preemption_failures: int = Field(-1, ge=-1)  # -1 = resume after every preemption
    notice_poll_interval_s: float = Field(1.0, gt=0)  # how soon a drain notice reaches the workers (Ray: 5)
    # a restart that asks for more workers than still exist (the controller's view of a lost node lags)
    # gives up after this long and restarts with what fits
    worker_start_timeout_s: float = Field(60.0, gt=0)


class FaultSpec(Spec):
    """Demo/test fault: SIGKILL the worker process of `kill_rank` once per run, after step `at_step`."""

    kill_rank: int = Field(ge=0)
    at_step: int = Field(ge=0)
    during: Literal["step", "checkpoint"] = "step"  # "checkpoint": after its own files are saved, before commit


TrackerName = Literal["tensorboard", "wandb", "mlflow"]


class RunTracking(Spec):
    """Where a run's scalars go (hierpt/train/tracking.py); an eval job of the run carries it too."""

    run_url: str
    trackers: list[TrackerName]
    tensorboard_dir: str | None = None  # None: no TensorBoard (remote storage without a tensorboard_dir)


class TrainJob(Spec):
    name: str
    storage: str  # run storage: a local directory or s3://bucket/prefix
    model: ModelSpec = ModelSpec()
    data: DataSpec
    optimizer: OptimizerSpec = OptimizerSpec()
    global_batch: int = Field(8, ge=1)  # sequences per optimizer step, whatever the worker count
    micro_batch: int = Field(1, ge=1)  # sequences per forward pass on one worker
    steps: int = Field(ge=1)
    seed: int = 0  # model initialisation (the data order has its own seed in data.seed)
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    dtype: Literal["fp32", "bf16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_workers: int | tuple[int, int] = 2  # an int, or [min, max] for elastic training
    max_failures: int = Field(3, ge=-1)  # -1 = retry forever
    elastic: ElasticSpec = ElasticSpec()
    checkpoint: CheckpointSpec = CheckpointSpec()
    tensorboard_dir: str | None = None  # default: <storage>/<name>/tensorboard when storage is local
    tracking: list[TrackerName] = Field(default_factory=lambda: ["tensorboard"])  # W&B / MLflow beside it, or not
    peak_flops: float | None = None  # per device, for MFU; default from a table (GPU), none on CPU (no MFU)
    faults: list[FaultSpec] = Field(default_factory=list)
    # Where a new run starts, data from the start: an export, a run (its latest checkpoint) or a checkpoint.
    init_from: str | None = None
    optimizer_state: Literal["reset", "keep"] = "reset"  # keep: also init_from's AdamW moments (not an export)
    freeze: list[Literal["encoder", "backbone", "decoder"]] = Field(default_factory=list)  # kept as they are
    export_to: str | None = None  # export the final checkpoint here after training
    trace_dir: str | None = None  # debug/test: per-rank JSONL of every executed step (samples, loss)

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, value):
        low, high = (value, value) if isinstance(value, int) else value
        if not 1 <= low <= high:
            raise ValueError(f"needs 1 <= min <= max, got {value}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_run_name(value)

    @field_validator("tracking")
    @classmethod
    def _trackers_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"lists a tracker twice: {value}")
        missing = [name for name in value if importlib.util.find_spec(name) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} not installed here (pip install 'hierpt[tracking]')")
        return value

    @field_validator("freeze")
    @classmethod
    def _something_trains(cls, value: list[str]) -> list[str]:
        if len(set(value)) == 3:
            raise ValueError("freezing encoder, backbone and decoder leaves nothing to train")
        return value

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str) -> str:
        return value if "://" in value else str(Path(value).expanduser().resolve())

    @model_validator(mode="before")
    @classmethod
    def _removed_fields(cls, data):
        for field, why in REMOVED_FIELDS.items():
            if isinstance(data, dict) and field in data:
                raise ValueError(f"{field}: {why}")
        return data

    @model_validator(mode="after")
    def _one_starting_point(self) -> TrainJob:
        if self.optimizer_state == "keep" and not self.init_from:
            raise ValueError("optimizer_state: keep needs init_from (a run or checkpoint whose optimizer to keep)")
        if self.optimizer_state == "keep" and self.freeze:
            raise ValueError("optimizer_state: keep carries every parameter's optimizer state: it cannot freeze some")
        return self

    @model_validator(mode="after")
    def _batch_fits_every_world_size(self) -> TrainJob:
        """An elastic run may restart at any size in its range: each must split the global batch evenly."""
        low, high = self.worker_range
        misfits = [w for w in range(low, high + 1) if not batch_splits(self.global_batch, w, self.micro_batch)]
        if misfits:
            shown = ", ".join(map(str, misfits[:5])) + (", ..." if len(misfits) > 5 else "")
            raise ValueError(
                f"global_batch {self.global_batch} is not a multiple of micro_batch {self.micro_batch} x workers "
                f"for num_workers {shown} (every size in num_workers can occur on a restart)"
            )
        return self

    @model_validator(mode="after")
    def _faults_in_range(self) -> TrainJob:
        max_workers = self.num_workers if isinstance(self.num_workers, int) else self.num_workers[1]
        for i, fault in enumerate(self.faults):
            if fault.kill_rank >= max_workers or fault.at_step >= self.steps:
                raise ValueError(f"faults.{i}: rank {fault.kill_rank} / step {fault.at_step} is outside the run")
        return self

    @property
    def run_url(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"

    @property
    def init_export(self) -> str | None:
        """The export whose weights a fresh run starts from (`init_from` resolved by `train.run.train`)."""
        return self.init_from if self.optimizer_state == "reset" else None

    @property
    def init_checkpoint(self) -> str | None:
        """The checkpoint whose weights and optimizer a fresh run starts from (resolved as `init_export`)."""
        return self.init_from if self.optimizer_state == "keep" else None

    @property
    def worker_range(self) -> tuple[int, int]:
        return (self.num_workers, self.num_workers) if isinstance(self.num_workers, int) else self.num_workers

    def resolved_tensorboard_dir(self) -> str | None:
        if self.tensorboard_dir or "://" in self.storage:
            return self.tensorboard_dir
        return os.path.join(self.run_url, "tensorboard")

    def run_tracking(self) -> RunTracking:
        return RunTracking(run_url=self.run_url, trackers=self.tracking, tensorboard_dir=self.resolved_tensorboard_dir())
