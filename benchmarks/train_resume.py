"""Time to the first resumed training step at samples_consumed = 10^7 vs at 0 (target ratio <= 1.1).

What is timed, in one process (DeepSpeed ZeRO-2, world size 1, tiny HAT, CPU): a fresh engine, loading a real
DeepSpeed checkpoint, the deterministic loader positioned from its state, and one optimizer step. The shard
set is small, so 10^7 samples is thousands of epochs in: the loader must jump there without replaying.
Ray's worker restart (10-20 s here) is the same at any position and is left out.

    .venv/bin/python benchmarks/train_resume.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time

os.environ.setdefault("DS_ACCELERATOR", "cpu")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-kb", type=int, default=20, help="sample-corpus text per language (8 languages)")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))

    import deepspeed

    from hierpt.data.loader import DeterministicLoader, word_batch
    from hierpt.data.prep import prepare
    from hierpt.data.sample_corpus import sample_recipe, write_sample_corpus
    from hierpt.model.hat import HATConfig
    from hierpt.train.config import TrainJob
    from hierpt.train.loop import build_engine

    tiny = HATConfig.from_name("tiny")
    root = tempfile.mkdtemp(prefix="hierpt-bench-resume-")
    write_sample_corpus(f"{root}/corpus", train_bytes=args.train_kb * 1000)
    recipe = sample_recipe(f"{root}/corpus", seq_words=tiny.seq_words, max_word_bytes=tiny.max_word_bytes,
                           rows_per_shard=256)  # fmt: skip
    manifest = prepare(recipe, f"{root}/shards", workers=2)  # on a local Ray it starts and stops
    deepspeed.init_distributed("gloo")
    job = TrainJob(name="bench", storage=f"{root}/runs", data={"shards": f"{root}/shards"}, steps=10,
                   global_batch=8, micro_batch=2, zero_stage=2)  # fmt: skip

    def one_step(engine, loader) -> None:
        for micro in loader.next_step():
            engine.backward(engine(**micro.inputs).loss)
            engine.step()

    engine = build_engine(job, job.model.build(), 1, False)
    first = DeterministicLoader(job.data.shards, 0, 8, 2, 0, 1, word_batch(tiny.max_word_bytes))
    one_step(engine, first)
    engine.save_checkpoint(f"{root}/ckpt", tag="ds", client_state={"universal_checkpoint_info": {}})

    def resume_seconds(samples_consumed: int) -> tuple[float, float]:
        """(whole resume to the end of the first step, the loader's share: positioning + first batch)."""
        start = time.perf_counter()
        engine = build_engine(job, job.model.build(), 1, False)
        engine.load_checkpoint(f"{root}/ckpt", tag="ds")
        loader_start = time.perf_counter()
        state = first.state.model_copy(update={"samples_consumed": samples_consumed,
                                               "epoch": samples_consumed // manifest.total_rows})  # fmt: skip
        loader = DeterministicLoader(job.data.shards, 0, 8, 2, 0, 1, word_batch(tiny.max_word_bytes), state)
        loader.rows.sequences(loader.step_rows(loader.samples_consumed)[1])  # reads the rows the first step needs
        loader_seconds = time.perf_counter() - loader_start
        one_step(engine, loader)
        return time.perf_counter() - start, loader_seconds

    resume_seconds(0)  # warm-up
    runs = {0: [], 10**7: []}
    for _ in range(args.repeats):  # interleaved, so machine load affects both alike
        for consumed, seconds in runs.items():
            seconds.append(resume_seconds(consumed))
    (zero, zero_loader), (far, far_loader) = (
        tuple(statistics.median(x) for x in zip(*runs[consumed])) for consumed in runs
    )
    print(f"rows {manifest.total_rows}; first resumed step: at 0 {zero:.3f}s, at 1e7 {far:.3f}s; loader part "
          f"{zero_loader * 1e3:.1f} ms vs {far_loader * 1e3:.1f} ms (medians of {args.repeats})")  # fmt: skip
    print(json.dumps({"benchmark": "train_resume", "rows": manifest.total_rows, "seconds_at_0": zero,
                      "seconds_at_1e7": far, "ratio": far / zero, "loader_seconds_at_0": zero_loader,
                      "loader_seconds_at_1e7": far_loader, "loader_ratio": far_loader / zero_loader,
                      "target": 1.1}))  # fmt: skip


if __name__ == "__main__":
    main()
