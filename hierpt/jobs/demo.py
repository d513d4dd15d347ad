"""The main job on the embedded default: the whole pipeline on one machine, in a few minutes.

Local Ray -> the built-in sample corpus -> prep (Ray Data) -> 2-worker ZeRO-2 training of `tiny` with a
worker SIGKILLed midway and resumed automatically -> export -> eval on held-out text -> generation.
The last line printed is one JSON object (resumed_from_step, final_loss, steps, export_path, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class DemoConfig(BaseModel):
    """Checkpoints every quarter of the run; the injected SIGKILL of the last worker falls 3/8 into it (between
    the first and second checkpoint: 45 of 120 steps), whatever `steps` is."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    workdir: str = "runs/demo"
    preset: str = "tiny"
    workers: int = Field(2, ge=1)
    steps: int = Field(120, ge=8)
    global_batch: int = Field(8, ge=1)
    kill: bool = True
    train_kb_per_language: int = Field(150, ge=1)
    prompt: str = "The"

    @property
    def checkpoint_every(self) -> int:
        return self.steps // 4

    @property
    def kill_at_step(self) -> int:
        return 3 * self.steps // 8


def run_demo(config: DemoConfig) -> dict:
    from hierpt.data.prep import prepare
    from hierpt.data.sample_corpus import HELD_BACK, LANGUAGES, sample_recipe, write_sample_corpus
    from hierpt.eval.evaluate import evaluate_model
    from hierpt.model.export import load_export
    from hierpt.model.generate import SamplingConfig, generate_text
    from hierpt.model.hat import HATConfig
    from hierpt.ray_session import ray_session
    from hierpt.train.config import (
        CheckpointSpec,
        DataSpec,
        FaultSpec,
        ModelSpec,
        OptimizerSpec,
        TrainJob,
    )
    from hierpt.train.run import train

    workdir = Path(config.workdir).resolve()
    corpus = workdir / "corpus"
    languages = tuple(lang for lang in LANGUAGES if lang not in HELD_BACK)  # fi: for continued pretraining
    write_sample_corpus(corpus, train_bytes=config.train_kb_per_language * 1000, eval_bytes=10_000)
    heldout = corpus / "heldout.jsonl"  # all languages, the held-back one included: it shows what was not seen

    model = HATConfig.from_name(config.preset)
    recipe = sample_recipe(corpus, languages, max_word_bytes=model.max_word_bytes, seq_words=model.seq_words)
    shards = str(workdir / "shards")
    job = TrainJob(
        name="tiny-demo",
        storage=str(workdir / "runs"),
        model=ModelSpec(preset=config.preset),
        data=DataSpec(shards=shards),
        optimizer=OptimizerSpec(lr=3e-3, warmup_steps=5, weight_decay=0.0),
        global_batch=config.global_batch,
        micro_batch=2,
        steps=config.steps,
        zero_stage=2,
        num_workers=config.workers,
        checkpoint=CheckpointSpec(every=config.checkpoint_every, keep_last=2),
        log_every=10,  # Ray reports (a barrier across workers) every 10 steps; the progress bar shows every step
        faults=[FaultSpec(kill_rank=config.workers - 1, at_step=config.kill_at_step)] if config.kill else [],
        export_to=str(workdir / "export"),
    )
    with ray_session():  # one Ray for both stages; worker output (the training progress) shows here
        manifest = prepare(recipe, shards, workers=config.workers)
        summary = train(job)
    exported = load_export(summary["export_path"])
    evaluation = evaluate_model(exported, None, str(heldout))
    sampling = SamplingConfig(max_words=20, temperature=0.8, top_p=0.95)  # greedy loops on a model this small
    sample = generate_text(exported, config.prompt, sampling)
    return {
        **summary,
        "shard_rows": manifest.total_rows,
        "heldout_bits_per_byte": evaluation["bits_per_byte"],
        "sample": config.prompt + sample,
    }


def main(workdir: str, steps: int | None = None) -> None:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # one machine: keep Ray on 127.0.0.1
    result = run_demo(DemoConfig(workdir=workdir, **({"steps": steps} if steps else {})))
    print(f"held-out bits/byte: {json.dumps(result['heldout_bits_per_byte'])}")
    print(f"sample: {result['sample']!r}")
    print(json.dumps(result))
