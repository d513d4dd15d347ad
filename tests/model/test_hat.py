import json
import subprocess
import sys

import pytest
import torch

from hierpt.model.hat import HATConfig, build_meta, flops_per_word
from hierpt.splitting import (
    END_OF_DOC_WORD,
    document_words,
    split_words,
    words_to_tensors,
)

from tests.fixtures.models import MAX_BYTES, TEXT, batch, tiny_model


def test_tiny_model_overfits_multilingual_text(overfit_model):
    model, losses, last = overfit_model
    assert losses[-1] < 0.05 * losses[0]
    assert last.words_correct == last.words == len(document_words(TEXT, MAX_BYTES))


def test_changing_word_k_never_changes_predictions_for_earlier_words():
    model = tiny_model().eval()
    words = document_words(TEXT, MAX_BYTES)
    k = 6
    changed = [*words[:k], "Kätzchen".encode(), *words[k + 1 :]]
    logits_a, _ = model.predict(*words_to_tensors([words], MAX_BYTES))
    logits_b, _ = model.predict(*words_to_tensors([changed], MAX_BYTES))
    # predicted word j sits at row j-1; rows < k-1 spell words before k, row k-1's first byte comes from word k-1
    assert torch.allclose(logits_a[: k - 1], logits_b[: k - 1], atol=1e-6)
    assert torch.allclose(logits_a[k - 1, 0], logits_b[k - 1, 0])
    assert not torch.allclose(logits_a[k], logits_b[k])  # and later words do see the change


def test_padding_never_changes_the_loss():
    model = tiny_model().eval()
    short, long = "Привет, мир.", TEXT + " Γειά σου κόσμε, καλημέρα!"
    with torch.no_grad():
        alone_short, alone_long = model(*batch(short)), model(*batch(long))
        together = model(*batch(short, long))  # short gets padded in words and in bytes per word
    assert together.targets == alone_short.targets + alone_long.targets
    assert torch.allclose(together.nll_sum, alone_short.nll_sum + alone_long.nll_sum, rtol=1e-5)
    assert together.utf8_bytes == len(short.encode()) + len(long.encode()) - len(split_words(short)[0]) - len(
        split_words(long)[0]
    )


def test_end_of_document_word_is_predicted_without_an_end_of_word_mark():
    model = tiny_model()
    _, targets = model.predict(*batch("one two"))
    assert targets[-1, 0].item() == END_OF_DOC_WORD[0]
    assert (targets[-1, 1:] == -100).all()


# Table 2 of the paper: backbone, encoder = decoder parameters.
PAPER = {"1b": (1.1e9, 23e6), "3b": (4.3e9, 24e6), "7b": (9.2e9, 55e6)}


@pytest.mark.parametrize("preset", sorted(PAPER))
def test_paper_presets_match_table_2(preset):
    counts = build_meta(HATConfig.from_name(preset)).num_params()
    backbone, byte_module = PAPER[preset]
    assert counts["backbone"] == pytest.approx(backbone, rel=0.05)
    assert counts["encoder"] == pytest.approx(byte_module, rel=0.05)
    assert counts["decoder"] == pytest.approx(byte_module, rel=0.05)


def test_model_info_cli_prints_one_json_object():
    result = subprocess.run(
        [sys.executable, "-m", "hierpt.cli", "model-info", "7b", "--json"], capture_output=True, text=True, check=True
    )
    counts = json.loads(result.stdout)
    assert set(counts) == {"encoder", "backbone", "decoder", "total"}
    assert counts["total"] == counts["encoder"] + counts["backbone"] + counts["decoder"]


def test_small_preset_is_in_the_cpu_benchmark_range():
    assert 10e6 <= build_meta(HATConfig.from_name("small")).num_params()["total"] <= 30e6


def test_flops_per_word_is_dominated_by_the_backbone_at_7b():
    config = HATConfig.from_name("7b")
    counts = build_meta(config).num_params()
    flops = flops_per_word(config, bytes_per_word=6.0)
    assert 6 * counts["backbone"] < flops < 1.3 * 6 * (counts["backbone"] + 7 * (counts["encoder"] + counts["decoder"]))


def test_unknown_preset_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown preset"):
        HATConfig.from_name("13b")
    with pytest.raises(ValueError, match="heads"):
        HATConfig.from_name("tiny", encoder=HATConfig.from_name("tiny").encoder.__class__(dim=60, layers=1, heads=7))


def test_length_groups_give_the_same_loss_as_one_padded_pass():
    """forward() runs words in groups of similar length; predict() pads all to the longest: same numbers."""
    model = tiny_model().eval()
    texts = [TEXT, "a bb ccc dddd Donaudampfschifffahrt " + "क्षत्रिय" * 3, "Ω"]
    with torch.no_grad():
        grouped = model(*batch(*texts))
        padded = model.score(*model.predict(*batch(*texts)))
    assert grouped.targets == padded.targets and grouped.words_correct == padded.words_correct
    assert torch.allclose(grouped.nll_sum, padded.nll_sum, rtol=1e-5)
    assert torch.allclose(grouped.loss, padded.loss, rtol=1e-5)


def test_a_batch_with_nothing_to_predict_has_zero_targets_and_still_backpropagates():
    model = tiny_model()
    out = model(*words_to_tensors([[b"x"], [b"y"]], MAX_BYTES))
    assert out.targets == 0 and out.words == 0
    out.loss.backward()
