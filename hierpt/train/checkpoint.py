"""Checkpoints: DeepSpeed's per-rank files + a small hierpt state JSON, committed through Ray Train.

Every rank saves its DeepSpeed files into its own fresh directory and calls `ray.train.report` with it; Ray
merges them into one checkpoint directory in run storage and registers it only when every rank's upload is
done, so `ray.train.get_checkpoint()` never returns a half-written checkpoint. A resume at a different world
size converts the checkpoint to DeepSpeed's universal format first (`ds_to_universal`; ZeRO-1/2 need the
`universal_checkpoint_info` entry that `save` puts in client_state) and loads it with `load_universal`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import ray.train
from pydantic import BaseModel, ConfigDict

from hierpt.data.loader import LoaderState

TAG = "ds"  # DeepSpeed's tag: the sub-directory holding its files
STATE_FILE = "hierpt_state.json"
TOKENIZER = "tokenizer.json"  # a baseline's vocabulary travels with its checkpoints


class TrainState(BaseModel):
    """What hierpt stores beside DeepSpeed's files (DESIGN.md "Checkpoints")."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    step: int  # the next step to run
    loader: LoaderState
    world_size: int
    zero_stage: int
    family: str = "hat"  # hierpt.model.family; a baseline checkpoint also holds its TOKENIZER file
    model: dict
    deepspeed: dict


class Resume(NamedTuple):
    directory: Path
    state: TrainState


@contextlib.contextmanager
def latest() -> Iterator[Resume | None]:
    """The latest committed checkpoint of this run (after a failure, a resize or a relaunch), or None."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as directory:
        yield Resume(Path(directory), read_state(Path(directory)))


@contextlib.contextmanager
def opened(url: str | None) -> Iterator[Resume | None]:
    """A given checkpoint (a directory or URL, downloaded if remote); None passes through."""
    if url is None:
        yield None
        return
    with ray.train.Checkpoint(url).as_directory() as directory:
        yield Resume(Path(directory), read_state(Path(directory)))


def read_state(directory: str | Path) -> TrainState:
    path = Path(directory) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} holds no {STATE_FILE}: not a hierpt checkpoint")
    return TrainState.model_validate_json(path.read_text())


def load(engine, resume: Resume, world_size: int) -> None:
    """Load DeepSpeed state into a fresh engine; the engine must have been built with
    ``load_universal = needs_universal(resume, world_size)``."""
    if not needs_universal(resume, world_size):
        path, _ = engine.load_checkpoint(str(resume.directory), tag=TAG)
    else:
        with tempfile.TemporaryDirectory(prefix="hierpt-universal-") as universal:
            convert_to_universal(resume.directory / TAG, Path(universal) / TAG)
            path, _ = engine.load_checkpoint(universal, tag=TAG)
    if path is None:
        raise FileNotFoundError(f"DeepSpeed found no checkpoint files in {resume.directory}")


def needs_universal(resume: Resume | None, world_size: int) -> bool:
    return resume is not None and resume.state.world_size != world_size and resume.state.zero_stage > 0


def convert_to_universal(tag_dir: Path, output: Path) -> None:
    """DeepSpeed's own converter, run in-process (one worker: Ray workers should not fork pools)."""
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    args = Namespace(
        input_folder=str(tag_dir),
        output_folder=str(output),
        num_extract_workers=1,
        num_merge_workers=1,
        keep_temp_folder=False,
        strict=True,
        inject_missing_state=False,
    )
    with contextlib.redirect_stdout(None):  # the converter prints a line per file
        ds_to_universal(args)


def save(engine, state: TrainState, metrics: dict, rank: int, tokenizer=None, before_commit=None,
         upload: str = "sync") -> None:  # fmt: skip
    """Every rank: write DeepSpeed files (+ the state JSON and a baseline's tokenizer on rank 0) and report them
    in one checkpoint. `upload="async"` returns once the files are written; Ray uploads them in the background
    (the next report waits for it) and deletes the local directory after, so it must outlive this call."""
    directory = Path(tempfile.mkdtemp(prefix="hierpt-ckpt-"))
    try:
        client_state = {"universal_checkpoint_info": {}, "hierpt": state.model_dump()}
        engine.save_checkpoint(str(directory), tag=TAG, client_state=client_state)
        if rank == 0:
            if tokenizer is not None:
                tokenizer.save(str(directory / TOKENIZER))
            (directory / STATE_FILE).write_text(state.model_dump_json(indent=2))
        if before_commit is not None:
            before_commit()
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(str(directory)),
            checkpoint_upload_mode=ray.train.CheckpointUploadMode[upload.upper()],
            delete_local_checkpoint_after_upload=True,
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def run_result(run_url: str) -> ray.train.Result:
    """Ray's record of a run in storage (its committed checkpoints and last metrics), read without Ray's
    multi-line INFO notice on every read."""
    quiet = logging.getLogger("ray.train")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        return ray.train.Result.from_path(run_url)
    finally:
        quiet.setLevel(level)


def resolve(checkpoint_or_run: str) -> ray.train.Checkpoint:
    """A checkpoint directory as given, or the latest committed checkpoint of a run directory."""
    candidate = ray.train.Checkpoint(checkpoint_or_run)
    if candidate.filesystem.get_file_info(f"{candidate.path}/{STATE_FILE}").type.name != "NotFound":
        return candidate
    try:
        result = run_result(checkpoint_or_run)
    except RuntimeError as error:
        raise FileNotFoundError(f"{checkpoint_or_run}: neither a hierpt checkpoint nor a run directory") from error
    if result.checkpoint is None:
        raise FileNotFoundError(f"run {checkpoint_or_run} has no committed checkpoint yet")
    return result.checkpoint


def consolidated_state_dict(directory: Path, state: TrainState) -> dict:
    """Full fp32 weights from a (sharded) DeepSpeed checkpoint, with DeepSpeed's zero_to_fp32 tools."""
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    if state.zero_stage == 0:
        model_states = torch.load(
            directory / TAG / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
        )
        return {k: v.float() for k, v in model_states["module"].items()}
    return get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=TAG)


def export(checkpoint: ray.train.Checkpoint, output: str) -> str:
    """Consolidated safetensors + config (hierpt.model.export) from a checkpoint (see `resolve`); a baseline's
    export also holds its tokenizer."""
    from hierpt.data.bpe import BPETokenizer
    from hierpt.model.baseline import save_baseline_export
    from hierpt.model.export import save_export
    from hierpt.model.family import FAMILIES

    with checkpoint.as_directory() as local:
        state = read_state(Path(local))
        weights = consolidated_state_dict(Path(local), state)
        tokenizer = BPETokenizer.load(str(Path(local) / TOKENIZER)) if state.family == "baseline" else None
    metadata = {
        "source_checkpoint": checkpoint.path,
        "step": state.step,
        "samples_consumed": state.loader.samples_consumed,
        "data_fingerprint": state.loader.fingerprint,
    }
    config = FAMILIES[state.family].config_type.from_dict(state.model)
    if tokenizer is not None:
        return save_baseline_export(weights, config, tokenizer, output, metadata)
    return save_export(weights, config, output, metadata)
