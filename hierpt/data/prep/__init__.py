"""`hierpt prep`: raw corpora → word-segmented byte shards + manifest, as Ray Data stages over small units.

1. **split** (hierpt.data.parts): one task per input file, or per byte range of a large Parquet file: read,
   validate, HAT-split → part chunks (bounded row groups) and their sorted content-hash signatures.
2. **dedup** (hierpt.data.prep.dedup): one task per hash-range bucket → drop lists (first occurrence in recipe,
   path, line order wins).
3. (token shards only) the tokenizer is trained on a seeded sample of whole chunks (hierpt.data.prep.sample),
   or reused, and saved as ``tokenizer.json`` beside the shards.
4. **pack** (hierpt.data.prep.pack): one task per (chunk, mixture copy): dedup, mixture sampling, packing (and
   BPE encoding) → ``<lang>-<pos>-<n>.parquet``.

The driver holds per-unit and per-file summaries only, never anything per document. Every stage records its
finished units in a ledger (hierpt.data.prep.work), so a killed run resumes per unit at the cost of a listing.
The result depends only on the recipe and inputs, never on workers or scheduling. The manifest is written
last, then ``_work/`` is removed; ``_work/recipe.json`` (written first) ties an output location to one recipe
(and token settings): another recipe's output is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import Counter

from hierpt.data.bpe import TOKENIZER_FILE, BPETokenizer
from hierpt.data.parts import EXAMPLES_PER_REASON, PART_CHUNK_BYTES, PART_GROUP_BYTES, FileResult, peak_rss_mb, write_part
from hierpt.data.prep.dedup import bucket_count, bucket_items, find_duplicates, write_chunk_list
from hierpt.data.prep.pack import pack_unit
from hierpt.data.prep.sample import sample_items, sample_texts
from hierpt.data.prep.work import WORK, claim_output, log, map_items, output_fs, run_stage
from hierpt.data.recipe import Recipe, TokenShardSpec, load_recipe
from hierpt.data.shards import LanguageStats, Manifest, ShardFile, TokenShards, read_manifest, write_manifest
from hierpt.data.sources import InputFile, list_inputs
from hierpt.splitting import SPLITTER_NAME, splitter_version

__all__ = ["WORK", "prepare", "summary_table"]

PARQUET_SPLIT_BYTES = 128 << 20  # a larger Parquet input is split into byte ranges, one split task each


def prepare(
    recipe: Recipe | str,
    output_url: str | None = None,
    workers: int | None = None,
    tokens: TokenShardSpec | None = None,
) -> Manifest:
    """Run the recipe into `output_url` (default: the recipe's `output`) and return the sealed manifest.

    With `tokens`, the shards hold BPE ids (the baseline's data) instead of words.
    """
    import ray.data  # noqa: F401 (configures its loggers on import: quietened below, after that)

    from hierpt.ray_session import named_cluster, ray_session

    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if isinstance(recipe, str):
        recipe = load_recipe(recipe)
    output_url = (output_url or recipe.output or "").rstrip("/")
    if not output_url:
        raise ValueError("no output location: pass --output URL or set `output` in the recipe")
    inputs = list_inputs(recipe)  # fails fast on unreadable sources and missing credentials
    named_cluster()  # and on a RAY_ADDRESS that does not answer, before the output is claimed
    given_tokenizer = BPETokenizer.load(tokens.tokenizer) if tokens and tokens.tokenizer else None
    content = _deciding_settings(recipe, tokens, given_tokenizer)
    finished = claim_output(content, output_url, read_manifest)
    if finished is not None:
        log(f"{output_url} already holds this recipe's shards (fingerprint {finished.fingerprint}); nothing to do")
        return finished

    with ray_session(log_to_driver=False):
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # prep prints its own progress lines
        return _run_stages(recipe, content, inputs, output_url, workers, tokens, given_tokenizer)


def _run_stages(
    recipe: Recipe,
    content: dict,
    inputs: list[InputFile],
    output_url: str,
    workers: int | None,
    tokens: TokenShardSpec | None,
    given_tokenizer: BPETokenizer | None,
) -> Manifest:
    """The stages and the manifest, on a running Ray, for an output already claimed for `content`."""
    import ray

    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    timings: dict[str, dict] = {}
    units = split_units(recipe, inputs, output_url)
    split, timings["split"] = run_stage(output_url, "split", units, write_part, workers)
    results = [FileResult.model_validate(split[u["id"]]) for u in units]
    chunks = pack_items(recipe, units, results, output_url, tokens)
    if not chunks:
        _no_survivor(output_url, results, "every input was rejected or had weight 0")

    fs, root = output_fs(output_url)
    ordered_chunks = [(u["id"], c) for u, r in zip(units, results) for c in range(len(r.chunks))]
    write_chunk_list(fs, root, ordered_chunks)
    docs = sum(r.docs for r in results)
    buckets = bucket_count(docs)
    dedup, timings["dedup"] = run_stage(output_url, "dedup", bucket_items(output_url, buckets, docs), find_duplicates, workers)
    duplicates = sum(r["duplicates"] for r in dedup.values())

    token_shards = None
    if tokens is not None:
        started = time.monotonic()
        tokenizer = given_tokenizer or _trained_tokenizer(recipe, tokens, chunks, buckets, output_url, workers)
        if given_tokenizer is not None:
            tokenizer.save(f"{output_url}/{TOKENIZER_FILE}")
        token_shards = TokenShards(
            tokenizer=TOKENIZER_FILE, tokenizer_sha256=tokenizer.sha256(), vocab_size=tokenizer.vocab_size,
            seq_tokens=tokens.seq_tokens,
        )  # fmt: skip
        timings["tokenizer"] = {"seconds": time.monotonic() - started}
    for chunk in chunks:
        chunk["buckets"] = buckets
    packed, timings["pack"] = run_stage(output_url, "pack", chunks, pack_unit, workers)

    files, totals, token_counts = [], {}, Counter()
    for chunk in sorted(chunks, key=lambda c: (c["lang"], c["position"])):
        result = packed[chunk["id"]]
        files += [ShardFile(**f) for f in result["files"]]
        total = totals.setdefault(chunk["lang"], Counter())
        total.update({k: result[k] for k in ("docs", "words", "bytes")})
        token_counts[chunk["lang"]] += result["tokens"]
    if not files:
        _no_survivor(output_url, results, "every document was a duplicate or sampled out by its weight")
    stats = {
        lang: LanguageStats(docs=t["docs"], words=t["words"], bytes=t["bytes"], bytes_per_word=round(t["bytes"] / max(t["words"], 1), 6))
        for lang, t in sorted(totals.items())
        if t["docs"]
    }  # fmt: skip
    if token_shards is not None:
        token_shards = token_shards.model_copy(update={"tokens": {lang: token_counts[lang] for lang in stats}})
    manifest = Manifest(
        splitter={"name": SPLITTER_NAME, "version": splitter_version()},
        max_word_bytes=recipe.max_word_bytes,
        seq_words=recipe.seq_words,
        files=files,
        languages=stats,
        rejected=_total(r.rejected for r in results),
        rejected_examples=_first_examples(r.rejected_examples for r in results),
        repaired=_total(r.repaired for r in results),
        repaired_examples=_first_examples(r.repaired_examples for r in results),
        duplicates_removed=duplicates,
        recipe=content,
        tokens=token_shards,
    ).sealed()
    listed = {f.path for f in manifest.files}
    for stale in fs.glob(f"{root}/*.parquet"):  # shards of an interrupted attempt over different inputs
        if stale.rsplit("/", 1)[-1] not in listed:
            fs.rm(stale)
    write_manifest(output_url, manifest)
    fs.rm(f"{root}/{WORK}", recursive=True)
    rejects_by_lang = Counter()
    for unit, result in zip(units, results):
        rejects_by_lang[unit["lang"]] += sum(result.rejected.values())
    log(summary_table(manifest, rejects_by_lang))
    log(_timing_line(timings, workers))
    return manifest


def split_units(
    recipe: Recipe, inputs: list[InputFile], output_url: str, split_bytes: int = PARQUET_SPLIT_BYTES
) -> list[dict]:
    """Stage-1 work items in recipe, path and byte order: one per file, a large Parquet file one per byte range."""
    units = []
    for file in inputs:
        source = recipe.sources[file.source]
        starts = range(0, file.size, split_bytes) if file.format == "parquet" and file.size > split_bytes else [0]
        for start in starts:
            key = hashlib.sha256(f"{source.name}\0{file.rel}\0{file.size}\0{start}".encode()).hexdigest()[:24]
            end = min(start + split_bytes, file.size)
            units.append({
                "id": key, "key": key, "file": [file.source, file.url, file.rel, file.format, file.size],
                "range": [start, end] if len(starts) > 1 else None, "bytes": end - start, "lang": source.lang,
                "name": source.name, "text_field": source.text_field, "max_word_bytes": recipe.max_word_bytes,
                "max_doc_bytes": recipe.max_doc_bytes, "work": f"{output_url}/{WORK}",
                "group_bytes": PART_GROUP_BYTES, "chunk_bytes": PART_CHUNK_BYTES,
            })  # fmt: skip
    return units


def pack_items(
    recipe: Recipe, units: list[dict], results: list[FileResult], output_url: str, tokens: TokenShardSpec | None
) -> list[dict]:
    """Stage-2 units in each language's stream order: sources in recipe order, each mixture copy a pass over its
    chunks in path order. `ordinal` is the chunk's place in the global dedup order."""
    items, positions, ordinal_of = [], Counter(), {}
    for unit, result in zip(units, results):
        for chunk in range(len(result.chunks)):
            ordinal_of[unit["key"], chunk] = len(ordinal_of)
    for index, source in enumerate(recipe.sources):
        for copy in range(math.ceil(source.weight)):
            for unit, result in zip(units, results):
                if unit["file"][0] != index:
                    continue
                for chunk, docs in enumerate(result.chunks):
                    items.append({
                        "id": f"{unit['key']}-{chunk}-{copy}", "key": unit["key"], "chunk": chunk, "copy": copy,
                        "ordinal": ordinal_of[unit["key"], chunk], "fraction": min(1.0, source.weight - copy),
                        "position": positions[source.lang], "lang": source.lang, "seed": recipe.seed,
                        "bytes": result.chunk_bytes[chunk], "seq_words": recipe.seq_words,
                        "rows_per_shard": recipe.rows_per_shard, "output": output_url,
                        "tokens": None if tokens is None
                        else {"tokenizer": TOKENIZER_FILE, "seq_tokens": tokens.seq_tokens},
                    })  # fmt: skip
                    positions[source.lang] += 1
    return items


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


def _timing_line(timings: dict[str, dict], workers: int) -> str:
    parts = []
    for stage, t in timings.items():
        detail = ""
        if "items" in t:
            detail = f" ({t['items']} units, {t['mb']:,.1f} MB, {t['mb'] / max(t['seconds'], 1e-9):,.1f} MB/s, task peak RSS {t['peak_task_rss_mb']:,.0f} MB)"
        parts.append(f"{stage} {t['seconds']:.1f}s{detail}")
    return f"prep times: {'; '.join(parts)}; {workers} workers; driver peak RSS {peak_rss_mb():,.0f} MB"


def _deciding_settings(recipe: Recipe, tokens: TokenShardSpec | None, tokenizer: BPETokenizer | None) -> dict:
    """What decides an output's bytes: the recipe, plus the token settings (a reused tokenizer by its hash)."""
    if tokens is None:
        return recipe.content()
    settings = tokens.model_dump(exclude={"tokenizer"})
    if tokenizer is not None:
        settings["tokenizer_sha256"] = tokenizer.sha256()
    return {**recipe.content(), "tokens": settings}


def _no_survivor(output_url: str, results: list[FileResult], why: str):
    """One line: what was rejected, why and where; `_work/` stays so the parts can be inspected."""
    examples = _first_examples(r.rejected_examples for r in results)
    reasons = ", ".join(
        f"{reason} x{count} (e.g. {', '.join(examples.get(reason, []))})"
        for reason, count in _total(r.rejected for r in results).items()
    )
    raise ValueError(
        f"no document survived: {why}; rejected: {reasons or 'nothing'}; {output_url}/{WORK} is kept "
        "(fix the recipe or inputs and rerun, or delete it)"
    )


def _trained_tokenizer(
    recipe: Recipe, tokens: TokenShardSpec, chunks: list[dict], buckets: int, output_url: str, workers: int
) -> BPETokenizer:
    """Train on a seeded sample of the kept documents (about `train_bytes`), or reuse the tokenizer an
    interrupted run of this recipe already trained (BPE training is not guaranteed to repeat bit for bit)."""
    fs, root = output_fs(output_url)
    if fs.exists(f"{root}/{TOKENIZER_FILE}"):
        try:
            return BPETokenizer.load(f"{output_url}/{TOKENIZER_FILE}")
        except ValueError:
            log(f"prep: {output_url}/{TOKENIZER_FILE} is torn; training it again")
    started = time.monotonic()
    items = [{**c, "buckets": buckets} for c in sample_items(chunks, recipe.seed, tokens.train_bytes)]
    by_id = {r["id"]: r["texts"] for r in map_items(items, sample_texts, workers)}
    texts, size = [], 0
    for item in items:  # in the seeded order, up to train_bytes
        for text in by_id[item["id"]]:
            if size >= tokens.train_bytes:
                break
            texts.append(text)
            size += len(text.encode())
    sampled = time.monotonic()
    tokenizer = BPETokenizer.train(texts, tokens.vocab_size, tokens.min_frequency)
    tokenizer.save(f"{output_url}/{TOKENIZER_FILE}")
    log(
        f"prep: sampled {size / 1e6:,.1f} MB of text from {len(items)} chunks in {sampled - started:.1f}s, "
        f"trained a {tokenizer.vocab_size}-id BPE tokenizer in {time.monotonic() - sampled:.1f}s"
    )
    return tokenizer


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
