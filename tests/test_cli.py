"""The `hierpt` command's error contract: every failure is one line on stderr naming the field, file or flag,
with a non-zero exit and no traceback (issue 12.6) — for the probes of the issue and for generated arguments."""

import json
import shlex

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hierpt import cli as cli_module
from hierpt.cli import main as cli
from hierpt.data.bpe import BPETokenizer
from hierpt.jobs.store import Store
from hierpt.model.compute_match import TOLERANCE
from hierpt.splitting import split_words


def run_cli(capsys, argv) -> tuple[int, str]:
    capsys.readouterr()
    try:
        cli(argv)
        code = 0
    except SystemExit as exited:
        code = exited.code
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code != 0 and "Traceback" not in err, err
    assert err.strip() and err.strip().count("\n") == 0, err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["generate", "--checkpoint", "x", "--prompt", "a", "--top-p", "0"], ["--top-p", "(0, 1]"]),
        (["generate", "--checkpoint", "x", "--prompt", "a", "--temperature", "nan"], ["--temperature", "finite"]),
        (["generate", "--checkpoint", "x", "--prompt", "a", "--max-words", "-1"], ["--max-words"]),
        (["eval", "--checkpoint", "x", "--text", "t", "--tokenizer", "."], ["--tokenizer", "is a directory"]),
        (["export", "no/such/run", "--output", "out"], ["no/such/run", "neither a hierpt checkpoint"]),
        (["train", "spec.yaml", "--name", "../../escaped"], ["name", "not a run name"]),
        (["jobs", "status"], ["jobs status needs a job id"]),
        (["jobs", "results", "no-such-run"], ["no scheduler database at hierpt-scheduler.db"]),
        (["jobs", "status", "some-job", "--db", "typo.db"], ["no scheduler database at typo.db", "--db"]),
        (["jobs", "list"], ["no scheduler database at hierpt-scheduler.db"]),
        (["jobs", "submit", "spec.yaml", "--address", "http://127.0.0.1:1"], ["cannot reach the Ray cluster at http://"]),
        (["eval", "--checkpoint", ".", "--text", "t"], [".: not a hierpt export (no config.json), checkpoint or run"]),
        (["jobs", "frobnicate"], ["action", "invalid choice"]),
        (["nonsense"], ["invalid choice"]),
        (["export", "s3://AKIA:planted@bucket/run", "--output", "o"], ["credentials"]),
        (["train", "spec.yaml", "--storage=s3://AKIA:planted@bucket/runs"], ["credentials"]),
        (["train", "spec.yaml", "--set", "steps"], ["hierpt train: error: --set 'steps': expected FIELD=VALUE"]),
        (["train", "spec.yaml", "--set", "optimizer.lrr=1e-3"], ["spec.yaml with --set: optimizer.lrr: Extra inputs"]),
        (["run", "spec.yaml", "--set", "steps=0"], ["spec.yaml with --set: steps: "]),
        (["jobs", "submit", "spec.yaml", "--set", "zero_stage=4"], ["spec.yaml with --set: zero_stage: "]),
        (["run", "--spec-json", json.dumps({"kind": "pretrain", "name": "r", "storage": "runs", "data": {"shards": "s"},
                                            "steps": 2}), "--set", "steps=0"], ["--spec-json: steps: "]),
        (["jobs", "list", "--set", "steps=3"], ["--set changes the spec of jobs submit, not of jobs list"]),
        (["train", "spec.yaml", "--set", "storage=s3://AKIA:planted@bucket/runs"], ["credentials"]),
    ],
)
def test_the_issues_probes_are_one_line_errors(argv, needles, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text("kind: pretrain\nname: r\nstorage: runs\ndata: {shards: s}\nsteps: 2\n")
    code, err = run_cli(capsys, argv)
    assert_one_line(code, err, *needles)
    assert "planted" not in err
    assert not list(tmp_path.glob("*.db")), "a refused command leaves no database behind"


def test_results_of_an_unknown_run_names_the_runs_the_database_holds(capsys, tmp_path):
    Store(tmp_path / "s.db").add_job("train-a", "pretrain", {}, run_name="run-a")
    code, err = run_cli(capsys, ["jobs", "results", "no-such-run", "--db", str(tmp_path / "s.db")])
    assert_one_line(code, err, "no run 'no-such-run'", "(runs there: run-a)")


@pytest.mark.parametrize("text", ["kind: pretrain\nname: [unclosed\n", "{{{", "kind: pretrain\n  bad indent: x\n y: z"])
def test_malformed_yaml_is_one_line_naming_the_file(text, capsys, tmp_path):
    (tmp_path / "bad.yaml").write_text(text)
    for argv in (["run", str(tmp_path / "bad.yaml")], ["train", str(tmp_path / "bad.yaml")]):
        code, err = run_cli(capsys, argv)
        assert_one_line(code, err, "bad.yaml", "not valid YAML")
        assert code == 2


def test_an_unexpected_error_is_one_line_and_verbose_adds_the_traceback(capsys, monkeypatch):
    def broken(_args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(cli_module, "_model_info", broken)
    code, err = run_cli(capsys, ["model-info", "tiny"])
    assert_one_line(code, err, "ZeroDivisionError: division by zero", "--verbose")
    assert code == 1
    code, err = run_cli(capsys, ["--verbose", "model-info", "tiny"])
    assert code == 1 and "Traceback" in err and err.strip().splitlines()[-1].startswith("hierpt model-info: error:")


def test_set_overrides_reach_the_spec_a_submitted_job_runs(capsys, tmp_path, monkeypatch):
    """`jobs submit --set` changes what the cluster runs: the --spec-json of the job Ray is sent."""
    from hierpt.jobs.scheduler import Scheduler

    class Cluster:  # a Jobs API that accepts everything and knows no earlier submission
        entrypoints = []

        def get_job_info(self, submission_id):
            raise RuntimeError("status code 404")

        def submit_job(self, entrypoint, **_):
            self.entrypoints.append(entrypoint)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_module, "_scheduler", lambda args: Scheduler(Store(args.db), Cluster()))
    (tmp_path / "spec.yaml").write_text("kind: pretrain\nname: r\nstorage: runs\ndata: {shards: s}\nsteps: 2\n")
    code, err = run_cli(capsys, ["jobs", "submit", "spec.yaml", "--set", "steps=50", "--set", "optimizer.lr=1e-3"])
    assert code == 0, err
    (entrypoint,) = Cluster.entrypoints
    sent = json.loads(shlex.split(entrypoint)[-1])
    assert sent["steps"] == 50 and sent["optimizer"]["lr"] == 1e-3 and sent["name"] == "r"


# Generated arguments: commands that fail fast on bad input (no `demo`, no `jobs watch`, no real training).
FLAGS = {
    "generate": ["--checkpoint", "--prompt", "--max-words", "--temperature", "--top-p", "--seed"],
    "eval": ["--checkpoint", "--text", "--tokenizer", "--seed", "--rate", "--output", "--json"],
    "export": ["--output"],
    "model-info": ["--family", "--json"],
    "prep": ["--output", "--workers", "--seq-tokens", "--vocab-size", "--tokenizer"],
    "train": ["--name", "--storage", "--set"],
    "run": ["--spec-json", "--set"],
    "compare": ["--output", "--target"],
    "jobs": ["--db", "--poll", "--plot", "--set"],
}
VALUES = st.one_of(
    st.sampled_from(["0", "-1", "nan", "inf", "1e999", "", ".", "..", "/", "x.yaml", "{}", "[1", "tiny", "hat",
                     "status", "list", "results", "a=b", "../../escaped", "0.5", "s3://k:planted@b/x"]),
    st.text(st.characters(blacklist_characters="\x00"), max_size=12),  # a command line cannot hold NUL
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers().map(str),
)  # fmt: skip


@st.composite
def argvs(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(FLAGS)))
    argv = [command]
    if command == "jobs":
        argv.append(draw(st.sampled_from(["status", "logs", "cancel", "results", "list", "submit", "bogus"])))
    argv += draw(st.lists(VALUES, max_size=2))  # positionals
    for flag in draw(st.lists(st.sampled_from(FLAGS[command]), max_size=4)):
        argv.append(flag)
        if draw(st.booleans()):
            argv.append(draw(VALUES))
    return argv


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=argvs())
def test_generated_arguments_never_give_a_traceback(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code, err = run_cli(capsys, argv)
    assert "Traceback" not in err and "planted" not in err, (argv, err)
    if code != 0:
        assert err.strip().count("\n") == 0 and err.strip(), (argv, err)


def test_compute_match_measures_the_corpus_and_prints_both_shapes(tmp_path, capsys):
    texts = [
        "The quick brown fox jumps over the lazy dog. " * 20,
        "Über den Wolken muss die Freiheit grenzenlos sein. " * 20,
    ]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tokenizer = BPETokenizer.train(texts, vocab_size=2048, min_frequency=1).save(str(tmp_path / "tok.json"))
    cli(["compute-match", "--hat", "tiny", "--text", str(corpus), "--tokenizer", tokenizer])
    summary = json.loads(capsys.readouterr().out)
    assert summary["hat"]["backbone"] == "2 layers x dim 128 (4 heads)"
    assert summary["baseline"]["backbone"].endswith("heads)")
    assert abs(summary["deviation"]) <= TOLERANCE
    n_bytes = sum(len(t.encode()) for t in texts)
    assert summary["bytes_per_word"] == pytest.approx(n_bytes / sum(len(split_words(t, 32)) for t in texts))
    assert summary["bytes_per_token"] == pytest.approx(
        n_bytes / sum(len(BPETokenizer.load(tokenizer).encode(t)) for t in texts)
    )
