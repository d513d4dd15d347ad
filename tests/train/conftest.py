"""Shared shard sets for training tests: two corpora with different fingerprints, shaped for the `tiny` preset."""

import pytest

from hierpt.model.hat import HATConfig
from tests.fixtures.shards import sample_documents, write_shard_set

TINY = HATConfig.from_name("tiny")


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
