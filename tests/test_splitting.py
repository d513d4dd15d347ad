import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hierpt.splitting import (
    END_OF_DOC_WORD,
    decode_utf8,
    document_words,
    join_words,
    split_words,
    words_to_tensors,
)

SCRIPTS = [
    "Hello, world! Ça va? Größe",
    "Привет, мир",
    "Γειά σου κόσμε",
    "مرحبا بالعالم",  # RTL
    "你好吗 こんにちは 안녕하세요",
    "नमस्ते दुनिया",  # combining marks
    "e\u0301 n\u0303 a\u030a",  # decomposed combining sequences
    "👩‍👩‍👧‍👦 🇩🇪 👍🏽",  # ZWJ sequences, flags, skin tones
    "tab\there\r\nnul\x00bell\x07",
]


@pytest.mark.parametrize("text", SCRIPTS)
def test_round_trip_of_each_script(text):
    words = split_words(text, 100)
    assert b"".join(words).decode() == text
    assert join_words(document_words(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300), st.integers(min_value=4, max_value=100))
def test_round_trip_any_unicode_and_word_limit(text, limit):
    words = split_words(text, limit)
    assert all(0 < len(w) <= limit for w in words)
    assert b"".join(words) == text.encode()
    assert join_words([*words, END_OF_DOC_WORD, b"after the end"]) == text


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=60), min_size=1, max_size=4))
def test_tensors_round_trip(texts):
    sequences = [document_words(t, 16) for t in texts]
    word_bytes, lengths = words_to_tensors(sequences, 16)
    assert word_bytes.dtype == torch.uint8 and lengths.shape == word_bytes.shape[:2]
    rows = [[bytes(word_bytes[b, n, :length].tolist()) for n, length in enumerate(row) if length] for b, row in
            enumerate(lengths.tolist())]  # fmt: skip
    assert rows == sequences


def test_long_words_are_chunked_on_character_boundaries():
    word = "ü" * 70  # 140 bytes; the original Python splitter dropped tail bytes here
    chunks = split_words(word, 64)
    assert [len(c) for c in chunks] == [64, 64, 12]
    assert all(c.decode() for c in chunks)


def test_special_bytes_cannot_come_from_text():
    words = split_words("\uf8f9 ùù \u00f8\u00f9", 100)
    assert END_OF_DOC_WORD not in words
    assert all(0xF8 not in w and 0xF9 not in w for w in words)


def test_invalid_utf8_is_replaced_and_counted():
    text, replaced = decode_utf8(b"ok \xff\xfe bad \xc3 end \xef\xbf\xbd")
    assert text == "ok \ufffd\ufffd bad \ufffd end \ufffd"
    assert replaced == 3  # the genuine U+FFFD at the end is not a replacement


def test_oversized_word_in_tensors_is_refused():
    with pytest.raises(ValueError, match="max_word_bytes"):
        words_to_tensors([[b"x" * 20]], 16)
