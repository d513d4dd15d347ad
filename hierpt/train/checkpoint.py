"""Checkpoints: DeepSpeed's per-rank files + a small hierpt state JSON, committed through Ray Train.

Every rank saves its DeepSpeed files into its own fresh directory and calls `ray.train.report` with it; Ray
merges them into one checkpoint directory in run storage and registers it only when every rank's upload is
done, so `ray.train.get_checkpoint()` never returns a half-written checkpoint. A resume at a different world
size converts the checkpoint to DeepSpeed's universal format first (`ds_to_universal`; ZeRO-1/2 need the
`universal_checkpoint_info` entry that `save` puts in client_state) and loads it with `load_universal`.

Ray registers a checkpoint when every rank's upload finished, but files can still be damaged later (a truncated
copy, a bad disk, a hand edit). So every rank also lists the files it wrote, with their sizes
(`hierpt_files.rank-NNNNN.json`), and a checkpoint is used only when every rank's list is there and every
listed file has its size (`verify`). A run resumes, and `hierpt export` of a run exports, from its newest
checkpoint that verifies; a damaged one is named on stderr and skipped. No intact checkpoint left is the run's
own error (`CorruptCheckpoint`, exit 2): resubmitting cannot repair it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import shutil
import sys
import tempfile
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import ray.train
from pydantic import BaseModel, ConfigDict

from hierpt.console import progress, quiet_stdout
from hierpt.data.bpe import TOKENIZER_FILE
from hierpt.data.loader import LoaderState
from hierpt.train.deepspeed_config import import_deepspeed

TAG = "ds"  # DeepSpeed's tag: the sub-directory holding its files
STATE_FILE = "hierpt_state.json"
FILE_LIST = "hierpt_files.rank-{rank:05d}.json"  # per rank: the files it wrote and their sizes


class CorruptCheckpoint(ValueError):
    """A checkpoint whose files are missing, truncated or unreadable (a ValueError: no retry can fix it)."""


class TrainState(BaseModel):
    """What hierpt stores beside DeepSpeed's files (docs/design.md, "Checkpoint")."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    step: int  # the next step to run
    loader: LoaderState
    world_size: int
    zero_stage: int
    family: str = "hat"  # hierpt.model.family; a family with a tokenizer also keeps its TOKENIZER_FILE here
    model: dict
    deepspeed: dict


class Resume(NamedTuple):
    directory: Path
    state: TrainState


@contextlib.contextmanager
def latest_committed() -> Iterator[Resume | None]:
    """The newest intact committed checkpoint of this run (after a failure, a resize or a relaunch), or None."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    try:
        verify(checkpoint)
    except CorruptCheckpoint:
        run = ray.train.Result.from_path(checkpoint.path.rsplit("/", 1)[0], storage_filesystem=checkpoint.filesystem)
        checkpoint = newest_intact(_committed(run), f"run {run.path}")
    with checkpoint.as_directory() as directory:
        yield Resume(Path(directory), read_state(Path(directory)))


@contextlib.contextmanager
def from_url(url: str | None) -> Iterator[Resume | None]:
    """A given checkpoint (a directory or URL, downloaded if remote); None passes through."""
    if url is None:
        yield None
        return
    checkpoint = ray.train.Checkpoint(url)
    verify(checkpoint)
    with checkpoint.as_directory() as directory:
        yield Resume(Path(directory), read_state(Path(directory)))


def read_state(directory: str | Path) -> TrainState:
    path = Path(directory) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} holds no {STATE_FILE}: not a hierpt checkpoint")
    try:
        return TrainState.model_validate_json(path.read_bytes())
    except ValueError as error:  # pydantic's ValidationError, invalid JSON or UTF-8 alike
        reason = str(error).splitlines()[-1].strip() if str(error).strip() else type(error).__name__
        raise CorruptCheckpoint(f"{path}: not a readable hierpt state (truncated or damaged?): {reason}") from None


def verify(checkpoint: ray.train.Checkpoint) -> None:
    """Every rank's file list is present and every listed file has its recorded size (read from storage,
    nothing downloaded); raises CorruptCheckpoint naming the checkpoint and the first problem."""
    from pyarrow.fs import FileSelector, FileType

    fs, root = checkpoint.filesystem, checkpoint.path.rstrip("/")
    where = url(checkpoint)
    try:
        infos = fs.get_file_info(FileSelector(root, recursive=True))
    except FileNotFoundError:
        raise CorruptCheckpoint(f"checkpoint {where} is gone") from None
    sizes = {info.path[len(root) + 1 :]: info.size for info in infos if info.type == FileType.File}
    lists = sorted(name for name in sizes if name.startswith("hierpt_files.rank-"))
    if not lists:
        raise CorruptCheckpoint(f"checkpoint {where} has no file lists ({FILE_LIST.format(rank=0)}): incomplete")
    world_size = None
    for name in lists:
        try:
            with fs.open_input_stream(f"{root}/{name}") as f:
                listed = json.loads(f.read())
            world_size = world_size or listed["world_size"]
            files = listed["files"]
        except (ValueError, KeyError, TypeError):
            raise CorruptCheckpoint(f"checkpoint {where}: {name} is unreadable") from None
        for path, size in files.items():
            if sizes.get(path) != size:
                found = "missing" if path not in sizes else f"{sizes[path]} bytes, {size} written"
                raise CorruptCheckpoint(f"checkpoint {where}: {path} is damaged ({found})")
    expected = [FILE_LIST.format(rank=rank) for rank in range(world_size)]
    if lists != expected:
        raise CorruptCheckpoint(f"checkpoint {where}: the file lists of some of its {world_size} ranks are missing")


def newest_intact(checkpoints: list[ray.train.Checkpoint], what: str) -> ray.train.Checkpoint:
    """The newest of `checkpoints` (oldest first) that verifies; each damaged newer one is reported on stderr."""
    problems = []
    for candidate in reversed(checkpoints):
        try:
            verify(candidate)
        except CorruptCheckpoint as problem:
            print(f"hierpt: skipping a damaged checkpoint: {problem}", file=sys.stderr, flush=True)
            problems.append(str(problem))
            continue
        return candidate
    raise CorruptCheckpoint(f"{what}: no intact checkpoint left; newest problem: {problems[0]}")


def _committed(result: ray.train.Result) -> list[ray.train.Checkpoint]:
    return [checkpoint for checkpoint, _ in result.best_checkpoints]


def url(checkpoint: ray.train.Checkpoint) -> str:
    """The checkpoint as a URL hierpt accepts (a plain path when local)."""
    scheme = checkpoint.filesystem.type_name
    return checkpoint.path if scheme == "local" else f"{scheme}://{checkpoint.path}"


def load(engine, resume: Resume, world_size: int) -> None:
    """Load DeepSpeed state into a fresh engine; the engine must have been built with
    ``load_universal = needs_universal(resume, world_size)``."""
    try:
        if not needs_universal(resume, world_size):
            path, _ = engine.load_checkpoint(str(resume.directory), tag=TAG)
        else:
            with tempfile.TemporaryDirectory(prefix="hierpt-universal-") as universal:
                convert_to_universal(resume.directory / TAG, Path(universal) / TAG)
                path, _ = engine.load_checkpoint(universal, tag=TAG)
    except (RuntimeError, OSError, EOFError, KeyError, ValueError) as error:  # damage its sizes did not show
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CorruptCheckpoint(f"checkpoint {resume.directory} does not load: {first}") from error
    if path is None:
        raise FileNotFoundError(f"DeepSpeed found no checkpoint files in {resume.directory}")


def needs_universal(resume: Resume | None, world_size: int) -> bool:
    return resume is not None and resume.state.world_size != world_size and resume.state.zero_stage > 0


def convert_to_universal(tag_dir: Path, output: Path) -> None:
    """DeepSpeed's own converter, run in-process (one worker: Ray workers should not fork pools)."""
    import_deepspeed()
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
                tokenizer.save(str(directory / TOKENIZER_FILE))
            (directory / STATE_FILE).write_text(state.model_dump_json(indent=2))
        files = {p.relative_to(directory).as_posix(): p.stat().st_size for p in directory.rglob("*") if p.is_file()}
        listing = {"world_size": state.world_size, "files": files}
        (directory / FILE_LIST.format(rank=rank)).write_text(json.dumps(listing, indent=1))
        if before_commit is not None:
            before_commit()
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(str(directory)),
            # named by step for users and scripts; the time keeps a step written again (after a crash, or a
            # damaged checkpoint skipped) apart from its earlier directory, which Ray may still delete
            checkpoint_dir_name=f"step-{state.step:08d}_{datetime.datetime.now():%Y-%m-%d_%H-%M-%S.%f}",
            checkpoint_upload_mode=ray.train.CheckpointUploadMode[upload.upper()],
            delete_local_checkpoint_after_upload=True,
        )
        if upload == "sync":
            # Ray Train's controller takes a rank's reports from a one-slot queue, once per health check (2 s):
            # this second report returns when it has taken the checkpoint's, so a rank that dies after `save`
            # cannot take a committed checkpoint with it (training itself reports only here, hierpt.train.loop)
            ray.train.report(metrics)
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
    """A checkpoint directory as given (verified), or the newest intact committed checkpoint of a run directory."""
    if "://" not in checkpoint_or_run:  # Ray takes a relative path for a URL without a scheme
        checkpoint_or_run = str(Path(checkpoint_or_run).expanduser().resolve())
    candidate = ray.train.Checkpoint(checkpoint_or_run)
    if candidate.filesystem.get_file_info(f"{candidate.path}/{STATE_FILE}").type.name != "NotFound":
        verify(candidate)
        return candidate
    try:
        result = run_result(checkpoint_or_run)
    except RuntimeError as error:
        raise FileNotFoundError(f"{checkpoint_or_run}: neither a hierpt checkpoint nor a run directory") from error
    if result.checkpoint is None:
        raise FileNotFoundError(f"run {checkpoint_or_run} has no committed checkpoint yet")
    return newest_intact(_committed(result), f"run {checkpoint_or_run}")


def resolve_export(source: str, export_to: str) -> str:
    """An export directory as it is; a run or checkpoint directory exported to `export_to`, unless an export
    of that very checkpoint (a run: its latest) is already there."""
    import fsspec

    from hierpt.model.export import CONFIG, read_export_document

    fs, root = fsspec.core.url_to_fs(source)
    if fs.exists(f"{root}/{CONFIG}"):
        return source
    resolved = resolve(source)
    target_fs, target_root = fsspec.core.url_to_fs(export_to)
    if target_fs.exists(f"{target_root}/{CONFIG}"):
        if read_export_document(export_to).get("hierpt", {}).get("source_checkpoint") == resolved.path:
            return export_to
    export(resolved, export_to)
    return export_to


def resolve_checkpoint(source: str) -> str:
    """A checkpoint directory as it is, or a run's latest committed checkpoint (exports hold no optimizer)."""
    try:
        return url(resolve(source))
    except FileNotFoundError as error:
        raise ValueError(f"optimizer_state: keep needs a run or checkpoint to continue from: {error}") from None


@contextlib.contextmanager
def as_export(url: str) -> Iterator[str]:
    """An export as given, or a checkpoint or run directory (see `resolve`) exported into a temporary directory
    for the block: every command that reads an export also takes what `hierpt export` takes."""
    import fsspec

    from hierpt.model.export import CONFIG

    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(f"{root}/{CONFIG}"):
        yield url
        return
    if not fs.isdir(root):
        raise FileNotFoundError(f"{url}: no such export, checkpoint or run directory")
    try:
        source = resolve(url)
    except FileNotFoundError as error:
        if "neither" not in str(error):
            raise
        raise FileNotFoundError(f"{url}: not a hierpt export (no {CONFIG}), checkpoint or run directory") from None
    with tempfile.TemporaryDirectory(prefix="hierpt-export-") as scratch:
        print(f"hierpt: exporting {source.path} for this command (`hierpt export` keeps one)", file=sys.stderr)
        yield export(source, scratch)


def consolidated_state_dict(directory: Path, state: TrainState) -> dict:
    """Full fp32 weights from a (sharded) DeepSpeed checkpoint, with DeepSpeed's zero_to_fp32 tools."""
    import torch

    import_deepspeed()  # first also for ZeRO-0: unpickling its model states may import DeepSpeed's classes
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    if state.zero_stage == 0:
        model_states = torch.load(
            directory / TAG / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False
        )
        return {k: v.float() for k, v in model_states["module"].items()}
    with quiet_stdout():  # DeepSpeed prints each file it parses
        return get_fp32_state_dict_from_zero_checkpoint(str(directory), tag=TAG)


def export(checkpoint: ray.train.Checkpoint, output: str, dtype: str = "fp32") -> str:
    """Consolidated safetensors + config (hierpt.model.export) in `dtype` (fp32 or bf16) from a checkpoint (see
    `resolve`), with the tokenizer of a family that has one."""
    from hierpt.model.export import save_export
    from hierpt.model.family import FAMILIES

    with progress(f"export {checkpoint.path.rstrip('/').rsplit('/', 1)[-1]}", total=3) as task:
        task.note("reading the checkpoint")
        with checkpoint.as_directory() as local:
            state = read_state(Path(local))
            family = FAMILIES[state.family]
            task.advance()
            task.note("consolidating the weights")
            weights = consolidated_state_dict(Path(local), state)
            tokenizer = family.saved_tokenizer(local)
        task.advance()
        task.note(f"writing {output}")
        metadata = {
            "source_checkpoint": checkpoint.path,
            "step": state.step,
            "samples_consumed": state.loader.samples_consumed,
            "data_fingerprint": state.loader.fingerprint,
        }
        exported = save_export(weights, family.config_type.from_dict(state.model), output, metadata, tokenizer, dtype)
        task.advance()
        task.note("")
    return exported
