"""Evaluate a model on any UTF-8 text: bits/byte, word accuracy, robustness and compression per language.

Both models are scored on exactly the UTF-8 bytes of each document. A sequence's first position is context
only, so each document is preceded by the end-of-document symbol as context — the `[S]` word for the HAT, the
end-of-document token for the baseline — as it is in training, where documents are packed after one another.
The model then predicts every byte of the document and its end. A document longer than the model's sequence
is cut into windows that overlap by one position (the last of one window is the context of the next), so
every position is predicted exactly once.

Word accuracy counts the HAT's words (and the document end) for both models: for the HAT a word is right when
the argmax gets all its bytes and its end mark; for the baseline, when it gets every token covering its bytes.

Input: one file of any format prep reads, with its documents as prep reads them (hierpt.data.sources): a JSONL
object per line with ``text`` and optional ``lang`` (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``), a line of
plain text (``.txt``), a Parquet row's ``text``. Documents without ``lang`` count as ``und``; ``all``
aggregates them all. Unlike prep, which counts bad lines and goes on, evaluation refuses a file with one: a
score on a silently smaller set would look like a score on the whole.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Sequence

import torch

from hierpt.data import sources
from hierpt.data.bpe import BPETokenizer
from hierpt.data.recipe import MAX_DOC_BYTES
from hierpt.data.sources import Document, Rejection
from hierpt.eval.metrics import ScoreSums, compression, relative_increase
from hierpt.eval.perturb import PERTURBATIONS, RATE, perturb
from hierpt.model.baseline import Baseline
from hierpt.model.export import load_any_export
from hierpt.model.family import family_of
from hierpt.model.hat import HAT, IGNORE, word_scores
from hierpt.splitting import (
    DEFAULT_MAX_WORD_BYTES,
    END_OF_DOC_WORD,
    split_words,
    words_to_tensors,
)

UNDETERMINED = "und"
ALL = "all"
# Padded positions (words or tokens) per forward, by device type: on one CPU thread `small` scores fastest per
# byte in small forwards (benchmarks/RESULTS.md, issue 14); a GPU needs large ones to keep its cores busy.
BATCH_POSITIONS = {"cpu": 1024, "cuda": 8192}
ROUND_WORDS = 1 << 15  # words per round of batches whose distinct words are encoded together (`predicted_batches`)

Scorer = Callable[[Sequence[str]], list[ScoreSums]]  # sums per text, in order


def read_documents(url: str) -> list[Document]:
    """The documents of one file (any fsspec URL), each with its language; a rejected line is an error naming it
    (whitespace-only documents are skipped, as prep counts them)."""
    documents = []
    for doc in sources.read_documents(sources.input_file(url), "text", MAX_DOC_BYTES, lang_field="lang"):
        if isinstance(doc, Rejection):
            if doc.reason == "empty_document":
                continue
            where = f"{url}:{doc.line}" if doc.line else url
            raise ValueError(f"{where}: {doc.reason}: {sources.REASONS[doc.reason]}")
        if doc.lang == ALL:
            raise ValueError(f"{url}:{doc.line}: lang {ALL!r} is reserved for the aggregate of all languages")
        documents.append(doc if doc.lang else doc._replace(lang=UNDETERMINED))
    if not documents:
        raise ValueError(f"{url}: no documents with text")
    return documents


def window_starts(n: int, length: int) -> range:
    """Starts of windows of at most `length` positions over n, overlapping by one (see `windows`)."""
    return range(0, n - 1, length - 1)


def windows(sequence: Sequence, length: int) -> list[Sequence]:
    """Windows of at most `length` positions overlapping by one, so every position but the first is predicted once."""
    return [sequence[start : start + length] for start in window_starts(len(sequence), length)]


def batch_positions(device: torch.device) -> int:
    """The default budget of padded positions per forward on `device` (`BATCH_POSITIONS`)."""
    return BATCH_POSITIONS.get(device.type, BATCH_POSITIONS["cuda"])


def length_batches(lengths: Sequence[int], budget: int) -> Iterator[list[int]]:
    """Indices of sequences, longest first, as many per batch as fit `budget` padded positions."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    while order:
        count = max(1, budget // lengths[order[0]])
        yield order[:count]
        order = order[count:]


def predicted_batches(
    model: HAT, sequences: Sequence[Sequence[bytes]], budget: int
) -> Iterator[tuple[list[int], torch.Tensor, tuple[torch.Tensor, ...]]]:
    """Per batch of `length_batches`: the sequences' indices, their word lengths [B, N] (on the CPU) and
    `model.predicted_words` of them.

    The encoder reads each word alone, so a word's vector is the same wherever it occurs: each distinct word of
    a round of batches is encoded once (the five passes of a document share most of their words, and frequent
    words recur). A round holds up to `ROUND_WORDS` words, which bounds the table of vectors.
    """
    config, device = model.config, next(model.parameters()).device
    for round_ in _rounds(list(length_batches([len(s) for s in sequences], budget)), sequences):
        distinct: dict[bytes, int] = {}
        ids = [[[distinct.setdefault(w, len(distinct)) for w in sequences[i]] for i in index] for index in round_]
        table_bytes, table_lengths = (t[0] for t in words_to_tensors([list(distinct)], config.max_word_bytes))
        vectors = _encode_distinct(model, table_bytes.to(device), table_lengths.to(device), budget)
        for index, rows in zip(round_, ids):
            word_ids = torch.full((len(rows), len(rows[0])), -1, dtype=torch.long)
            for row, row_ids in enumerate(rows):
                word_ids[row, : len(row_ids)] = torch.tensor(row_ids)
            present = word_ids >= 0
            lengths = torch.where(present, table_lengths[word_ids.clamp(min=0)], 0)
            word_bytes = table_bytes[word_ids.clamp(min=0)].to(device)
            yield index, lengths, model.predicted_words(word_bytes, lengths.to(device), vectors[word_ids[present]])


def _encode_distinct(model: HAT, word_bytes: torch.Tensor, lengths: torch.Tensor, budget: int) -> torch.Tensor:
    """`encode_words` of words [n, L] in chunks of `budget` words, shortest first (few length groups each)."""
    by_length = torch.argsort(lengths, stable=True)
    vectors = torch.cat([model.encode_words(word_bytes[c], lengths[c]) for c in by_length.split(budget)])
    return vectors[torch.argsort(by_length)]


def _rounds(batches: list[list[int]], sequences: Sequence[Sequence]) -> Iterator[list[list[int]]]:
    """Consecutive batches, as many per round as reach `ROUND_WORDS` words."""
    round_, words = [], 0
    for index in batches:
        round_.append(index)
        words += sum(len(sequences[i]) for i in index)
        if words >= ROUND_WORDS:
            yield round_
            round_, words = [], 0
    if round_:
        yield round_


@torch.inference_mode()
def score_hat(model: HAT, texts: Sequence[str], budget: int | None = None) -> list[ScoreSums]:
    """Sums per text. All texts' windows share the batches, so many short texts (a few documents per
    language, times five passes) still fill forwards as large as training's."""
    config, device = model.config, next(model.parameters()).device
    sequences, owners = [], []
    for t, text in enumerate(texts):
        words = [END_OF_DOC_WORD, *split_words(text, config.max_word_bytes), END_OF_DOC_WORD]
        pieces = windows(words, config.seq_words)
        sequences.extend(pieces)
        owners.extend([t] * len(pieces))
    nll = torch.zeros(len(texts), dtype=torch.float64)
    counts = torch.zeros(len(texts), 3, dtype=torch.long)  # utf8 bytes, words, words right
    for index, lengths, (predictive, spelled, spelled_lens) in predicted_batches(
        model, sequences, budget or batch_positions(device)
    ):
        # the text of each predicted word (row-major, as `predicted_words` returns them)
        text_of = torch.tensor([owners[i] for i in index])[(lengths[:, 1:] > 0).nonzero()[:, 0]]
        for group, logits, targets in model.spelling_groups(predictive, spelled, spelled_lens):
            words, owner = word_scores(logits, targets), text_of[group.cpu()]
            nll.index_add_(0, owner, words.nll.sum(1).double().cpu())
            per_word = torch.stack((words.utf8_bytes, torch.ones_like(words.utf8_bytes), words.correct.long()), 1)
            counts.index_add_(0, owner, per_word.cpu())
    return [ScoreSums(n, *c) for n, c in zip(nll.tolist(), counts.tolist())]


@torch.inference_mode()
def score_baseline(
    model: Baseline, tokenizer: BPETokenizer, texts: Sequence[str], budget: int | None = None
) -> list[ScoreSums]:
    """Sums per text over its tokens, and word accuracy over its HAT words (see `_words_correct`)."""
    if tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids but the model embeds {model.config.vocab_size}")
    device, eod, byte_counts = next(model.parameters()).device, tokenizer.eod_id, tokenizer.token_bytes()
    documents = [torch.tensor([eod, *ids, eod]) for ids in tokenizer.encode_batch(texts)]
    pieces = [
        (d, start) for d, doc in enumerate(documents) for start in window_starts(len(doc), model.config.seq_tokens)
    ]
    lengths = [min(model.config.seq_tokens, len(documents[d]) - start) for d, start in pieces]
    correct = [torch.zeros(len(doc), dtype=torch.bool) for doc in documents]  # entry t: token t predicted right
    sums = [ScoreSums() for _ in texts]
    for index in length_batches(lengths, budget or batch_positions(device)):
        tokens = torch.full((len(index), lengths[index[0]]), IGNORE, dtype=torch.int64)
        for row, i in enumerate(index):
            d, start = pieces[i]
            tokens[row, : lengths[i]] = documents[d][start : start + lengths[i]]
        token_bytes = byte_counts[tokens.clamp(min=0)].to(device)
        logits, targets = model.predict(tokens.to(device))
        right = logits.argmax(-1).cpu() == tokens[:, 1:]
        for row, i in enumerate(index):  # each row is one text's window
            d, start = pieces[i]
            sums[d].add(model.score(logits[row : row + 1], targets[row : row + 1], token_bytes[row : row + 1, 1:]))
            correct[d][start + 1 : start + lengths[i]] = right[row, : lengths[i] - 1]
    for text, doc, doc_correct, doc_sums in zip(texts, documents, correct, sums):
        doc_sums.add_words(*_words_correct(text, byte_counts[doc], doc_correct))
    return sums


def _words_correct(text: str, token_bytes: torch.Tensor, correct: torch.Tensor) -> tuple[int, int]:
    """Word accuracy of a token model, on the HAT's words: a word is right when every token that covers any of
    its bytes was predicted right; the end-of-document token counts as the `[S]` word, as for the HAT."""
    token_end = token_bytes.cumsum(0)
    token_start = token_end - token_bytes
    word_bytes = torch.tensor([len(w) for w in split_words(text, DEFAULT_MAX_WORD_BYTES)], dtype=torch.int64)
    word_end = word_bytes.cumsum(0)
    word_start = word_end - word_bytes
    first = torch.searchsorted(token_end, word_start, right=True)  # first token ending after the word starts
    last = torch.searchsorted(token_start, word_end, right=False) - 1  # last token starting before it ends
    wrong_before = torch.cat((torch.zeros(1, dtype=torch.int64), (~correct).long().cumsum(0)))
    words_right = (wrong_before[last + 1] - wrong_before[first] == 0).sum()
    return len(word_bytes) + 1, int(words_right) + int(correct[-1])


def evaluate(
    score: Scorer,
    documents: Sequence[Document],
    seed: int = 0,
    rate: float = RATE,
    perturbations: Sequence[str] = PERTURBATIONS,
    max_word_bytes: int = DEFAULT_MAX_WORD_BYTES,
    tokenizer: BPETokenizer | None = None,
) -> dict:
    """All metrics per language (and `all`): one JSON-ready dict, the same for the same inputs and seed.

    Perturbations are a property of the text (HAT words with the default word limit), so two models evaluated
    with the same seed see the same perturbed documents.
    """
    by_lang: dict[str, list[str]] = {}
    for doc in documents:
        by_lang.setdefault(doc.lang, []).append(doc.text)
    result: dict = {"seed": seed, "rate": rate, "docs": {lang: len(texts) for lang, texts in by_lang.items()}}
    # one call for every pass over every document, so the scorer batches them all together
    passes = [None, *perturbations]
    runs = [(kind, doc) for kind in passes for doc in documents]
    texts = [doc.text if kind is None else perturb(doc.text, kind, seed, rate) for kind, doc in runs]
    sums = {kind: {lang: ScoreSums() for lang in [*by_lang, ALL]} for kind in passes}
    for (kind, doc), text_sums in zip(runs, score(texts), strict=True):
        sums[kind][doc.lang] += text_sums
        sums[kind][ALL] += text_sums
    clean = sums[None]
    result["bits_per_byte"] = {lang: s.bits_per_byte for lang, s in clean.items()}
    if clean[ALL].words:
        result["word_accuracy"] = {lang: s.word_accuracy for lang, s in clean.items()}
    result["perturbed_bits_per_byte"], result["robustness"] = {}, {}
    for kind in perturbations:
        result["perturbed_bits_per_byte"][kind] = {lang: s.bits_per_byte for lang, s in sums[kind].items()}
        result["robustness"][kind] = {
            lang: relative_increase(s.bits_per_byte, clean[lang].bits_per_byte) for lang, s in sums[kind].items()
        }
    all_texts = [text for texts in by_lang.values() for text in texts]
    result["compression"] = {
        lang: compression(texts, max_word_bytes, tokenizer) for lang, texts in [*by_lang.items(), (ALL, all_texts)]
    }
    return result


# How each family's model scores texts (the eval side of `hierpt.model.family.FAMILIES`).
SCORERS: dict[str, Callable[..., Scorer]] = {
    "hat": lambda model, _, budget: functools.partial(score_hat, model, budget=budget),
    "baseline": lambda model, tokenizer, budget: functools.partial(score_baseline, model, tokenizer, budget=budget),
}


def evaluate_checkpoint(
    checkpoint: str,
    text: str,
    seed: int = 0,
    rate: float = RATE,
    tokenizer: str | None = None,
    device: str = "cpu",
    perturbations: Sequence[str] = PERTURBATIONS,
) -> dict:
    """`evaluate` for an export (HAT, or baseline with its own tokenizer) on a file (`read_documents`)."""
    model, own_tokenizer = load_any_export(checkpoint, device)
    return {"checkpoint": checkpoint, **evaluate_model(model, own_tokenizer, text, seed, rate, tokenizer, perturbations)}


def evaluate_model(
    model: HAT | Baseline,
    own_tokenizer: BPETokenizer | None,
    text: str,
    seed: int = 0,
    rate: float = RATE,
    tokenizer: str | None = None,
    perturbations: Sequence[str] = PERTURBATIONS,
    budget: int | None = None,
) -> dict:
    """`evaluate` for a loaded model (`export.load_any_export`: a token model comes with its own tokenizer).

    `tokenizer` adds bytes per BPE token to a HAT's compression numbers; a token model always reports its own.
    `budget`: padded positions per forward (default: the device's, `BATCH_POSITIONS`).
    """
    documents = read_documents(text)
    family = family_of(model.config)
    score = SCORERS[family.name](model, own_tokenizer, budget)
    bpe = own_tokenizer if own_tokenizer is not None else BPETokenizer.load(tokenizer) if tokenizer else None
    scored = ScoreSums()

    def timed_score(texts: Sequence[str]) -> list[ScoreSums]:
        sums = score(texts)
        scored.utf8_bytes += sum(s.utf8_bytes for s in sums)
        return sums

    start = time.perf_counter()
    result = evaluate(timed_score, documents, seed, rate, perturbations, family.word_limit(model.config), bpe)
    seconds = time.perf_counter() - start
    # every pass (clean + perturbations) counts: the bytes the model scored per second of evaluation
    throughput = {"bytes": scored.utf8_bytes, "seconds": round(seconds, 3), "bytes_per_s": scored.utf8_bytes / seconds}
    return {"model": family.name, "text": text, **result, "throughput": throughput}
