"""Packing documents into rows: back to back, [S] after each, at most seq_words words, long documents continue."""

import pyarrow as pa

from hierpt.data.packing import Packer
from hierpt.data.shards import SHARD_SCHEMA
from hierpt.splitting import END_OF_DOC_WORD


def _docs(lengths):
    docs = [[f"d{d}w{i}".encode() for i in range(n)] + [END_OF_DOC_WORD] for d, n in enumerate(lengths)]
    return pa.array(docs, pa.list_(pa.binary())), [f"src/f#{d}" for d in range(len(lengths))], docs


def _pack(lengths, seq_words, rows_per_table, batches=1):
    words, ids, docs = _docs(lengths)
    packer = Packer("en", seq_words, rows_per_table)
    step = -(-len(ids) // batches)
    shards = []
    for start in range(0, len(ids), step):
        shards += packer.add(words.slice(start, step), ids[start : start + step])
    shards += packer.finish()
    return shards, docs


def test_rows_hold_the_stream_cut_every_seq_words_words():
    shards, docs = _pack([3, 9, 1, 4], seq_words=5, rows_per_table=2)
    rows = [row for shard in shards for row in shard.column("words").to_pylist()]
    stream = [w for doc in docs for w in doc]
    assert [len(r) for r in rows] == [5, 5, 5, 5, 1]  # 21 words; only the last row is shorter
    assert [w for r in rows for w in r] == stream
    assert [s.num_rows for s in shards] == [2, 2, 1]
    assert all(s.schema == SHARD_SCHEMA for s in shards)


def test_doc_ids_name_the_documents_that_start_in_each_row():
    shards, _ = _pack([3, 9, 1, 4], seq_words=5, rows_per_table=2)
    doc_ids = [ids for shard in shards for ids in shard.column("doc_ids").to_pylist()]
    # starts at words 0, 4, 14, 16 → rows 0, 0, 2, 3; row 1 (inside the long document) starts none
    assert doc_ids == [["src/f#0", "src/f#1"], [], ["src/f#2"], ["src/f#3"], []]
    assert {lang for s in shards for lang in s.column("lang").to_pylist()} == {"en"}


def test_result_does_not_depend_on_how_documents_are_fed():
    one, _ = _pack([7, 2, 11, 5, 1, 8, 3], seq_words=4, rows_per_table=3, batches=1)
    many, _ = _pack([7, 2, 11, 5, 1, 8, 3], seq_words=4, rows_per_table=3, batches=7)
    assert [t.to_pylist() for t in one] == [t.to_pylist() for t in many]
