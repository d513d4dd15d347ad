"""The prep pipeline end to end on a real local Ray and a real S3 server (SeaweedFS).

One messy corpus (every bad-input case, duplicates, several formats and scripts) is prepared once per session and
checked from several sides; other tests rerun it under different conditions and demand byte-identical output.
"""

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

from hierpt.cli import main
from hierpt.data.prep import WORK, prepare
from hierpt.data.bpe import BPETokenizer
from hierpt.data.recipe import Recipe, Source, TokenShardSpec, load_recipe
from hierpt.data.sample_corpus import write_sample_corpus
from hierpt.data.shards import MANIFEST, read_manifest
from hierpt.data.sources import Document, list_inputs, read_documents
from hierpt.splitting import END_OF_DOC_WORD, split_words

pytestmark = pytest.mark.integration

SEQ_WORDS = 64
EN = [f"Document {i} says: the quick brown fox number {i} jumps over {i * 7} lazy dogs." for i in range(40)]


def _jsonl(*records) -> bytes:
    return b"".join(
        (r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n" for r in records
    )


def _write_messy_corpus(root: Path) -> None:
    en, de, zh = root / "en", root / "de", root / "zh"
    for d in (en, de, zh):
        d.mkdir(parents=True)
    (en / "good.jsonl").write_bytes(
        _jsonl(
            *({"text": t} for t in EN[:20]),
            {"text": EN[3]},  # duplicate
            b'{"text": "broken json',
            {"title": "no text field"},
            {"text": ["not", "a", "string"]},
            {"text": "a long enough document that carries one \u0000 NUL character inside it"},
            {"text": "\u0001\u0002\u0003\u0004\u0005\u0006\u0007\u0008 junk"},
            b'{"text": "invalid utf-8 \xff\xfe inside an otherwise ordinary English sentence"}',
            {"text": EN[5]},  # duplicate
        )
    )
    (en / "cut.jsonl.gz").write_bytes(gzip.compress(_jsonl(*({"text": t} for t in EN[20:30])))[:-30])
    (en / "cut.jsonl.zst").write_bytes(
        zstandard.ZstdCompressor().compress(_jsonl(*({"text": t} for t in EN[30:])))[:-30]
    )
    (en / "empty.jsonl").write_bytes(b"")
    (en / "junk.jsonl.gz").write_bytes(bytes(range(256)) * 64)
    (en / "huge.jsonl").write_text(json.dumps({"text": "gigantic " * ((10 << 20) // 9)}))  # one 10 MB line
    (de / "lines.txt").write_bytes(
        "Der Hund läuft schnell über die Wiese.\nDie Katze schläft auf dem warmen Dach.\n".encode()
        + bytes(range(1, 9)) * 30
        + "\nDer Hund läuft schnell über die Wiese.\n".encode()  # duplicate
    )
    pq.write_table(pa.table({"content": ["今天天气很好，我们去公园散步。", None, "我喜欢读书。"]}), zh / "docs.parquet")


def _recipe(root: str, **overrides) -> Recipe:
    return Recipe(
        sources=[
            Source(url=f"{root}/en", lang="en"),
            Source(url=f"{root}/de/*.txt", lang="de"),
            Source(url=f"{root}/zh", lang="zh", text_field="content"),
        ],
        seq_words=SEQ_WORDS,
        rows_per_shard=4096,
        **overrides,
    )


def _shard_bytes(url: str) -> dict[str, bytes]:
    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return {p[len(root) :].lstrip("/"): fs.cat_file(p) for p in fs.find(root)}


@pytest.fixture(scope="session")
def messy(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("messy")
    _write_messy_corpus(root / "corpus")
    recipe = _recipe(str(root / "corpus"))
    manifest = prepare(recipe, str(root / "out"), workers=2)
    return root, recipe, manifest


def test_every_bad_input_is_counted_with_a_reason_and_location(messy):
    _, _, manifest = messy
    assert manifest.rejected == {
        "binary_junk": 2,  # the en junk line and the de control-character line
        "corrupt_file": 3,  # truncated gzip, truncated zstd, junk with a .gz name
        "empty_file": 1,
        "malformed_json": 1,
        "missing_text_field": 2,  # en line without `text`, zh row with null
        "non_string_text_field": 1,
        "nul_bytes": 1,
    }
    assert manifest.rejected_examples["empty_file"] == ["en/empty.jsonl"]
    assert manifest.rejected_examples["malformed_json"] == ["en/good.jsonl#22"]
    assert manifest.rejected_examples["corrupt_file"] == ["en/cut.jsonl.gz", "en/cut.jsonl.zst", "en/junk.jsonl.gz"]
    assert manifest.repaired == {"invalid_utf8": 1}
    assert manifest.repaired_examples == {"invalid_utf8": ["en/good.jsonl#27"]}
    assert manifest.duplicates_removed == 3


def _accepted_texts(recipe: Recipe) -> dict[str, list[str]]:
    """The accepted documents per language in stream order, read without the pipeline (dedup by content)."""
    seen, texts = set(), {}
    for file in list_inputs(recipe):
        source = recipe.sources[file.source]
        for doc in read_documents(file, source.text_field, recipe.max_doc_bytes):
            if isinstance(doc, Document) and doc.text not in seen:
                seen.add(doc.text)
                texts.setdefault(source.lang, []).append(doc.text)
    return texts


def _unit_rows(out: Path, manifest, lang: str, column: str) -> list[list]:
    """Rows per stage-2 unit (files `<lang>-<unit>-<n>`), checking each file against its manifest entry."""
    units: dict[str, list] = {}
    for file in manifest.files:
        if file.path.startswith(f"{lang}-"):
            table = pq.read_table(out / file.path)
            assert table.num_rows == file.rows == sum(file.row_groups) and set(table.column("lang").to_pylist()) == {lang}
            metadata = pq.ParquetFile(out / file.path).metadata
            assert [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)] == file.row_groups
            units.setdefault(file.path.rsplit("-", 1)[0], []).extend(table.column(column).to_pylist())
    return list(units.values())


def test_shards_hold_exactly_the_accepted_documents_and_stats_match_the_splitter(messy):
    root, recipe, manifest = messy
    expected = _accepted_texts(recipe)
    assert 22 <= len(expected["en"]) < 42  # the truncated files gave up their tails
    for lang, texts in expected.items():
        units = _unit_rows(root / "out", manifest, lang, "words")
        for unit_rows in units:
            assert all(len(r) == SEQ_WORDS for r in unit_rows[:-1]) and 0 < len(unit_rows[-1]) <= SEQ_WORDS
        rows = [row for unit_rows in units for row in unit_rows]
        stream = [w for row in rows for w in row]
        assert stream == [w for t in texts for w in [*split_words(t, recipe.max_word_bytes), END_OF_DOC_WORD]]
        words = [split_words(t, recipe.max_word_bytes) for t in texts]
        n_words, n_bytes = sum(map(len, words)), sum(len(t.encode()) for t in texts)
        stats = manifest.languages[lang]
        assert (stats.docs, stats.words, stats.bytes) == (len(texts), n_words, n_bytes)
        assert stats.bytes_per_word == pytest.approx(n_bytes / n_words, abs=1e-6)
    first_en = next(f.path for f in manifest.files if f.path.startswith("en-"))
    assert max(len(w) for row in pq.read_table(root / "out" / first_en).column("words").to_pylist() for w in row) <= 100


def test_output_is_complete_and_readable_after_the_run(messy):
    root, recipe, manifest = messy
    assert read_manifest(str(root / "out")) == manifest
    assert not (root / "out" / WORK).exists()
    assert sorted(p.name for p in (root / "out").iterdir()) == sorted([MANIFEST, *(f.path for f in manifest.files)])
    assert manifest.recipe == recipe.content() and manifest.seq_words == SEQ_WORDS


def test_same_bytes_with_one_worker(messy, tmp_path):
    root, recipe, _ = messy
    prepare(recipe, str(tmp_path / "out1"), workers=1)
    assert _shard_bytes(str(tmp_path / "out1")) == _shard_bytes(str(root / "out"))


def test_reads_from_and_writes_to_s3(messy, s3):
    root, _, manifest = messy
    bucket = s3.new_bucket()
    fs = fsspec.filesystem("s3")
    fs.put(str(root / "corpus") + "/", f"{bucket}/raw/", recursive=True)
    s3_manifest = prepare(_recipe(f"s3://{bucket}/raw"), f"s3://{bucket}/shards", workers=2)
    local, remote = _shard_bytes(str(root / "out")), _shard_bytes(f"s3://{bucket}/shards")
    assert remote.keys() == local.keys()
    assert all(remote[name] == local[name] for name in local if name != MANIFEST)
    assert s3_manifest.model_dump(exclude={"recipe", "fingerprint"}) == manifest.model_dump(
        exclude={"recipe", "fingerprint"}
    )
    assert read_manifest(f"s3://{bucket}/shards").fingerprint == s3_manifest.fingerprint


def test_an_output_of_another_recipe_is_refused(messy, tmp_path):
    root, recipe, _ = messy
    other = _recipe(str(root / "corpus"), seed=1)
    with pytest.raises(ValueError, match="holds the shards of another recipe"):
        prepare(other, str(root / "out"))
    unfinished = tmp_path / "unfinished"
    (unfinished / WORK).mkdir(parents=True)
    (unfinished / WORK / "recipe.json").write_text(json.dumps(recipe.content()))
    with pytest.raises(ValueError, match="unfinished run of another recipe"):
        prepare(other, str(unfinished))
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "part-0.parquet").write_bytes(b"x")
    with pytest.raises(ValueError, match="not empty and holds no hierpt prep run"):
        prepare(other, str(tmp_path / "foreign"))


@pytest.fixture(scope="session")
def messy_tokens(messy):
    root, recipe, _ = messy
    return prepare(recipe, str(root / "tokens"), workers=2, tokens=TokenShardSpec(seq_tokens=40, vocab_size=300))


def test_token_shards_hold_the_same_documents_as_the_word_shards_as_bpe_ids(messy, messy_tokens, tmp_path):
    root, recipe, words = messy
    tokenizer = BPETokenizer.load(str(root / "tokens" / "tokenizer.json"))
    assert messy_tokens.tokens.tokenizer_sha256 == tokenizer.sha256() and tokenizer.vocab_size == 300
    assert messy_tokens.languages == words.languages and messy_tokens.rejected == words.rejected
    text_bytes = sum(s.bytes for s in words.languages.values())
    assert messy_tokens.bytes_per_token == text_bytes / sum(messy_tokens.tokens.tokens.values())
    assert words.bytes_per_word == text_bytes / sum(s.words for s in words.languages.values())
    assert words.bytes_per_token is None
    old = json.loads((root / "out" / MANIFEST).read_text())  # word manifests written before token shards existed
    del old["tokens"]
    (tmp_path / MANIFEST).write_text(json.dumps(old))
    assert read_manifest(str(tmp_path)) == words  # still read, with the same fingerprint
    for lang, texts in _accepted_texts(recipe).items():
        tables = [pq.read_table(root / "tokens" / f.path) for f in messy_tokens.files if f.path.startswith(f"{lang}-")]
        rows = [row for table in tables for row in table.column("tokens").to_pylist()]
        for unit_rows in _unit_rows(root / "tokens", messy_tokens, lang, "tokens"):
            assert all(len(r) == 40 for r in unit_rows[:-1]) and 0 < len(unit_rows[-1]) <= 40
        encoded = tokenizer.encode_batch(texts)
        assert [i for row in rows for i in row] == [i for ids in encoded for i in (*ids, tokenizer.eod_id)]
        assert messy_tokens.tokens.tokens[lang] == sum(map(len, encoded))
        assert tokenizer.decode([i for row in rows for i in row]) == "".join(texts)
        word_ids = [pq.read_table(root / "out" / f.path).column("doc_ids") for f in words.files if f.path.startswith(f"{lang}-")]
        assert [d for table in tables for d in table.column("doc_ids").to_pylist() for d in d] == [
            d for column in word_ids for d in column.to_pylist() for d in d
        ]


def test_token_shards_reuse_a_tokenizer_and_the_output_claim_covers_token_settings(messy, messy_tokens, tmp_path):
    root, recipe, _ = messy
    tokenizer = str(root / "tokens" / "tokenizer.json")
    reused = prepare(recipe, str(tmp_path / "reuse"), workers=1, tokens=TokenShardSpec(seq_tokens=40, tokenizer=tokenizer))
    assert reused.tokens == messy_tokens.tokens
    trained, again = _shard_bytes(str(root / "tokens")), _shard_bytes(str(tmp_path / "reuse"))
    assert {k: v for k, v in again.items() if k != MANIFEST} == {k: v for k, v in trained.items() if k != MANIFEST}
    with pytest.raises(ValueError, match="another recipe"):
        prepare(recipe, str(root / "tokens"), tokens=TokenShardSpec(seq_tokens=32, vocab_size=300))
    with pytest.raises(ValueError, match="another recipe"):
        prepare(recipe, str(root / "tokens"))  # word shards into a token shard set
    with pytest.raises(ValueError, match="exactly one of vocab_size"):
        TokenShardSpec(seq_tokens=40, vocab_size=300, tokenizer=tokenizer)


def test_the_tokenizer_sample_is_seeded_per_document_whatever_the_workers(messy, messy_tokens, tmp_path):
    root, recipe, _ = messy
    small = TokenShardSpec(seq_tokens=40, vocab_size=300, train_bytes=600)  # a few documents of ~2 kB
    one, two = (prepare(recipe, str(tmp_path / f"w{w}"), workers=w, tokens=small) for w in (1, 2))
    assert one.tokens.tokenizer_sha256 == two.tokens.tokenizer_sha256 != messy_tokens.tokens.tokenizer_sha256
    assert one.tokens.tokens != messy_tokens.tokens.tokens  # another vocabulary, the same documents
    assert one.languages == messy_tokens.languages


def test_mixture_weights_repeat_and_sample_documents_from_the_seed(tmp_path, ray_local):
    for lang in ("en", "de"):
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "a.jsonl").write_bytes(_jsonl(*({"text": f"{lang} text number {i}"} for i in range(200))))

    def run(seed, name):
        sources = [
            Source(url=str(tmp_path / "en"), lang="en", weight=2.0),
            Source(url=str(tmp_path / "de"), lang="de", weight=0.5),
        ]
        return prepare(Recipe(sources=sources, seed=seed, seq_words=32), str(tmp_path / name), workers=2)

    a = run(0, "a")
    run(0, "b")
    c = run(1, "c")
    assert a.languages["en"].docs == 400 and a.languages["en"].words == 2 * 200 * 4
    assert 60 < a.languages["de"].docs < 140
    assert _shard_bytes(str(tmp_path / "a")) == _shard_bytes(str(tmp_path / "b"))
    first_de = [next(f.path for f in m.files if f.path.startswith("de-")) for m in (a, c)]
    assert pq.read_table(tmp_path / "a" / first_de[0]) != pq.read_table(tmp_path / "c" / first_de[1])


def _kill_during(stage: str, command: list[str], env: dict, ledger: str) -> None:
    """Start `hierpt prep` and SIGKILL it once its ledger holds a record of `stage` (the stage has begun)."""
    fs = fsspec.filesystem("s3")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and process.poll() is None:
            names = fs.ls(ledger, refresh=True, detail=False) if fs.exists(ledger) else []
            if any(n.rsplit("/", 1)[-1].startswith(f"{stage}-") for n in names):
                break
            time.sleep(0.02)
        fs.invalidate_cache()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, f"prep ended on its own before it was killed in {stage}"
    time.sleep(1.0)  # let Ray reap the killed driver's tasks


@pytest.fixture(scope="session")
def s3_corpus(s3, ray_local, tmp_path_factory):
    """A two-language corpus on the S3 server (8 files) with its recipe, and one uninterrupted run of it."""
    root = tmp_path_factory.mktemp("kill")
    write_sample_corpus(root / "corpus", train_bytes=600_000, eval_bytes=0, files_per_language=4, languages=("en", "ru"))
    bucket = s3.new_bucket()
    fsspec.filesystem("s3").put(str(root / "corpus" / "train") + "/", f"{bucket}/raw/", recursive=True)
    recipe_path = root / "recipe.yaml"
    recipe_path.write_text(
        yaml.safe_dump(
            {
                "seq_words": 128,
                "rows_per_shard": 64,
                "sources": [{"url": f"s3://{bucket}/raw/en", "lang": "en"}, {"url": f"s3://{bucket}/raw/ru", "lang": "ru", "weight": 1.5}],
            }
        )
    )
    reference = f"s3://{bucket}/reference"
    prepare(load_recipe(str(recipe_path)), reference, workers=2)
    return bucket, recipe_path, _shard_bytes(reference)


@pytest.mark.parametrize("stage", ["split", "dedup", "pack"])
def test_a_run_killed_in_any_stage_resumes_per_unit_to_the_same_bytes(stage, s3_corpus, ray_local, capfd):
    bucket, recipe_path, reference = s3_corpus
    out = f"s3://{bucket}/killed-{stage}"
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "hierpt.cli", "prep", str(recipe_path), "--output", out, "--workers", "1"]
    _kill_during(stage, command, env, f"{bucket}/killed-{stage}/{WORK}/ledger")
    fs = fsspec.filesystem("s3")
    assert not fs.exists(f"{bucket}/killed-{stage}/{MANIFEST}")
    fs.pipe_file(f"{bucket}/killed-{stage}/{WORK}/ledger/{stage}-090000.jsonl", b"")  # torn segments are redone
    fs.pipe_file(f"{bucket}/killed-{stage}/{WORK}/ledger/{stage}-090001.jsonl", b'{"id": "cut mid-wr')

    capfd.readouterr()
    prepare(load_recipe(str(recipe_path)), out, workers=2)
    log = capfd.readouterr().err
    resumed = re.search(rf"resuming {stage}: (\d+) of (\d+) items already done", log)
    assert resumed and 1 <= int(resumed.group(1)) < int(resumed.group(2)), log
    assert f"ledger segment {stage}-090000.jsonl is torn" in log and f"{stage}-090001.jsonl is torn" in log
    assert "MB/s" in log and "prep times: split" in log
    assert _shard_bytes(out) == reference


def test_when_no_document_survives_the_error_says_why_and_keeps_the_work(tmp_path, ray_local):
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "bad.jsonl").write_bytes(_jsonl(b"{broken", {"title": "no text"}, b"[1, 2]", {"text": "   "}))
    (tmp_path / "en" / "empty.jsonl").write_bytes(b"")
    out = tmp_path / "out"
    with pytest.raises(ValueError) as error:
        prepare(Recipe(sources=[Source(url=str(tmp_path / "en"), lang="en")]), str(out), workers=1)
    message = str(error.value)
    assert "\n" not in message and message.startswith("no document survived")
    for reason in ("malformed_json x1 (e.g. en/bad.jsonl#1)", "missing_text_field x1", "not_an_object x1", "empty_file x1 (e.g. en/empty.jsonl)"):
        assert reason in message
    assert f"{out}/{WORK} is kept" in message and (out / WORK / "recipe.json").exists()


def test_cli_reports_a_bad_recipe_in_one_line(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("sources:\n  - {url: x, lang: en, format: docx}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["prep", str(tmp_path / "r.yaml"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("hierpt prep: error: recipe") and "sources.0.format" in err


def test_a_cluster_that_does_not_answer_is_one_line_and_the_output_is_not_claimed(tmp_path, capsys, monkeypatch):
    (tmp_path / "en.txt").write_text("A document.\n")
    (tmp_path / "r.yaml").write_text(f"sources:\n  - {{url: {tmp_path / 'en.txt'}, lang: en}}\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"  # closed again: nothing listens there
    monkeypatch.setenv("RAY_ADDRESS", address)
    with pytest.raises(SystemExit) as exit_info:
        main(["prep", str(tmp_path / "r.yaml"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1 and f"cannot reach the Ray cluster at {address}" in err
    assert not (tmp_path / "out").exists()  # a rerun with another recipe is not refused for a claim it never used
