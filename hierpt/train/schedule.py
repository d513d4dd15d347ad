"""Learning rate as a pure function of the step: linear warmup, then cosine decay to `min_lr_ratio` of the peak.

Being stateless, the schedule needs nothing in a checkpoint and survives any world-size change.
"""

from __future__ import annotations

import math

from hierpt.train.config import OptimizerSpec


def lr_at(step: int, total_steps: int, spec: OptimizerSpec) -> float:
    """Learning rate of 0-based `step` in a run of `total_steps` optimizer steps."""
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    decay_steps = max(total_steps - spec.warmup_steps, 1)
    progress = min((step - spec.warmup_steps) / decay_steps, 1.0)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return spec.lr * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * cosine)


def set_lr(optimizer, lr: float) -> None:
    """Set the lr of every parameter group (DeepSpeed's ZeRO wrappers expose the inner groups)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
