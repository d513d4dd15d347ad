"""Metric sums and the numbers made from them: bits/byte, word accuracy, compression.

Sums, not means, are aggregated (over batches, documents, languages) so every metric is exact: bits/byte
is total cross-entropy in bits over total UTF-8 bytes predicted, whatever the batching.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from hierpt.data.bpe import BPETokenizer
from hierpt.splitting import split_words


@dataclass
class ScoreSums:
    """Totals over scored text. Words are counted by each family's scorer (`add_words`): the HAT predicts
    them, a token model's word accuracy is worked out from its tokens."""

    nll_nats: float = 0.0
    utf8_bytes: int = 0
    words: int = 0
    words_correct: int = 0

    def add(self, output) -> None:
        """Add the sums every family's forward returns (`nll_sum`, `utf8_bytes`)."""
        self.nll_nats += float(output.nll_sum)
        self.utf8_bytes += int(output.utf8_bytes)

    def add_words(self, words, words_correct) -> None:
        self.words += int(words)
        self.words_correct += int(words_correct)

    def __add__(self, other: ScoreSums) -> ScoreSums:
        return ScoreSums(
            self.nll_nats + other.nll_nats,
            self.utf8_bytes + other.utf8_bytes,
            self.words + other.words,
            self.words_correct + other.words_correct,
        )

    @property
    def bits_per_byte(self) -> float:
        if not self.utf8_bytes:
            raise ValueError("no bytes were scored")
        return self.nll_nats / math.log(2) / self.utf8_bytes

    @property
    def word_accuracy(self) -> float | None:
        return self.words_correct / self.words if self.words else None


def relative_increase(perturbed: float, clean: float) -> float:
    """Robustness as the paper reports it: the relative bits/byte increase under a perturbation."""
    return perturbed / clean - 1


def compression(texts: Sequence[str], max_word_bytes: int, tokenizer: BPETokenizer | None = None) -> dict[str, float]:
    """UTF-8 bytes per HAT word (and per BPE token with a tokenizer) over `texts` ([S] and specials not counted)."""
    n_bytes = sum(len(text.encode()) for text in texts)
    n_words = sum(len(split_words(text, max_word_bytes)) for text in texts)
    if not n_words:
        raise ValueError("no words in the text: compression is undefined")
    stats = {"bytes": n_bytes, "words": n_words, "bytes_per_word": n_bytes / n_words}
    if tokenizer is not None:
        n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
        stats |= {"tokens": n_tokens, "bytes_per_token": n_bytes / n_tokens}
    return stats
