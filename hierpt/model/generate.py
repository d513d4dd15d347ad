"""Generation for both families, with KV caches so a new word (token) costs the same at any context length.

HAT: the backbone keeps a cache over words, the decoder one within the word being spelled,
and the encoder runs once per finished word. The prompt is read as training reads text: the document start
[S] comes first, and its last word is unfinished — "The qu" continues " qu", and "The " continues " " into
" quick" instead of making the space a word — so the decoder starts from that word's bytes and may end it
at once. The BPE baseline generates token by token with its own cache, with the same sampling settings and
word budget. Prompts of different lengths run as one batch; each row samples from its own seeded generator,
so a row's text does not depend on the rest of the batch.

When a row's context reaches the model's sequence length, its cache is rebuilt from the last half of it
(RoPE positions restart, as for any window): an amortised cost instead of a full recompute per step. The
uncached generators (`generate_words_uncached`, `generate_baseline_uncached`) recompute everything per word
and byte; they are the reference the cached ones are tested and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hierpt.data.bpe import BPETokenizer
from hierpt.model.baseline import Baseline
from hierpt.model.hat import HAT, KVCache
from hierpt.splitting import (
    END_OF_DOC,
    END_OF_DOC_WORD,
    PAD,
    WORD_MARK,
    join_words,
    split_words,
    words_to_tensors,
)

# Byte values that never start or continue valid UTF-8 text, besides the specials handled per position.
_NEVER_TEXT = [0xC0, 0xC1, *range(0xF5, 0x100)]
TOKENS_PER_WORD_BOUND = 8  # the baseline stops after max_words * this tokens (text that never completes a word)


@dataclass(frozen=True)
class SamplingConfig:
    max_words: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()  # a row ends once its continuation contains one of these (lm-eval's `until`)


def _stopped(text: str, sampling: SamplingConfig) -> bool:
    return any(s and s in text for s in sampling.stop)


def prompt_words(prompt: str, max_word_bytes: int) -> tuple[list[bytes], bytes]:
    """The finished words the backbone reads ([S] first) and the unfinished last word the decoder continues."""
    words = split_words(prompt, max_word_bytes)
    return [END_OF_DOC_WORD, *words[:-1]], words[-1] if words else b""


def allowed_bytes(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Allowed bytes at a word's first position ([S] may end the document) and later ones ([W] ends the word)."""
    first = torch.ones(256, dtype=torch.bool, device=device)
    first[_NEVER_TEXT] = False
    later = first.clone()
    first[END_OF_DOC] = True
    later[WORD_MARK] = True
    first[PAD] = later[PAD] = False
    return first, later


def allowed_at(position: int, max_word_bytes: int, masks: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    first, later = masks
    if position == max_word_bytes:  # a full-length word can only end
        only_end = torch.zeros_like(later)
        only_end[WORD_MARK] = True
        return only_end
    return first if position == 0 else later


def _pick(logits: torch.Tensor, allowed: torch.Tensor, sampling: SamplingConfig, rng: torch.Generator) -> int:
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    if sampling.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < sampling.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=rng))


def _rngs(count: int, sampling: SamplingConfig) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(sampling.seed) for _ in range(count)]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------------- HAT


@torch.no_grad()
def spell_words(
    model: HAT, predictive: torch.Tensor, prefixes: Sequence[bytes], sampling: SamplingConfig, rngs
) -> list[bytes]:
    """Spell one word per row from predictive embeddings [B, decoder_dim], each continuing its prefix; the
    decoder caches the word's positions, so each byte costs one position."""
    B, device, max_bytes = len(prefixes), predictive.device, model.config.max_word_bytes
    masks = allowed_bytes(device)
    cache = KVCache(model.config.decoder, B, max_bytes + 1, predictive)
    prefix_bytes, prefix_lens = words_to_tensors([[p] for p in prefixes if p] or [[b"\0"]], max_bytes)
    prefix_embed = predictive.new_zeros(B, prefix_bytes.shape[-1], predictive.shape[-1])
    with_prefix = torch.tensor([bool(p) for p in prefixes], device=device)
    if with_prefix.any():
        prefix_embed[with_prefix] = model.decoder_embed(prefix_bytes[:, 0].long().to(device))
    counts = torch.tensor([1 + len(p) for p in prefixes], device=device)
    hidden = model.decoder(torch.cat((predictive[:, None], prefix_embed), dim=1), cache=cache, counts=counts)
    logits = model.lm_head(hidden[torch.arange(B, device=device), counts - 1])
    spelled, done = [list(p) for p in prefixes], [False] * B
    while True:
        last = []
        for row in range(B):
            if not done[row]:
                allowed = allowed_at(len(spelled[row]), max_bytes, masks)
                byte = _pick(logits[row], allowed, sampling, rngs[row])
                done[row] = byte in (WORD_MARK, END_OF_DOC)  # [S] is only allowed as a word's first byte
                if byte != WORD_MARK:
                    spelled[row].append(byte)
            last.append(spelled[row][-1] if spelled[row] else PAD)
        if all(done):
            return [bytes(word) for word in spelled]
        active = torch.tensor([not d for d in done], device=device)
        step = model.decoder_embed(torch.tensor(last, device=device)[:, None])
        logits = model.lm_head(model.decoder(step, cache=cache, counts=active.long())[:, 0])


@torch.no_grad()
def generate_hat(model: HAT, prompts: Sequence[str], sampling: SamplingConfig) -> list[list[bytes]]:
    """Continue each prompt; per row the words after the prompt's finished ones (the first completes the
    prompt's unfinished word), ending with [S] if the model ended the document, or with the word that
    completed a stop string (`SamplingConfig.stop`)."""
    config, device = model.config, _device(model)
    rows = [prompt_words(p, config.max_word_bytes) for p in prompts]
    B, rngs = len(rows), _rngs(len(rows), sampling)
    history = [list(context) for context, _ in rows]  # each row's words so far, for a rebuilt window
    unfinished = [prefix for _, prefix in rows]
    prefixes = list(unfinished)
    capacity = min(config.seq_words, max(map(len, history)) + sampling.max_words)
    cache, predictive = _prefill_backbone(model, [h[-config.seq_words :] for h in history], capacity)
    new_words: list[list[bytes]] = [[] for _ in range(B)]
    active = [True] * B
    for _ in range(sampling.max_words):
        if not any(active):
            break
        spelling = [row for row in range(B) if active[row]]  # a row that ended spells nothing more
        spelled = spell_words(
            model, predictive[spelling], [prefixes[r] for r in spelling], sampling, [rngs[r] for r in spelling]
        )
        words = [END_OF_DOC_WORD] * B  # an ended row's place in the batch; its cache does not grow
        for row, word in zip(spelling, spelled):
            words[row] = word
            new_words[row].append(word)
            history[row].append(word)
        prefixes = [b""] * B
        counts = torch.tensor(active, device=device).long()
        for row in spelling:  # a stop string ends the row as soon as it appears, not at max_words
            ended = new_words[row][-1] == END_OF_DOC_WORD
            active[row] = not ended and not _stopped(_continuation(unfinished[row], new_words[row]), sampling)
        if int(cache.lengths.max()) == cache.capacity:
            keep = max(1, config.seq_words // 2)
            cache, predictive = _prefill_backbone(model, [h[-keep:] for h in history], config.seq_words)
            continue
        word_bytes, lengths = words_to_tensors([[w] for w in words], config.max_word_bytes)
        vectors = model.encode_words(word_bytes[:, 0].to(device), lengths[:, 0].to(device))
        predictive = model.run_backbone(vectors[:, None], cache=cache, counts=counts)[:, 0]
    return new_words


def _prefill_backbone(model: HAT, words: list[list[bytes]], capacity: int) -> tuple[KVCache, torch.Tensor]:
    """A backbone cache holding each row's words, and the predictive embedding after each row's last word."""
    device = _device(model)
    word_bytes, lengths = (t.to(device) for t in words_to_tensors(words, model.config.max_word_bytes))
    present = lengths > 0
    vectors = model.encode_words(word_bytes[present].long(), lengths[present])
    backbone_in = vectors.new_zeros(*lengths.shape, vectors.shape[-1]).index_put((present,), vectors)
    cache = KVCache(model.config.backbone, len(words), capacity, vectors)
    counts = present.sum(1)
    predictive = model.run_backbone(backbone_in, cache=cache, counts=counts)
    return cache, predictive[torch.arange(len(words), device=device), counts - 1]


def generate_text(model: HAT, prompt: str, sampling: SamplingConfig) -> str:
    """The continuation of `prompt` as text (invalid byte runs shown as U+FFFD)."""
    return generate_hat_texts(model, [prompt], sampling)[0]


def generate_hat_texts(model: HAT, prompts: Sequence[str], sampling: SamplingConfig) -> list[str]:
    model.eval()
    out = []
    for prompt, words in zip(prompts, generate_hat(model, prompts, sampling)):
        _, prefix = prompt_words(prompt, model.config.max_word_bytes)
        out.append(_continuation(prefix, words))
    return out


def _continuation(prefix: bytes, words: list[bytes]) -> str:
    """The text after the prompt: the generated words, less the prompt's own unfinished word's bytes."""
    if words and words[0] != END_OF_DOC_WORD:
        words = [words[0][len(prefix) :], *words[1:]]
    return join_words(w for w in words if w)


@torch.no_grad()
def spell_word_uncached(
    model: HAT, predictive: torch.Tensor, prefix: bytes, sampling: SamplingConfig, rng: torch.Generator
) -> bytes:
    """Decode one word from its predictive embedding [decoder_dim], re-decoding the word so far per byte."""
    masks = allowed_bytes(predictive.device)
    spelled = list(prefix)
    while True:
        done = torch.tensor([spelled], dtype=torch.long, device=predictive.device).view(1, -1)
        logits = model.decode_logits(predictive[None], done)[0, -1]
        byte = _pick(logits, allowed_at(len(spelled), model.config.max_word_bytes, masks), sampling, rng)
        if byte == WORD_MARK:
            return bytes(spelled)
        spelled.append(byte)
        if byte == END_OF_DOC:
            return bytes(spelled)


@torch.no_grad()
def generate_words_uncached(model: HAT, prompt: str, sampling: SamplingConfig) -> list[bytes]:
    """`generate_hat` for one prompt, re-running the encoder and backbone over the context for every word."""
    config, device = model.config, _device(model)
    context, prefix = prompt_words(prompt, config.max_word_bytes)
    rng = _rngs(1, sampling)[0]
    word_bytes, lengths = words_to_tensors([context], config.max_word_bytes)
    vectors = model.encode_words(word_bytes[0].to(device), lengths[0].to(device))
    new_words: list[bytes] = []
    for _ in range(sampling.max_words):
        window = vectors[-config.seq_words :]
        word = spell_word_uncached(model, model.run_backbone(window[None])[0, -1], prefix, sampling, rng)
        new_words.append(word)
        prefix = b""
        if word == END_OF_DOC_WORD:
            break
        word_tensor, word_len = words_to_tensors([[word]], config.max_word_bytes)
        vectors = torch.cat((vectors, model.encode_words(word_tensor[0].to(device), word_len[0].to(device))))
    return new_words


# ----------------------------------------------------------------------------------------------- baseline


def _token_mask(model: Baseline, tokenizer: BPETokenizer) -> torch.Tensor:
    allowed = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=_device(model))
    allowed[: tokenizer.vocab_size] = True  # ids past the tokenizer's are untrained padding of the embedding
    return allowed


def _baseline_done(tokenizer: BPETokenizer, new: list[int], sampling: SamplingConfig) -> bool:
    if (new and new[-1] == tokenizer.eod_id) or len(new) >= sampling.max_words * TOKENS_PER_WORD_BOUND:
        return True
    text = tokenizer.decode(new)
    return len(split_words(text)) > sampling.max_words or _stopped(text, sampling)


def _baseline_text(tokenizer: BPETokenizer, new: list[int], sampling: SamplingConfig) -> str:
    """The continuation cut to `max_words` HAT words, so both families' samples compare."""
    return join_words(split_words(tokenizer.decode(new))[: sampling.max_words])


@torch.no_grad()
def generate_baseline(
    model: Baseline, tokenizer: BPETokenizer, prompts: Sequence[str], sampling: SamplingConfig
) -> list[str]:
    """The baseline's continuations of `prompts`, one cached position per token."""
    model.eval()
    device, allowed, seq = _device(model), _token_mask(model, tokenizer), model.config.seq_tokens
    ids = [[tokenizer.eod_id, *tokenizer.encode(p)] for p in prompts]
    B, rngs = len(ids), _rngs(len(ids), sampling)
    new: list[list[int]] = [[] for _ in range(B)]
    capacity = min(seq, max(map(len, ids)) + sampling.max_words * TOKENS_PER_WORD_BOUND)
    cache, logits = _prefill_baseline(model, [i[-seq:] for i in ids], capacity)
    while True:
        active = [not _baseline_done(tokenizer, n, sampling) for n in new]
        if not any(active):
            return [_baseline_text(tokenizer, n, sampling) for n in new]
        step = []
        for row in range(B):
            if active[row]:
                new[row].append(_pick(logits[row], allowed, sampling, rngs[row]))
            step.append(new[row][-1] if new[row] else ids[row][-1])
        if int(cache.lengths.max()) == cache.capacity:
            keep = max(1, seq // 2)
            cache, logits = _prefill_baseline(model, [(i + n)[-keep:] for i, n in zip(ids, new)], seq)
            continue
        counts = torch.tensor(active, device=device).long()
        hidden = model.backbone(model.embed(torch.tensor(step, device=device)[:, None]), cache=cache, counts=counts)
        logits = model.lm_head(hidden[:, 0])


def _prefill_baseline(model: Baseline, rows: list[list[int]], capacity: int) -> tuple[KVCache, torch.Tensor]:
    device = _device(model)
    counts = torch.tensor([len(r) for r in rows], device=device)
    tokens = torch.zeros(len(rows), int(counts.max()), dtype=torch.long, device=device)
    for row, r in enumerate(rows):
        tokens[row, : len(r)] = torch.tensor(r)
    embedded = model.embed(tokens)
    cache = KVCache(model.config.backbone, len(rows), capacity, embedded)
    hidden = model.backbone(embedded, cache=cache, counts=counts)
    return cache, model.lm_head(hidden[torch.arange(len(rows), device=device), counts - 1])


@torch.no_grad()
def generate_baseline_uncached(model: Baseline, tokenizer: BPETokenizer, prompt: str, sampling: SamplingConfig) -> str:
    """`generate_baseline` for one prompt, re-running the whole context for every token."""
    model.eval()
    device, allowed, rng = _device(model), _token_mask(model, tokenizer), _rngs(1, sampling)[0]
    prompt_ids = [tokenizer.eod_id, *tokenizer.encode(prompt)]
    new: list[int] = []
    while not _baseline_done(tokenizer, new, sampling):
        context = torch.tensor([(prompt_ids + new)[-model.config.seq_tokens :]], device=device)
        new.append(_pick(model.logits(context)[0, -1], allowed, sampling, rng))
    return _baseline_text(tokenizer, new, sampling)


def generate_baseline_text(model: Baseline, tokenizer: BPETokenizer, prompt: str, sampling: SamplingConfig) -> str:
    return generate_baseline(model, tokenizer, [prompt], sampling)[0]

