"""Packing one language's stream of documents into shard rows of at most `seq_words` words.

Documents arrive as Arrow lists of words (each already ending with the [S] word) and are laid back to back;
the stream is cut every `seq_words` words, so a long document continues in the next row. Work is vectorised
over Arrow buffers: no Python loop touches individual words.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from hierpt.data.shards import SHARD_SCHEMA


class Packer:
    """Feed documents in stream order with `add`; it yields finished shards (tables of `rows_per_shard` rows)."""

    def __init__(self, lang: str, seq_words: int, rows_per_shard: int):
        self.lang = lang
        self.seq_words = seq_words
        self.shard_words = seq_words * rows_per_shard
        self._chunks: list[pa.Array] = []  # flat words not yet cut into a shard
        self._buffered = 0
        self._starts: list[np.ndarray] = []  # word offsets (in the buffer) where buffered documents start
        self._doc_ids: list[str] = []

    def add(self, words: pa.ListArray, doc_ids: list[str]) -> Iterator[pa.Table]:
        lengths = words.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
        self._starts.append(self._buffered + np.concatenate([[0], np.cumsum(lengths)[:-1]]))
        self._doc_ids.extend(doc_ids)
        self._chunks.append(words.flatten())
        self._buffered += int(lengths.sum())
        while self._buffered >= self.shard_words:
            yield self._cut(self.shard_words)

    def finish(self) -> Iterator[pa.Table]:
        if self._buffered:
            yield self._cut(self._buffered)

    def _cut(self, n: int) -> pa.Table:
        flat = pa.concat_arrays(self._chunks)
        starts = np.concatenate(self._starts)
        row_offsets = np.append(np.arange(0, n, self.seq_words), n)
        words = pa.ListArray.from_arrays(pa.array(row_offsets, pa.int32()), pa.concat_arrays([flat.slice(0, n)]))
        k = int(np.searchsorted(starts, n))  # documents starting inside this shard
        doc_offsets = np.searchsorted(starts[:k] // self.seq_words, np.arange(len(row_offsets)))
        doc_ids = pa.ListArray.from_arrays(pa.array(doc_offsets, pa.int32()), pa.array(self._doc_ids[:k], pa.string()))
        table = pa.Table.from_arrays(
            [words, pa.array([self.lang] * (len(row_offsets) - 1), pa.string()), doc_ids], schema=SHARD_SCHEMA
        )
        self._chunks = [flat.slice(n)]
        self._starts = [starts[k:] - n]
        self._doc_ids = self._doc_ids[k:]
        self._buffered -= n
        return table
