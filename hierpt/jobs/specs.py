"""Job specs: what `hierpt run` executes and `hierpt jobs submit` sends to a Ray cluster.

One YAML file = one job, its `kind` picks the model: `prep`, `pretrain`, `continued_pretrain`, `eval`, or
`experiment` (stages run in order, then a comparison report). Specs are validated completely before anything
is submitted; errors name the file and the field path.
Secrets never live in specs, nor travel with jobs: credentials are the cluster's own (hierpt/storage_env.py).
The submitter's object-store settings (endpoint, region) travel with every job, as with prep's tasks and
training's workers (hierpt/storage_env.py); `env` names other non-secret variables whose values it forwards;
`env_visible_to_cluster_users` forwards others, e.g. an API key, whose values everyone with access to the
cluster can then read (the Jobs API serves every job's runtime_env; Ray's agents log it).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from hierpt.data.recipe import TokenShardSpec
from hierpt.model.generate import SamplingConfig
from hierpt.storage_env import CREDENTIALS_IN_URL, has_credentials, looks_secret
from hierpt.train.config import RunTracking, TrainJob, check_run_name
from hierpt.validation import field_name, first_error

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RetryPolicy(BaseModel):
    """How the scheduler treats interruptions (preemption, node loss, a stopped driver)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_resubmits: int = Field(10, ge=0)
    backoff_s: float = Field(10.0, ge=0)
    backoff_max_s: float = Field(600.0, ge=0)

    def delay(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_s * 2 ** max(0, attempt - 1))


class Submission(BaseModel):
    """Fields every job kind shares: where it runs and what it needs from the submitter."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    env: list[str] = Field(default_factory=list)  # other non-secret variables to forward (storage's always go)
    # Forwarded although secret-looking: their values are readable by everyone with access to the cluster.
    env_visible_to_cluster_users: list[str] = Field(default_factory=list)
    retry: RetryPolicy = RetryPolicy()
    entrypoint_num_cpus: float = Field(0, ge=0)

    @field_validator("env", "env_visible_to_cluster_users")
    @classmethod
    def _names_only(cls, names: list[str]) -> list[str]:
        for name in names:
            if not ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name (specs hold names, never values)")
        return names

    @field_validator("env")
    @classmethod
    def _no_secrets(cls, names: list[str]) -> list[str]:
        for name in names:
            if looks_secret(name):
                raise ValueError(
                    f"{name} looks like a secret: credentials belong to the cluster (README: Credentials); to "
                    "forward it anyway, list it in env_visible_to_cluster_users (readable by all cluster users)"
                )
        return names


class PrepJob(Submission):
    kind: Literal["prep"]
    recipe: str  # path of a recipe YAML (data_prep/README.md)
    output: str
    workers: int | None = Field(None, ge=1)
    tokens: TokenShardSpec | None = None  # BPE token shards for the baseline instead of word shards

    @property
    def run_name(self) -> str | None:
        return None


class EvaluateSettings(BaseModel):
    """What an evaluation measures: an eval job's settings, and a training spec's `evaluate:` (the scheduler
    evaluates every committed checkpoint of the run with them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str  # held-out text: JSONL with `text` and `lang` (any UTF-8 text works)
    prompts: list[str] = Field(default_factory=lambda: ["The "])
    sampling: SamplingConfig = SamplingConfig(max_words=24)  # how the prompts are continued (greedy by default)
    robustness: bool = True
    tasks: list[str] = Field(default_factory=list)  # lm-eval tasks (hierpt/eval/harness.py), e.g. arc_easy
    task_dirs: list[str] = Field(default_factory=list)  # directories of own lm-eval task YAMLs (--include_path)
    task_limit: int | None = Field(None, ge=1)  # documents per task (all when unset)
    batch_positions: int | None = Field(None, ge=1)  # padded words/tokens per forward (unset: the device's default)


class PretrainJob(Submission, TrainJob):
    kind: Literal["pretrain"]
    evaluate: EvaluateSettings | None = None

    @property
    def run_name(self) -> str:
        return self.name


class ContinuedPretrainJob(Submission, TrainJob):
    """Continue from an export or from another run's latest checkpoint, on new data.

    `init_from` is an export directory, a run URL or a checkpoint; `optimizer_state: keep` also carries over
    the AdamW moments of that checkpoint (a run: its latest); `optimizer.warmup_steps` re-warms the learning
    rate; `freeze` keeps modules as they are (e.g. the backbone, to adapt only the byte modules to a new script).
    """

    kind: Literal["continued_pretrain"]
    init_from: str
    evaluate: EvaluateSettings | None = None

    @property
    def run_name(self) -> str:
        return self.name


class EvalJob(Submission, EvaluateSettings):
    """Evaluate one checkpoint (`checkpoint`) or the committed checkpoints of a run (`run`).

    Results already in `output` (same checkpoint, same text) are kept, so a rerun evaluates only new
    checkpoints. `init_from` (for a continued run: where it started) is evaluated as step 0, the reference for
    forgetting in `hierpt compare`.
    """

    kind: Literal["eval"]
    checkpoint: str | None = None  # an export directory, or a checkpoint directory inside a run
    run: str | None = None  # a run URL: its committed checkpoints
    checkpoints: Literal["all", "latest"] = "all"  # of a run: every committed checkpoint, or the latest only
    init_from: str | None = None  # with `run`: an export, run or checkpoint to evaluate as step 0
    output: str  # where results JSON files go
    tokenizer: str | None = None  # a BPE tokenizer JSON: adds bytes per token to a HAT's compression numbers
    tracking: RunTracking | None = None  # the evaluated run's trackers: results join its curves (set by the scheduler)

    @model_validator(mode="after")
    def _one_target(self) -> EvalJob:
        if (self.checkpoint is None) == (self.run is None):
            raise ValueError("set exactly one of `checkpoint` and `run`")
        if self.init_from and not self.run:
            raise ValueError("`init_from` (evaluated as step 0) belongs to a `run` evaluation")
        return self

    @property
    def run_name(self) -> str | None:
        return None


class CompareSettings(BaseModel):
    """`hierpt compare A B` at the end of an experiment (hierpt/eval/report.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    a: str  # a run directory (TensorBoard curve, evals/ series) or an eval result / eval output directory
    b: str
    output: str  # comparison.txt, comparison.json and the PNGs
    targets: dict[str, float] = Field(default_factory=dict)  # lang -> held-out bits/byte to reach


class ExperimentJob(Submission):
    """Stages (job specs: a path, or inline) run one after another in one process, then a comparison.

    Finished stages cost nothing on a rerun (prep finds its manifest, a run its last step, an eval its results),
    so an experiment can name another experiment as a stage and build on its runs.
    """

    kind: Literal["experiment"]
    name: str
    stages: list[str | dict] = Field(min_length=1)  # a spec file's path, or a spec; held as specs once loaded
    compare: CompareSettings | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_run_name(value)

    @field_validator("stages")
    @classmethod
    def _stages_are_specs(cls, stages: list[str | dict]) -> list[dict]:
        """Every stage validated now; a path is read now, so the experiment travels to a cluster as one spec."""
        inlined = []
        for index, stage in enumerate(stages):
            try:
                raw = read_spec_file(stage) if isinstance(stage, str) else stage
                inlined.append(parse_spec(raw, "spec").model_dump(mode="json"))
            except (ValueError, FileNotFoundError) as error:
                raise ValueError(f"stage {index}: {error}") from None
        return inlined

    def jobs(self) -> list[JobSpec]:
        return [parse_spec(stage) for stage in self.stages]

    @property
    def run_name(self) -> str | None:
        return None


JobSpec = Annotated[
    PrepJob | PretrainJob | ContinuedPretrainJob | EvalJob | ExperimentJob, Field(discriminator="kind")
]
_ADAPTER = TypeAdapter(JobSpec)


def parse_spec(raw: dict, source: str = "spec") -> JobSpec:
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: a job spec is a YAML mapping")
    where = _credentials_at(raw)
    if where is not None:  # checked before pydantic, so no error message can echo the value
        raise ValueError(f"{source}: {where}: {CREDENTIALS_IN_URL}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as error:
        raise ValueError(f"{source}: {first_error(error, union_tag=raw.get('kind'))}") from None


def _credentials_at(raw, path: str = "") -> str | None:
    """The field path of the first string holding a URL with credentials, or None."""
    if isinstance(raw, dict):
        items = raw.items()
    elif isinstance(raw, list):
        items = enumerate(raw)
    else:
        return (path or "(top level)") if isinstance(raw, str) and has_credentials(raw) else None
    for key, value in items:
        if isinstance(key, str) and has_credentials(key):  # a key is echoed too, e.g. as an unknown field
            return path or "(top level)"
        found = _credentials_at(value, f"{path}.{field_name(key)}" if path else field_name(key))
        if found is not None:
            return found
    return None


# Fields naming files or directories; relative local ones are taken from where `hierpt` runs, and made
# absolute before a spec travels to a cluster, where the working directory is another one.
PATH_FIELDS = {
    "recipe", "output", "storage", "init_from", "export_to", "tensorboard_dir", "trace_dir", "checkpoint", "run",
    "text", "shards", "tokenizer", "stages", "a", "b", "task_dirs",
}  # fmt: skip


def absolute_paths(raw, cwd: Path, key: str | None = None):
    """Relative local paths under PATH_FIELDS keys (also in lists, e.g. `stages`) made absolute from `cwd`."""
    if isinstance(raw, dict):
        return {k: absolute_paths(v, cwd, k) for k, v in raw.items()}
    if isinstance(raw, list):
        return [absolute_paths(item, cwd, key) for item in raw]
    if key in PATH_FIELDS and isinstance(raw, str) and _is_relative(raw):
        return str(cwd / raw)
    return raw


def _is_relative(value: str) -> bool:
    return "://" not in value and not os.path.isabs(os.path.expanduser(value))


def read_spec_file(path: str | os.PathLike) -> dict:
    """A spec file's mapping, its relative paths made absolute (from where `hierpt` runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such job spec")
    try:
        with path.open() as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise ValueError(f"{path}: not valid YAML: {problem}{at}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (a job spec is UTF-8 YAML)") from None
    return absolute_paths(raw, Path.cwd())


def apply_overrides(raw, assignments: Sequence[str]):
    """`raw` with each `FIELD=VALUE` of `--set` applied before validation, so an override is checked like the
    YAML it stands for (a field the spec's model lacks is refused by name). FIELD is a dotted path, a list item
    named by its index (`stages.0.steps`); mappings missing on the way are created. VALUE is read as YAML
    (`1e-3`, `[2, 4]`, `true`, `null`); a relative local path in it is made absolute, as in a spec file."""
    raw = copy.deepcopy(raw)
    for assignment in assignments:
        if has_credentials(assignment):  # refused before any message can echo it
            raise ValueError(f"--set: {CREDENTIALS_IN_URL}")
        path, equals, text = assignment.partition("=")
        keys = path.strip().split(".")
        if not equals or not all(keys):
            raise ValueError(f"--set {assignment!r}: expected FIELD=VALUE, e.g. optimizer.lr=1e-3")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ValueError(f"--set {path}: {text!r} is not a YAML value") from None
        node, field = raw, None
        for depth, key in enumerate(keys):
            where = ".".join(keys[:depth]) or "(top level)"
            if isinstance(node, list):
                if not (key.isdigit() and int(key) < len(node)):
                    raise ValueError(f"--set {path}: {key!r} is not an index of {where} (a list of {len(node)})")
                key = int(key)
            elif isinstance(node, dict):
                field = key
            else:
                raise ValueError(f"--set {path}: {where} is a value ({type(node).__name__}), not a mapping of fields")
            if depth == len(keys) - 1:
                node[key] = absolute_paths(value, Path.cwd(), field)
            else:
                if isinstance(node, dict) and node.get(key) is None:
                    node[key] = {}
                node = node[key]
    return raw


def load_spec(path: str | os.PathLike, overrides: Sequence[str] = ()) -> JobSpec:
    source = f"{path} with --set" if overrides else str(path)
    return parse_spec(apply_overrides(read_spec_file(path), overrides), source=source)


def forwarded_env(spec: JobSpec) -> dict[str, str]:
    """Values of the variables the spec names, from this process; a missing one is an error now, not later."""
    names = [*spec.env, *spec.env_visible_to_cluster_users]
    missing = [name for name in names if name not in os.environ]
    if missing:
        raise ValueError(f"the spec needs environment variables that are not set: {', '.join(missing)}")
    return {name: os.environ[name] for name in names}
