"""The corpus recipe: which raw sources go into a shard set, in which language, with which mixture weight.

A recipe is plain data (YAML on disk, documented in data_prep/README.md). Everything in it except `output`
decides the shards' bytes, so its fingerprint is what marks an output location as belonging to one recipe.
"""

from __future__ import annotations

import os
from typing import Literal

import fsspec
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from hierpt.splitting import DEFAULT_MAX_WORD_BYTES
from hierpt.validation import first_error

Format = Literal["txt", "jsonl", "jsonl.gz", "jsonl.zst", "parquet"]
FORMATS: tuple[str, ...] = ("jsonl.gz", "jsonl.zst", "jsonl", "parquet", "txt")  # longest suffix first
MAX_DOC_BYTES = 64 << 20


class Source(BaseModel):
    """One raw corpus: a file, directory, glob or URL of files in one language."""

    model_config = ConfigDict(extra="forbid")
    url: str  # local path, glob or fsspec URL (s3://bucket/dir/*.jsonl.zst); a directory means all its files
    lang: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    name: str = ""  # stable id prefix of its documents; defaults to `lang`
    format: Format | None = None  # None: from each file's extension
    text_field: str = "text"  # jsonl/parquet column holding the document
    weight: float = Field(default=1.0, ge=0.0)  # 2.5 = every document twice, plus a seeded half once more

    @model_validator(mode="after")
    def _default_name(self) -> Source:
        if not self.name:
            self.name = self.lang
        return self


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: list[Source] = Field(min_length=1)
    seed: int = 0
    max_word_bytes: int = Field(default=DEFAULT_MAX_WORD_BYTES, ge=4, le=1024)
    seq_words: int = Field(default=1024, ge=2)
    rows_per_shard: int = Field(default=8192, ge=1)  # rows per Parquet file
    max_doc_bytes: int = Field(default=MAX_DOC_BYTES, ge=1)  # longer documents are rejected as `document_too_long`
    output: str | None = None  # default output URL; `hierpt prep --output` overrides it
    _base_dir: str = PrivateAttr(default="")  # where relative local source paths start (the recipe's directory)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Source]) -> list[Source]:
        names = [s.name for s in sources]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"source names must be unique (document ids start with them): {duplicated}; set `name`")
        return sources

    def content(self) -> dict:
        """What decides the shards: the recipe without its output location."""
        return self.model_dump(exclude={"output"})

    def source_url(self, source: Source) -> str:
        if "://" in source.url or os.path.isabs(source.url) or not self._base_dir:
            return source.url
        return os.path.join(self._base_dir, source.url)


class TokenShardSpec(BaseModel):
    """Token shards for the BPE baseline, from the same recipe: same documents, same dedup, same mixture.

    Either train a byte-level BPE tokenizer (`vocab_size` ids in all) on a seeded sample of the prepared
    documents, or reuse `tokenizer` (e.g. the pretraining set's, for continued pretraining on a new language).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    seq_tokens: int = Field(ge=2)  # ids per row
    vocab_size: int | None = Field(None, ge=258)  # 256 byte tokens + merges + end of document
    tokenizer: str | None = None  # a tokenizers JSON file (e.g. <other token shards>/tokenizer.json)
    train_bytes: int = Field(100_000_000, ge=1)  # text the tokenizer is trained on (a seeded sample)
    min_frequency: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _one_tokenizer(self) -> TokenShardSpec:
        if (self.vocab_size is None) == (self.tokenizer is None):
            raise ValueError("set exactly one of vocab_size (train a tokenizer) and tokenizer (reuse one)")
        return self


def load_recipe(url: str) -> Recipe:
    """Read a YAML recipe; relative local source paths are taken relative to the recipe's directory."""
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise FileNotFoundError(f"recipe {url} does not exist")
    with fs.open(path, "r") as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict):
        raise ValueError(f"recipe {url}: expected a YAML mapping with `sources`, got {type(raw).__name__}")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as error:
        raise ValueError(f"recipe {url}: {first_error(error)}") from None
    if "://" not in url or url.startswith("file://"):
        recipe._base_dir = os.path.dirname(os.path.abspath(path))
    return recipe
