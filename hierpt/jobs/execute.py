"""Run one job spec in this process: what `hierpt run SPEC` does, locally or as a Ray job's entrypoint.

The exit code tells the scheduler what kind of failure it was (hierpt/jobs/scheduler.py):
0 done, 2 the job's own error (bad spec or data: resubmitting cannot help), 75 an infrastructure
failure (Ray workers or nodes lost beyond the run's own retries: worth resubmitting), 1 anything else.
"""

from __future__ import annotations

import json
import sys

import fsspec

from hierpt.jobs.specs import (
    ContinuedPretrainJob,
    EvalJob,
    ExperimentJob,
    JobSpec,
    PrepJob,
    PretrainJob,
)
from hierpt.train.config import TrainJob

EXIT_OWN_ERROR = 2
EXIT_INFRASTRUCTURE = 75


def execute(spec: JobSpec) -> dict:
    if isinstance(spec, PrepJob):
        from hierpt.data.prep import prepare

        manifest = prepare(spec.recipe, spec.output, spec.workers, spec.tokens)
        return {"output": spec.output, "fingerprint": manifest.fingerprint, "rows": manifest.total_rows}
    if isinstance(spec, (PretrainJob, ContinuedPretrainJob)):
        from hierpt.train.run import train

        return train(as_train_job(spec))
    if isinstance(spec, ExperimentJob):
        return run_experiment(spec)
    return evaluate_checkpoints(spec)


def run_experiment(spec: ExperimentJob) -> dict:
    """Each stage in order (finished ones return at once), then the comparison report."""
    from hierpt.eval.report import compare

    stages = spec.jobs()
    summaries = []
    for index, stage in enumerate(stages, 1):
        label = getattr(stage, "name", None) or getattr(stage, "output", "")
        print(f"experiment {spec.name}: stage {index}/{len(stages)}: {stage.kind} {label}", file=sys.stderr, flush=True)
        summaries.append(execute(stage))
    summary = {"experiment": spec.name, "stages": summaries}
    if spec.compare is not None:
        settings = spec.compare
        table, plots = compare(settings.a, settings.b, settings.output, settings.targets)
        print(table, file=sys.stderr, flush=True)
        summary["report"] = {"table": f"{settings.output}/comparison.txt", "plots": [str(p) for p in plots]}
    return summary


def as_train_job(spec: PretrainJob | ContinuedPretrainJob) -> TrainJob:
    """The plain training spec, without the submission fields."""
    return TrainJob.model_validate(spec.model_dump(include=set(TrainJob.model_fields)))


def committed_checkpoints(run_url: str) -> list[tuple[int, str]]:
    """(step, URL) of every intact checkpoint Ray Train has committed for a run, oldest first; [] before the
    first. A damaged one is left out (the run resumes from an earlier one and writes that step again)."""
    from hierpt.train.checkpoint import CorruptCheckpoint, read_state, run_result, url, verify

    try:
        result = run_result(run_url)
    except (RuntimeError, FileNotFoundError, ValueError):
        return []
    found = []
    for ckpt, metrics in result.best_checkpoints:
        try:
            verify(ckpt)
        except CorruptCheckpoint:
            continue
        step = metrics.get("step")
        if step is None:
            with ckpt.as_directory() as local:
                step = read_state(local).step
        found.append((int(step), url(ckpt)))
    return sorted(found)


def evaluate_checkpoints(spec: EvalJob) -> dict:
    """Export and evaluate each target checkpoint; one results file per checkpoint, written when complete.

    A checkpoint whose results file holds its evaluation on the same text is not evaluated again.
    """
    from hierpt.console import track
    from hierpt.eval.evaluate import evaluate_model
    from hierpt.eval.perturb import PERTURBATIONS
    from hierpt.model.export import load_any_export, read_export_document
    from hierpt.model.family import continue_texts
    from hierpt.train import checkpoint

    targets = [(None, spec.checkpoint)] if spec.checkpoint else committed_checkpoints(spec.run)
    if not targets:
        raise FileNotFoundError(f"run {spec.run} has no committed checkpoint to evaluate")
    if spec.checkpoints == "latest":
        targets = targets[-1:]
    if spec.init_from:
        targets = [(0, spec.init_from), *targets]
    written = []
    fs, root = fsspec.core.url_to_fs(spec.output)
    for step, source in track(f"eval {spec.run or spec.checkpoint}: checkpoints", targets):
        name = "result" if step is None else f"step-{step:08d}"
        url = f"{spec.output}/{name}.json"
        if _evaluated(fs, f"{root}/{name}.json", source, spec):
            written.append(url)
            continue
        export_path = checkpoint.resolve_export(source, f"{spec.output}/{name}-export")
        model, tokenizer = load_any_export(export_path)  # once, for the metrics and the samples
        perturbations, budget = PERTURBATIONS if spec.robustness else (), spec.batch_positions
        result = {
            "checkpoint": export_path,
            **evaluate_model(
                model, tokenizer, spec.text, tokenizer=spec.tokenizer, perturbations=perturbations, budget=budget
            ),
        }
        if spec.tasks:
            from hierpt.eval.harness import run_tasks

            result["tasks"] = run_tasks(model, tokenizer, spec.tasks, spec.task_dirs, spec.task_limit, budget)
        texts = continue_texts(model, tokenizer, spec.prompts, spec.sampling) if spec.prompts else []
        result["samples"] = {p: p + text for p, text in zip(spec.prompts, texts)}
        result["step"], result["source"] = step, source
        with fsspec.open(f"{url}.partial", "w") as f:  # renamed when complete: a results file is never partial
            json.dump(result, f, indent=2)
        fs.mv(f"{root}/{name}.json.partial", f"{root}/{name}.json")
        if spec.tracking is not None:  # at the checkpoint's step, beside the run's training curves
            from hierpt.train.tracking import log_eval

            at_step = read_export_document(export_path)["hierpt"]["step"] if step is None else step
            log_eval(spec.tracking, result, at_step)
        written.append(url)
    return {"results": written}


def _evaluated(fs, path: str, source: str, spec: EvalJob) -> bool:
    """Whether `path` holds the result of evaluating `source` on the spec's text and tasks (else recomputed)."""
    if not fs.exists(path):
        return False
    with fs.open(path) as f:
        previous = json.load(f)
    same = previous.get("source") == source and previous.get("text") == spec.text
    return same and set(spec.tasks) <= set(previous.get("tasks", {}))


OWN_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError, PermissionError, AssertionError)


def exit_code_for(error: BaseException) -> int:
    """Own errors stay failed; lost workers, nodes or drivers are worth a resubmit."""
    import ray.exceptions
    from ray.train import TrainingFailedError, WorkerGroupError

    if isinstance(error, OWN_ERRORS):
        return EXIT_OWN_ERROR
    if isinstance(error, WorkerGroupError):
        causes = list(error.worker_failures.values())
        return EXIT_OWN_ERROR if any(isinstance(c, OWN_ERRORS) for c in causes) else EXIT_INFRASTRUCTURE
    infrastructure = (TrainingFailedError, ray.exceptions.RayError, ConnectionError, TimeoutError)
    return EXIT_INFRASTRUCTURE if isinstance(error, infrastructure) else 1


def main(spec: JobSpec) -> None:
    try:
        summary = execute(spec)
    except Exception as error:  # the exit code carries the failure class to the scheduler
        print(f"hierpt run: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(exit_code_for(error))
    print(json.dumps(summary))
