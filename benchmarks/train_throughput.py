"""Real Ray Train fits of the `small` HAT on CPU: steps/s with 2 workers vs 1 (same global batch), and the
checkpoint cost as a share of training time at the default checkpoint interval (target <= 5%).

Step times come from the workers' step trace (time between consecutive steps, so a step right after a
checkpoint carries that checkpoint's save + commit). The checkpoint share is measured with a checkpoint every
`--every` steps and extrapolated to the default interval (CheckpointSpec.every). The first step of a run
(engine warm-up) is not counted.

    .venv/bin/python benchmarks/train_throughput.py [--steps 8] [--every 3] [--global-batch 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--global-batch", type=int, default=4)
    parser.add_argument("--train-kb", type=int, default=20, help="sample-corpus text per language (8 languages)")
    args = parser.parse_args()

    import ray

    from hierpt.data.prep import prepare
    from hierpt.data.sample_corpus import sample_recipe, write_sample_corpus
    from hierpt.model.hat import HATConfig
    from hierpt.train.config import CheckpointSpec, TrainJob
    from hierpt.train.run import train

    small = HATConfig.from_name("small")
    root = Path(tempfile.mkdtemp(prefix="hierpt-bench-throughput-"))
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(root / "ray"), log_to_driver=False)
    write_sample_corpus(root / "corpus", train_bytes=args.train_kb * 1000)
    recipe = sample_recipe(root / "corpus", seq_words=small.seq_words, max_word_bytes=small.max_word_bytes,
                           rows_per_shard=128)  # fmt: skip
    prepare(recipe, str(root / "shards"), workers=2)

    def run(workers: int) -> tuple[list[float], list[float]]:
        """Step seconds of plain steps and of steps that follow a checkpoint, from rank 0's trace."""
        trace = root / f"trace-{workers}"
        job = TrainJob(name=f"w{workers}", storage=str(root / "runs"), data={"shards": str(root / "shards")},
                       model={"preset": "small"}, steps=args.steps, global_batch=args.global_batch, micro_batch=2,
                       zero_stage=2, num_workers=workers, checkpoint={"every": args.every}, trace_dir=str(trace))  # fmt: skip
        train(job)
        lines = [json.loads(line) for line in (trace / "rank0.jsonl").open()]
        after_checkpoint = [x["seconds"] for x in lines if x["step"] > 0 and x["step"] % args.every == 0]
        plain = [x["seconds"] for x in lines if x["step"] > 0 and x["step"] % args.every != 0]
        return plain, after_checkpoint

    one_plain, _ = run(1)
    two_plain, two_after = run(2)
    ray.shutdown()
    step_1, step_2 = statistics.median(one_plain), statistics.median(two_plain)
    checkpoint_cost = max(statistics.median(two_after) - step_2, 0.0)
    interval = CheckpointSpec().every
    share = checkpoint_cost / (interval * step_2 + checkpoint_cost)
    print(f"small, global batch {args.global_batch}: 1 worker {1 / step_1:.3f} steps/s, 2 workers {1 / step_2:.3f} "
          f"steps/s; checkpoint {checkpoint_cost:.2f}s -> {share:.2%} of time at every={interval}")  # fmt: skip
    print(json.dumps({"benchmark": "train_throughput", "preset": "small", "steps_per_s_1_worker": 1 / step_1,
                      "steps_per_s_2_workers": 1 / step_2, "speedup_2_vs_1": step_1 / step_2,
                      "checkpoint_seconds": checkpoint_cost, "default_every": interval,
                      "checkpoint_share": share, "checkpoint_share_target": 0.05}))  # fmt: skip


if __name__ == "__main__":
    main()
