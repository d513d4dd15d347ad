"""The shard format: the contract between prep (writes) and training (reads). See docs/design.md, "Shard set".

A shard set is a directory (any fsspec URL) of Parquet files plus ``manifest.json``. One row = one training
sequence of at most ``seq_words`` words; documents are packed back to back within one language, each ending
with the ``[S]`` word. The manifest is written last: a directory without it is not a shard set.

Token shards (for the BPE baseline, `Manifest.tokens` set) come from the same recipe and the same documents:
rows of at most ``seq_tokens`` BPE ids (`TOKEN_SCHEMA`), each document ending with the end-of-document id, and
the tokenizer stored beside the shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import fsspec
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 2  # 2: bounded row groups per file, listed in `ShardFile.row_groups`
MANIFEST = "manifest.json"

SHARD_SCHEMA = pa.schema(
    [
        pa.field("words", pa.list_(pa.binary()), nullable=False),  # UTF-8 bytes per word, [S] = b"\xf9"
        pa.field("lang", pa.string(), nullable=False),
        pa.field("doc_ids", pa.list_(pa.string()), nullable=False),  # stable ids of the documents that start here
    ]
)


TOKEN_SCHEMA = pa.schema(
    [
        pa.field("tokens", pa.list_(pa.int32()), nullable=False),  # BPE ids, each document ends with eod_id
        pa.field("lang", pa.string(), nullable=False),
        pa.field("doc_ids", pa.list_(pa.string()), nullable=False),
    ]
)


class ShardFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str  # relative to the manifest's directory
    rows: int
    row_groups: list[int] = Field(default_factory=list)  # rows per Parquet row group, in order (bounded: the loader's read unit)


class LanguageStats(BaseModel):
    model_config = ConfigDict(extra="forbid")
    docs: int = 0
    words: int = 0  # words of the accepted text, [S] not counted
    bytes: int = 0  # UTF-8 bytes of the accepted text
    bytes_per_word: float = 0.0


class TokenShards(BaseModel):
    """What makes a shard set a token shard set: the tokenizer (a file in the set) and the sequence length."""

    model_config = ConfigDict(extra="forbid")
    tokenizer: str  # relative to the manifest's directory
    tokenizer_sha256: str  # ties checkpoints and exports to the exact vocabulary
    vocab_size: int  # ids the model must embed (BPE vocabulary + end of document)
    seq_tokens: int
    tokens: dict[str, int] = Field(default_factory=dict)  # per language, end-of-document ids not counted


class Manifest(BaseModel):
    """Everything training needs to trust a shard set; `fingerprint` covers all other fields."""

    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION
    splitter: dict[str, str]
    max_word_bytes: int
    seq_words: int
    files: list[ShardFile]
    languages: dict[str, LanguageStats]
    rejected: dict[str, int] = Field(default_factory=dict)
    rejected_examples: dict[str, list[str]] = Field(default_factory=dict)
    repaired: dict[str, int] = Field(default_factory=dict)  # documents kept after a repair, e.g. invalid_utf8
    repaired_examples: dict[str, list[str]] = Field(default_factory=dict)
    duplicates_removed: int = 0
    recipe: dict = Field(default_factory=dict)
    tokens: TokenShards | None = None  # None: word shards (`SHARD_SCHEMA`)
    fingerprint: str = ""

    @property
    def total_rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def text_bytes(self) -> int:
        return sum(s.bytes for s in self.languages.values())

    @property
    def bytes_per_word(self) -> float:
        """Over all languages; compute matching needs it beside `bytes_per_token`."""
        return self.text_bytes / max(sum(s.words for s in self.languages.values()), 1)

    @property
    def bytes_per_token(self) -> float | None:
        """Over all languages, for token shards (None for word shards)."""
        return None if self.tokens is None else self.text_bytes / max(sum(self.tokens.tokens.values()), 1)

    @property
    def column(self) -> str:
        """The Parquet column holding a row's sequence."""
        return "words" if self.tokens is None else "tokens"

    def compute_fingerprint(self) -> str:
        body = self.model_dump(exclude={"fingerprint"})
        if body["tokens"] is None:  # word shards keep the fingerprints they had before token shards existed
            del body["tokens"]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]

    def sealed(self) -> Manifest:
        return self.model_copy(update={"fingerprint": self.compute_fingerprint()})


def write_atomic(fs, path: str, data: bytes) -> None:
    """Whole or not at all: an object store's single PUT, or a local temp file renamed into place, so a crash
    never leaves a half-written manifest, ledger or claim that looks complete."""
    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        temp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        with open(temp, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    else:
        fs.pipe_file(path, data)


def write_manifest(url: str, manifest: Manifest) -> None:
    fs, root = fsspec.core.url_to_fs(url)
    write_atomic(fs, f"{root}/{MANIFEST}", manifest.sealed().model_dump_json(indent=2).encode())


def read_manifest(url: str) -> Manifest:
    fs, root = fsspec.core.url_to_fs(url)
    path = f"{root}/{MANIFEST}"
    if not fs.exists(path):
        raise FileNotFoundError(f"{url} holds no {MANIFEST}: not a finished shard set (run `hierpt prep` first)")
    with fs.open(path) as f:
        raw = json.loads(f.read())
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version != SCHEMA_VERSION:  # checked before the fields: an older layout may not even parse
        raise ValueError(
            f"{url}: shard schema version {version}, this hierpt reads {SCHEMA_VERSION}: "
            "re-run `hierpt prep` with this hierpt"
        )
    manifest = Manifest.model_validate(raw)
    if manifest.fingerprint != manifest.compute_fingerprint():
        raise ValueError(f"{url}/{MANIFEST}: fingerprint does not match its content (edited or corrupt)")
    return manifest
