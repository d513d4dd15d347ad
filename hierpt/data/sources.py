"""Reading raw corpora: resolve a recipe's sources to files on any fsspec URL, then stream their documents.

What a document of a file is, for prep and for evaluation alike: a line of a ``.txt`` file, the text field of
a JSON object on a line of a ``.jsonl`` file (optionally gzip or zstd compressed), the text column of a
Parquet row. Every line or row either becomes a `Document` or a `Rejection` with a reason (`REASONS`, the
manifest's ``rejected`` keys), so a bad file costs its own bad documents and nothing else; a truncated or
corrupt file keeps the documents read before the damage. Prep counts rejections; evaluation refuses them.

Invalid UTF-8 is repaired, not rejected (hierpt.splitting's replacement policy); `Document.replacements` counts it.
"""

from __future__ import annotations

import glob as globlib
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from hierpt.data.recipe import FORMATS, Recipe
from hierpt.splitting import decode_utf8

_CHUNK = 1 << 20
_JUNK = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")
_JUNK_FRACTION = 0.1
REASONS = {
    "malformed_json": "not JSON",
    "not_an_object": "not a JSON object",
    "missing_text_field": "no text field (absent or null)",
    "non_string_text_field": "the text field is not a string",
    "non_string_lang_field": "the language field is not a string",
    "empty_document": "only whitespace",
    "empty_file": "no bytes (after decompression)",
    "nul_bytes": "text containing U+0000",
    "binary_junk": f"more than {_JUNK_FRACTION:.0%} control or undecodable characters",
    "document_too_long": "longer than max_doc_bytes",
    "corrupt_file": "a truncated or corrupt gzip/zstd stream or Parquet file (documents before the damage kept)",
    "unreadable_file": "reading the file failed (network, permissions), counted like corrupt_file",
}


@dataclass(frozen=True)
class InputFile:
    """One file of one source. `rel` (path below the source's root) makes document ids location-independent."""

    source: int  # index in the recipe's sources
    url: str
    rel: str
    format: str
    size: int


class Document(NamedTuple):  # a tuple: one is made per document, on the hot path
    line: int  # 1-based line (jsonl, txt) or row (parquet)
    text: str
    replacements: int  # invalid UTF-8 sequences replaced by U+FFFD
    lang: str | None = None  # a JSONL object's language field, when `read_documents` was asked for one


class Rejection(NamedTuple):
    line: int | None  # None: the whole file (or its rest)
    reason: str


def format_of(path: str, declared: str | None = None) -> str | None:
    if declared:
        return declared
    return next((fmt for fmt in FORMATS if path.endswith("." + fmt)), None)


def input_file(url: str) -> InputFile:
    """One file outside any recipe (an evaluation set), its format from its name."""
    fmt = format_of(url)
    if fmt is None:
        raise ValueError(f"{url}: not a {' / '.join('.' + f for f in FORMATS)} file")
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.isfile(path):
        raise FileNotFoundError(f"{url} does not exist")
    return InputFile(0, url, path.rsplit("/", 1)[-1], fmt, fs.size(path))


def list_inputs(recipe: Recipe) -> list[InputFile]:
    """All input files of the recipe, in recipe order then path order. Fails fast with one line per problem."""
    inputs = []
    for index, source in enumerate(recipe.sources):
        url = recipe.source_url(source)
        try:
            fs, path = fsspec.core.url_to_fs(url)
            if globlib.has_magic(path):
                magic = min(path.find(c) for c in "*?[" if c in path)
                root, found = path[:magic].rsplit("/", 1)[0], fs.glob(path, detail=True)
            elif fs.isdir(path):
                root, found = path, fs.find(path, detail=True)
            elif fs.isfile(path):
                root, found = path.rsplit("/", 1)[0], {path: fs.info(path)}
            else:
                root, found = path, {}
        except FileNotFoundError:
            root, found = path, {}
        except Exception as error:  # credentials, network, permissions: whatever the filesystem raises
            raise PermissionError(
                f"source {source.name!r}: cannot read {url}: {type(error).__name__}: {error}"
            ) from None
        if not found:
            raise FileNotFoundError(f"source {source.name!r}: {url} does not exist (or matches no file)")
        sizes = {p: info["size"] for p, info in found.items() if info["type"] == "file"}
        chosen = []
        for p in sorted(sizes):
            name = p.rsplit("/", 1)[-1]
            fmt = format_of(p, source.format)
            if name.startswith((".", "_")) or fmt is None:
                continue
            rel = p[len(root) :].lstrip("/") or name
            chosen.append(InputFile(index, fs.unstrip_protocol(p), rel, fmt, sizes[p]))
        if not chosen:
            raise FileNotFoundError(
                f"source {source.name!r}: {url} holds no {source.format or '|'.join(FORMATS)} files"
            )
        inputs.extend(chosen)
    return inputs


def read_documents(
    file: InputFile,
    text_field: str,
    max_doc_bytes: int,
    byte_range: tuple[int, int] | None = None,
    lang_field: str | None = None,
) -> Iterator[Document | Rejection]:
    """Stream the documents of one file, never raising for bad content.

    `byte_range` (Parquet only) reads just the row groups that start inside it, so one large Parquet file is
    split across tasks; whole-file findings (a missing column, an unreadable footer) belong to the range at 0.
    `lang_field` (JSONL) reads each object's language into `Document.lang`.
    """
    if file.format == "parquet":
        yield from _parquet_documents(file, text_field, max_doc_bytes, byte_range or (0, file.size))
        return
    codec = {"jsonl.gz": "gz", "jsonl.zst": "zst"}.get(file.format)
    is_json = file.format != "txt"
    line_no = 0
    try:
        with fsspec.open(file.url, "rb") as stream:
            for line_no, raw in _lines(_decompressed(stream, codec), max_doc_bytes):
                if raw is None:
                    yield Rejection(line_no, "document_too_long")
                    continue
                if not raw.strip():
                    continue
                raw = raw.rstrip(b"\r")
                try:
                    text, replacements = raw.decode(), 0  # the common case, without the repair scan
                except UnicodeDecodeError:
                    text, replacements = decode_utf8(raw)
                lang = None
                if is_json:
                    text, lang, reason = _json_text(text, text_field, lang_field)
                    if reason:
                        yield Rejection(line_no, reason)
                        continue
                yield _checked(line_no, text, replacements, max_doc_bytes, lang)
    except (EOFError, zlib.error, zstandard.ZstdError):
        yield Rejection(None, "corrupt_file")
        return
    except OSError:  # the storage failed mid-file (network, permissions): count it, keep what was read
        yield Rejection(None, "unreadable_file")
        return
    if line_no == 0:
        yield Rejection(None, "empty_file")


def _checked(
    line: int, text: str, replacements: int, max_doc_bytes: int, lang: str | None = None
) -> Document | Rejection:
    if not text.strip():
        return Rejection(line, "empty_document")
    if len(text) > max_doc_bytes or (4 * len(text) > max_doc_bytes and len(text.encode()) > max_doc_bytes):
        return Rejection(line, "document_too_long")
    junk = len(_JUNK.findall(text))
    if junk > _JUNK_FRACTION * len(text):
        return Rejection(line, "binary_junk")
    if "\x00" in text:
        return Rejection(line, "nul_bytes")
    return Document(line, text, replacements, lang)


def _json_text(line: str, text_field: str, lang_field: str | None) -> tuple[str, str | None, str | None]:
    """(text, language, rejection reason) of one JSONL line."""
    try:
        record = json.loads(line)
    except ValueError:
        return "", None, "malformed_json"
    if not isinstance(record, dict):
        return "", None, "not_an_object"
    value = record.get(text_field)
    if value is None:
        return "", None, "missing_text_field"
    if not isinstance(value, str):
        return "", None, "non_string_text_field"
    lang = record.get(lang_field) if lang_field else None
    if lang is not None and not isinstance(lang, str):
        return "", None, "non_string_lang_field"
    return value, lang, None


def _decompressed(stream, codec: str | None) -> Iterator[bytes]:
    """Chunks of the decompressed file; raises EOFError when a compressed stream ends early (a truncated file)."""
    if codec is None:
        yield from iter(lambda: stream.read(_CHUNK), b"")
        return

    def fresh():
        return zlib.decompressobj(wbits=47) if codec == "gz" else zstandard.ZstdDecompressor().decompressobj()

    decompressor, fed = fresh(), False
    for chunk in iter(lambda: stream.read(_CHUNK), b""):
        while chunk:
            fed = True
            out = decompressor.decompress(chunk)
            if out:
                yield out
            if not decompressor.eof:
                break
            chunk = decompressor.unused_data  # a concatenated member or frame follows
            decompressor, fed = fresh(), False
    if fed and not decompressor.eof:
        raise EOFError("compressed stream ended before its end marker")


def _lines(chunks: Iterator[bytes], limit: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line bytes without the newline), or None in place of a line longer than `limit` bytes."""
    pending: list[bytes] = []
    pending_bytes = 0
    too_long = False
    line_no = 0
    for chunk in chunks:
        parts = chunk.split(b"\n")
        for part in parts[:-1]:
            line_no += 1
            if too_long or pending_bytes + len(part) > limit:
                yield line_no, None
            else:
                yield line_no, b"".join([*pending, part]) if pending else part
            pending, pending_bytes, too_long = [], 0, False
        tail = parts[-1]
        if tail and not too_long:
            pending.append(tail)
            pending_bytes += len(tail)
            if pending_bytes > limit:  # stop buffering a runaway line; it is rejected when it ends
                pending, pending_bytes, too_long = [], 0, True
    if pending or too_long:
        yield line_no + 1, None if too_long else b"".join(pending)


def _parquet_documents(
    file: InputFile, text_field: str, max_doc_bytes: int, byte_range: tuple[int, int]
) -> Iterator[Document | Rejection]:
    first = byte_range[0] == 0  # the range that reports whole-file findings
    footer_read = False
    try:
        with fsspec.open(file.url, "rb") as stream:
            parquet = pq.ParquetFile(stream)
            footer_read = True
            field = parquet.schema_arrow.field(text_field) if text_field in parquet.schema_arrow.names else None
            if field is None or not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
                if first:
                    yield Rejection(None, "missing_text_field" if field is None else "non_string_text_field")
                return
            groups, row, total = [], 0, 0
            for index in range(parquet.metadata.num_row_groups):
                meta = parquet.metadata.row_group(index)
                if byte_range[0] <= _group_start(meta) < byte_range[1]:
                    row = row if groups else total  # rows before this range: document ids stay file rows
                    groups.append(index)
                total += meta.num_rows
            if first and total == 0:
                yield Rejection(None, "empty_file")
            if not groups:
                return
            for batch in parquet.iter_batches(columns=[text_field], batch_size=4096, row_groups=groups):
                for text in batch.column(0).to_pylist():
                    row += 1
                    if text is None:
                        yield Rejection(row, "missing_text_field")
                    else:
                        yield _checked(row, text, 0, max_doc_bytes)
    except (pa.ArrowException, OSError):
        if first or footer_read:  # an unreadable footer is the file's one rejection, not one per range
            yield Rejection(None, "corrupt_file")


def _group_start(meta) -> int:
    """Where a row group's bytes begin in the file (its first column chunk)."""
    column = meta.column(0)
    offsets = [o for o in (column.dictionary_page_offset, column.data_page_offset) if o is not None and o > 0]
    return min(offsets) if offsets else column.file_offset
