"""Stage 1 of prep, one split unit at a time (in a Ray task): documents → HAT words → part chunks + signatures.

A split unit is an input file, or a byte range of a large Parquet file (its row groups that start there). Its
accepted documents go to *chunks* ``_work/parts/<key>-<c>.parquet`` (doc id, content hash, words), each at most
`chunk_bytes` of text in row groups of at most `group_bytes`: chunks are stage 2's units, row groups the most any
later stage holds in one Arrow array, so a 45 GB input never builds one int32-offset array beyond a row group.
Beside each chunk, ``_work/sig/<key>-<c>.parquet`` holds its documents' content hashes sorted by hash, for the
distributed dedup (hierpt.data.prep.dedup). The unit's counts come back to the driver, which records them in its
ledger; nothing here marks the unit done.
"""

from __future__ import annotations

import hashlib
import resource

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from hierpt.data.sources import InputFile, Rejection, read_documents
from hierpt.splitting import END_OF_DOC_WORD, split_words

EXAMPLES_PER_REASON = 3
PART_GROUP_BYTES = 8 << 20  # text per part row group: the read unit of every later stage
PART_CHUNK_BYTES = 256 << 20  # text per part chunk: one stage-2 task
SIG_GROUP_ROWS = 1 << 16  # signature rows per row group: a dedup bucket reads only the groups of its hash range
PART_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string()),
        pa.field("hash", pa.binary(16)),
        pa.field("words", pa.list_(pa.binary())),  # ends with the [S] word
        pa.field("bytes", pa.int64()),
        pa.field("words_count", pa.int64()),  # [S] not counted
    ]
)
SIG_SCHEMA = pa.schema([pa.field("h1", pa.uint64()), pa.field("h2", pa.uint64()), pa.field("row", pa.int32())])


class FileResult(BaseModel):
    """What a finished split unit contributed: the driver's per-unit summary (a ledger record)."""

    key: str
    docs: int = 0
    bytes: int = 0
    chunks: list[int] = Field(default_factory=list)  # documents per chunk
    chunk_bytes: list[int] = Field(default_factory=list)  # text bytes per chunk
    rejected: dict[str, int] = Field(default_factory=dict)
    rejected_examples: dict[str, list[str]] = Field(default_factory=dict)
    repaired: dict[str, int] = Field(default_factory=dict)
    repaired_examples: dict[str, list[str]] = Field(default_factory=dict)


def part_path(work: str, key: str, chunk: int, kind: str = "parts") -> str:
    return f"{work}/{kind}/{key}-{chunk:05d}.parquet"


def peak_rss_mb() -> float:
    """This worker process's peak resident memory so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_part(item: dict) -> dict:
    """Stage 1 for one unit (runs in a Ray task): its chunks and signatures; returns its FileResult."""
    file = InputFile(*item["file"])
    result = FileResult(key=item["key"])
    location_prefix = f"{item['name']}/{file.rel}"
    fs, work = fsspec.core.url_to_fs(item["work"])
    fs.makedirs(f"{work}/parts", exist_ok=True)
    fs.makedirs(f"{work}/sig", exist_ok=True)

    def note(counts: dict, examples: dict, reason: str, line: int | None) -> None:
        counts[reason] = counts.get(reason, 0) + 1
        where = examples.setdefault(reason, [])
        if len(where) < EXAMPLES_PER_REASON:
            where.append(f"{location_prefix}#{line}" if line else location_prefix)

    chunk = _Chunk(fs, work, item["key"], 0)
    byte_range = tuple(item["range"]) if item.get("range") else None
    for doc in read_documents(file, item["text_field"], item["max_doc_bytes"], byte_range):
        if isinstance(doc, Rejection):
            note(result.rejected, result.rejected_examples, doc.reason, doc.line)
            continue
        if doc.replacements:
            note(result.repaired, result.repaired_examples, "invalid_utf8", doc.line)
        chunk.add(f"{location_prefix}#{doc.line}", split_words(doc.text, item["max_word_bytes"]))
        if chunk.batch.text_bytes >= item["group_bytes"]:
            chunk.flush_group()
        if chunk.text_bytes + chunk.batch.text_bytes >= item["chunk_bytes"]:
            _close(chunk, result)
            chunk = _Chunk(fs, work, item["key"], len(result.chunks))
    _close(chunk, result)
    return {**result.model_dump(), "peak_rss_mb": peak_rss_mb()}


def _close(chunk: _Chunk, result: FileResult) -> None:
    chunk.close()
    if chunk.docs:
        result.chunks.append(chunk.docs)
        result.chunk_bytes.append(chunk.text_bytes)
        result.docs += chunk.docs
        result.bytes += chunk.text_bytes


class _Chunk:
    """One part chunk being written: row groups of bounded text, and the hashes of its documents."""

    def __init__(self, fs, work: str, key: str, index: int):
        self.fs, self.work, self.key, self.index = fs, work, key, index
        self.batch = _PartBatch()
        self.writer: pq.ParquetWriter | None = None
        self.stream = None
        self.hashes = bytearray()  # 16 bytes per document, in row order
        self.docs = self.text_bytes = 0

    def add(self, doc_id: str, words: list[bytes]) -> None:
        self.hashes += self.batch.add(doc_id, words)
        self.docs += 1

    def flush_group(self) -> None:
        if not self.batch.doc_ids:
            return
        if self.writer is None:
            self.stream = self.fs.open(part_path(self.work, self.key, self.index), "wb")
            self.writer = pq.ParquetWriter(
                self.stream, PART_SCHEMA, compression="lz4", use_dictionary=False, write_statistics=False
            )
        self.text_bytes += self.batch.flush(self.writer)

    def close(self) -> None:
        self.flush_group()
        if self.writer is None:
            return
        self.writer.close()
        self.stream.close()
        digests = np.frombuffer(bytes(self.hashes), dtype=">u8").reshape(-1, 2).astype(np.uint64)
        order = np.lexsort((digests[:, 1], digests[:, 0]))
        signatures = pa.Table.from_arrays(
            [pa.array(digests[order, 0]), pa.array(digests[order, 1]), pa.array(order.astype(np.int32))],
            schema=SIG_SCHEMA,
        )
        with self.fs.open(part_path(self.work, self.key, self.index, "sig"), "wb") as f:
            pq.write_table(signatures, f, row_group_size=SIG_GROUP_ROWS, compression="lz4", write_statistics=["h1"])


class _PartBatch:
    """Documents of one row group, buffered as joined bytes + word lengths so Arrow arrays are built from buffers."""

    def __init__(self):
        self.doc_ids: list[str] = []
        self.hashes: list[bytes] = []
        self.texts: list[bytes] = []  # each document's bytes followed by the [S] byte
        self.word_lengths: list[int] = []
        self.words_per_doc: list[int] = []  # [S] included
        self.text_bytes = 0

    def add(self, doc_id: str, words: list[bytes]) -> bytes:
        text = b"".join(words)
        digest = hashlib.blake2b(text, digest_size=16).digest()
        self.doc_ids.append(doc_id)
        self.hashes.append(digest)
        self.texts.append(text + END_OF_DOC_WORD)
        self.word_lengths.extend(map(len, words))
        self.word_lengths.append(len(END_OF_DOC_WORD))
        self.words_per_doc.append(len(words) + 1)
        self.text_bytes += len(text)
        return digest

    def flush(self, writer: pq.ParquetWriter) -> int:
        byte_offsets = np.zeros(len(self.word_lengths) + 1, dtype=np.int32)
        np.cumsum(np.array(self.word_lengths, dtype=np.int32), out=byte_offsets[1:])
        flat = pa.Array.from_buffers(
            pa.binary(), len(self.word_lengths), [None, pa.py_buffer(byte_offsets), pa.py_buffer(b"".join(self.texts))]
        )
        word_offsets = np.zeros(len(self.doc_ids) + 1, dtype=np.int32)
        np.cumsum(np.array(self.words_per_doc, dtype=np.int32), out=word_offsets[1:])
        sizes = np.array([len(t) - len(END_OF_DOC_WORD) for t in self.texts], dtype=np.int64)
        columns = [
            pa.array(self.doc_ids, pa.string()),
            pa.array(self.hashes, pa.binary(16)),
            pa.ListArray.from_arrays(pa.array(word_offsets), flat),
            pa.array(sizes),
            pa.array(np.array(self.words_per_doc, dtype=np.int64) - 1),
        ]
        writer.write_table(pa.Table.from_arrays(columns, schema=PART_SCHEMA), row_group_size=len(self.doc_ids))
        flushed = self.text_bytes
        self.__init__()
        return flushed
