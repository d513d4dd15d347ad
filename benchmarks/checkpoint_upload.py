"""Checkpointing's share of training time with run storage on S3 (a local SeaweedFS server): `checkpoint.upload`
sync (the step waits for the upload) vs async (Ray uploads in the background; baseline: sync).

Real Ray Train fits of the `small` HAT on CPU, 2 workers, ZeRO-2, a checkpoint every `--every` steps. Step
times come from rank 0's step trace: the step right after a checkpoint carries that checkpoint's save (and,
with sync upload, the upload and commit), so checkpoint cost = median(step after a checkpoint) - median(plain
step), and its share = cost / (every x plain step + cost). With async upload the upload also competes with
the plain steps for CPU, which that share does not see, so the mean step time over all steps (checkpoint steps
included) is compared too. The first step (engine warm-up) is not counted. Both fits run in one process, sync
first; the last line is one JSON object with the async/sync ratios.

    .venv/bin/python benchmarks/checkpoint_upload.py [--steps 10] [--every 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fixtures.s3: the test suite's S3 server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--train-kb", type=int, default=20, help="sample-corpus text per language (8 languages)")
    args = parser.parse_args()

    import boto3
    import ray

    from hierpt.data.prep import prepare
    from hierpt.data.sample_corpus import sample_recipe, write_sample_corpus
    from hierpt.model.hat import HATConfig
    from hierpt.train.config import TrainJob
    from hierpt.train.run import train
    from tests.fixtures.s3 import seaweedfs_server

    config = HATConfig.from_name(args.preset)
    root = Path(tempfile.mkdtemp(prefix="hierpt-bench-upload-"))
    (root / "s3").mkdir()
    with seaweedfs_server(root / "s3") as server:  # exports the credentials before Ray starts: its workers hold them
        boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(root / "ray"), log_to_driver=False)
        write_sample_corpus(root / "corpus", train_bytes=args.train_kb * 1000)
        recipe = sample_recipe(root / "corpus", seq_words=config.seq_words, max_word_bytes=config.max_word_bytes,
                               rows_per_shard=128)  # fmt: skip
        prepare(recipe, str(root / "shards"), workers=2)

        def run(upload: str) -> dict:
            trace = root / f"trace-{upload}"
            job = TrainJob(name=upload, storage="s3://bench/runs", data={"shards": str(root / "shards")},
                           model={"preset": args.preset}, steps=args.steps, global_batch=4, micro_batch=2,
                           zero_stage=2, num_workers=2, checkpoint={"every": args.every, "upload": upload},
                           trace_dir=str(trace))  # fmt: skip
            train(job)
            lines = [json.loads(line) for line in (trace / "rank0.jsonl").open()]
            timed = [x for x in lines if x["step"] > 0]
            after = [x["seconds"] for x in timed if x["step"] % args.every == 0]
            plain = statistics.median(x["seconds"] for x in timed if x["step"] % args.every)
            cost = max(statistics.median(after) - plain, 0.0)
            return {"plain_step_s": plain, "checkpoint_s": cost, "share": cost / (args.every * plain + cost),
                    "mean_step_s": statistics.mean(x["seconds"] for x in timed)}  # fmt: skip

        try:
            results = {mode: run(mode) for mode in ("sync", "async")}
        finally:
            ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)  # ~3 GB of checkpoints in the S3 server's data
    for mode, r in results.items():
        print(f"{mode:5}: plain step {r['plain_step_s']:.2f} s, checkpoint adds {r['checkpoint_s']:.2f} s "
              f"-> {r['share']:.1%} of training time at every={args.every}; mean step {r['mean_step_s']:.2f} s")  # fmt: skip
    sync, async_ = results["sync"], results["async"]
    print(json.dumps({"benchmark": "checkpoint_upload", "preset": args.preset, "steps": args.steps,
                      "every": args.every, **{f"{m}_{k}": v for m, r in results.items() for k, v in r.items()},
                      "share_async_vs_sync": async_["share"] / sync["share"] if sync["share"] else float("nan"),
                      "mean_step_async_vs_sync": async_["mean_step_s"] / sync["mean_step_s"]}))  # fmt: skip


if __name__ == "__main__":
    main()
