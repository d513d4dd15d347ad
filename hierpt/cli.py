"""The `hierpt` command. Each subcommand imports its stage lazily, so `hierpt model-info` stays instant.

Every error is one line naming the field, file or flag, and a non-zero exit (2: bad input, 1: anything
else); `--verbose` (or HIERPT_VERBOSE=1) adds the traceback, and the libraries' own output (hierpt/console.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import traceback
from pathlib import Path

from hierpt.console import progress, settings, verbose
from hierpt.storage_env import CREDENTIALS_IN_URL, has_credentials

INPUT_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _model_info(args: argparse.Namespace) -> None:
    from hierpt.model.family import FAMILIES

    family = FAMILIES[args.family]
    counts = family.build_meta(family.config_type.from_name(args.preset)).num_params()
    if args.json:
        print(json.dumps(counts))
        return
    for name, count in counts.items():
        print(f"{name:>10}  {count:>15,}  ({count / 1e6:,.1f}M)")


def _generate(args: argparse.Namespace) -> None:
    from hierpt.model.export import load_any_export
    from hierpt.model.family import continue_texts
    from hierpt.model.generate import SamplingConfig
    from hierpt.train.checkpoint import as_export

    with as_export(args.checkpoint) as export_url:
        model, tokenizer = load_any_export(export_url)
    sampling = SamplingConfig(max_words=args.max_words, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    print(args.prompt + continue_texts(model, tokenizer, [args.prompt], sampling)[0])


def _eval(args: argparse.Namespace) -> None:
    from pathlib import Path

    from hierpt.eval.evaluate import evaluate_checkpoint
    from hierpt.eval.report import format_result
    from hierpt.train.checkpoint import as_export

    with as_export(args.checkpoint) as export_url, progress(f"eval {args.checkpoint}"):
        result = evaluate_checkpoint(export_url, args.text, seed=args.seed, rate=args.rate, tokenizer=args.tokenizer)
    result["checkpoint"] = args.checkpoint  # what was asked for, not the temporary export
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result) if args.json else format_result(result))


def _compare(args: argparse.Namespace) -> None:
    from hierpt.eval.report import compare

    targets = {}
    for item in args.target:
        lang, _, value = item.partition("=")
        try:
            targets[lang] = float(value)
        except ValueError:
            raise ValueError(f"--target {item!r}: expected LANG=BITS_PER_BYTE, e.g. fi=2.5") from None
    with progress(f"compare {args.a} {args.b}"):
        table, plots = compare(args.a, args.b, args.output, targets)
    print(table)
    for plot in plots:
        print(f"wrote {plot}")


def _compute_match(args: argparse.Namespace) -> None:
    """Its own argument parser: the options depend on where the two compression ratios come from."""
    from hierpt.model import compute_match

    parser = Parser(prog="hierpt compute-match", description=compute_match.__doc__.split("\n")[0])
    parser.add_argument("--hat", default="small", help="HAT preset, or a job spec YAML (its `model`)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="corpus file (.jsonl[.gz|.zst], .txt or .parquet, read as prep reads it): "
                        "bytes/word and bytes/token of it")  # fmt: skip
    source.add_argument("--token-shards", help="a token shard set (hierpt prep --seq-tokens): ratios of its manifest")
    source.add_argument("--bytes-per-word", type=float,
                        help="measured elsewhere (with --bytes-per-token and --vocab-size)")
    parser.add_argument("--tokenizer", help="BPE tokenizer JSON (with --text)")
    parser.add_argument("--bytes-per-token", type=float)
    parser.add_argument("--vocab-size", type=int)
    options = parser.parse_args(args.arguments)

    hat = _hat_config(options.hat)
    if options.token_shards:
        from hierpt.data.shards import read_manifest

        manifest = read_manifest(options.token_shards)
        if manifest.tokens is None:
            raise ValueError(f"{options.token_shards} holds word shards, not token shards")
        bytes_per_word, bytes_per_token = manifest.bytes_per_word, manifest.bytes_per_token
        vocab_size = manifest.tokens.vocab_size
    elif options.text:
        from hierpt.data.bpe import BPETokenizer
        from hierpt.eval.evaluate import read_documents
        from hierpt.eval.metrics import compression

        if not options.tokenizer:
            parser.error("--text needs --tokenizer")
        tokenizer = BPETokenizer.load(options.tokenizer)
        stats = compression([doc.text for doc in read_documents(options.text)], hat.max_word_bytes, tokenizer)
        bytes_per_word, bytes_per_token = stats["bytes_per_word"], stats["bytes_per_token"]
        vocab_size = tokenizer.vocab_size
    else:
        if options.bytes_per_token is None or options.vocab_size is None:
            parser.error("--bytes-per-word needs --bytes-per-token and --vocab-size")
        bytes_per_word, bytes_per_token = options.bytes_per_word, options.bytes_per_token
        vocab_size = options.vocab_size
    match = compute_match.match_baseline(hat, vocab_size, bytes_per_word, bytes_per_token)
    baseline_model = compute_match.baseline_model_spec(match.baseline)
    print(json.dumps({**match.summary(), "baseline_model": baseline_model}, indent=2))


def _hat_config(name_or_spec: str):
    """A HAT preset by name, or the model of a HAT training spec, shaped as its shards."""
    from hierpt.model.hat import HATConfig

    if not name_or_spec.endswith((".yaml", ".yml")):
        return HATConfig.from_name(name_or_spec)
    from hierpt.data.shards import read_manifest
    from hierpt.jobs.specs import load_spec

    spec = load_spec(name_or_spec)
    if getattr(spec, "model", None) is None or spec.model.family != "hat":
        raise ValueError(f"{name_or_spec}: not a training spec of a HAT")
    return spec.model.build_config(read_manifest(spec.data.shards), spec.data.shards)


def _demo(args: argparse.Namespace) -> None:
    from hierpt.jobs.demo import main

    main(args.workdir, args.steps)


def _run(args: argparse.Namespace) -> None:
    from hierpt.jobs import execute
    from hierpt.jobs.specs import apply_overrides, load_spec, parse_spec

    if bool(args.spec) == bool(args.spec_json):
        raise ValueError("give a job spec file or --spec-json, not both")
    if args.spec_json:
        spec = parse_spec(apply_overrides(json.loads(args.spec_json), args.overrides), "--spec-json")
    else:
        spec = load_spec(args.spec, args.overrides)
    execute.main(spec)


def _scheduler(args: argparse.Namespace):
    from hierpt.jobs.scheduler import Scheduler, connect
    from hierpt.jobs.store import Store

    from hierpt.ray_session import named_cluster

    # as `ray job` reads them; checked in seconds, not Ray's 30 s GCS wait and its C++ warnings
    address = named_cluster(args.address or os.environ.get("RAY_API_SERVER_ADDRESS"), allow_jobs_api=True)
    store = Store(args.db, create=args.action in ("submit", "watch"))  # the others act on recorded jobs only
    return Scheduler(store, connect(address), entrypoint=args.entrypoint)


def _jobs(args: argparse.Namespace) -> None:
    from hierpt.jobs import results
    from hierpt.jobs.specs import load_spec
    from hierpt.jobs.store import Store

    if args.action not in ("watch", "list") and not args.target:
        what = {"submit": "a spec YAML", "results": "a run name"}.get(args.action, "a job id")
        raise ValueError(f"jobs {args.action} needs {what}")
    if args.overrides and args.action != "submit":
        raise ValueError(f"--set changes the spec of jobs submit, not of jobs {args.action}")
    if args.action == "results":
        store = Store(args.db, create=False)
        rows = store.results(args.target)
        runs = sorted({job.run_name for job in store.jobs() if job.run_name})
        if not rows and args.target not in runs:
            raise ValueError(f"no run {args.target!r} in {args.db} (runs there: {', '.join(runs) or 'none'})")
        print(results.table(rows))
        if rows:
            print(f"wrote {results.plot(rows, args.target, args.plot or results.plot_url(store, args.target))}")
        return
    if args.action == "list":
        for job in Store(args.db, create=False).jobs():
            print(f"{job.job_id:<44} {job.kind:<19} {job.state:<10} attempts={job.attempts:<3} {job.message[:80]}")
        return
    recorded = Store(args.db, create=False).job(args.target) if args.action in ("status", "logs", "cancel") else None
    # bad input (the spec and its --set) is named before Ray is asked
    spec = load_spec(args.target, args.overrides) if args.action == "submit" else None
    try:
        scheduler = _scheduler(args)
    except ConnectionError as error:
        if recorded is None:
            raise
        raise ConnectionError(f"{error}; last recorded state of {recorded.job_id}: {recorded.state}") from None
    if args.action == "submit":
        print(scheduler.submit(spec))
    elif args.action == "watch":
        from hierpt.console import Live
        from hierpt.jobs.watch import JobsView

        with Live() as live:
            view = JobsView(live)
            scheduler.run(poll_s=args.poll, until_idle=args.until_idle, give_up_after_s=args.give_up_after,
                          show=view.show)  # fmt: skip
    elif args.action == "cancel":
        print(scheduler.cancel(args.target))
    elif args.action == "status":
        job = scheduler.refresh(args.target)  # Ray's word, not only the store's: a `ray job stop` shows at once
        print(json.dumps({"job": job.job_id, "state": job.state, "attempts": job.attempts, "message": job.message}))
    else:
        job = scheduler.store.job(args.target)
        if scheduler._lookup(job.current_submission) is None:
            raise ValueError(f"Ray holds no logs of {job.current_submission} (never sent, or the cluster restarted)")
        print(scheduler.client.get_job_logs(job.current_submission))


def _prep(args: argparse.Namespace) -> None:
    from hierpt.data.prep import prepare
    from hierpt.data.recipe import TokenShardSpec

    tokens = None
    if args.seq_tokens is not None:
        tokens = TokenShardSpec(seq_tokens=args.seq_tokens, vocab_size=args.vocab_size, tokenizer=args.tokenizer)
    elif args.vocab_size is not None or args.tokenizer is not None:
        raise ValueError("--vocab-size and --tokenizer make token shards: give --seq-tokens too")
    manifest = prepare(args.recipe, args.output, workers=args.workers, tokens=tokens)
    print(f"fingerprint {manifest.fingerprint}")


def _train(args: argparse.Namespace) -> None:
    from hierpt.jobs import execute
    from hierpt.jobs.specs import load_spec

    from hierpt.jobs.specs import parse_spec

    spec = load_spec(args.job, args.overrides)
    if spec.kind not in ("pretrain", "continued_pretrain"):
        raise ValueError(f"{args.job}: `hierpt train` runs pretrain and continued_pretrain specs, not {spec.kind}")
    overrides = {k: v for k, v in (("name", args.name), ("storage", args.storage)) if v is not None}
    if overrides:  # validated like the spec's own fields (a --name must be a run name, too)
        spec = parse_spec({**spec.model_dump(mode="json"), **overrides}, source=f"{args.job} with --name/--storage")
    execute.main(spec)


def _export(args: argparse.Namespace) -> None:
    from hierpt.train.checkpoint import export, resolve

    print(export(resolve(args.checkpoint), args.output, args.dtype))


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _number(parse, accept, requirement: str):
    """An argparse type: a finite number that `accept`s, else a one-line error naming the flag."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {requirement}") from None
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"{text} is not {requirement}")
        return value

    return convert


_probability = _number(float, lambda v: 0 < v <= 1, "in (0, 1]")
_non_negative = _number(float, lambda v: v >= 0, "a finite number >= 0")
_positive_int = _number(int, lambda v: v >= 1, "a whole number >= 1")


def _json_file(text: str) -> str:
    """A local file (a URL is passed on as it is): a directory here fails later and less clearly."""
    if "://" not in text:
        path = Path(text).expanduser()
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a directory, not a tokenizer JSON file")
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"{text}: no such file")
    return text


def _on_ray(command: argparse.ArgumentParser) -> None:
    """A command that drives Ray itself: which cluster (hierpt/ray_session.py)."""
    command.add_argument("--ray-address", help="cluster to run on: GCS host:port, ray://host:port or auto "
                         "(default $RAY_ADDRESS; neither: a local Ray of its own)")  # fmt: skip


def _overrides(command: argparse.ArgumentParser) -> None:
    """A command that reads a job spec: any field of it set from the command line (hierpt/jobs/specs.py)."""
    command.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                         help="override a spec field, validated like the YAML: optimizer.lr=1e-3, steps=50, "
                         "num_workers=[2,4] (repeatable)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hierpt", description=__doc__)
    parser.add_argument("--verbose", action="store_true",
                        help="Ray's, Ray Train's and DeepSpeed's own output, all warnings, and the traceback of an "
                        "error (or HIERPT_VERBOSE=1)")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)

    info = commands.add_parser("model-info", help="parameter counts per module of a preset (no weights allocated)")
    info.add_argument("preset")
    info.add_argument("--family", choices=["hat", "baseline"], default="hat")
    info.add_argument("--json", action="store_true", help="one JSON object: parameters per module and total")
    info.set_defaults(run=_model_info)

    gen = commands.add_parser("generate", help="continue a prompt with an exported checkpoint")
    gen.add_argument("--checkpoint", required=True, help="export, checkpoint or run (its latest checkpoint)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--max-words", type=_positive_int, default=64)
    gen.add_argument("--temperature", type=_non_negative, default=0.0, help="0 = greedy")
    gen.add_argument("--top-p", type=_probability, default=1.0, help="nucleus sampling: in (0, 1]")
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(run=_generate)

    prep = commands.add_parser("prep", help="raw corpora -> word-segmented byte shards + manifest (Ray Data)")
    prep.add_argument("recipe", help="recipe YAML (see data_prep/README.md)")
    prep.add_argument("--output", help="shard set URL (file path, s3://...); default: the recipe's `output`")
    prep.add_argument("--workers", type=_positive_int, help="parallel Ray tasks (default: all CPUs of the cluster)")
    prep.add_argument("--seq-tokens", type=_positive_int,
                      help="write BPE token shards (the baseline's) of this many ids per row")  # fmt: skip
    prep.add_argument("--vocab-size", type=_positive_int, help="token shards: train a BPE tokenizer with this many ids")
    prep.add_argument("--tokenizer", type=_json_file, help="token shards: reuse this tokenizer JSON instead of training one")
    _on_ray(prep)
    prep.set_defaults(run=_prep)

    tr = commands.add_parser("train", help="distributed HAT training (Ray Train + DeepSpeed); resumes a run by name")
    tr.add_argument("job", help="training job spec YAML (see jobs/tiny_pretrain.yaml)")
    tr.add_argument("--name", help="override the spec's run name")
    tr.add_argument("--storage", help="override the spec's run storage (local dir or s3://)")
    _overrides(tr)
    _on_ray(tr)
    tr.set_defaults(run=_train)

    exp = commands.add_parser("export", help="consolidate a training checkpoint into safetensors + config")
    exp.add_argument("checkpoint", help="a checkpoint directory, or a run directory (its latest committed checkpoint)")
    exp.add_argument("--output", required=True, help="export directory or URL")
    exp.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="weights' dtype (default fp32)")
    exp.set_defaults(run=_export)

    ev = commands.add_parser("eval", help="bits/byte, word accuracy, robustness, compression per language")
    ev.add_argument("--checkpoint", required=True, help="export (HAT or baseline), checkpoint or run (its latest)")
    ev.add_argument("--text", required=True, help="documents as prep reads them: .jsonl[.gz|.zst] with `text` and "
                    "optional `lang`, .txt (a line each) or .parquet")  # fmt: skip
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ev.add_argument("--tokenizer", type=_json_file, help="BPE tokenizer JSON: adds bytes per token to a HAT's compression")
    ev.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    ev.add_argument("--rate", type=_probability, default=0.1, help="share of words each perturbation changes")
    ev.add_argument("--output", help="also write the result JSON to this file")
    ev.set_defaults(run=_eval)

    cmp = commands.add_parser("compare", help="side-by-side table and PNG plots of two eval results or runs")
    cmp.add_argument("a", help="eval result JSON, or a run or eval directory (evaluations, training metrics)")
    cmp.add_argument("b")
    cmp.add_argument("--output", required=True, help="directory for comparison.txt/.json and the PNGs")
    cmp.add_argument("--target", action="append", default=[], metavar="LANG=BPB",
                     help="steps to reach this held-out bits/byte, and the other languages' forgetting")  # fmt: skip
    cmp.set_defaults(run=_compare)

    match = commands.add_parser("compute-match", add_help=False,
                                help="the BPE baseline shape with a HAT's training FLOPs per byte (--help for more)")  # fmt: skip
    match.set_defaults(run=_compute_match)

    demo = commands.add_parser("demo", help="the whole pipeline on local Ray with the built-in sample corpus")
    demo.add_argument("--workdir", default="runs/demo", help="everything the demo writes goes here")
    demo.add_argument("--steps", type=_positive_int, help="training steps (default: the demo's own)")
    _on_ray(demo)
    demo.set_defaults(run=_demo)

    run = commands.add_parser("run", help="run one job spec (prep, pretrain, continued_pretrain, eval) here")
    run.add_argument("spec", nargs="?", help="job spec YAML (jobs/)")
    run.add_argument("--spec-json", help="the spec inline, as JSON (what the scheduler sends to Ray)")
    _overrides(run)
    _on_ray(run)
    run.set_defaults(run=_run)

    jobs = commands.add_parser("jobs", help="submit job specs to a Ray cluster and watch them (resubmit, eval)")
    jobs.add_argument("action", choices=["submit", "watch", "list", "status", "logs", "cancel", "results"])
    jobs.add_argument("target", nargs="?", help="spec YAML (submit), job id (status/logs/cancel), run name (results)")
    jobs.add_argument("--address", help="Jobs API (dashboard) address http://host:port; "
                      "default $RAY_API_SERVER_ADDRESS, then $RAY_ADDRESS")  # fmt: skip
    jobs.add_argument("--db", default=os.environ.get("HIERPT_SCHEDULER_DB", "hierpt-scheduler.db"))
    jobs.add_argument("--entrypoint", help="command that starts hierpt on the cluster (default: this Python)")
    jobs.add_argument("--poll", type=_non_negative, default=5.0, help="watch: seconds between checks")
    jobs.add_argument("--until-idle", action="store_true", help="watch: return when no job is queued or running")
    jobs.add_argument("--give-up-after", type=_non_negative, default=900.0,
                      help="watch: stop (exit 1, jobs kept) when the cluster has not answered for this many seconds")  # fmt: skip
    jobs.add_argument("--plot", help="results: PNG path or URL (default: evals.png in the run's folder)")
    _overrides(jobs)
    jobs.set_defaults(run=_jobs)

    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(has_credentials(token.partition("=")[2] or token) for token in argv):  # refused before it is echoed
        print(f"hierpt: error: {CREDENTIALS_IN_URL}", file=sys.stderr)
        sys.exit(2)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "compute-match":
        args.arguments = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "ray_address", None):
        os.environ["RAY_ADDRESS"] = args.ray_address  # read where Ray starts, as Ray itself reads it
    with settings(args.verbose):  # before Ray is imported
        try:
            args.run(args)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as error:  # one line for every error; the traceback only when asked for
            if verbose():
                traceback.print_exc()
            print(f"hierpt {args.command}: error: {describe(error)}", file=sys.stderr)
            sys.exit(2 if isinstance(error, INPUT_ERRORS) else 1)


def describe(error: BaseException) -> str:
    """An error in one line: bad input as its message, anything else with its type and a pointer to --verbose."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = "; ".join(lines[:1]) or type(error).__name__
    if isinstance(error, INPUT_ERRORS) or isinstance(error, ConnectionError):
        return text
    return f"{type(error).__name__}: {text} (--verbose for the traceback)"


if __name__ == "__main__":
    main()
