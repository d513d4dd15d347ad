"""`hierpt prep`: raw corpora → word-segmented byte shards + manifest, as a Ray Data pipeline.

Two stages, each a Ray Data `map_batches` over small work items, so the result never depends on scheduling:

1. one task per input file (hierpt.data.parts): read, validate, HAT-split → a *part* (Parquet: doc id, hash,
   words) under ``OUTPUT/_work/parts/`` plus a completion marker ``_work/done/<key>.json`` with its counts.
   A rerun skips files whose marker exists: that is the resume mechanism.
2. the driver reads only the parts' ids and hashes, removes exact duplicates (first occurrence in recipe, path,
   line order wins), applies mixture weights from the seed, and hands each language's document list to one
   task that packs rows (hierpt.data.packing) and writes ``<lang>-NNNNN.parquet``.

With token settings (`TokenShardSpec`) stage 2 writes BPE token shards instead, for the baseline: the same
documents in the same order, each document's words joined back into its text and tokenized. The tokenizer is
trained on a seeded sample of the kept documents (or reused), saved as ``tokenizer.json`` beside the shards.

The manifest is written last, then ``_work/`` is removed. ``_work/recipe.json`` (written first) ties an output
location to one recipe (and token settings): another recipe's output is refused rather than mixed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import sys
import time
from collections import Counter

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hierpt.data.packing import Packer
from hierpt.data.parts import EXAMPLES_PER_REASON, FileResult, write_part
from hierpt.data.bpe import BPETokenizer
from hierpt.data.recipe import Recipe, TokenShardSpec, load_recipe
from hierpt.data.shards import (
    MANIFEST,
    TOKEN_SCHEMA,
    LanguageStats,
    Manifest,
    ShardFile,
    TokenShards,
    read_manifest,
    write_manifest,
)
from hierpt.data.sources import InputFile, list_inputs
from hierpt.splitting import SPLITTER_NAME, join_words, splitter_version
from hierpt.storage_env import storage_settings

WORK = "_work"  # scratch space inside the output while a run is unfinished
TOKENIZER = "tokenizer.json"  # of a token shard set, beside its manifest


def prepare(
    recipe: Recipe | str,
    output_url: str | None = None,
    workers: int | None = None,
    tokens: TokenShardSpec | None = None,
) -> Manifest:
    """Run the recipe into `output_url` (default: the recipe's `output`) and return the sealed manifest.

    With `tokens`, the shards hold BPE ids (the baseline's data) instead of words.
    """
    import ray.data  # configures its loggers on import: quietened below, after that

    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if isinstance(recipe, str):
        recipe = load_recipe(recipe)
    output_url = (output_url or recipe.output or "").rstrip("/")
    if not output_url:
        raise ValueError("no output location: pass --output URL or set `output` in the recipe")
    inputs = list_inputs(recipe)  # fails fast on unreadable sources and missing credentials
    given_tokenizer = BPETokenizer.load(tokens.tokenizer) if tokens and tokens.tokenizer else None
    content = _content(recipe, tokens, given_tokenizer)
    finished = _claim_output(content, output_url)
    if finished is not None:
        _log(f"{output_url} already holds this recipe's shards (fingerprint {finished.fingerprint}); nothing to do")
        return finished

    owns_ray = not ray.is_initialized()  # a local Ray started here is stopped at the end, as training does
    if owns_ray:
        ray.init(log_to_driver=False)
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # prep prints its own progress lines
    try:
        return _prepare(recipe, content, inputs, output_url, workers, tokens, given_tokenizer)
    finally:
        if owns_ray:
            ray.shutdown()


def _prepare(
    recipe: Recipe,
    content: dict,
    inputs: list[InputFile],
    output_url: str,
    workers: int | None,
    tokens: TokenShardSpec | None,
    given_tokenizer: BPETokenizer | None,
) -> Manifest:
    """Both stages and the manifest, on a running Ray, for an output already claimed for `content`."""
    import ray

    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    keys = [_input_key(recipe, f) for f in inputs]
    started = time.monotonic()
    results = _run_files(recipe, inputs, keys, output_url, workers)
    split_done = time.monotonic()
    plan, stats, duplicates = _plan(recipe, inputs, keys, output_url)
    planned = time.monotonic()
    token_shards = None
    if tokens is not None:
        tokenizer = given_tokenizer or _trained_tokenizer(recipe, tokens, plan, output_url, workers)
        token_shards = TokenShards(
            tokenizer=TOKENIZER,
            tokenizer_sha256=tokenizer.sha256(),
            vocab_size=tokenizer.vocab_size,
            seq_tokens=tokens.seq_tokens,
        )
        if given_tokenizer is not None:
            tokenizer.save(f"{output_url}/{TOKENIZER}")
    files, token_counts = _run_languages(recipe, plan, output_url, workers, token_shards)
    if token_shards is not None:
        token_shards = token_shards.model_copy(update={"tokens": token_counts})
    _log(
        f"prep: split {split_done - started:.1f}s, dedup+mixture {planned - split_done:.1f}s, "
        f"{'tokenizing+' if tokens else ''}packing {time.monotonic() - planned:.1f}s with {workers} workers"
    )

    ordered = [results[k] for k in keys]
    manifest = Manifest(
        splitter={"name": SPLITTER_NAME, "version": splitter_version()},
        max_word_bytes=recipe.max_word_bytes,
        seq_words=recipe.seq_words,
        files=files,
        languages=stats,
        rejected=_total(r.rejected for r in ordered),
        rejected_examples=_first_examples(r.rejected_examples for r in ordered),
        repaired=_total(r.repaired for r in ordered),
        repaired_examples=_first_examples(r.repaired_examples for r in ordered),
        duplicates_removed=duplicates,
        recipe=content,
        tokens=token_shards,
    ).sealed()
    write_manifest(output_url, manifest)
    fs, root = _output_fs(output_url)
    fs.rm(f"{root}/{WORK}", recursive=True)
    rejects_by_lang = Counter()
    for file, key in zip(inputs, keys):
        rejects_by_lang[recipe.sources[file.source].lang] += sum(results[key].rejected.values())
    _log(summary_table(manifest, rejects_by_lang))
    return manifest


def summary_table(manifest: Manifest, rejects_by_lang: dict[str, int]) -> str:
    token_counts = manifest.tokens.tokens if manifest.tokens else None
    header = f"{'lang':<8}{'docs':>12}{'words':>14}{'MB':>10}{'bytes/word':>12}"
    lines = [header + (f"{'tokens':>14}{'bytes/token':>13}" if token_counts is not None else "") + f"{'rejects':>10}"]
    for lang, s in manifest.languages.items():
        row = f"{lang:<8}{s.docs:>12,}{s.words:>14,}{s.bytes / 1e6:>10.2f}{s.bytes_per_word:>12.3f}"
        if token_counts is not None:
            count = token_counts.get(lang, 0)
            row += f"{count:>14,}{s.bytes / max(count, 1):>13.3f}"
        lines.append(row + f"{rejects_by_lang.get(lang, 0):>10,}")
    lines.append(
        f"{manifest.total_rows:,} rows in {len(manifest.files)} files; duplicates removed "
        f"{manifest.duplicates_removed:,}; rejected {dict(manifest.rejected) or 0}; repaired {dict(manifest.repaired) or 0}"
    )
    return "\n".join(lines)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _output_fs(output_url: str):
    """The output's filesystem with fresh listings: Ray tasks write there behind this process's listing cache."""
    fs, root = fsspec.core.url_to_fs(output_url)
    fs.invalidate_cache()
    return fs, root


def _input_key(recipe: Recipe, file: InputFile) -> str:
    name = recipe.sources[file.source].name
    return hashlib.sha256(f"{name}\0{file.rel}\0{file.size}".encode()).hexdigest()[:24]


def _content(recipe: Recipe, tokens: TokenShardSpec | None, tokenizer: BPETokenizer | None) -> dict:
    """What decides an output's bytes: the recipe, plus the token settings (a reused tokenizer by its hash)."""
    if tokens is None:
        return recipe.content()
    settings = tokens.model_dump(exclude={"tokenizer"})
    if tokenizer is not None:
        settings["tokenizer_sha256"] = tokenizer.sha256()
    return {**recipe.content(), "tokens": settings}


def _claim_output(content: dict, output_url: str) -> Manifest | None:
    """Tie the output to this recipe, or refuse it. Returns the manifest if this recipe already finished there."""
    try:
        fs, root = _output_fs(output_url)
        if fs.exists(f"{root}/{MANIFEST}"):
            finished = read_manifest(output_url)
            if finished.recipe != content:
                raise ValueError(f"{output_url} holds the shards of another recipe; choose another --output")
            if fs.exists(f"{root}/{WORK}"):
                fs.rm(f"{root}/{WORK}", recursive=True)
            return finished
        claim = f"{root}/{WORK}/recipe.json"
        if fs.exists(claim):
            with fs.open(claim) as f:
                claimed = json.load(f)
            if claimed != content:
                raise ValueError(f"{output_url} holds an unfinished run of another recipe; choose another --output")
            return None
        if fs.exists(root) and fs.ls(root, detail=False):
            raise ValueError(f"{output_url} is not empty and holds no hierpt prep run; choose an empty --output")
        fs.makedirs(f"{root}/{WORK}", exist_ok=True)
        with fs.open(claim, "w") as f:
            json.dump(content, f, sort_keys=True)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as error:  # credentials, permissions, network
        raise PermissionError(f"output {output_url}: cannot write: {type(error).__name__}: {error}") from None
    return None


def _map(items: list[dict], fn, workers: int):
    """Run `fn` (item dict -> result dict) over JSON work items as Ray Data tasks (one item per block, at most
    `workers` at once); yields the results.

    The driver's non-secret object-store settings go with the tasks (hierpt.storage_env), so workers on any node
    read and write where the driver checked it could; credentials are the cluster's own.
    """
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    dataset = ray.data.from_items([{"item": json.dumps(i)} for i in items], override_num_blocks=len(items))
    pool = ray.data.TaskPoolStrategy(size=max(1, min(workers, len(items))))
    env = storage_settings()
    runtime_env = {"env_vars": env} if env else None
    mapped = dataset.map_batches(
        functools.partial(_apply, fn), batch_size=1, num_cpus=1, compute=pool, runtime_env=runtime_env
    )
    for row in mapped.iter_rows():
        yield json.loads(row["result"])


def _apply(fn, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A `_map` task: `fn` on each JSON item of the batch, the results as JSON."""
    return {"result": np.array([json.dumps(fn(json.loads(i))) for i in batch["item"]], dtype=object)}


def _run_files(recipe: Recipe, inputs: list[InputFile], keys: list[str], output_url: str, workers: int):
    """Stage 1 over the files without a completion marker; returns every file's FileResult by key."""
    fs, root = _output_fs(output_url)
    done_dir = f"{root}/{WORK}/done"
    done = {
        p.rsplit("/", 1)[-1].removesuffix(".json")
        for p in (fs.ls(done_dir, detail=False) if fs.exists(done_dir) else [])
    }
    results: dict[str, FileResult] = {}
    for key in set(keys) & done:
        with fs.open(f"{done_dir}/{key}.json") as f:
            results[key] = FileResult.model_validate_json(f.read())
    todo = [(f, k) for f, k in zip(inputs, keys) if k not in results]
    if results:
        _log(f"resuming: {len(results)} of {len(inputs)} input files already done, {len(todo)} to go")
    if not todo:
        return results
    todo.sort(key=lambda fk: -fk[0].size)  # largest first: balances the tail across workers
    items = [
        {
            "file": [f.source, f.url, f.rel, f.format, f.size],
            "key": k,
            "name": recipe.sources[f.source].name,
            "text_field": recipe.sources[f.source].text_field,
            "max_word_bytes": recipe.max_word_bytes,
            "max_doc_bytes": recipe.max_doc_bytes,
            "work": f"{output_url}/{WORK}",
        }
        for f, k in todo
    ]
    start, docs, text_bytes, last = time.monotonic(), 0, 0, 0.0
    for n, result in enumerate(_map(items, write_part, workers), 1):
        file_result = FileResult.model_validate(result)
        results[file_result.key] = file_result
        docs += file_result.docs
        text_bytes += file_result.bytes
        elapsed = time.monotonic() - start
        if elapsed - last >= 2.0 or n == len(items):
            last = elapsed
            _log(
                f"prep: {n}/{len(items)} files  {docs:,} docs  {text_bytes / 1e6:,.1f} MB  "
                f"{text_bytes / 1e6 / max(elapsed, 1e-9):,.1f} MB/s"
            )
    return results


def _plan(recipe: Recipe, inputs: list[InputFile], keys: list[str], output_url: str):
    """Dedup + mixture weights → per language: [(part key, rows)] in stream order, its stats, duplicates removed."""
    fs, root = _output_fs(output_url)
    seen: set[bytes] = set()
    duplicates = 0
    kept: dict[str, tuple[np.ndarray, list[str], np.ndarray, np.ndarray]] = {}
    for key in keys:
        with fs.open(f"{root}/{WORK}/parts/{key}.parquet") as f:
            table = pq.read_table(f, columns=["doc_id", "hash", "bytes", "words_count"])
        rows = []
        for row, digest in enumerate(table.column("hash").to_pylist()):
            if digest in seen:
                duplicates += 1
            else:
                seen.add(digest)
                rows.append(row)
        rows = np.array(rows, dtype=np.int64)
        doc_ids = table.column("doc_id").to_pylist()
        kept[key] = (
            rows,
            [doc_ids[r] for r in rows],
            table.column("bytes").to_numpy()[rows],
            table.column("words_count").to_numpy()[rows],
        )

    plan: dict[str, list[tuple[str, list[int]]]] = {}
    totals: dict[str, list[int]] = {}
    for index, source in enumerate(recipe.sources):
        files = [k for f, k in zip(inputs, keys) if f.source == index]
        for copy in range(math.ceil(source.weight)):
            fraction = min(1.0, source.weight - copy)
            for key in files:
                rows, doc_ids, sizes, counts = kept[key]
                if fraction < 1.0:
                    chosen = np.array([_uniform(recipe.seed, copy, d) < fraction for d in doc_ids], dtype=bool)
                else:
                    chosen = np.ones(len(rows), dtype=bool)
                if not chosen.any():
                    continue
                plan.setdefault(source.lang, []).append((key, rows[chosen].tolist()))
                total = totals.setdefault(source.lang, [0, 0, 0])
                total[0] += int(chosen.sum())
                total[1] += int(counts[chosen].sum())
                total[2] += int(sizes[chosen].sum())
    stats = {
        lang: LanguageStats(docs=docs, words=words, bytes=size, bytes_per_word=round(size / max(words, 1), 6))
        for lang, (docs, words, size) in sorted(totals.items())
    }
    return dict(sorted(plan.items())), stats, duplicates


def _uniform(seed: int, copy: int, doc_id: str) -> float:
    """A number in [0, 1) fixed by (seed, copy, document): weighted sampling that ignores processing order."""
    digest = hashlib.blake2b(f"{seed}\0{copy}\0{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _trained_tokenizer(
    recipe: Recipe, tokens: TokenShardSpec, plan: dict, output_url: str, workers: int
) -> BPETokenizer:
    """Train on a seeded sample of the kept documents (about `train_bytes`), or reuse the tokenizer an
    interrupted run of this recipe already trained (BPE training is not guaranteed to repeat bit for bit)."""
    fs, root = _output_fs(output_url)
    if fs.exists(f"{root}/{TOKENIZER}"):
        return BPETokenizer.load(f"{output_url}/{TOKENIZER}")
    started = time.monotonic()
    texts = _tokenizer_sample(recipe, plan, output_url, tokens.train_bytes, workers)
    sampled = time.monotonic()
    tokenizer = BPETokenizer.train(texts, tokens.vocab_size, tokens.min_frequency)
    tokenizer.save(f"{output_url}/{TOKENIZER}")
    _log(
        f"prep: sampled {sum(len(t.encode()) for t in texts) / 1e6:,.1f} MB of text in {sampled - started:.1f}s, "
        f"trained a {tokenizer.vocab_size}-id BPE tokenizer in {time.monotonic() - sampled:.1f}s"
    )
    return tokenizer


def _tokenizer_sample(recipe: Recipe, plan: dict, output_url: str, train_bytes: int, workers: int) -> list[str]:
    """Texts of the distinct planned documents, each kept with probability train_bytes / total bytes (a hash
    of seed and document id). One Ray task per part reads and samples; texts come back in part order."""
    fs, root = _output_fs(output_url)
    rows_by_key: dict[str, set[int]] = {}
    for segments in plan.values():
        for key, rows in segments:
            rows_by_key.setdefault(key, set()).update(rows)
    total = 0
    for key, rows in rows_by_key.items():
        with fs.open(f"{root}/{WORK}/parts/{key}.parquet") as f:
            sizes = pq.read_table(f, columns=["bytes"]).column("bytes").to_numpy()
        total += int(sizes[sorted(rows)].sum())
    fraction = min(1.0, train_bytes / max(total, 1))
    items = [
        {"output": output_url, "key": key, "rows": sorted(rows), "fraction": fraction, "seed": recipe.seed}
        for key, rows in rows_by_key.items()
    ]
    by_key = {result["key"]: result["texts"] for result in _map(items, _sample_part, workers)}
    return [text for key in rows_by_key for text in by_key[key]]


def _sample_part(item: dict) -> dict:
    """The tokenizer-training texts of one part (runs in a Ray task)."""
    fs, root = fsspec.core.url_to_fs(item["output"])
    with fs.open(f"{root}/{WORK}/parts/{item['key']}.parquet") as f:
        part = pq.read_table(f, columns=["doc_id", "words"])
    doc_ids, words = part.column("doc_id").to_pylist(), part.column("words")
    fraction = item["fraction"]
    chosen = [r for r in item["rows"] if fraction >= 1.0 or _uniform(item["seed"], -1, doc_ids[r]) < fraction]
    return {"key": item["key"], "texts": [join_words(words[r].as_py()) for r in chosen]}


def _run_languages(
    recipe: Recipe, plan: dict, output_url: str, workers: int, tokens: TokenShards | None
) -> tuple[list[ShardFile], dict[str, int]]:
    """Stage 2: shard files in language order, and the token count per language (token shards only)."""
    if not plan:
        raise ValueError("no document survived: every input was rejected or had weight 0 (see the messages above)")
    fs, root = _output_fs(output_url)
    for stale in fs.glob(f"{root}/*.parquet"):  # shards of an interrupted attempt over different inputs
        fs.rm(stale)
    items = [
        {
            "lang": lang,
            "segments": segments,
            "seq_words": recipe.seq_words,
            "rows_per_shard": recipe.rows_per_shard,
            "output": output_url,
            "tokens": None if tokens is None else {"tokenizer": tokens.tokenizer, "seq_tokens": tokens.seq_tokens},
        }
        for lang, segments in plan.items()
    ]
    by_lang = {r["lang"]: r for r in _map(items, _write_language, workers)}
    files = [ShardFile(path=path, rows=rows) for lang in plan for path, rows in by_lang[lang]["files"]]
    return files, {lang: by_lang[lang]["tokens"] for lang in plan}


def _write_language(item: dict) -> dict:
    """Stage 2 for one language (runs in a Ray task): pack its documents (words or BPE ids) into numbered shards."""
    fs, root = fsspec.core.url_to_fs(item["output"])
    tokens = item["tokens"]
    if tokens is None:
        packer = Packer(item["lang"], item["seq_words"], item["rows_per_shard"])
    else:
        tokenizer = BPETokenizer.load(f"{item['output']}/{tokens['tokenizer']}")
        packer = Packer(item["lang"], tokens["seq_tokens"], item["rows_per_shard"], TOKEN_SCHEMA)
    files, token_count = [], 0

    def write(table: pa.Table) -> None:
        name = f"{item['lang']}-{len(files):05d}.parquet"
        with fs.open(f"{root}/{name}", "wb") as f:
            pq.write_table(table, f, compression="zstd", write_statistics=False)
        files.append((name, table.num_rows))

    for key, rows in item["segments"]:
        with fs.open(f"{root}/{WORK}/parts/{key}.parquet") as f:
            part = pq.read_table(f, columns=["doc_id", "words"])
        if len(rows) < part.num_rows:  # otherwise every row, in order: skip the copy
            part = part.take(rows)
        documents = part.column("words").combine_chunks()
        if tokens is not None:
            documents = _tokenize(tokenizer, documents)
            token_count += len(documents.values) - len(documents)  # end-of-document ids not counted
        for table in packer.add(documents, part.column("doc_id").to_pylist()):
            write(table)
    for table in packer.finish():
        write(table)
    return {"lang": item["lang"], "files": files, "tokens": token_count}


def _tokenize(tokenizer: BPETokenizer, documents: pa.ListArray) -> pa.ListArray:
    """Each document's words joined back into its text, as BPE ids followed by the end-of-document id."""
    encoded = tokenizer.encode_batch([join_words(words) for words in documents.to_pylist()])
    lengths = np.array([len(ids) + 1 for ids in encoded], dtype=np.int32)
    flat = np.fromiter(
        (i for ids in encoded for i in (*ids, tokenizer.eod_id)), dtype=np.int32, count=int(lengths.sum())
    )
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def _total(counts) -> dict[str, int]:
    total = Counter()
    for c in counts:
        total.update(c)
    return dict(sorted(total.items()))


def _first_examples(examples) -> dict[str, list[str]]:
    """The first few locations per reason, in input order (so they do not depend on scheduling)."""
    first: dict[str, list[str]] = {}
    for per_file in examples:
        for reason, where in per_file.items():
            kept = first.setdefault(reason, [])
            kept.extend(where[: EXAMPLES_PER_REASON - len(kept)])
    return dict(sorted(first.items()))
