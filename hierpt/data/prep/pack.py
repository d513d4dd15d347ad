"""Stage 2, one unit per (part chunk, mixture copy) (in a Ray task): drop duplicates, sample, pack, write shards.

A unit keeps the documents of its chunk that are first occurrences (hierpt.data.prep.dedup) and, for a
fractional mixture copy, those whose seeded hash falls below the fraction; packs them (words, or BPE ids for
token shards) into rows (hierpt.data.packing) in bounded row groups; and writes ``<lang>-<pos>-<n>.parquet``,
`pos` being the unit's place in its language's stream. Each unit ends with its own short row, so units are
independent: a single-language corpus packs on every worker, and a unit's bytes depend on nothing else. It reads
its chunk one row group at a time, so no Arrow array holds more than one part row group.
"""

from __future__ import annotations

import hashlib

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hierpt.data.bpe import BPETokenizer
from hierpt.data.packing import Packer
from hierpt.data.parts import part_path, peak_rss_mb
from hierpt.data.prep.dedup import dropped_rows
from hierpt.data.prep.work import WORK
from hierpt.data.shards import TOKEN_SCHEMA
from hierpt.splitting import join_words

SHARD_GROUP_UNITS = 1 << 18  # words (or tokens) per shard row group: ~2 MB of word bytes, 256 rows at 1024 words


def group_rows(seq_len: int, rows_per_shard: int) -> int:
    return max(1, min(rows_per_shard, SHARD_GROUP_UNITS // seq_len))


def uniform(seed: int, copy: int, doc_id: str) -> float:
    """A number in [0, 1) fixed by (seed, copy, document): weighted sampling that ignores processing order."""
    digest = hashlib.blake2b(f"{seed}\0{copy}\0{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def kept_groups(fs, work: str, item: dict, columns: list[str]):
    """The chunk's row groups with only the documents this unit keeps (first occurrences, sampled copy)."""
    drops = dropped_rows(fs, work, item["buckets"], item["ordinal"])
    with fs.open(part_path(work, item["key"], item["chunk"]), "rb") as f:
        part = pq.ParquetFile(f)
        start = 0
        for g in range(part.num_row_groups):
            table = part.read_row_group(g, columns=sorted({"doc_id", *columns}))
            keep = np.ones(table.num_rows, dtype=bool)
            inside = drops[(drops >= start) & (drops < start + table.num_rows)] - start
            keep[inside] = False
            start += table.num_rows
            if item["fraction"] < 1.0:
                ids = table.column("doc_id").to_pylist()
                chosen = [uniform(item["seed"], item["copy"], d) < item["fraction"] for d in ids]
                keep &= np.array(chosen, dtype=bool)
            if keep.all():
                yield table
            elif keep.any():
                yield table.filter(pa.array(keep))


def pack_unit(item: dict) -> dict:
    """One stage-2 unit (runs in a Ray task); returns its files and counts for the manifest."""
    fs, root = fsspec.core.url_to_fs(item["output"])
    work = f"{root}/{WORK}"
    tokens = item["tokens"]
    seq_len = item["seq_words"] if tokens is None else tokens["seq_tokens"]
    rows_per_group = group_rows(seq_len, item["rows_per_shard"])
    if tokens is None:
        packer = Packer(item["lang"], seq_len, rows_per_group)
    else:
        tokenizer = BPETokenizer.load(f"{item['output']}/{tokens['tokenizer']}")
        packer = Packer(item["lang"], seq_len, rows_per_group, TOKEN_SCHEMA)
    writer = _ShardWriter(fs, root, f"{item['lang']}-{item['position']:06d}", item["rows_per_shard"])
    counts = {"docs": 0, "words": 0, "bytes": 0, "tokens": 0}
    for table in kept_groups(fs, work, item, ["words", "bytes", "words_count"]):
        counts["docs"] += table.num_rows
        counts["words"] += int(table.column("words_count").to_numpy().sum())
        counts["bytes"] += int(table.column("bytes").to_numpy().sum())
        documents = table.column("words").combine_chunks()  # one part row group: bounded
        if tokens is not None:
            documents = _tokenize(tokenizer, documents)
            counts["tokens"] += len(documents.values) - len(documents)  # end-of-document ids not counted
        for group in packer.add(documents, table.column("doc_id").to_pylist()):
            writer.write(group)
    for group in packer.finish():
        writer.write(group)
    writer.close()
    return {**counts, "files": writer.files, "peak_rss_mb": peak_rss_mb()}


class _ShardWriter:
    """Row groups into numbered files of `rows_per_shard` rows; records each file's rows and row groups."""

    def __init__(self, fs, root: str, stem: str, rows_per_shard: int):
        self.fs, self.root, self.stem, self.rows_per_shard = fs, root, stem, rows_per_shard
        self.files: list[dict] = []
        self._writer = self._stream = None

    def write(self, group: pa.Table) -> None:
        while group.num_rows:
            if self._writer is None:
                name = f"{self.stem}-{len(self.files):04d}.parquet"
                self._stream = self.fs.open(f"{self.root}/{name}", "wb")
                self._writer = pq.ParquetWriter(self._stream, group.schema, compression="zstd", write_statistics=False)
                self.files.append({"path": name, "rows": 0, "row_groups": []})
            current = self.files[-1]
            take = min(group.num_rows, self.rows_per_shard - current["rows"])
            self._writer.write_table(group.slice(0, take), row_group_size=take)
            current["rows"] += take
            current["row_groups"].append(take)
            group = group.slice(take)
            if current["rows"] == self.rows_per_shard:
                self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._stream.close()
            self._writer = self._stream = None


def _tokenize(tokenizer: BPETokenizer, documents: pa.ListArray) -> pa.ListArray:
    """Each document's words joined back into its text, as BPE ids followed by the end-of-document id."""
    encoded = tokenizer.encode_batch([join_words(words) for words in documents.to_pylist()])
    lengths = np.array([len(ids) + 1 for ids in encoded], dtype=np.int32)
    flat = np.fromiter(
        (i for ids in encoded for i in (*ids, tokenizer.eod_id)), dtype=np.int32, count=int(lengths.sum())
    )
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
