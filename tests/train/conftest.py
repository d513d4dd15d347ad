"""Shared shard sets for training tests: two corpora with different fingerprints, shaped for the `tiny` preset,
and token shards of the first for the baseline."""

import json

import pytest

from hierpt.data.prep import prepare
from hierpt.data.recipe import Recipe, Source, TokenShardSpec
from hierpt.model.hat import HATConfig
from tests.fixtures.shards import sample_documents, write_shard_set

TINY = HATConfig.from_name("tiny")
TOKEN_SEQ = 48


@pytest.fixture(scope="session")
def shards_a(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("shards_a"))
    write_shard_set(url, sample_documents(40, variant=0), TINY.seq_words, TINY.max_word_bytes)
    return url


@pytest.fixture(scope="session")
def shards_b(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("shards_b"))
    write_shard_set(url, sample_documents(40, variant=1), TINY.seq_words, TINY.max_word_bytes)
    return url


@pytest.fixture(scope="session")
def token_shards(tmp_path_factory, ray_local) -> str:
    """BPE token shards of the shards_a documents, made by the real prep (Ray Data, a tokenizer trained on them)."""
    root = tmp_path_factory.mktemp("token_shards")
    by_lang: dict[str, list[dict]] = {}
    for doc_id, lang, text in sample_documents(40, variant=0):
        by_lang.setdefault(lang, []).append({"id": doc_id, "text": text})
    for lang, records in by_lang.items():
        (root / "corpus" / lang).mkdir(parents=True)
        (root / "corpus" / lang / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = Recipe(sources=[Source(url=str(root / "corpus" / lang), lang=lang) for lang in sorted(by_lang)])
    prepare(recipe, str(root / "shards"), workers=2, tokens=TokenShardSpec(seq_tokens=TOKEN_SEQ, vocab_size=320))
    return str(root / "shards")
