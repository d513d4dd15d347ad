"""A real `lm_eval.simple_evaluate` of both families' exports on a multiple-choice task from a local JSONL."""

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hierpt.eval.harness import MODEL_NAME, HierptLM, cut_at_stops, run_tasks
from hierpt.eval.scoring import score
from hierpt.model.export import load_any_export

TASK = "hierpt_toy_choice"
DOCS = [
    {"prompt": "The cat sees the", "choices": ["dog", "Brücke", "und"], "label": 0},
    {"prompt": "Der Hund läuft über die", "choices": ["grüne", "cat", "quickly"], "label": 0},
    {"prompt": "The small", "choices": ["Straße", "house", "heute"], "label": 1},
    {"prompt": "Die grüne", "choices": ["river", "Brücke", "and"], "label": 1},
    {"prompt": "The dog runs", "choices": ["Mädchen", "schön", "home"], "label": 2},
]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tasks")
    data = directory / "choice.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in DOCS))
    (directory / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "output_type: multiple_choice\n"
        "test_split: test\n"
        "doc_to_text: '{{prompt}}'\n"
        "doc_to_choice: choices\n"
        "doc_to_target: label\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n"
    )
    return str(directory)


def expected_accuracy(export: str) -> float:
    """The task's accuracy from the scoring API: lm-eval asks for (prompt, " " + choice)."""
    model, tokenizer = load_any_export(export)
    right = 0
    for doc in DOCS:
        scores = score(model, tokenizer, [(doc["prompt"], " " + choice) for choice in doc["choices"]])
        best = max(range(len(scores)), key=lambda i: scores[i].logprob)
        right += best == doc["label"]
    return right / len(DOCS)


@pytest.mark.integration
@pytest.mark.parametrize("family", ["hat", "baseline"])
def test_simple_evaluate_scores_a_local_multiple_choice_task(family, hat_export, baseline_export, task_dir):
    export = (hat_export if family == "hat" else baseline_export)[0]
    results = run_tasks(*load_any_export(export), [TASK], [task_dir])
    assert results[TASK]["acc"] == pytest.approx(expected_accuracy(export))


@pytest.mark.integration
def test_lm_eval_command_line_finds_the_hierpt_model(hat_export, task_dir, tmp_path):
    command = [
        sys.executable, "-m", "hierpt.eval.harness", "--model", "hierpt", "--model_args", f"checkpoint={hat_export[0]}",
        "--tasks", TASK, "--include_path", task_dir, "--output_path", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    (written,) = tmp_path.rglob("results_*.json")
    accuracy = json.loads(written.read_text())["results"][TASK]["acc,none"]
    assert accuracy == pytest.approx(expected_accuracy(hat_export[0]))


def test_generate_until_and_rolling_answer_lm_eval_requests(hat_export):
    from lm_eval.api.instance import Instance

    lm = HierptLM(checkpoint=hat_export[0])

    def request(kind, args):
        return Instance(request_type=kind, doc={}, arguments=args, idx=0)

    generated = lm.generate_until([request("generate_until", ("The cat", {"until": ["."], "max_gen_toks": 6}))])
    assert len(generated) == 1 and "." not in generated[0]
    (rolling,) = lm.loglikelihood_rolling([request("loglikelihood_rolling", ("The cat sees the dog.",))])
    (whole,) = lm.loglikelihood([request("loglikelihood", ("", "The cat sees the dog."))])
    assert rolling == pytest.approx(whole[0]) and rolling < 0


def test_the_model_is_declared_where_lm_eval_plugins_are_looked_up():
    """lm-eval's main branch (docs/plugins.md) resolves `--model NAME` from the `lm_eval.models` entry points."""
    with open(Path(__file__).parents[2] / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["entry-points"]["lm_eval.models"]
    assert importlib.metadata.EntryPoint(MODEL_NAME, declared[MODEL_NAME], "lm_eval.models").load() is HierptLM


def test_stop_strings_cut_at_the_first_one():
    assert cut_at_stops("a b. c\nd", ["\n", "."]) == "a b"
    assert cut_at_stops("a b", ["\n"]) == "a b"


@pytest.mark.integration
def test_an_eval_job_with_tasks_puts_task_accuracy_in_the_results_table_and_the_comparison(
    hat_export, baseline_export, eval_jsonl, task_dir, tmp_path
):
    from hierpt.eval.report import compare
    from hierpt.jobs import results
    from hierpt.jobs.execute import evaluate_checkpoints
    from hierpt.jobs.specs import parse_spec

    outputs = {}
    for family, (export, _) in (("hat", hat_export), ("baseline", baseline_export)):
        spec = parse_spec({
            "kind": "eval", "checkpoint": export, "text": eval_jsonl, "output": str(tmp_path / family),
            "robustness": False, "prompts": [], "tasks": [TASK], "task_dirs": [task_dir],
        })  # fmt: skip
        (url,) = evaluate_checkpoints(spec)["results"]
        outputs[family] = url
        result = json.loads(open(url).read())
        assert result["tasks"][TASK]["acc"] == pytest.approx(expected_accuracy(export))
        header, row = results.table([(7, result)]).splitlines()
        assert header.split()[-1] == f"{TASK}.acc" and float(row.split()[-1]) == pytest.approx(
            result["tasks"][TASK]["acc"], abs=1e-4
        )
    table, _ = compare(outputs["hat"], outputs["baseline"], str(tmp_path / "report"))
    assert re.search(rf"^tasks\.{TASK}\.acc\s", table, re.MULTILINE)
    assert re.search(r"^bits_per_byte\.all\s", table, re.MULTILINE)
