import pytest

from hierpt.model.baseline import BaselineConfig, flops_per_token
from hierpt.model.compute_match import (
    PAPER_COMPRESSION,
    TOLERANCE,
    match_baseline,
)
from hierpt.model.hat import HATConfig, flops_per_word

PRESETS = ("tiny", "small", "1b", "3b", "7b")


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize(("bytes_per_word", "bytes_per_token"), [(5.97, 4.12), (4.29, 1.02), (5.0, 3.3)])
def test_matched_shapes_cost_the_same_per_byte_within_five_percent(preset, bytes_per_word, bytes_per_token):
    hat = HATConfig.from_name(preset)
    vocab = BaselineConfig.from_name(preset).vocab_size
    match = match_baseline(hat, vocab, bytes_per_word, bytes_per_token)
    hat_per_byte = flops_per_word(hat, bytes_per_word) / bytes_per_word
    baseline_per_byte = flops_per_token(match.baseline) / bytes_per_token
    assert abs(baseline_per_byte / hat_per_byte - 1) <= TOLERANCE
    assert match.deviation == pytest.approx(baseline_per_byte / hat_per_byte - 1)
    # both see the same bytes per sequence (the paper aligns its loaders on bytes)
    assert match.baseline.seq_tokens * bytes_per_token == pytest.approx(
        hat.seq_words * bytes_per_word, abs=bytes_per_token
    )


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_small_baseline_presets_are_the_compute_matches_of_the_hat_presets(preset):
    baseline = BaselineConfig.from_name(preset)
    match = match_baseline(HATConfig.from_name(preset), baseline.vocab_size, **PAPER_COMPRESSION)
    assert match.baseline == baseline


def test_paper_1b_match_is_the_papers_baseline_shape():
    match = match_baseline(HATConfig.from_name("1b"), 65536, **PAPER_COMPRESSION)
    assert (match.baseline.backbone.layers, match.baseline.backbone.dim) == (16, 2048)


def test_impossible_match_is_refused_with_the_gap():
    with pytest.raises(ValueError, match=r"no baseline shape within 5% .* \(best is \d+\.\d% off\)"):
        match_baseline(HATConfig.from_name("tiny"), 65536, 5.97, 4.12)
    with pytest.raises(ValueError, match="must be positive"):
        match_baseline(HATConfig.from_name("tiny"), 2048, 0.0, 4.12)

