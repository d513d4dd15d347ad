"""Stage 1 of prep, one input file at a time (in a Ray task): documents → HAT words → a part file + marker.

A part (``_work/parts/<key>.parquet``) holds each accepted document's id, content hash and words; the marker
(``_work/done/<key>.json``) holds the file's counts and is written only after the part is complete, so a
marker's presence means the file never needs reading again.
"""

from __future__ import annotations

import hashlib

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from hierpt.data.sources import InputFile, Rejection, read_documents
from hierpt.splitting import END_OF_DOC_WORD, split_words

EXAMPLES_PER_REASON = 3
_PART_FLUSH_BYTES = 32 << 20  # bounds a worker's memory on large input files
PART_SCHEMA = pa.schema(
    [
        pa.field("doc_id", pa.string()),
        pa.field("hash", pa.binary(16)),
        pa.field("words", pa.list_(pa.binary())),  # ends with the [S] word
        pa.field("bytes", pa.int64()),
        pa.field("words_count", pa.int64()),  # [S] not counted
    ]
)


class FileResult(BaseModel):
    """What a finished input file contributed; stored as its completion marker."""

    key: str
    docs: int = 0
    bytes: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)
    rejected_examples: dict[str, list[str]] = Field(default_factory=dict)
    repaired: dict[str, int] = Field(default_factory=dict)
    repaired_examples: dict[str, list[str]] = Field(default_factory=dict)


def write_part(item: dict) -> dict:
    """Stage 1 for one file (runs in a Ray task): its part file, then its completion marker."""
    file = InputFile(*item["file"])
    result = FileResult(key=item["key"])
    location_prefix = f"{item['name']}/{file.rel}"
    fs, work = fsspec.core.url_to_fs(item["work"])
    fs.makedirs(f"{work}/parts", exist_ok=True)
    fs.makedirs(f"{work}/done", exist_ok=True)

    def note(counts: dict, examples: dict, reason: str, line: int | None) -> None:
        counts[reason] = counts.get(reason, 0) + 1
        where = examples.setdefault(reason, [])
        if len(where) < EXAMPLES_PER_REASON:
            where.append(f"{location_prefix}#{line}" if line else location_prefix)

    with (
        fs.open(f"{work}/parts/{item['key']}.parquet", "wb") as out,
        pq.ParquetWriter(out, PART_SCHEMA, compression="lz4", use_dictionary=False, write_statistics=False) as writer,
    ):
        batch = _PartBatch()
        for doc in read_documents(file, item["text_field"], item["max_doc_bytes"]):
            if isinstance(doc, Rejection):
                note(result.rejected, result.rejected_examples, doc.reason, doc.line)
                continue
            if doc.replacements:
                note(result.repaired, result.repaired_examples, "invalid_utf8", doc.line)
            words = split_words(doc.text, item["max_word_bytes"])
            batch.add(f"{location_prefix}#{doc.line}", words)
            result.docs += 1
            if batch.text_bytes >= _PART_FLUSH_BYTES:
                result.bytes += batch.flush(writer)
        result.bytes += batch.flush(writer)
    with fs.open(f"{work}/done/{item['key']}.json", "w") as f:
        f.write(result.model_dump_json())
    return result.model_dump()


class _PartBatch:
    """Documents of one file, buffered as joined bytes + word lengths so Arrow arrays are built from buffers."""

    def __init__(self):
        self.doc_ids: list[str] = []
        self.hashes: list[bytes] = []
        self.texts: list[bytes] = []  # each document's bytes followed by the [S] byte
        self.word_lengths: list[int] = []
        self.words_per_doc: list[int] = []  # [S] included
        self.text_bytes = 0

    def add(self, doc_id: str, words: list[bytes]) -> None:
        text = b"".join(words)
        self.doc_ids.append(doc_id)
        self.hashes.append(hashlib.blake2b(text, digest_size=16).digest())
        self.texts.append(text + END_OF_DOC_WORD)
        self.word_lengths.extend(map(len, words))
        self.word_lengths.append(len(END_OF_DOC_WORD))
        self.words_per_doc.append(len(words) + 1)
        self.text_bytes += len(text)

    def flush(self, writer: pq.ParquetWriter) -> int:
        if not self.doc_ids:
            return 0
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
        writer.write_table(pa.Table.from_arrays(columns, schema=PART_SCHEMA))
        flushed = self.text_bytes
        self.__init__()
        return flushed
