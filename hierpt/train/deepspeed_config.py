"""The DeepSpeed config of a job at a given world size: the global batch stays fixed, accumulation absorbs W;
and DeepSpeed itself, imported the way every worker should import it."""

from __future__ import annotations

import sys
from types import ModuleType

from hierpt.data.loader import accumulation_steps
from hierpt.train.config import TrainJob


def deepspeed_config(job: TrainJob, world_size: int, load_universal: bool = False) -> dict:
    accumulation = accumulation_steps(job.global_batch, world_size, job.micro_batch)
    opt = job.optimizer
    zero: dict = {"stage": job.zero_stage}
    if job.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_batch_size": job.global_batch,
        "train_micro_batch_size_per_gpu": job.micro_batch,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": opt.grad_clip,
        # torch's AdamW: no C++ JIT build (DeepSpeed's FusedAdam/CPUAdam compile for ~100 s on CPU)
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": opt.lr,
                "betas": [opt.beta1, opt.beta2],
                "eps": opt.eps,
                "weight_decay": opt.weight_decay,
                "torch_adam": True,
            },
        },
        "zero_optimization": zero,
        "bf16": {"enabled": job.dtype == "bf16"},
        "checkpoint": {"load_universal": load_universal},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def import_deepspeed() -> ModuleType:
    """DeepSpeed without its autotuner's probe for MLflow: `deepspeed.autotuning` imports mlflow whenever it is
    installed (the `tracking` extra), 3.5 s of every worker's start on 2 cores (DeepSpeed 5.5 s with it, 2.0 s
    without), for a feature hierpt does not use. hierpt's own MLflow tracking imports mlflow itself."""
    if "deepspeed" in sys.modules:
        return sys.modules["deepspeed"]
    probe_blocked = "mlflow" not in sys.modules
    if probe_blocked:
        sys.modules["mlflow"] = None  # `import mlflow` raises ImportError, which the autotuner takes as absent
    try:
        import deepspeed
    finally:
        if probe_blocked:
            del sys.modules["mlflow"]
    return deepspeed
