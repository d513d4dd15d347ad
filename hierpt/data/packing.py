"""Packing a stream of one language's documents into shard rows of at most `seq_len` units (words or tokens).

Documents arrive as Arrow lists of units (words ending with the [S] word, or BPE ids ending with the
end-of-document id) and are laid back to back; the stream is cut every `seq_len` units, so a long document
continues in the next row. Work is vectorised over Arrow buffers: no Python loop touches individual units.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from hierpt.data.shards import SHARD_SCHEMA


class Packer:
    """Feed documents in stream order with `add`; it yields finished tables of `rows_per_table` rows (prep writes
    each as one bounded row group), and `finish` the rest, ending with the stream's one short row."""

    def __init__(self, lang: str, seq_len: int, rows_per_table: int, schema: pa.Schema = SHARD_SCHEMA):
        self.lang = lang
        self.seq_len = seq_len
        self.shard_units = seq_len * rows_per_table
        self.schema = schema  # SHARD_SCHEMA or TOKEN_SCHEMA: the sequence column first, then lang and doc_ids
        self._chunks: list[pa.Array] = []  # flat units not yet cut into a shard
        self._buffered = 0
        self._starts: list[np.ndarray] = []  # offsets (in the buffer) where buffered documents start
        self._doc_ids: list[str] = []

    def add(self, documents: pa.ListArray, doc_ids: list[str]) -> Iterator[pa.Table]:
        lengths = documents.value_lengths().to_numpy(zero_copy_only=False).astype(np.int64)
        self._starts.append(self._buffered + np.concatenate([[0], np.cumsum(lengths)[:-1]]))
        self._doc_ids.extend(doc_ids)
        self._chunks.append(documents.flatten())
        self._buffered += int(lengths.sum())
        while self._buffered >= self.shard_units:
            yield self._cut(self.shard_units)

    def finish(self) -> Iterator[pa.Table]:
        if self._buffered:
            yield self._cut(self._buffered)

    def _cut(self, n: int) -> pa.Table:
        flat = pa.concat_arrays(self._chunks)
        starts = np.concatenate(self._starts)
        row_offsets = np.append(np.arange(0, n, self.seq_len), n)
        rows = pa.ListArray.from_arrays(pa.array(row_offsets, pa.int32()), pa.concat_arrays([flat.slice(0, n)]))
        k = int(np.searchsorted(starts, n))  # documents starting inside this shard
        doc_offsets = np.searchsorted(starts[:k] // self.seq_len, np.arange(len(row_offsets)))
        doc_ids = pa.ListArray.from_arrays(pa.array(doc_offsets, pa.int32()), pa.array(self._doc_ids[:k], pa.string()))
        table = pa.Table.from_arrays(
            [rows, pa.array([self.lang] * (len(row_offsets) - 1), pa.string()), doc_ids], schema=self.schema
        )
        self._chunks = [flat.slice(n)]
        self._starts = [starts[k:] - n]
        self._doc_ids = self._doc_ids[k:]
        self._buffered -= n
        return table
