"""What a Ray Train call per training step costs: `ray.train.report` (metrics only) and
`ray.train.get_preemption_info` (the barrier hierpt's loop asks every step), against the same loop without
either, measured in one run on a local Ray with real Ray Train worker groups.

Each worker's "step" is a fixed sleep (`--step-s`), so the difference is Ray Train's alone. A report is put on a
one-slot queue that Ray Train's controller empties once per health check (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S,
default 2 s), so a loop that reports every step cannot run faster than one step per health check; hierpt
therefore reports only with checkpoints (hierpt/train/loop.py).

    .venv/bin/python benchmarks/ray_report_cost.py [--steps 12] [--step-s 0.05] [--workers 2]

The last line is one JSON object: seconds per step of each variant and their ratios to the plain loop.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

VARIANTS = ("plain", "preemption_info", "report")


def loop(config: dict) -> None:
    import ray.train

    times = []
    for step in range(config["steps"]):
        time.sleep(config["step_s"])
        if config["variant"] == "preemption_info":
            ray.train.get_preemption_info()
        elif config["variant"] == "report":
            ray.train.report({"step": step})
        times.append(time.perf_counter())
    if ray.train.get_context().get_world_rank() == 0:
        with open(config["out"], "w") as f:
            json.dump(times, f)


def seconds_per_step(variant: str, args, storage: str) -> float:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out = os.path.join(storage, f"{variant}.json")
    TorchTrainer(
        loop,
        train_loop_config={"variant": variant, "steps": args.steps, "step_s": args.step_s, "out": out},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=args.workers),
        run_config=RunConfig(name=variant, storage_path=storage),
    ).fit()
    with open(out) as f:
        times = json.load(f)
    return statistics.median(b - a for a, b in zip(times[1:], times[2:]))  # the first step waits for the group


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--step-s", type=float, default=0.05, help="the simulated step's seconds")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from hierpt.ray_session import ray_session

    with ray_session(), tempfile.TemporaryDirectory() as storage:
        seconds = {variant: seconds_per_step(variant, args, storage) for variant in VARIANTS}
    result = {
        "workers": args.workers,
        "step_s": args.step_s,
        "seconds_per_step": {k: round(v, 3) for k, v in seconds.items()},
        "preemption_info_over_plain": round(seconds["preemption_info"] / seconds["plain"], 2),
        "report_over_plain": round(seconds["report"] / seconds["plain"], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
