import pytest

from hierpt.data.bpe import BPETokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.  Twice\n\nspaced.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "吾輩は猫である。名前はまだ無い。 Съешь же ещё этих мягких булок.",
]


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(TEXTS * 3, vocab_size=320)


def test_encoding_is_lossless_and_token_bytes_add_up_to_the_text(tokenizer):
    counts = tokenizer.token_bytes()
    for text in [*TEXTS, "unseen: ñandú 🦊 <|endoftext|>"]:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert int(counts[ids].sum()) == len(text.encode())


def test_vocabulary_size_counts_the_end_of_document_id_no_text_can_produce(tokenizer):
    assert tokenizer.vocab_size == 320 and tokenizer.eod_id == 319
    assert tokenizer.token_bytes()[tokenizer.eod_id] == 0
    ids = [i for ids in tokenizer.encode_batch([*TEXTS, "<|endoftext|> </s> <s>"]) for i in ids]
    assert max(ids) < tokenizer.eod_id
    assert tokenizer.decode([tokenizer.eod_id, *tokenizer.encode("ok")]) == "ok"


def test_save_load_gives_the_same_ids(tokenizer, tmp_path):
    url = tokenizer.save(str(tmp_path / "nested" / "tokenizer.json"))
    loaded = BPETokenizer.load(url)
    assert loaded.encode_batch(TEXTS) == tokenizer.encode_batch(TEXTS)
    assert loaded.vocab_size == tokenizer.vocab_size


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=100 must be at least 257"):
        BPETokenizer.train(TEXTS, vocab_size=100)
    with pytest.raises(FileNotFoundError, match="no tokenizer file"):
        BPETokenizer.load(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a tokenizers JSON file"):
        BPETokenizer.load(str(tmp_path / "bad.json"))
