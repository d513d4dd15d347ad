import contextlib
import gzip
import io
import json
import math
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import hierpt.eval.evaluate as evaluate_module
from hierpt.cli import main
from hierpt.eval.evaluate import (
    ALL,
    BATCH_POSITIONS,
    _words_correct,
    batch_positions,
    evaluate,
    read_documents,
    score_baseline,
    score_hat,
    windows,
)
from hierpt.data.sources import Document
from hierpt.eval.metrics import ScoreSums
from hierpt.eval.perturb import PERTURBATIONS, perturb
from hierpt.model.baseline import Baseline, BaselineConfig
from hierpt.model.export import load_any_export
from hierpt.model.hat import HAT, IGNORE, HATConfig
from hierpt.splitting import END_OF_DOC_WORD, split_words, words_to_tensors

# One document longer than the tiny presets' sequences (64 words, 96 tokens), in several scripts.
TEXTS = [
    "Short one.",
    " ".join(f"Wort{i} über Straße, naïve café {i}." for i in range(40)),
    "快速的狐狸跳过了懒狗。Быстрая лиса.\n\nA second paragraph.",
]


def total(sums: list[ScoreSums]) -> ScoreSums:
    return sum(sums, ScoreSums())


@pytest.fixture(scope="module")
def untrained(tokenizer):
    torch.manual_seed(0)
    hat = HAT(HATConfig.from_name("tiny")).eval()
    baseline = Baseline(BaselineConfig.from_name("tiny", vocab_size=tokenizer.vocab_size)).eval()
    return hat, baseline


def test_hat_and_baseline_score_exactly_the_bytes_of_the_documents(untrained, tokenizer):
    hat, baseline = untrained
    n_bytes = sum(len(text.encode()) for text in TEXTS)
    assert len(list(windows(range(200), 64))) > 1  # the long document really is cut into windows
    assert total(score_hat(hat, TEXTS)).utf8_bytes == n_bytes
    assert total(score_baseline(baseline, tokenizer, TEXTS)).utf8_bytes == n_bytes


def test_windows_predict_every_position_but_the_first_exactly_once():
    for n in (1, 2, 5, 64, 65, 127, 128, 300):
        predicted = [p for window in windows(list(range(n)), 64) for p in window[1:]]
        assert predicted == list(range(1, n))
        assert all(len(w) <= 64 for w in windows(list(range(n)), 64))


def test_baseline_word_is_right_only_when_every_token_covering_it_is(tokenizer):
    text = TEXTS[1]
    ids = [tokenizer.eod_id, *tokenizer.encode(text), tokenizer.eod_id]
    token_bytes = tokenizer.token_bytes()[ids]
    ends = token_bytes.cumsum(0).tolist()
    token_spans = [(end - n, end) for end, n in zip(ends, token_bytes.tolist())]
    words = split_words(text)
    word_ends = torch.tensor([len(w) for w in words]).cumsum(0).tolist()
    word_spans = [(end - len(w), end) for end, w in zip(word_ends, words)]
    everything = torch.ones(len(ids), dtype=torch.bool)
    assert _words_correct(text, token_bytes, everything) == (len(words) + 1, len(words) + 1)
    for wrong in (1, len(ids) // 2, len(ids) - 2):  # first text token, one in the middle, the last text token
        correct = everything.clone()
        correct[wrong] = False
        start, end = token_spans[wrong]
        hit = sum(ws < end and we > start for ws, we in word_spans)  # words sharing a byte with the wrong token
        assert hit >= 1
        assert _words_correct(text, token_bytes, correct) == (len(words) + 1, len(words) + 1 - hit)
    correct = everything.clone()
    correct[-1] = False  # the end-of-document token is the [S] word
    assert _words_correct(text, token_bytes, correct) == (len(words) + 1, len(words))


def test_baseline_word_accuracy_does_not_depend_on_windows_or_batching(baseline_export, corpus):
    baseline, tokenizer = load_any_export(baseline_export[0])
    texts = [text for _, text in corpus["eval"]] + TEXTS
    one_by_one = total(score_baseline(baseline, tokenizer, texts, budget=96))
    together = total(score_baseline(baseline, tokenizer, texts))
    assert one_by_one.words == together.words == sum(len(split_words(t)) + 1 for t in texts)
    assert one_by_one.words_correct == together.words_correct > 0


def test_scores_do_not_depend_on_batching(untrained, tokenizer):
    hat, baseline = untrained
    one_by_one = total(score_hat(hat, TEXTS, budget=64))
    together = total(score_hat(hat, TEXTS))
    assert one_by_one.utf8_bytes == together.utf8_bytes and one_by_one.words == together.words
    assert math.isclose(one_by_one.bits_per_byte, together.bits_per_byte, rel_tol=1e-4)
    single = total(score_baseline(baseline, tokenizer, TEXTS, budget=96))
    batched = total(score_baseline(baseline, tokenizer, TEXTS))
    assert math.isclose(single.bits_per_byte, batched.bits_per_byte, rel_tol=1e-4)


def test_each_distinct_word_is_encoded_once_per_round(untrained, monkeypatch):
    hat, _ = untrained
    passes = [*TEXTS, *(perturb(text, "permute", seed=0) for text in TEXTS)]  # most words in both passes
    distinct = {END_OF_DOC_WORD, *(w for text in passes for w in split_words(text, hat.config.max_word_bytes))}
    encoded = []

    def encode_words(word_bytes, lengths):
        encoded.append(len(lengths))
        return HAT.encode_words(hat, word_bytes, lengths)

    monkeypatch.setattr(hat, "encode_words", encode_words)
    one_round = score_hat(hat, passes, budget=64)
    assert sum(encoded) == len(distinct) < sum(len(split_words(text)) + 2 for text in passes)
    monkeypatch.setattr(evaluate_module, "ROUND_WORDS", 50)  # a round per batch or two: words encoded again
    encoded.clear()
    rounds = score_hat(hat, passes, budget=64)
    assert sum(encoded) > len(distinct)
    assert [s.utf8_bytes for s in rounds] == [s.utf8_bytes for s in one_round]
    assert [s.nll_nats for s in rounds] == pytest.approx([s.nll_nats for s in one_round], rel=1e-6)


def test_batch_budget_is_chosen_per_device_type():
    assert batch_positions(torch.device("cpu")) == BATCH_POSITIONS["cpu"] < BATCH_POSITIONS["cuda"]
    assert batch_positions(torch.device("cuda", 1)) == BATCH_POSITIONS["cuda"]


def forward_per_language(hat: HAT, baseline: Baseline, tokenizer, texts: list[str]) -> dict[str, float]:
    """What evaluation computed before it batched languages and passes together: one language's texts (of one
    pass) as their own batch through each model's forward."""
    config = hat.config
    documents = [[END_OF_DOC_WORD, *split_words(text, config.max_word_bytes), END_OF_DOC_WORD] for text in texts]
    sequences = [window for words in documents for window in windows(words, config.seq_words)]
    ids = [[tokenizer.eod_id, *doc, tokenizer.eod_id] for doc in tokenizer.encode_batch(texts)]
    pieces = [window for doc in ids for window in windows(doc, baseline.config.seq_tokens)]
    tokens = torch.full((len(pieces), max(map(len, pieces))), IGNORE)
    for row, piece in enumerate(pieces):
        tokens[row, : len(piece)] = torch.tensor(piece)
    with torch.inference_mode():
        words = hat(*words_to_tensors(sequences, config.max_word_bytes))
        units = baseline(tokens, tokenizer.token_bytes()[tokens.clamp(min=0)])
    return {
        "hat": float(words.nll_sum / words.utf8_bytes) / math.log(2),
        "hat_word_accuracy": float(words.words_correct / words.words),
        "baseline": float(units.nll_sum / units.utf8_bytes) / math.log(2),
    }


def test_one_stream_of_batches_over_languages_and_passes_gives_the_per_language_numbers(untrained, tokenizer):
    hat, baseline = untrained
    texts = [*TEXTS, "Noch ein Text.", "Tiny."]
    langs = ["en", "de", "zh", "de", "en"]
    documents = [Document(line, text, 0, lang) for line, (text, lang) in enumerate(zip(texts, langs), 1)]
    kinds = ("permute", "all_caps")  # a word perturbation and one of the whole text
    results = {  # small budgets: several batches, each mixing languages and passes
        "hat": evaluate(lambda batch: score_hat(hat, batch, budget=256), documents, perturbations=kinds),
        "baseline": evaluate(
            lambda batch: score_baseline(baseline, tokenizer, batch, budget=256), documents, perturbations=kinds
        ),
    }
    assert results["hat"]["docs"] == {"en": 2, "de": 2, "zh": 1}
    for lang in ("en", "de", "zh", ALL):
        clean = [doc.text for doc in documents if lang in (ALL, doc.lang)]
        for kind in (None, *kinds):
            passed = clean if kind is None else [perturb(text, kind, seed=0) for text in clean]
            reference = forward_per_language(hat, baseline, tokenizer, passed)
            for family, result in results.items():
                bits = result["bits_per_byte"] if kind is None else result["perturbed_bits_per_byte"][kind]
                assert bits[lang] == pytest.approx(reference[family], rel=1e-5), (family, kind, lang)
            if kind is None:
                assert results["hat"]["word_accuracy"][lang] == reference["hat_word_accuracy"]


def test_trained_exports_beat_untrained_models(eval_results, eval_jsonl, untrained, tokenizer):
    texts = [doc.text for doc in read_documents(eval_jsonl)]
    hat, baseline = untrained
    trained_hat, trained_baseline = eval_results["hat"], eval_results["baseline"]
    assert trained_hat["model"] == "hat" and trained_baseline["model"] == "baseline"
    assert trained_hat["bits_per_byte"]["all"] < 0.5 * total(score_hat(hat, texts)).bits_per_byte
    untrained_baseline = total(score_baseline(baseline, tokenizer, texts))
    assert trained_baseline["bits_per_byte"]["all"] < 0.5 * untrained_baseline.bits_per_byte
    # upper-casing everything is far off the training distribution: both models get clearly worse
    assert trained_hat["robustness"]["all_caps"]["all"] > 0.5
    assert trained_baseline["robustness"]["all_caps"]["all"] > 0.5


@pytest.fixture(scope="module")
def cli_outputs(hat_export, eval_jsonl, tokenizer, tmp_path_factory):
    """stdout of `hierpt eval --json` with seed 0 (and a tokenizer) and with seed 1."""
    tokenizer_path = tokenizer.save(str(tmp_path_factory.mktemp("tok") / "tok.json"))
    outputs = []
    for extra in (["--seed", "0", "--tokenizer", tokenizer_path], ["--seed", "1"]):
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            main(["eval", "--checkpoint", hat_export[0], "--text", eval_jsonl, "--json", *extra])
        outputs.append(stdout.getvalue())
    return outputs


def test_cli_eval_json_has_the_stable_keys_and_is_deterministic(cli_outputs, eval_results):
    result = json.loads(cli_outputs[0])  # exactly one JSON object on stdout
    for section in ("bits_per_byte", "word_accuracy", "perturbed_bits_per_byte", "robustness"):
        assert result[section] == eval_results["hat"][section]  # same seed, separate run: same numbers
    for lang in ("en", "de", "all"):
        assert 0 < result["bits_per_byte"][lang] < 8
        assert 0 <= result["word_accuracy"][lang] <= 1
        assert result["compression"][lang]["bytes_per_token"] > 1
        for kind in PERTURBATIONS:
            perturbed = result["perturbed_bits_per_byte"][kind][lang]
            assert result["robustness"][kind][lang] == pytest.approx(perturbed / result["bits_per_byte"][lang] - 1)
    assert result["docs"] == {"de": 3, "en": 3}


def test_cli_eval_other_seed_other_robustness(cli_outputs):
    seed0, seed1 = json.loads(cli_outputs[0]), json.loads(cli_outputs[1])
    assert seed0["bits_per_byte"] == seed1["bits_per_byte"]
    assert seed0["robustness"]["permute"] != seed1["robustness"]["permute"]


def test_plain_text_is_one_document_per_line_as_prep_reads_it(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"First document.\n\n  \nSecond, with bad UTF-8: \xff!\n")
    assert [(doc.text, doc.lang) for doc in read_documents(str(path))] == [
        ("First document.", "und"),
        ("Second, with bad UTF-8: \ufffd!", "und"),
    ]


def test_a_file_of_no_known_format_is_refused_by_name(tmp_path):
    (tmp_path / "notes.md").write_text("# a heading\n")
    with pytest.raises(ValueError, match=r"notes\.md: not a \.jsonl\.gz / .* / \.txt file"):
        read_documents(str(tmp_path / "notes.md"))


def test_compressed_jsonl_and_parquet_are_read_and_missing_lang_is_undetermined(tmp_path):
    path = tmp_path / "docs.jsonl.gz"
    path.write_bytes(gzip.compress('{"text": "Grüße"}\n{"text": "hi", "lang": "en"}\n'.encode()))
    assert [(doc.text, doc.lang) for doc in read_documents(str(path))] == [("Grüße", "und"), ("hi", "en")]
    pq.write_table(pa.table({"text": ["eins", "zwei"]}), tmp_path / "docs.parquet")
    assert [doc.text for doc in read_documents(str(tmp_path / "docs.parquet"))] == ["eins", "zwei"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"text": "ok"}\n{"text": \n', r"bad\.jsonl:2: malformed_json: not JSON"),
        ('{"body": "no text"}\n', r"bad\.jsonl:1: missing_text_field: no text field"),
        ('{"text": "x", "lang": 7}\n', r"bad\.jsonl:1: non_string_lang_field"),
        ('{"text": "x", "lang": "all"}\n', r"bad\.jsonl:1: lang 'all' is reserved"),
        ('{"text": "a longer text with a nul \\u0000 in it"}\n', r"bad\.jsonl:1: nul_bytes"),
        ("\n\n", r"bad\.jsonl: no documents with text"),
    ],
)
def test_bad_input_gets_one_line_naming_the_problem(tmp_path, hat_export, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--checkpoint", hat_export[0], "--text", str(path), "--json"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert re.search(message, captured.err)


def test_missing_checkpoint_is_a_clear_error(tmp_path, eval_jsonl, capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--checkpoint", str(tmp_path / "nothing"), "--text", eval_jsonl, "--json"])
    assert "no such export, checkpoint or run directory" in capsys.readouterr().err
