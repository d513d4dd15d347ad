"""Metric sums add exactly, whatever the batching; the numbers made from them."""

import math

import pytest
import torch

from hierpt.eval.metrics import ScoreSums, compression, relative_increase
from hierpt.model.baseline import BaselineOutput


def test_sums_of_parts_give_the_bits_per_byte_of_the_whole():
    whole, parts = ScoreSums(), [ScoreSums(), ScoreSums()]
    for nll, n_bytes, part in ((3.0, 4, parts[0]), (5.0, 6, parts[1])):
        output = BaselineOutput(*(torch.tensor(v) for v in (0.0, nll, 1, n_bytes, 0)))
        part.add(output)
        whole.add(output)
    part_sum = sum(parts, ScoreSums())
    assert part_sum == whole and whole.bits_per_byte == pytest.approx(8.0 / math.log(2) / 10)
    assert whole.word_accuracy is None  # a forward's sums count no words: each family's scorer adds them


def test_word_counts_are_added_apart():
    sums = ScoreSums()
    sums.add_words(torch.tensor(4), 3)
    sums.add_words(2, torch.tensor(0))
    assert (sums.words, sums.words_correct, sums.word_accuracy) == (6, 3, 0.5)


def test_nothing_scored_is_an_error_not_a_zero():
    with pytest.raises(ValueError, match="no bytes were scored"):
        ScoreSums().bits_per_byte


def test_robustness_is_the_relative_increase():
    assert relative_increase(3.0, 2.0) == pytest.approx(0.5)


def test_compression_counts_bytes_per_word():
    stats = compression(["ab cd", "é"], max_word_bytes=32)
    assert stats["bytes"] == 7 and stats["bytes_per_word"] == pytest.approx(7 / stats["words"])
    with pytest.raises(ValueError, match="no words"):
        compression([""], max_word_bytes=32)
