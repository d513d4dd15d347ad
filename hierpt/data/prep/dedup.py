"""Exact dedup as distributed tasks: hash-range buckets decide first occurrences, chunks get their drop lists.

Every part chunk has a signature file (hash, row) sorted by hash (hierpt.data.parts). The 64-bit hash space is
cut into `buckets` equal ranges; one task per range reads that range from every chunk's signatures (row-group
statistics skip the rest), orders the records by (hash, chunk ordinal, row) and keeps the first of each hash:
chunk ordinals follow recipe, path and line order, so "first occurrence wins" holds whatever the scheduling.
It writes the losers as ``_work/drop/<bucket>.parquet`` (chunk ordinal, row), sorted, so a stage-2 task reads
only the row groups of its own chunk. Memory per task: one bucket's records (24 bytes a document); nothing per
document reaches the driver, which keeps one count per bucket.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hierpt.data.parts import part_path, peak_rss_mb
from hierpt.data.prep.work import WORK

BUCKET_DOCS = 1 << 22  # documents per bucket on average: bounds a dedup task's memory (~100 MB)
MIN_BUCKETS = 4
DROP_GROUP_ROWS = 1 << 16
READ_THREADS = 16  # a bucket reads its range of every chunk: latency-bound on object storage
CHUNKS = "chunks.parquet"  # the global chunk order: (key, chunk) per ordinal
DROP_SCHEMA = pa.schema([pa.field("chunk", pa.int32()), pa.field("row", pa.int32())])


def bucket_count(docs: int) -> int:
    """Decided by the corpus alone (not the workers), so a resumed run keeps its buckets."""
    return max(MIN_BUCKETS, math.ceil(docs / BUCKET_DOCS))


def write_chunk_list(fs, root: str, chunks: list[tuple[str, int]]) -> None:
    table = pa.table({"key": [k for k, _ in chunks], "chunk": pa.array([c for _, c in chunks], pa.int32())})
    with fs.open(f"{root}/{WORK}/{CHUNKS}", "wb") as f:
        pq.write_table(table, f)


def bucket_items(output_url: str, buckets: int, docs: int) -> list[dict]:
    bounds = [b * (1 << 64) // buckets for b in range(buckets + 1)]
    return [
        {"id": f"{b:05d}-of-{buckets}", "bucket": b, "lo": bounds[b], "hi": bounds[b + 1], "output": output_url,
         "bytes": 24 * docs // buckets}
        for b in range(buckets)
    ]  # fmt: skip


def drop_path(work: str, bucket: int) -> str:
    return f"{work}/drop/{bucket:05d}.parquet"


def find_duplicates(item: dict) -> dict:
    """One bucket (runs in a Ray task): every repeat of a hash in its range, after the first, is dropped."""
    fs, root = fsspec.core.url_to_fs(item["output"])
    work = f"{root}/{WORK}"
    with fs.open(f"{work}/{CHUNKS}", "rb") as f:
        chunks = pq.read_table(f)
    keys, numbers = chunks.column("key").to_pylist(), chunks.column("chunk").to_pylist()

    def read(ordinal: int):
        """This bucket's (h1, h2, row) of one chunk, or None: small ranged reads, so many run at once."""
        with fs.open(part_path(work, keys[ordinal], numbers[ordinal], "sig"), "rb") as f:
            signatures = pq.ParquetFile(f)
            meta = signatures.metadata
            groups = [g for g in range(meta.num_row_groups) if _overlaps(meta.row_group(g), item["lo"], item["hi"])]
            if not groups:
                return None
            table = signatures.read_row_groups(groups)
        h1 = table.column("h1").to_numpy()
        inside = (h1 >= np.uint64(item["lo"])) & (h1 <= np.uint64(item["hi"] - 1))
        return h1[inside], table.column("h2").to_numpy()[inside], table.column("row").to_numpy()[inside], ordinal

    h1s, h2s, ordinals, rows = [], [], [], []
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for found in pool.map(read, range(len(keys))):  # in chunk order
            if found is not None:
                h1s.append(found[0])
                h2s.append(found[1])
                rows.append(found[2])
                ordinals.append(np.full(len(found[0]), found[3], dtype=np.int32))
    drops = np.zeros((0, 2), dtype=np.int32)
    if h1s:
        h1, h2, ordinal, row = (np.concatenate(a) for a in (h1s, h2s, ordinals, rows))
        order = np.lexsort((row, ordinal, h2, h1))
        h1, h2 = h1[order], h2[order]
        repeat = np.zeros(len(order), dtype=bool)
        repeat[1:] = (h1[1:] == h1[:-1]) & (h2[1:] == h2[:-1])
        drops = np.stack([ordinal[order][repeat], row[order][repeat]], axis=1)
        drops = drops[np.lexsort((drops[:, 1], drops[:, 0]))]
    fs.makedirs(f"{work}/drop", exist_ok=True)
    table = pa.Table.from_arrays([pa.array(drops[:, 0]), pa.array(drops[:, 1])], schema=DROP_SCHEMA)
    with fs.open(drop_path(work, item["bucket"]), "wb") as f:
        pq.write_table(table, f, row_group_size=DROP_GROUP_ROWS, write_statistics=["chunk"])
    return {"duplicates": len(drops), "bytes": item["bytes"], "peak_rss_mb": peak_rss_mb()}


def _overlaps(group, lo: int, hi: int) -> bool:
    stats = group.column(0).statistics
    if stats is None or not stats.has_min_max:
        return True
    return int(stats.max) >= lo and int(stats.min) < hi


def dropped_rows(fs, work: str, buckets: int, ordinal: int) -> np.ndarray:
    """Rows of chunk `ordinal` that repeat an earlier document (sorted), from every bucket's drop list."""
    found = []
    for bucket in range(buckets):
        with fs.open(drop_path(work, bucket), "rb") as f:
            drops = pq.ParquetFile(f)
            groups = []
            for g in range(drops.num_row_groups):
                stats = drops.metadata.row_group(g).column(0).statistics
                if stats is None or not stats.has_min_max or stats.min <= ordinal <= stats.max:
                    groups.append(g)
            if not groups:
                continue
            table = drops.read_row_groups(groups)
        chunk = table.column("chunk").to_numpy()
        found.append(table.column("row").to_numpy()[chunk == ordinal])
    return np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int32)
