"""Log-likelihood of a continuation given a context, for both families: what downstream tasks score with.

HAT: context and continuation are split as one text, after the document start [S], so a continuation that
starts inside the context's last word (context "The qu", continuation "ick") is scored as the rest of that
word. The score is the log-probability of the continuation's bytes plus the end-of-word marks [W] the
continuation decides: a [W] after byte offset e counts when start <= e < end (the context's last word ends
where a continuation starts a new word; the continuation's last word may go on). So scores chain exactly:
score(context + continuation | "") = score(context | "") + score(continuation | context).

Baseline: the context and the continuation are tokenized separately (end-of-document token first) and the
continuation's tokens are scored.

`greedy` says whether greedy decoding (`hierpt.model.generate`'s byte or token choices) reproduces the
continuation. Requests longer than the model's sequence are scored in windows that overlap by one position,
as `evaluate` scores long documents; requests are batched longest first within a budget of padded positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import NamedTuple

import torch
import torch.nn.functional as F

from hierpt.data.bpe import BPETokenizer
from hierpt.eval.evaluate import batch_positions, length_batches, predicted_batches, window_starts
from hierpt.model.baseline import Baseline
from hierpt.model.family import family_of
from hierpt.model.generate import allowed_at, allowed_bytes
from hierpt.model.hat import HAT, IGNORE
from hierpt.splitting import END_OF_DOC_WORD, split_words


class Score(NamedTuple):
    logprob: float  # natural log
    greedy: bool


class _Window(NamedTuple):
    request: int
    units: list  # words (HAT) or token ids (baseline)
    offsets: list[int]  # HAT: byte offset of each word's start in the text; baseline: each token's index


def score(
    model: HAT | Baseline,
    tokenizer: BPETokenizer | None,
    requests: Sequence[tuple[str, str]],
    budget: int | None = None,
) -> list[Score]:
    """(context, continuation) pairs -> scores, for either family (`family.load_any_export`); `budget`: padded
    positions per forward (default: the device's, `evaluate.BATCH_POSITIONS`)."""
    return SCORERS[family_of(model.config).name](model, tokenizer, requests, budget)


def _windows(sequences: list[tuple[list, list[int]]], length: int) -> list[_Window]:
    return [
        _Window(request, units[start : start + length], offsets[start : start + length])
        for request, (units, offsets) in enumerate(sequences)
        for start in window_starts(len(units), length)
    ]


def _totals(count: int, request_ids: list, logprobs: list, wrong: list) -> list[Score]:
    """Per-request sums of the per-word (HAT) or per-window (baseline) parts; an empty request scores 0."""
    logprob, misses = torch.zeros(count, dtype=torch.float64), torch.zeros(count, dtype=torch.long)
    if request_ids:
        request_ids = torch.cat(request_ids)
        logprob.index_add_(0, request_ids, torch.cat(logprobs).double())
        misses.index_add_(0, request_ids, torch.cat(wrong).long())
    return [Score(float(lp), int(m) == 0) for lp, m in zip(logprob, misses)]


@torch.inference_mode()
def score_hat(model: HAT, requests: Sequence[tuple[str, str]], budget: int | None = None) -> list[Score]:
    config, device = model.config, next(model.parameters()).device
    sequences, spans = [], []
    for context, continuation in requests:
        words = [END_OF_DOC_WORD, *split_words(context + continuation, config.max_word_bytes)]
        starts = list(accumulate((len(w) for w in words[1:]), initial=0))[:-1]
        sequences.append((words, [0, *starts]))  # [S] is context only
        start = len(context.encode())
        spans.append((start, start + len(continuation.encode())))
    masks = allowed_bytes(device)
    allowed = torch.stack([allowed_at(p, config.max_word_bytes, masks) for p in range(config.max_word_bytes + 1)])
    windows = _windows(sequences, config.seq_words)
    ids, logprobs, wrong = [], [], []
    batches = predicted_batches(model, [w.units for w in windows], budget or batch_positions(device))
    for index, lengths, (predictive, spelled, spelled_lens) in batches:
        batch = [windows[i] for i in index]
        # per predicted word (row-major, as `predicted_words` returns them): its request, byte offset and span
        predicted = (lengths[:, 1:] > 0).nonzero()
        rows, cols = predicted[:, 0], predicted[:, 1] + 1
        offsets = torch.tensor([w.offsets + [0] * (lengths.shape[1] - len(w.offsets)) for w in batch])[rows, cols]
        request = torch.tensor([w.request for w in batch])[rows]
        span = torch.tensor([spans[w.request] for w in batch])[rows]
        for group, logits, targets in model.spelling_groups(predictive, spelled, spelled_lens):
            if not len(group):
                continue
            logits, g, positions = logits.float(), group.cpu(), targets.shape[1]
            at = offsets[g, None] + torch.arange(positions)  # byte offset of each target ([W]: where it ends)
            counted = (targets.cpu() != IGNORE) & (at >= span[g, :1]) & (at < span[g, 1:])
            logp = F.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0].cpu()
            choice = logits.masked_fill(~allowed[:positions], float("-inf")).argmax(-1).cpu()
            ids.append(request[g])
            logprobs.append((logp * counted).sum(1))
            wrong.append(((choice != targets.cpu()) & counted).sum(1))
    return _totals(len(requests), ids, logprobs, wrong)


@torch.inference_mode()
def score_baseline(
    model: Baseline, tokenizer: BPETokenizer, requests: Sequence[tuple[str, str]], budget: int | None = None
) -> list[Score]:
    device = next(model.parameters()).device
    sequences, firsts = [], []
    for context, continuation in requests:
        head = [tokenizer.eod_id, *tokenizer.encode(context)]
        ids = head + tokenizer.encode(continuation)
        sequences.append((ids, list(range(len(ids)))))
        firsts.append(len(head))
    windows = _windows(sequences, model.config.seq_tokens)
    allowed = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
    allowed[: tokenizer.vocab_size] = True
    ids, logprobs, wrong = [], [], []
    for index in length_batches([len(w.units) for w in windows], budget or batch_positions(device)):
        batch = [windows[i] for i in index]
        width = len(batch[0].units)
        tokens = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        positions = torch.full((len(batch), width), -1, dtype=torch.long)
        for row, w in enumerate(batch):
            tokens[row, : len(w.units)] = torch.tensor(w.units)
            positions[row, : len(w.units)] = torch.tensor(w.offsets)
        logits, _ = model.predict(tokens.to(device))
        logits, targets = logits.float(), tokens[:, 1:]
        first = torch.tensor([firsts[w.request] for w in batch])[:, None]
        counted = (targets != IGNORE) & (positions[:, 1:] >= first)
        logp = F.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).to(device)[..., None])[..., 0].cpu()
        choice = logits.masked_fill(~allowed, float("-inf")).argmax(-1).cpu()
        ids.append(torch.tensor([w.request for w in batch]))
        logprobs.append((logp * counted).sum(1))
        wrong.append(((choice != targets) & counted).sum(1))
    return _totals(len(requests), ids, logprobs, wrong)


def rolling_requests(texts: Sequence[str]) -> list[tuple[str, str]]:
    """Whole texts as continuations of an empty context: their log-likelihood as documents."""
    return [("", text) for text in texts]


# How each family's model scores requests (the eval side of `hierpt.model.family.FAMILIES`, as evaluate.SCORERS).
SCORERS = {
    "hat": lambda model, _, requests, budget: score_hat(model, requests, budget),
    "baseline": score_baseline,
}
