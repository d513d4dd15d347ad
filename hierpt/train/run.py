"""Ray Train assembly: `train(job)` runs a TorchTrainer of `train_worker`s and returns a summary dict.

Fault tolerance is Ray's: a dead worker or node tears the group down and a fresh one resumes from the latest
committed checkpoint (`FailureConfig.max_failures`). Relaunching with the same run name and storage resumes
too (Ray restores the run from storage). `num_workers: [min, max]` makes the run elastic; a restart at a
different size goes through DeepSpeed's universal checkpoint format (hierpt/train/checkpoint.py).
The driver holds the run's lease for the whole fit (hierpt/train/lease.py): a second trainer of the run is
refused before it reads or writes any checkpoint.
A node preemption (a drain notice, then the node's loss) is charged to `elastic.max_preemption_failures`,
not to `max_failures`; while healthy, an elastic run checks every `elastic.resize_monitor_interval_s`
whether capacity came back and, if so, restarts at the larger size from the latest checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

from hierpt import console
from hierpt.data.shards import read_manifest
from hierpt.storage_env import s3_location, storage_settings
from hierpt.train import checkpoint
from hierpt.train.config import TrainJob
from hierpt.train.lease import Lease


def train(job: TrainJob) -> dict:
    manifest = read_manifest(job.data.shards)
    model_config = job.model.build_config(manifest, job.data.shards)  # once per run: the workers receive it
    job = resolve_start(job)
    if job.init_export:
        check_init_from(job, model_config)
    with Lease(job.run_url):
        previous = check_previous_run(job, model_config, manifest.fingerprint)
        if previous is not None and previous.step >= job.steps:
            print(f"run {job.run_url} already finished {previous.step} steps: nothing to train", flush=True)
            return summarize(job, checkpoint.run_result(job.run_url))
        return fit(job, model_config)


def fit(job: TrainJob, model_config) -> dict:
    import ray

    from hierpt.ray_session import ray_session

    with ray_session():
        os.environ.update(controller_env(job))
        use_gpu = job.device == "cuda" or (job.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
        result = _trainer(job, model_config, use_gpu).fit()
    return summarize(job, result)


def _trainer(job: TrainJob, model_config, use_gpu: bool):
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from hierpt.train.loop import train_worker

    return TorchTrainer(
        train_worker,
        train_loop_config={"job": job.model_dump(mode="json"), "model": model_config.to_dict()},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=job.num_workers, use_gpu=use_gpu,
            elastic_resize_monitor_interval_s=job.elastic.resize_monitor_interval_s,
        ),  # fmt: skip
        run_config=RunConfig(
            name=job.name,
            **ray_storage(job.storage),
            worker_runtime_env={"env_vars": worker_env(use_gpu)},
            failure_config=FailureConfig(
                max_failures=job.max_failures, max_preemption_failures=job.elastic.max_preemption_failures
            ),
            checkpoint_config=CheckpointConfig(num_to_keep=job.checkpoint.keep_last),
            logging_config=LoggingConfig(log_level=console.train_logging_level()),
        ),
    )


def summarize(job: TrainJob, result) -> dict:
    """The run's summary from Ray's result (of this fit, or read back from storage); exports if asked."""
    metrics = result.metrics
    summary = {
        "run": job.run_url,
        "steps": metrics["step"],
        "final_loss": metrics["loss"],
        "final_bits_per_byte": metrics["bits_per_byte"],
        "resumed_from_step": metrics["resumed_from_step"],
        "samples_consumed": metrics["samples_consumed"],
        "checkpoint": checkpoint.url(result.checkpoint),
        "export_path": None,
    }
    if job.export_to:
        summary["export_path"] = checkpoint.export(checkpoint.resolve(job.run_url), job.export_to)
    return summary


def resolve_start(job: TrainJob) -> TrainJob:
    """`init_from` made what the workers load: with `optimizer_state: keep` a checkpoint (a run: its latest),
    else an export (a run or checkpoint is exported once, to <run>/init-export)."""
    if job.init_checkpoint:
        return job.model_copy(update={"init_from": checkpoint.resolve_checkpoint(job.init_checkpoint)})
    if job.init_export:
        export = checkpoint.resolve_export(job.init_export, f"{job.run_url}/init-export")
        return job.model_copy(update={"init_from": export})
    return job


def check_init_from(job: TrainJob, model_config) -> None:
    """The export a run starts from has the spec's family and model config; checked before Ray starts a worker."""
    from hierpt.model.export import export_family, read_export_document

    document = read_export_document(job.init_from)
    family = export_family(document)
    if family.name != job.model.family:
        raise ValueError(f"init_from {job.init_from} is a {family.name} export, but model.family is {job.model.family}")
    if family.config_type.from_dict(document["model"]) != model_config:
        raise ValueError(f"init_from {job.init_from} holds a different model config than model: {job.model}")


def check_previous_run(job: TrainJob, model_config, fingerprint: str) -> checkpoint.TrainState | None:
    """The state of the run's latest checkpoint, if any; refuses, before any worker starts, to resume a run on
    other data or with another model."""
    try:
        latest = checkpoint.resolve(job.run_url)
    except FileNotFoundError:
        return None
    with latest.as_directory() as directory:
        state = checkpoint.read_state(Path(directory))
    if state.loader.fingerprint != fingerprint:
        raise ValueError(
            f"run {job.run_url} was trained on shards with fingerprint {state.loader.fingerprint}, but data.shards "
            f"{job.data.shards} has {fingerprint}: use a new run name (init_from for continued pretraining)"
        )
    if state.model != model_config.to_dict():
        raise ValueError(f"run {job.run_url} was trained with another model config than model: {job.model}")
    return state


def ray_storage(storage: str) -> dict:
    """RunConfig storage arguments. For s3:// the filesystem is built here with this process's endpoint and
    region, because Ray's controller and workers may run with an environment that lacks them. The keys are not
    given: pyarrow then pickles no secret into the RunConfig, and every process takes the credentials the
    cluster gave it (hierpt.storage_env)."""
    if not storage.startswith("s3://"):
        return {"storage_path": storage}
    from pyarrow.fs import S3FileSystem

    region, endpoint = s3_location()
    filesystem = S3FileSystem(region=region, endpoint_override=endpoint)
    return {"storage_path": storage.removeprefix("s3://"), "storage_filesystem": filesystem}


def controller_env(job: TrainJob) -> dict[str, str]:
    """Ray Train reads these from the driver's environment (and passes them to its controller): the spec's
    elastic settings; on a named cluster also state tracking, so the dashboard's Train tab lists hierpt's runs.
    Not on the embedded local Ray: its state actor finds its cluster by discovery, which fails with a traceback
    on a machine that runs other Ray instances."""
    env = {
        "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": str(job.elastic.notice_poll_interval_s),
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": str(job.elastic.worker_start_timeout_s),
    }
    if os.environ.get("RAY_ADDRESS"):
        env["RAY_TRAIN_ENABLE_STATE_TRACKING"] = "1"
    return env


def worker_env(use_gpu: bool) -> dict[str, str]:
    """Object-store settings the workers need for shards and fault markers (s3fs reads env; credentials are the
    cluster's own, hierpt.storage_env); on CPU also MKL's strict reproducibility mode (results independent of memory alignment), which bit-exact
    resume relies on. Ray Train's print patch is off: with it, every progress line reached the driver twice
    (once through the patched logger, once through Ray's stdout forwarding). --verbose reaches them too."""
    env = {**storage_settings(), **console.worker_env()}
    env["RAY_TRAIN_ENABLE_PRINT_PATCH"] = "0"
    if not use_gpu:
        env["MKL_CBWR"] = os.environ.get("MKL_CBWR", "AUTO,STRICT")
    return env

