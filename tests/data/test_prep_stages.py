"""The prep stages' tasks run in this process (no Ray) with small limits: bounded chunks, Parquet split by row
groups, dedup across buckets and chunks, per-unit packing, the bounded tokenizer sample, the manifest contract."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hierpt.data.parts import FileResult, write_part
from hierpt.data.prep import pack_items, split_units
from hierpt.data.prep.dedup import bucket_items, find_duplicates, write_chunk_list
from hierpt.data.prep.pack import group_rows, pack_unit
from hierpt.data.prep.sample import sample_items
from hierpt.data.prep.work import WORK, Ledger
from hierpt.data.recipe import Recipe, Source
from hierpt.data.shards import MANIFEST, read_manifest
from hierpt.data.sources import Document, list_inputs, read_documents
from hierpt.splitting import END_OF_DOC_WORD, split_words

TEXTS = [f"Document {i} tells of {i % 7} foxes and {i % 5} dogs, again and again: {'la ' * (i % 40)}" for i in range(600)]


def _run_stages(recipe: Recipe, out, *, group_bytes: int, chunk_bytes: int, split_bytes: int, buckets: int):
    """split → dedup → pack as the driver runs them, each task called directly; returns units, results, packed."""
    (out / WORK).mkdir(parents=True)
    units = split_units(recipe, list_inputs(recipe), str(out), split_bytes=split_bytes)
    results = []
    for unit in units:
        results.append(FileResult.model_validate(write_part({**unit, "group_bytes": group_bytes, "chunk_bytes": chunk_bytes})))
    write_chunk_list(*_local(out), [(u["key"], c) for u, r in zip(units, results) for c in range(len(r.chunks))])
    duplicates = sum(find_duplicates(item)["duplicates"] for item in bucket_items(str(out), buckets, 1))
    items = pack_items(recipe, units, results, str(out), None)
    packed = {item["id"]: pack_unit({**item, "buckets": buckets}) for item in items}
    return units, results, items, packed, duplicates


def _local(out):
    import fsspec

    return fsspec.filesystem("file"), str(out)


def test_chunks_and_row_groups_stay_bounded_and_dedup_keeps_first_occurrences(tmp_path):
    (tmp_path / "en").mkdir()
    records = [{"text": t} for t in TEXTS]
    (tmp_path / "en" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records + records[:50]))
    (tmp_path / "en" / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[100:200] + records[::-1][:5]))
    recipe = Recipe(sources=[Source(url=str(tmp_path / "en"), lang="en")], seq_words=48, rows_per_shard=20)
    out = tmp_path / "out"
    group_bytes, chunk_bytes = 2_000, 12_000
    units, results, items, packed, duplicates = _run_stages(
        recipe, out, group_bytes=group_bytes, chunk_bytes=chunk_bytes, split_bytes=1 << 30, buckets=3
    )
    longest = max(len(t.encode()) for t in TEXTS)
    assert len(results[0].chunks) > 3
    for path in (out / WORK / "parts").iterdir():  # the most any later stage holds in one Arrow array
        part = pq.ParquetFile(path)
        sizes = [sum(part.read_row_group(g, columns=["bytes"]).column("bytes").to_pylist()) for g in range(part.num_row_groups)]
        assert max(sizes) < group_bytes + longest and sum(sizes) < chunk_bytes + longest
    assert duplicates == 50 + 100 + 5

    stream, rows_per_group = [], group_rows(recipe.seq_words, recipe.rows_per_shard)
    for item in items:
        files = packed[item["id"]]["files"]
        rows = [r for f in files for r in pq.read_table(out / f["path"]).column("words").to_pylist()]
        assert all(len(r) == recipe.seq_words for r in rows[:-1])  # one short row per unit at most
        assert all(f["rows"] <= recipe.rows_per_shard and max(f["row_groups"]) <= rows_per_group for f in files)
        stream += [w for r in rows for w in r]
    assert stream == [w for t in TEXTS for w in [*split_words(t, recipe.max_word_bytes), END_OF_DOC_WORD]]


def test_a_large_parquet_input_is_split_by_row_groups_into_units(tmp_path):
    (tmp_path / "zh").mkdir()
    path = tmp_path / "zh" / "big.parquet"
    texts = [f"{t} {'文' * (i % 9)}" for i, t in enumerate(TEXTS)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=50)  # 12 row groups
    recipe = Recipe(sources=[Source(url=str(tmp_path / "zh"), lang="zh")], seq_words=64)
    units, results, *_ = _run_stages(
        recipe, tmp_path / "out", group_bytes=1 << 20, chunk_bytes=1 << 20, split_bytes=path.stat().st_size // 5, buckets=1
    )
    assert len(units) >= 5 and sum(r.docs for r in results) == len(texts)
    assert sum(1 for r in results if r.docs) >= 4  # the row groups spread over the units
    whole = [d for d in read_documents(list_inputs(recipe)[0], "text", 1 << 20) if isinstance(d, Document)]
    pieces = [d for u in units for d in read_documents(list_inputs(recipe)[0], "text", 1 << 20, tuple(u["range"]))]
    assert pieces == whole and [d.line for d in whole] == list(range(1, len(texts) + 1))


def test_the_tokenizer_sample_reads_about_train_bytes_in_a_seeded_order():
    chunks = [{"id": f"k{i}-0-0", "key": f"k{i}", "chunk": 0, "copy": 0, "bytes": 1_000} for i in range(100)]
    chunks += [{**c, "id": c["id"][:-1] + "1", "copy": 1} for c in chunks]  # a second mixture copy is not sampled twice
    chosen = sample_items(chunks, seed=0, train_bytes=4_500)
    assert len(chosen) == 5 and all(c["copy"] == 0 for c in chosen)
    assert [c["key"] for c in sample_items(chunks, 0, 4_500)] == [c["key"] for c in chosen]
    assert [c["key"] for c in sample_items(chunks, 1, 4_500)] != [c["key"] for c in chosen]


def test_a_torn_ledger_segment_is_skipped_and_segments_are_written_whole(tmp_path):
    ledger_dir = tmp_path / WORK / "ledger"
    ledger = Ledger(str(tmp_path), "split")
    ledger.add({"id": "a", "docs": 1})
    ledger.add({"id": "b", "docs": 2})
    ledger.flush()
    (ledger_dir / "split-000007.jsonl").write_bytes(b"")
    (ledger_dir / "split-000008.jsonl").write_bytes(b'{"id": "c", "do')
    assert sorted(p.name for p in ledger_dir.iterdir()) == ["split-000000.jsonl", "split-000001.jsonl", "split-000007.jsonl", "split-000008.jsonl"]
    again = Ledger(str(tmp_path), "split")
    assert sorted(again.done) == ["a", "b"]
    again.add({"id": "c", "docs": 3})
    again.flush()
    assert (ledger_dir / "split-000009.jsonl").exists() and sorted(Ledger(str(tmp_path), "split").done) == ["a", "b", "c"]


def test_shards_of_an_older_schema_are_refused_in_one_line_naming_the_fix(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"schema_version": 1, "files": [{"path": "x.parquet", "rows": 3}]}))
    with pytest.raises(ValueError, match=r"schema version 1, this hierpt reads 2: re-run `hierpt prep` with this hierpt") as error:
        read_manifest(str(tmp_path))
    assert "\n" not in str(error.value)
