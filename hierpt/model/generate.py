"""Word-by-word generation (hat_spec.md §4.1): encode the words so far, run the backbone, spell the next word
byte by byte until the decoder emits [W]; an [S] word ends the document. The BPE baseline generates token
by token (`generate_baseline_text`), with the same sampling settings and word budget."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hierpt.data.bpe import BPETokenizer
from hierpt.model.baseline import Baseline
from hierpt.model.hat import HAT
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


@dataclass(frozen=True)
class SamplingConfig:
    max_words: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0


def _allowed_mask(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Allowed bytes at a word's first position ([S] may end the document) and later ones ([W] ends the word)."""
    first = torch.ones(256, dtype=torch.bool, device=device)
    first[_NEVER_TEXT] = False
    later = first.clone()
    first[END_OF_DOC] = True
    later[WORD_MARK] = True
    first[PAD] = later[PAD] = False
    return first, later


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


@torch.no_grad()
def spell_word(model: HAT, predictive: torch.Tensor, sampling: SamplingConfig, rng: torch.Generator) -> bytes:
    """Decode one word from its predictive embedding [decoder_dim]."""
    first, later = _allowed_mask(predictive.device)
    spelled: list[int] = []
    for position in range(model.config.max_word_bytes + 1):
        prefix = torch.tensor([spelled], dtype=torch.long, device=predictive.device).view(1, -1)
        logits = model.decode_logits(predictive[None], prefix)[0, -1]
        allowed = first if position == 0 else later
        if position == model.config.max_word_bytes:
            allowed = torch.zeros_like(later)
            allowed[WORD_MARK] = True
        byte = _pick(logits, allowed, sampling, rng)
        if byte == WORD_MARK:
            break
        spelled.append(byte)
        if byte == END_OF_DOC:
            break
    return bytes(spelled)


@torch.no_grad()
def generate_words(model: HAT, prompt_words: list[bytes], sampling: SamplingConfig) -> list[bytes]:
    """Continue `prompt_words`; returns only the new words (ending with [S] if the model ended the document)."""
    if not prompt_words:
        raise ValueError("generation needs a prompt of at least one word")
    device = next(model.parameters()).device
    rng = torch.Generator().manual_seed(sampling.seed)
    max_bytes = model.config.max_word_bytes
    word_bytes, lengths = words_to_tensors([prompt_words], max_bytes)
    vectors = model.encode_words(word_bytes[0].to(device), lengths[0].to(device))
    new_words: list[bytes] = []
    for _ in range(sampling.max_words):
        context = vectors[-model.config.seq_words :]
        predictive = model.run_backbone(context[None])[0, -1]
        word = spell_word(model, predictive, sampling, rng)
        new_words.append(word)
        if word == END_OF_DOC_WORD:
            break
        word_tensor, word_len = words_to_tensors([[word]], max_bytes)
        vectors = torch.cat((vectors, model.encode_words(word_tensor[0].to(device), word_len[0].to(device))))
    return new_words


def generate_text(model: HAT, prompt: str, sampling: SamplingConfig) -> str:
    """The continuation of `prompt` as text (invalid byte runs shown as U+FFFD)."""
    model.eval()
    return join_words(generate_words(model, split_words(prompt, model.config.max_word_bytes), sampling))


@torch.no_grad()
def generate_baseline_text(model: Baseline, tokenizer: BPETokenizer, prompt: str, sampling: SamplingConfig) -> str:
    """The baseline's continuation of `prompt`, cut to `max_words` HAT words so both families' samples compare."""
    model.eval()
    device = next(model.parameters()).device
    rng = torch.Generator().manual_seed(sampling.seed)
    allowed = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=device)
    allowed[: tokenizer.vocab_size] = True  # ids past the tokenizer's are untrained padding of the embedding
    prompt_ids = [tokenizer.eod_id, *tokenizer.encode(prompt)]
    new: list[int] = []
    for _ in range(sampling.max_words * 8):  # a bound for text that never completes a word (e.g. one endless run)
        context = torch.tensor([(prompt_ids + new)[-model.config.seq_tokens :]], device=device)
        token = _pick(model.logits(context)[0, -1], allowed, sampling, rng)
        if token == tokenizer.eod_id:
            break
        new.append(token)
        if len(split_words(tokenizer.decode(new))) > sampling.max_words:
            break
    return join_words(split_words(tokenizer.decode(new))[: sampling.max_words])


def continue_text(model: HAT | Baseline, tokenizer: BPETokenizer | None, prompt: str, sampling: SamplingConfig) -> str:
    """Either family's continuation (`family.load_any_export` gives a HAT no tokenizer)."""
    if tokenizer is None:
        return generate_text(model, prompt, sampling)
    return generate_baseline_text(model, tokenizer, prompt, sampling)
