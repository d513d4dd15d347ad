"""The per-worker function Ray Train runs: a DeepSpeed engine around the model, fed by the deterministic loader."""

from __future__ import annotations

import os
import time
from functools import partial

import ray.train
import ray.train.torch
import torch

from hierpt.console import quiet_stdout, quiet_worker
from hierpt.data.bpe import BPETokenizer
from hierpt.data.loader import DeterministicLoader, MicroBatch
from hierpt.data.shards import read_manifest
from hierpt.model.hat import group_parameters
from hierpt.train import checkpoint
from hierpt.train.config import TrainJob
from hierpt.train.deepspeed_config import deepspeed_config, import_deepspeed
from hierpt.train.faults import FaultInjector, StepTrace
from hierpt.train.metrics import MetricsLog, StepSums, peak_flops_per_device
from hierpt.train.schedule import lr_at, set_lr


def train_worker(config: dict) -> None:
    """Setup (model, restored state, loader, metrics), then the loop: step, log, checkpoint when due.

    Rank 0 logs every step itself (progress line, trackers, Prometheus gauges). Ray Train hears of the run only
    with each checkpoint: a report waits until Ray Train's controller has taken the previous one, and it takes
    one per health check (every 2 s), so reporting every step held training to one step per 2 s (measured: a
    2-worker tiny run at 1.97 s per step, 0.215 s without; benchmarks/RESULTS.md).

    `config` holds the job and the model config the driver made from it and the shards (`train.run.train`)."""
    job = TrainJob.model_validate(config["job"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    quiet_worker(rank)
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    family = job.model.model_family
    model_config = family.config_type.from_dict(config["model"])
    collate, tokenizer = family.inputs(model_config, read_manifest(job.data.shards), job.data.shards)
    engine, resumed = restore(job, model_config, tokenizer, world_size)
    start_step = 0 if resumed is None else resumed.step
    loader = DeterministicLoader(
        job.data.shards, job.data.seed, job.global_batch, job.micro_batch, rank, world_size, collate,
        None if resumed is None else resumed.loader,
    )  # fmt: skip
    log = MetricsLog(model_config, job.steps, world_size, peak_flops_per_device(job.peak_flops, device), rank == 0,
                     job.run_tracking(), start_step, job.model_dump(mode="json"))  # fmt: skip
    faults, trace = FaultInjector(job, rank), StepTrace(job.trace_dir, rank, world_size)
    preemption_saved = False

    for step in range(start_step, job.steps):
        lr = lr_at(step, job.steps, job.optimizer)
        micro_batches = loader.next_step()
        sums = train_step(engine, micro_batches, lr, device)
        metrics = log.step(step, sums, loader.samples_consumed, lr, engine.get_global_grad_norm(), loader.last_wait_s)
        metrics["resumed_from_step"] = None if resumed is None else start_step
        trace.record(step, micro_batches, metrics)
        faults.maybe_kill(step, during="step")

        preemption = ray.train.get_preemption_info()  # a barrier: every rank asks every step
        due = (step + 1) % job.checkpoint.every == 0 or step + 1 == job.steps
        just_in_time = preemption is not None and not preemption_saved  # once: the node is going anyway
        if due or just_in_time:
            state = checkpoint.TrainState(
                step=step + 1, loader=loader.state, world_size=world_size, zero_stage=job.zero_stage,
                family=job.model.family, model=model_config.to_dict(), deepspeed=deepspeed_config(job, world_size),
            )  # fmt: skip
            started = time.time()
            checkpoint.save(engine, state, metrics, rank, tokenizer,
                            before_commit=partial(faults.maybe_kill, step, "checkpoint"),
                            upload="sync" if just_in_time else job.checkpoint.upload)  # fmt: skip
            if just_in_time:
                preemption_saved = True
                trace.preemption(step + 1, preemption, started, time.time())
    loader.close()
    log.close()


def train_step(engine, micro_batches: list[MicroBatch], lr: float, device: torch.device) -> StepSums:
    """One optimizer step at learning rate `lr`: forward and backward of every micro-batch; DeepSpeed
    accumulates their gradients and, after the last one, clips them and steps AdamW."""
    set_lr(engine.optimizer, lr)
    sums = StepSums(device)
    for micro in micro_batches:
        output = engine(**{name: tensor.to(device) for name, tensor in micro.inputs.items()})
        engine.backward(output.loss)
        engine.step()
        sums.add(output)
    return sums


def restore(
    job: TrainJob, model_config, tokenizer: BPETokenizer | None, world_size: int
) -> tuple[object, checkpoint.TrainState | None]:
    """The engine and where training starts: the run's latest checkpoint (weights, optimizer, step and data
    position); else `init_from` with `optimizer_state: keep` (weights and optimizer, data from the start); else
    the spec's model, from `init_from`'s weights or seeded fresh ones. Returns (engine, the resumed state or None)."""
    given = job.init_checkpoint
    with checkpoint.latest_committed() as resume, checkpoint.from_url(None if resume else given) as initial:
        if initial is not None and initial.state.model != model_config.to_dict():
            raise ValueError(f"init_from {given} holds another model than model: {job.model}")
        if initial is not None and tokenizer is not None:
            found = job.model.model_family.saved_tokenizer(initial.directory)
            check_same_tokenizer(found, f"init_from {given}", tokenizer)
        restored = resume or initial
        model = build_model(job, model_config, tokenizer, fresh_start=resume is None)
        engine = build_engine(job, model, world_size, checkpoint.needs_universal(restored, world_size))
        if restored is not None:
            checkpoint.load(engine, restored, world_size)
    return engine, None if resume is None else resume.state


def check_same_tokenizer(found: BPETokenizer, source: str, tokenizer: BPETokenizer) -> None:
    """A baseline continued from `source` must keep the shards' vocabulary: the same id must mean the same bytes."""
    if found.sha256() != tokenizer.sha256():
        raise ValueError(
            f"{source} was trained with another tokenizer than data.shards: prepare the shards with "
            "`tokens.tokenizer` set to its tokenizer.json"
        )


def build_model(job: TrainJob, model_config, tokenizer: BPETokenizer | None, fresh_start: bool) -> torch.nn.Module:
    """The model from the spec; on a fresh start from an export (`init_from`), with its weights loaded."""
    if not (fresh_start and job.init_export):
        torch.manual_seed(job.seed)  # every rank and every restart starts from the same weights
        model = job.model.model_family.model_type(model_config)
    else:
        from hierpt.model.export import load_any_export

        model, exported_tokenizer = load_any_export(job.init_from)
        if not isinstance(model, job.model.model_family.model_type):
            raise ValueError(f"init_from {job.init_from} is not a {job.model.family} export (model.family)")
        if model.config != model_config:
            raise ValueError(f"init_from {job.init_from} holds a different model config than model: {job.model}")
        if tokenizer is not None:
            check_same_tokenizer(exported_tokenizer, f"init_from {job.init_from}", tokenizer)
    for group in job.freeze:
        for parameter in group_parameters(model, group):
            parameter.requires_grad_(False)
    return model.train()


def build_engine(job: TrainJob, model: torch.nn.Module, world_size: int, load_universal: bool):
    """DeepSpeed engine; no weight decay on norms (1-D parameters), as usual for Llama-style models."""
    deepspeed = import_deepspeed()
    trainable = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    config = deepspeed_config(job, world_size, load_universal)
    with quiet_stdout():  # DeepSpeed prints that it built its shared-memory op, on every rank
        engine, *_ = deepspeed.initialize(model=model, model_parameters=groups, config=config)
    return engine
