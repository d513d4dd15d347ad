"""Trained tiny models for the eval tests, made in-process (no distributed trainer): a HAT export, a BPE
tokenizer and a baseline export, each trained for a few dozen AdamW steps on a small bilingual corpus."""

from __future__ import annotations

import json
import random

import pytest
import torch

from hierpt.data.bpe import BPETokenizer
from hierpt.eval.evaluate import evaluate_checkpoint, windows
from hierpt.model.baseline import Baseline, BaselineConfig
from hierpt.model.export import save_export
from hierpt.model.hat import HAT, IGNORE, HATConfig
from hierpt.splitting import END_OF_DOC_WORD, split_words, words_to_tensors

VOCABULARY = {
    "en": ("the", "cat", "dog", "sees", "runs", "home", "small", "river", "green", "and", "quickly", "house"),
    "de": ("der", "Hund", "läuft", "über", "die", "grüne", "Brücke", "schön", "Straße", "und", "heute", "Mädchen"),
}
STEPS = 40


def make_documents(count: int, seed: int) -> list[tuple[str, str]]:
    """(lang, text) pairs of short sentences over a fixed vocabulary per language: learnable in a few steps."""
    rng = random.Random(seed)
    documents = []
    for i in range(count):
        lang = sorted(VOCABULARY)[i % len(VOCABULARY)]
        sentences = [
            " ".join(rng.choice(VOCABULARY[lang]) for _ in range(rng.randint(4, 9))).capitalize() + "."
            for _ in range(3)
        ]
        documents.append((lang, " ".join(sentences)))
    return documents


def _train(model: torch.nn.Module, batch: dict) -> list[float]:
    """A plain AdamW loop. One intra-op thread: tiny models gain nothing from two, and on a shared 2-core
    machine two threads made these steps 4x slower (measured: 80 s vs 19 s for the HAT)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
        losses = []
        for _ in range(STEPS):
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def corpus() -> dict[str, list[tuple[str, str]]]:
    return {"train": make_documents(24, seed=1), "eval": make_documents(6, seed=2)}


@pytest.fixture(scope="session")
def eval_jsonl(corpus, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("eval-text") / "eval.jsonl"
    path.write_text("".join(json.dumps({"text": text, "lang": lang}) + "\n" for lang, text in corpus["eval"]))
    return str(path)


@pytest.fixture(scope="session")
def hat_export(corpus, tmp_path_factory) -> tuple[str, list[float]]:
    """A tiny HAT trained on the corpus and exported; returns the export path and its loss history."""
    torch.manual_seed(0)
    config = HATConfig.from_name("tiny")
    model = HAT(config)
    words = [END_OF_DOC_WORD]
    for _, text in corpus["train"]:
        words += [*split_words(text, config.max_word_bytes), END_OF_DOC_WORD]
    word_bytes, lengths = words_to_tensors(list(windows(words, config.seq_words)), config.max_word_bytes)
    losses = _train(model, {"word_bytes": word_bytes, "lengths": lengths})
    url = str(tmp_path_factory.mktemp("hat-export"))
    return save_export(model.state_dict(), config, url, {"steps": STEPS}), losses


@pytest.fixture(scope="session")
def tokenizer(corpus) -> BPETokenizer:
    return BPETokenizer.train([text for _, text in corpus["train"]], vocab_size=320)


@pytest.fixture(scope="session")
def baseline_export(corpus, tokenizer, tmp_path_factory) -> tuple[str, list[float]]:
    torch.manual_seed(0)
    config = BaselineConfig.from_name("tiny", vocab_size=tokenizer.vocab_size)
    model = Baseline(config)
    ids = [tokenizer.eod_id]
    for encoded in tokenizer.encode_batch([text for _, text in corpus["train"]]):
        ids += [*encoded, tokenizer.eod_id]
    sequences = list(windows(ids, config.seq_tokens))
    tokens = torch.full((len(sequences), config.seq_tokens), IGNORE, dtype=torch.int64)
    for row, seq in enumerate(sequences):
        tokens[row, : len(seq)] = torch.tensor(seq)
    token_bytes = tokenizer.token_bytes()[tokens.clamp(min=0)]
    losses = _train(model, {"tokens": tokens, "token_bytes": token_bytes})
    url = str(tmp_path_factory.mktemp("baseline-export"))
    return save_export(model.state_dict(), model.config, url, {"steps": STEPS}, tokenizer), losses


@pytest.fixture(scope="session")
def eval_results(hat_export, baseline_export, eval_jsonl) -> dict[str, dict]:
    """`evaluate_checkpoint` (seed 0) of both trained exports on the eval corpus."""
    return {
        "hat": evaluate_checkpoint(hat_export[0], eval_jsonl),
        "baseline": evaluate_checkpoint(baseline_export[0], eval_jsonl),
    }
