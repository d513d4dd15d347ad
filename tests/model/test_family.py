"""The family is the one place the HAT and the baseline differ: shards they read, inputs, exports, generation."""

import pytest
import torch

from hierpt.data.shards import Manifest, TokenShards
from hierpt.model.family import FAMILIES, continue_texts, family_of
from hierpt.model.generate import SamplingConfig
from hierpt.splitting import words_to_tensors

TOKENS = TokenShards(tokenizer="tokenizer.json", tokenizer_sha256="0" * 64, vocab_size=300, seq_tokens=93)


def manifest(tokens: TokenShards | None = None, **fields) -> Manifest:
    shape = {"max_word_bytes": 32, "seq_words": 64, **fields}
    return Manifest(splitter={}, files=[], languages={}, tokens=tokens, **shape)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_config_is_found_again_from_its_type(name):
    family = FAMILIES[name]
    config = family.config("tiny")
    assert family_of(config) is family
    assert family.build_meta(config).num_params()["total"] > 0
    assert family.flops_per_unit(config, 5.0) > 0
    assert family.uses_tokenizer == (family.unit == "tokens")


def test_shards_of_the_other_unit_are_refused_naming_both():
    with pytest.raises(ValueError, match="holds BPE token shards but model.family hat trains on word shards"):
        FAMILIES["hat"].config("tiny", shards=manifest(TOKENS), url="/shards")
    with pytest.raises(ValueError, match="holds word shards but model.family baseline trains on BPE token"):
        FAMILIES["baseline"].config("tiny", shards=manifest(), url="/shards")


@pytest.mark.parametrize(
    ("name", "shards", "field"),
    [("hat", manifest(seq_words=256), "seq_words"), ("hat", manifest(max_word_bytes=100), "max_word_bytes"),
     ("baseline", manifest(TOKENS.model_copy(update={"seq_tokens": 265})), "seq_tokens")],
)  # fmt: skip
def test_the_shape_comes_from_the_shards_and_an_override_that_differs_is_refused_naming_it(name, shards, field):
    family = FAMILIES[name]
    prepared = family.shard_shape(shards)[field]
    assert getattr(family.config("tiny", shards=shards, url="/s"), field) == prepared
    assert getattr(family.config("tiny", {field: prepared}, shards, "/s"), field) == prepared  # said twice: fine
    with pytest.raises(ValueError, match=f"model.overrides.{field}=7 but the shards /s were prepared with {field}="):
        family.config("tiny", {field: 7}, shards, "/s")


def test_a_vocabulary_bigger_than_the_embedding_is_refused():
    baseline = FAMILIES["baseline"]
    with pytest.raises(ValueError, match="vocab_size=100 is smaller than the tokenizer"):
        baseline.config("tiny", {"vocab_size": 100}, manifest(TOKENS), "/s")


def test_unknown_override_is_named_with_the_fields_there_are():
    with pytest.raises(ValueError, match=r"model.overrides.depth: not a HATConfig field \(backbone, "):
        FAMILIES["hat"].config("tiny", {"depth": 3})


def test_the_hat_reads_rows_of_words_as_padded_bytes():
    hat = FAMILIES["hat"]
    collate, tokenizer = hat.inputs(hat.config("tiny"), manifest(), "/s")
    batch = collate([[b"ab", b"\xf9"], [b"c"]])
    assert tokenizer is None and batch["lengths"].tolist() == [[2, 1], [1, 0]]


def test_continue_texts_dispatches_on_the_models_family():
    hat = FAMILIES["hat"]
    torch.manual_seed(0)
    model = hat.model_type(hat.config("tiny")).eval()
    sampling = SamplingConfig(max_words=3)
    assert continue_texts(model, None, ["The "], sampling) == hat.generate(model, None, ["The "], sampling)


def test_both_families_predict_the_logits_and_targets_of_the_same_positions():
    torch.manual_seed(0)
    hat, baseline = (family.model_type(family.config("tiny")).eval() for family in FAMILIES.values())
    logits, targets = hat.predict(*words_to_tensors([[b"ab", b"c", b"de"]], hat.config.max_word_bytes))
    assert logits.shape[:-1] == targets.shape and logits.shape[-1] == 256
    logits, targets = baseline.predict(torch.tensor([[5, 6, 7]]))
    assert logits.shape[:-1] == targets.shape and targets.tolist() == [[6, 7]]
