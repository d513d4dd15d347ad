"""The main job on the embedded default: the whole pipeline on one machine, in a few minutes.

The demo is a job spec (`demo.yaml` beside this file) run by the executor every spec runs through; this
module writes the built-in sample corpus and its recipe, points the spec at a working directory, and prints
the summary. The last line printed is one JSON object (resumed_from_step, final_loss, steps, export_path, ...).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import fsspec
import yaml

SPEC = Path(__file__).with_name("demo.yaml")
TRAINING_STAGE = 1  # the index of the pretrain stage in demo.yaml
MIN_STEPS = 8  # a checkpoint every quarter of the run and the kill between the first two need 8 steps


def demo_spec(workdir: Path, steps: int | None = None):
    """demo.yaml with its paths under `workdir`; `steps` rescales the run, its checkpoints and the kill."""
    from hierpt.jobs.specs import absolute_paths, apply_overrides, parse_spec

    raw = absolute_paths(yaml.safe_load(SPEC.read_text()), workdir)
    if steps is not None:
        if steps < MIN_STEPS:
            raise ValueError(f"the demo needs at least {MIN_STEPS} steps (a checkpoint every quarter), got {steps}")
        stage = f"stages.{TRAINING_STAGE}"
        rescaled = {"steps": steps, "checkpoint.every": steps // 4, "faults.0.at_step": 3 * steps // 8}
        raw = apply_overrides(raw, [f"{stage}.{field}={value}" for field, value in rescaled.items()])
    return parse_spec(raw, str(SPEC))


def write_corpus(workdir: Path) -> None:
    """The sample corpus without the held-back language (fi: for continued pretraining) in its training
    split, held-out text of all languages, and a recipe cutting it to the tiny preset's shape."""
    from hierpt.data.sample_corpus import HELD_BACK, LANGUAGES, sample_recipe, write_sample_corpus
    from hierpt.model.hat import HATConfig

    corpus = workdir / "corpus"
    write_sample_corpus(corpus, train_bytes=150_000, eval_bytes=10_000)
    tiny = HATConfig.from_name("tiny")
    languages = tuple(lang for lang in LANGUAGES if lang not in HELD_BACK)
    recipe = sample_recipe(corpus, languages, max_word_bytes=tiny.max_word_bytes, seq_words=tiny.seq_words)
    (corpus / "recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))


def run_demo(workdir: str, steps: int | None = None) -> dict:
    from hierpt.jobs.execute import execute
    from hierpt.ray_session import ray_session

    root = Path(workdir).resolve()
    spec = demo_spec(root, steps)
    write_corpus(root)
    with ray_session():  # one Ray for all stages; worker output (the training progress) shows here
        summary = execute(spec)
    stages = dict(zip((stage.kind for stage in spec.jobs()), summary["stages"]))
    with fsspec.open(stages["eval"]["results"][0]) as f:
        evaluation = json.load(f)
    return {
        **stages["pretrain"],
        "shard_rows": stages["prep"]["rows"],
        "heldout_bits_per_byte": evaluation["bits_per_byte"],
        "sample": next(iter(evaluation["samples"].values())),
    }


def main(workdir: str, steps: int | None = None) -> None:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # one machine: keep Ray on 127.0.0.1
    result = run_demo(workdir, steps)
    print(f"held-out bits/byte: {json.dumps(result['heldout_bits_per_byte'])}")
    print(f"sample: {result['sample']!r}")
    print(json.dumps(result))
