"""Text <-> words of UTF-8 bytes, by the official HAT splitting rule (the `hat-splitter` package).

Special symbols live in byte values that never occur in valid UTF-8 (0xF8-0xFF), so the vocabulary stays
256 and no text can forge them. ``[S]`` (end of document) is stored as a one-byte word.

Invalid UTF-8 input policy: bytes that do not decode become U+FFFD (the Unicode replacement character),
one per maximal invalid subsequence, as Python's ``errors="replace"`` does; callers count them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import torch
from hat_splitter import HATSplitter

WORD_MARK = 0xF8  # [W]: prefixed to every word for the encoder; the decoder's end-of-word target
END_OF_DOC = 0xF9  # [S]: the one-byte word that ends a document
PAD = 0xFA  # filler inside padded tensors; always masked out
IGNORE = -100  # a target no loss is taken on (cross_entropy's ignore_index): padding, context-only positions

END_OF_DOC_WORD = bytes([END_OF_DOC])
DEFAULT_MAX_WORD_BYTES = 100
SPLITTER_NAME = "hat-splitter"


@functools.cache
def _splitter() -> HATSplitter:
    return HATSplitter()


def splitter_version() -> str:
    from importlib.metadata import version

    return version(SPLITTER_NAME)


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """Decode with the replacement policy; returns the text and how many replacements were made."""
    text = raw.decode("utf-8", errors="replace")
    if "\ufffd" not in text:
        return text, 0
    return text, text.count("\ufffd") - raw.count("\ufffd".encode())


def split_words(text: str, max_word_bytes: int = DEFAULT_MAX_WORD_BYTES) -> list[bytes]:
    """The HAT words of `text` as UTF-8 bytes, words longer than `max_word_bytes` cut into chunks."""
    return _splitter().split_with_limit(text, max_word_bytes)


def document_words(text: str, max_word_bytes: int = DEFAULT_MAX_WORD_BYTES) -> list[bytes]:
    """The words of one document followed by the [S] word."""
    return [*split_words(text, max_word_bytes), END_OF_DOC_WORD]


def join_words(words: Iterable[bytes]) -> str:
    """Inverse of splitting: the text of words, stopping at [S]. Lossless for words of valid UTF-8."""
    out = bytearray()
    for word in words:
        if word == END_OF_DOC_WORD:
            break
        out += word
    return out.decode("utf-8", errors="replace")


def words_to_tensors(sequences: Sequence[Sequence[bytes]], max_word_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad sequences of words into (word_bytes [B, N, L] uint8, lengths [B, N] int64).

    N is the longest sequence and L the longest word in this batch (capped by max_word_bytes), so padding
    costs nothing beyond the batch's own shape. Absent words have length 0.
    """
    B = len(sequences)
    N = max((len(s) for s in sequences), default=0)
    L = max((len(w) for s in sequences for w in s), default=1)
    if L > max_word_bytes:
        raise ValueError(f"a word has {L} bytes, more than max_word_bytes={max_word_bytes}; re-split the text")
    flat = [w for s in sequences for w in s]
    if not all(flat):
        raise ValueError("empty word: words must hold at least one byte")
    lengths = torch.zeros(B, N, dtype=torch.int64)
    for b, seq in enumerate(sequences):
        lengths[b, : len(seq)] = torch.tensor([len(w) for w in seq], dtype=torch.int64)
    word_bytes = torch.full((B, N, L), PAD, dtype=torch.uint8)
    if flat:
        padded = b"".join(w.ljust(L, bytes([PAD])) for w in flat)
        values = torch.frombuffer(bytearray(padded), dtype=torch.uint8).view(-1, L)
        word_bytes[lengths > 0] = values
    return word_bytes, lengths

