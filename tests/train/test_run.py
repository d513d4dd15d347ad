"""End-to-end training on a real local Ray with 2 CPU workers, real DeepSpeed ZeRO, SIGKILLed workers.

Each test combines several guarantees per Ray Train fit, because a fit costs 15-40 s on 2 cores. The proof of
exact resume is the per-rank step trace: a step that runs again after a restart must reproduce the loss of its
first execution bit for bit, on the same samples.
"""

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from hierpt.cli import main as cli
from hierpt.data.loader import DeterministicLoader, word_batch
from hierpt.data.shards import read_manifest
from hierpt.model.baseline import Baseline
from hierpt.model.export import load_any_export, load_export
from hierpt.model.hat import HAT
from hierpt.train import checkpoint
from hierpt.train.config import TrainJob
from hierpt.train.run import train
from tests.train.conftest import TOKEN_SEQ

GLOBAL_BATCH = 4


pytestmark = pytest.mark.integration


def make_job(name, storage, shards, trace_dir, **fields) -> TrainJob:
    spec = {
        "name": name,
        "storage": str(storage),
        "data": {"shards": shards, "seed": 7},
        "global_batch": GLOBAL_BATCH,
        "micro_batch": 1,
        "optimizer": {"lr": 3e-3, "warmup_steps": 2},
        "trace_dir": str(trace_dir),
        "max_failures": 3,
        **fields,
    }
    return TrainJob.model_validate(spec)


def read_trace(trace_dir) -> list[dict]:
    return [json.loads(line) for path in sorted(Path(trace_dir).glob("rank*.jsonl")) for line in path.open()]


def assert_reexecuted_steps_match(trace: list[dict]) -> int:
    """Every execution of a (step, rank) saw the same samples and the same global loss; returns re-run count."""
    runs = defaultdict(list)
    for line in trace:
        runs[line["step"], line["rank"], line["world_size"]].append(line)
    for key, executions in runs.items():
        assert len({e["loss"] for e in executions}) == 1, f"step {key} lost bit-exactness: {executions}"
        assert len({tuple(e["positions"]) for e in executions}) == 1
    return sum(len(e) - 1 for e in runs.values())


def final_records(trace: list[dict]) -> dict[int, list[dict]]:
    """Per step, one record per rank (re-executions are identical, see above); a step ran at one world size."""
    by_step: dict[int, dict] = defaultdict(dict)
    for line in trace:
        by_step[line["step"]][line["rank"], line["world_size"]] = line
    for step, records in by_step.items():
        assert len({ws for _, ws in records}) == 1, f"step {step} ran at several world sizes"
    return {step: list(records.values()) for step, records in by_step.items()}


def assert_global_order(trace: list[dict], steps: int, total_rows: int) -> None:
    """Step s trained on exactly global samples [s·B, (s+1)·B): none skipped, none repeated, rows unique per epoch."""
    final = final_records(trace)
    assert sorted(final) == list(range(steps))
    seen_rows = defaultdict(set)
    for step, records in final.items():
        positions = sorted(p for r in records for p in r["positions"])
        assert positions == list(range(step * GLOBAL_BATCH, (step + 1) * GLOBAL_BATCH)), f"step {step}"
        for r in records:
            for position, row in zip(r["positions"], r["rows"]):
                epoch = position // total_rows
                assert row not in seen_rows[epoch], f"row {row} repeated in epoch {epoch}"
                seen_rows[epoch].add(row)


def test_zero1_on_s3_survives_two_sigkills_bit_exactly_and_repeats_no_sample(s3, ray_local, shards_a, tmp_path):
    storage = f"s3://{s3.new_bucket()}/runs"
    faults = [{"kill_rank": 1, "at_step": 4}, {"kill_rank": 0, "at_step": 8}]
    job = make_job("zero1", storage, shards_a, tmp_path / "trace", zero_stage=1, steps=10,
                   checkpoint={"every": 3}, faults=faults)  # fmt: skip
    summary = train(job)

    trace = read_trace(tmp_path / "trace")
    assert summary["steps"] == 10 and summary["samples_consumed"] == 10 * GLOBAL_BATCH
    assert summary["checkpoint"].startswith("s3://")
    assert summary["resumed_from_step"] in (6, 9)  # the latest checkpoint Ray had registered before the kill
    assert len({line["pid"] for line in trace if line["rank"] == 0}) == 3, "expected two restarts"
    assert assert_reexecuted_steps_match(trace) >= 2
    assert_global_order(trace, 10, read_manifest(shards_a).total_rows)

    # relaunch on 1 worker: autoresume from S3 through a universal checkpoint (ZeRO-1 needs client_state info)
    resized = train(job.model_copy(update={"num_workers": 1, "steps": 11, "faults": []}))
    assert resized["resumed_from_step"] == 10 and resized["steps"] == 11
    trace = read_trace(tmp_path / "trace")
    assert [line["world_size"] for line in trace if line["step"] == 10] == [1]
    assert_global_order(trace, 11, read_manifest(shards_a).total_rows)


def test_zero2_kill_while_checkpointing_then_resize_export_and_continue_on_new_shards(
    ray_local, shards_a, shards_b, tmp_path
):
    storage, trace_dir = tmp_path / "runs", tmp_path / "trace"
    kill = [{"kill_rank": 1, "at_step": 5, "during": "checkpoint"}]
    first = train(make_job("zero2", storage, shards_a, trace_dir, zero_stage=2, steps=7, num_workers=2,
                           checkpoint={"every": 3}, faults=kill))  # fmt: skip
    # the step-6 checkpoint never committed (rank 1 died before reporting it): the run resumed from step 3
    assert first["resumed_from_step"] == 3 and first["steps"] == 7
    assert assert_reexecuted_steps_match(read_trace(trace_dir)) >= 2 * 3  # steps 3-5 on both ranks

    # relaunch with the same name on 1 worker: autoresume through a universal checkpoint, keeping the data order
    export_dir = tmp_path / "export"
    second = train(make_job("zero2", storage, shards_a, trace_dir, zero_stage=2, steps=9, num_workers=1,
                            checkpoint={"every": 3}, export_to=str(export_dir)))  # fmt: skip
    assert second["resumed_from_step"] == 7 and second["export_path"] == str(export_dir)
    trace = read_trace(trace_dir)
    assert [line["world_size"] for line in trace if line["step"] >= 7] == [1, 1]
    assert_global_order(trace, 9, read_manifest(shards_a).total_rows)
    events = EventAccumulator(str(storage / "zero2" / "tensorboard"))  # rank 0 writes TensorBoard
    events.Reload()
    # steps 4-6 ran twice (the kill), and the relaunch resumed from 7: one value per step all the same
    assert [event.step for event in events.Scalars("train/loss")] == list(range(1, 10))

    # the same run on other shards is refused before any worker starts
    with pytest.raises(ValueError, match="fingerprint"):
        train(make_job("zero2", storage, shards_b, trace_dir, zero_stage=2, steps=12, num_workers=1))

    # `hierpt export` of the run directory gives the same weights as the export at the end of training
    cli(["export", str(storage / "zero2"), "--output", str(tmp_path / "cli-export")])
    exported = load_export(str(export_dir))
    again = load_export(str(tmp_path / "cli-export"))
    for (name, tensor), other in zip(exported.state_dict().items(), again.state_dict().values()):
        assert torch.equal(tensor, other), name

    # continued pretraining: weights from the export, new optimizer, new shards from their first sample
    cont_trace = tmp_path / "trace-cont"
    cont = train(make_job("zero2-cont", storage, shards_b, cont_trace, zero_stage=2, steps=2, num_workers=1,
                          init_from=str(export_dir), freeze=["backbone"], export_to=str(tmp_path / "cont")))  # fmt: skip
    assert cont["resumed_from_step"] is None and cont["samples_consumed"] == 2 * GLOBAL_BATCH
    state = checkpoint.read_state(Path(cont["checkpoint"]))
    assert state.loader.fingerprint == read_manifest(shards_b).fingerprint and state.step == 2
    first_step = min(read_trace(cont_trace), key=lambda line: line["step"])
    assert first_step["loss"] == pytest.approx(first_batch_loss(exported, shards_b), rel=1e-4)
    assert first_step["loss"] < first_batch_loss(HAT(exported.config), shards_b) - 0.2  # not a fresh model
    continued = load_export(str(tmp_path / "cont")).state_dict()
    for name, tensor in exported.state_dict().items():  # the frozen backbone stayed, the byte modules learned
        assert torch.equal(tensor, continued[name]) == name.startswith("backbone."), name

    # keeping the optimizer: weights *and* AdamW moments of the run's latest checkpoint, data from sample 0
    latest = checkpoint.resolve(str(storage / "zero2")).path
    runs = {}
    starts = {"keep": {"init_from": latest, "optimizer_state": "keep"}, "reset": {"init_from": str(export_dir)}}
    for name, start in starts.items():
        runs[name] = train(make_job(f"zero2-{name}", storage, shards_b, tmp_path / f"trace-{name}", zero_stage=2,
                                    steps=2, num_workers=1, export_to=str(tmp_path / name), **start))  # fmt: skip
    assert runs["keep"]["resumed_from_step"] is None and runs["keep"]["samples_consumed"] == 2 * GLOBAL_BATCH
    first_loss = {name: min(read_trace(tmp_path / f"trace-{name}"), key=lambda line: line["step"])["loss"] for name in runs}
    assert first_loss["keep"] == pytest.approx(first_loss["reset"], rel=1e-6)  # the same weights to start from
    kept, reset = (load_export(str(tmp_path / name)).state_dict() for name in ("keep", "reset"))
    assert any(not torch.equal(kept[n], reset[n]) for n in kept), "only the optimizer state differed"


def cli_train(job: TrainJob, tmp_path) -> tuple[dict, list[str]]:
    """`hierpt train` of the job in a subprocess, on a local Ray of its own as a user's (the session's has no
    dashboard, which Ray Train's placement group cleaner needs and says so): its summary and every line printed."""
    spec = tmp_path / f"{job.name}.yaml"
    spec.write_text(yaml.safe_dump({"kind": "pretrain", **job.model_dump(mode="json")}))
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "hierpt.cli", "train", str(spec)], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1]), (done.stdout + done.stderr).splitlines()


def first_batch_loss(model, shards) -> float:
    """Mean micro-batch loss of the first global batch of `shards` (seed 7), as the training loop computes it."""
    loader = DeterministicLoader(shards, 7, GLOBAL_BATCH, 1, 0, 1, word_batch(model.config.max_word_bytes))
    with torch.no_grad():
        losses = [model(**m.inputs).loss.item() for m in loader.next_step()]
    return sum(losses) / len(losses)


def test_zero3_survives_a_sigkill_and_resizes_2_to_1_to_2_workers_keeping_order(ray_local, shards_a, tmp_path):
    storage, trace_dir = tmp_path / "runs", tmp_path / "trace"
    resumed = []
    for workers, steps, faults in ((2, 6, [{"kill_rank": 1, "at_step": 5}]), (1, 8, [])):
        job = make_job("zero3", storage, shards_a, trace_dir, zero_stage=3, steps=steps, num_workers=workers,
                       checkpoint={"every": 2}, faults=faults, max_failures=1)  # fmt: skip
        resumed.append(train(job)["resumed_from_step"])
    # back to 2 workers as a user runs it: `hierpt train`
    summary, lines = cli_train(job.model_copy(update={"steps": 10, "num_workers": 2}), tmp_path)
    resumed.append(summary["resumed_from_step"])
    # all it printed: one line per step (rank 0's) and a constant few, so a 20-step train prints at most ~30
    # (issue 16); no Ray Train report lines, no worker prefixes, no ANSI codes off a terminal
    progress = [line for line in lines if line.startswith("[") and " step " in line]
    assert len(progress) == 2 and len(lines) <= len(progress) + 6, "\n".join(lines)
    assert not [line for line in lines if "\x1b" in line or "TrainingReport" in line or "pid=" in line], lines
    assert resumed[0] in (2, 4) and resumed[1:] == [6, 8]  # 2 if Ray had not registered step 4 before the kill
    trace = read_trace(trace_dir)
    assert assert_reexecuted_steps_match(trace) >= 2  # the steps after the checkpoint ran again, bit-exactly
    world_sizes = {line["step"]: line["world_size"] for line in trace}
    assert [world_sizes[s] for s in range(10)] == [2] * 6 + [1] * 2 + [2] * 2
    assert_global_order(trace, 10, read_manifest(shards_a).total_rows)
    losses = {line["step"]: line["loss"] for line in trace}
    assert losses[9] < losses[0]


def test_the_baseline_trains_on_token_shards_through_the_same_path_resumes_exactly_and_exports(
    ray_local, token_shards, shards_a, tmp_path
):
    storage, trace_dir = tmp_path / "runs", tmp_path / "trace"
    model = {"family": "baseline", "preset": "tiny", "overrides": {"seq_tokens": TOKEN_SEQ}}
    job = make_job("bpe", storage, token_shards, trace_dir, model=model, zero_stage=2, steps=6, num_workers=2,
                   checkpoint={"every": 2}, faults=[{"kill_rank": 1, "at_step": 3}],
                   export_to=str(tmp_path / "export"))  # fmt: skip
    summary = train(job)

    trace = read_trace(trace_dir)
    assert summary["steps"] == 6 and summary["resumed_from_step"] in (2, 4)
    assert assert_reexecuted_steps_match(trace) >= 1
    assert_global_order(trace, 6, read_manifest(token_shards).total_rows)
    assert 0 < summary["final_bits_per_byte"] < 9

    exported, tokenizer = load_any_export(str(tmp_path / "export"))
    manifest = read_manifest(token_shards)
    assert tokenizer.sha256() == manifest.tokens.tokenizer_sha256
    loader = DeterministicLoader(token_shards, 7, GLOBAL_BATCH, 1, 0, 1, tokenizer.batch)
    with torch.no_grad():  # the trained model is better on the first batch than a fresh one
        trained = sum(exported(**m.inputs).loss.item() for m in loader.next_step())
    torch.manual_seed(job.seed)
    fresh_model = Baseline(exported.config)
    loader = DeterministicLoader(token_shards, 7, GLOBAL_BATCH, 1, 0, 1, tokenizer.batch)
    with torch.no_grad():
        fresh = [fresh_model(**m.inputs).loss.item() for m in loader.next_step()]
    first_step = min(trace, key=lambda line: line["step"])
    assert first_step["loss"] == pytest.approx(sum(fresh) / len(fresh), rel=1e-4)  # the loop fed these batches
    assert trained < sum(fresh) - 0.5

    # word shards for a baseline, token shards for a HAT: refused before any worker starts, in one line
    with pytest.raises(ValueError, match="holds word shards but model.family baseline"):
        train(make_job("bpe-words", storage, shards_a, trace_dir, model=model, steps=1))
    with pytest.raises(ValueError, match="holds BPE token shards but model.family hat"):
        train(make_job("hat-tokens", storage, token_shards, trace_dir, steps=1))
