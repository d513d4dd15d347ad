"""Reading raw corpora: every bad-input case becomes a counted rejection (or a repaired document), never a crash."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from hierpt.data.recipe import Recipe, Source, load_recipe
from hierpt.data.sources import (
    Document,
    InputFile,
    Rejection,
    list_inputs,
    read_documents,
)


def _read(path, fmt, text_field="text", max_doc_bytes=64 << 20):
    file = InputFile(0, f"file://{path}", path.name, fmt, path.stat().st_size)
    return list(read_documents(file, text_field, max_doc_bytes))


def _jsonl(*records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


def test_jsonl_bad_lines_are_counted_with_their_line_numbers(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        _jsonl(
            {"text": "good one"},
            b'{"text": "no closing brace"',
            {"body": "wrong field"},
            {"text": 42},
            ["not", "an", "object"],
            {"text": "   "},
            {"text": "a longer document with\u0000 one nul byte in it"},
            {"text": "\u0001\u0002\u0003\u0004 junk"},
            {"text": None},
        )
        + b"\n"  # blank lines are separators, not documents
        + _jsonl({"text": "good two"})
    )
    items = _read(path, "jsonl")
    assert [d.text for d in items if isinstance(d, Document)] == ["good one", "good two"]
    assert [(r.line, r.reason) for r in items if isinstance(r, Rejection)] == [
        (2, "malformed_json"),
        (3, "missing_text_field"),
        (4, "non_string_text_field"),
        (5, "not_an_object"),
        (6, "empty_document"),
        (7, "nul_bytes"),
        (8, "binary_junk"),
        (9, "missing_text_field"),
    ]


def test_invalid_utf8_is_repaired_and_counted(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"caf\xe9 au lait, then a long sentence with \xff\xfe in it\nclean line\n")
    first, second = _read(path, "txt")
    assert first.text == "caf\ufffd au lait, then a long sentence with \ufffd\ufffd in it" and first.replacements == 3
    assert second.text == "clean line" and second.replacements == 0


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
def test_truncated_compressed_file_keeps_the_documents_before_the_damage(tmp_path, fmt):
    records = _jsonl(*({"text": f"document number {i} " * 5} for i in range(5000)))
    blob = gzip.compress(records) if fmt == "jsonl.gz" else zstandard.ZstdCompressor().compress(records)
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(blob[: len(blob) // 2])
    items = _read(path, fmt)
    docs = [d for d in items if isinstance(d, Document)]
    assert 0 < len(docs) < 5000
    assert [d.text for d in docs] == [f"document number {i} " * 5 for i in range(len(docs))]
    assert items[-1] == Rejection(None, "corrupt_file")


@pytest.mark.parametrize("fmt", ["jsonl.gz", "jsonl.zst"])
def test_concatenated_compressed_members_are_all_read(tmp_path, fmt):
    compress = gzip.compress if fmt == "jsonl.gz" else zstandard.ZstdCompressor().compress
    path = tmp_path / f"two.{fmt}"
    path.write_bytes(compress(_jsonl({"text": "a"})) + compress(_jsonl({"text": "b"})))
    assert [d.text for d in _read(path, fmt)] == ["a", "b"]


def test_binary_junk_in_a_gzip_name_is_one_corrupt_file(tmp_path):
    path = tmp_path / "junk.jsonl.gz"
    path.write_bytes(bytes(range(256)) * 40)
    assert _read(path, "jsonl.gz") == [Rejection(None, "corrupt_file")]


def test_binary_junk_as_text_is_rejected_per_line(tmp_path):
    path = tmp_path / "junk.txt"
    path.write_bytes(bytes(range(256)) * 40)
    items = _read(path, "txt")
    assert items and all(isinstance(r, Rejection) and r.reason in ("binary_junk", "nul_bytes") for r in items)


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "jsonl.gz", "jsonl.zst", "parquet"])
def test_empty_file_is_counted(tmp_path, fmt):
    path = tmp_path / f"empty.{fmt}"
    if fmt == "jsonl.gz":
        path.write_bytes(gzip.compress(b""))
    elif fmt == "jsonl.zst":
        path.write_bytes(zstandard.ZstdCompressor().compress(b""))
    elif fmt == "parquet":
        pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    else:
        path.write_bytes(b"")
    assert _read(path, fmt) == [Rejection(None, "empty_file")]


def test_ten_megabyte_single_line_document_is_processed(tmp_path):
    text = "word " * (2 << 20)  # 10 MiB, no newline at the end
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"text": text}))
    (doc,) = _read(path, "jsonl")
    assert doc.text == text


def test_document_over_the_limit_is_rejected_without_buffering_it(tmp_path):
    path = tmp_path / "long.txt"
    path.write_bytes(b"x" * 5000 + b"\nshort\n" + b"y" * 5000)
    items = _read(path, "txt", max_doc_bytes=1000)
    assert items == [Rejection(1, "document_too_long"), Document(2, "short", 0), Rejection(3, "document_too_long")]


def test_parquet_text_field(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"content": ["alpha", None, "beta"], "n": [1, 2, 3]}), path)
    items = _read(path, "parquet", text_field="content")
    assert items == [Document(1, "alpha", 0), Rejection(2, "missing_text_field"), Document(3, "beta", 0)]
    assert _read(path, "parquet", text_field="text") == [Rejection(None, "missing_text_field")]
    assert _read(path, "parquet", text_field="n") == [Rejection(None, "non_string_text_field")]


def test_corrupt_parquet_is_one_rejection(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    assert _read(path, "parquet") == [Rejection(None, "corrupt_file")]


def test_list_inputs_expands_directories_and_globs_in_order(tmp_path):
    (tmp_path / "en").mkdir()
    for name in ("b.jsonl", "a.jsonl.zst", "_skip.jsonl", "notes.md"):
        (tmp_path / "en" / name).write_text("x")
    (tmp_path / "de.txt").write_text("x")
    recipe = Recipe(
        sources=[Source(url=str(tmp_path / "en"), lang="en"), Source(url=str(tmp_path / "*.txt"), lang="de")]
    )
    files = list_inputs(recipe)
    assert [(f.source, f.rel, f.format) for f in files] == [
        (0, "a.jsonl.zst", "jsonl.zst"),
        (0, "b.jsonl", "jsonl"),
        (1, "de.txt", "txt"),
    ]


def test_missing_source_fails_fast_naming_it(tmp_path):
    recipe = Recipe(sources=[Source(url=str(tmp_path / "nope"), lang="en", name="web")])
    with pytest.raises(FileNotFoundError, match="source 'web'.*does not exist"):
        list_inputs(recipe)


def test_missing_s3_credentials_fail_fast_in_one_line(moto_s3, monkeypatch, tmp_path):
    import s3fs

    for name in moto_s3.env:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.endpoint)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    recipe = Recipe(sources=[Source(url="s3://corpus/en/", lang="en")])
    with pytest.raises(PermissionError, match=r"source 'en': cannot read s3://corpus/en/: NoCredentialsError") as error:
        list_inputs(recipe)
    assert "\n" not in str(error.value)
    s3fs.S3FileSystem.clear_instance_cache()


def test_recipe_errors_name_the_field(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("sources:\n  - {url: x, lang: en, weight: -1}\n")
    with pytest.raises(ValueError, match=r"sources\.0\.weight"):
        load_recipe(str(path))
    path.write_text("sources:\n  - {url: x, lang: en}\n  - {url: y, lang: en}\n")
    with pytest.raises(ValueError, match="source names must be unique"):
        load_recipe(str(path))


def test_relative_source_paths_start_at_the_recipe_but_do_not_change_its_fingerprint(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "r.yaml").write_text("sources:\n  - {url: corpus/, lang: en}\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "r.yaml").write_text("sources:\n  - {url: corpus/, lang: en}\n")
    a, b = load_recipe(str(tmp_path / "a" / "r.yaml")), load_recipe(str(tmp_path / "b" / "r.yaml"))
    assert a.source_url(a.sources[0]) == f"{tmp_path}/a/corpus/"
    assert a.content() == b.content()  # what prep fingerprints
