"""The training loader against the physical limit of its storage, measured in the same run (issue 11).

A shard set of `--files` Parquet files (default 200) with many small row groups, written language by language
as prep writes them, is stored locally and copied to a SeaweedFS S3 server started here (tests/fixtures/s3.py).
On each, in this process:

- scan: a sequential pyarrow read of every row group's sequence column, file after file (the limit: every
  byte read once, in order), both to Arrow only and to the Python rows the loader hands its collate;
- loader: `DeterministicLoader` (world size 1, one epoch, prefetch on, a collate that keeps the rows), with a
  cache of `--cache-share` of the decoded shard set; samples/s, bytes read from storage (footers included) /
  bytes of the rows consumed (each row's share of its row group's compressed sequence column), peak RSS above
  the process's RSS before the phase, requests to storage per row group consumed; and the same amplification
  for ranks 0 and 3 of world size 4.

Then the memory of the order object alone at 10^6 and 10^9 rows (tracemalloc); one rank's start-up on manifests
of 10^3 and 10^4 files x 51 row groups and 10^4 x 5 (`read_manifest`, then the row reader's state, which grows
with the files, not the row groups); and a short real training run of the `small` HAT on the S3 shards (Ray
Train, 1 worker) for data_wait_s / step_seconds (the first step, which also builds the engine's state, is left
out).

    .venv/bin/python benchmarks/loader_scale.py [--files 200] [--global-batch 64] [--train-steps 4]

The last line is one JSON object (`throughput_over_scan`, `read_amplification`, `order_bytes_at_1e9_rows`,
`data_wait_share`, `requests_per_group_consumed`, `reader_state_bytes_per_file`, ...); throughput_over_scan
compares against the scan to Python rows (the same output), and `throughput_over_arrow_scan` against the
Arrow-only scan.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fixtures.s3 starts the S3 server

LANGUAGES = ("en", "de", "fr", "ru", "ja")


class PeakRSS:
    """Peak resident memory of this process above its level at the start, sampled every 10 ms."""

    def __init__(self):
        import psutil

        self.process = psutil.Process()

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()

    @property
    def above_start(self) -> int:
        return self.peak - self.start


def write_shards(url: str, files: int, rows_per_file: int, group_rows: int, seq_words: int, max_word_bytes: int):
    """Synthetic word rows (letters, [S] between documents), one language per run of files, plus a sealed
    manifest listing each file's row groups of `group_rows` rows (as prep does)."""
    import fsspec
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hierpt.data.shards import SHARD_SCHEMA, LanguageStats, Manifest, ShardFile, write_manifest
    from hierpt.splitting import splitter_version

    rng = np.random.default_rng(0)
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    vocabulary = [bytes(rng.integers(97, 123, size=n, dtype=np.uint8)) for n in rng.integers(1, 13, size=5000)]
    vocabulary.append(b"\xf9")  # [S]
    stats, listed = {lang: LanguageStats() for lang in LANGUAGES}, []
    for index in range(files):
        lang = LANGUAGES[index * len(LANGUAGES) // files]
        picks = rng.integers(0, len(vocabulary), size=(rows_per_file, seq_words))
        words = [[vocabulary[p][:max_word_bytes] for p in row] for row in picks]
        table = pa.table({"words": words, "lang": [lang] * rows_per_file,
                          "doc_ids": [[f"{lang}-{index}-{r}"] for r in range(rows_per_file)]}, schema=SHARD_SCHEMA)  # fmt: skip
        name = f"part-{index:05d}.parquet"
        with fs.open(f"{root}/{name}", "wb") as f:
            pq.write_table(table, f, row_group_size=group_rows)
        full, short = divmod(rows_per_file, group_rows)
        groups = [group_rows] * full + [short] * (short > 0)
        listed.append(ShardFile(path=name, rows=rows_per_file, row_groups=groups))
        s = stats[lang]
        s.docs += rows_per_file
        s.words += rows_per_file * seq_words
        s.bytes += sum(len(w) for row in words for w in row)
    for s in stats.values():
        s.bytes_per_word = s.bytes / max(s.words, 1)
    manifest = Manifest(splitter={"name": "hat-splitter", "version": splitter_version()}, max_word_bytes=max_word_bytes,
                        seq_words=seq_words, files=listed, languages=stats,
                        recipe={"benchmark": "benchmarks/loader_scale.py"})  # fmt: skip
    write_manifest(url, manifest)
    return manifest.sealed()


def upload(local: str, url: str, manifest) -> None:
    """The same shard set on object storage: its files, then its manifest (last, as prep writes it)."""
    import fsspec

    from hierpt.data.shards import MANIFEST

    fs, root = fsspec.core.url_to_fs(url)
    for name in [f.path for f in manifest.files] + [MANIFEST]:
        fs.put_file(f"{local}/{name}", f"{root}/{name}")


def scan(url: str, manifest, to_python: bool) -> dict:
    """Every row group of every file in order, the sequence column only, through fsspec's sequential
    read-ahead (the way a scan reads best)."""
    import fsspec
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(url)
    start, count = time.perf_counter(), 0
    with PeakRSS() as rss:
        for listed in manifest.files:
            with fs.open(f"{root}/{listed.path}", "rb") as handle:
                parquet = pq.ParquetFile(handle)
                for group in range(parquet.num_row_groups):
                    values = parquet.read_row_group(group, columns=[manifest.column]).column(0)
                    count += len(values.to_pylist()) if to_python else len(values)
    seconds = time.perf_counter() - start
    return {"rows_per_s": count / seconds, "seconds": seconds, "peak_rss": rss.above_start}


def consumed_bytes(url: str, manifest, rows_consumed) -> tuple[float, int]:
    """Each consumed row's share of its row group's compressed sequence column, summed; and the number of row
    groups the rows come from."""
    import numpy as np

    from hierpt.data.row_groups import ShardRows

    reader = ShardRows(url, manifest)
    files, groups, _ = reader.locate(np.asarray(rows_consumed))
    total = 0.0
    pairs, counts = np.unique(np.stack([files, groups], axis=1), axis=0, return_counts=True)
    for (file_index, group), count in zip(pairs.tolist(), counts.tolist()):
        meta = reader.footer(file_index).metadata.row_group(group)
        total += meta.column(0).total_compressed_size * count / meta.num_rows
    return total, len(pairs)


def run_loader(url: str, manifest, world_size: int, rank: int, global_batch: int, cache_bytes: int, steps: int) -> dict:
    from hierpt.data.loader import DeterministicLoader

    loader = DeterministicLoader(url, 0, global_batch, global_batch // world_size, rank, world_size,
                                 lambda rows: {}, cache_bytes=cache_bytes)  # fmt: skip
    consumed = []
    start = time.perf_counter()
    with PeakRSS() as rss:
        for _ in range(steps):
            for micro in loader.next_step():
                consumed += micro.rows
    seconds = time.perf_counter() - start
    loader.close()
    used, groups_consumed = consumed_bytes(url, manifest, consumed)
    return {"samples_per_s": len(consumed) / seconds, "seconds": seconds, "bytes_read": loader.rows.bytes_read,
            "bytes_consumed": used, "read_amplification": loader.rows.bytes_read / used,
            "groups_read": loader.rows.groups_read, "requests": loader.rows.requests,
            "requests_per_group_consumed": loader.rows.requests / groups_consumed,
            "peak_rss": rss.above_start}  # fmt: skip


def order_bytes(rows: int) -> int:
    """Bytes Python allocates to build the order of `rows` rows and keep it (tracemalloc)."""
    from hierpt.data.order import BlockOrder

    tracemalloc.start()
    order = BlockOrder(0, rows, 1024, 512)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del order
    return size


def listing_cost(root: Path, files: int, groups_per_file: int) -> dict:
    """One rank's start-up on a manifest of `files` files x `groups_per_file` row groups (no data files):
    `read_manifest` (it parses and fingerprints every listed row group: the shard contract's floor) and the
    reader's state kept after it (tracemalloc; O(files), whatever the row groups)."""
    from hierpt.data.row_groups import ShardRows
    from hierpt.data.shards import Manifest, ShardFile, read_manifest, write_manifest

    url = str(root / f"listing-{files}x{groups_per_file}")
    listed = [ShardFile(path=f"part-{i:06d}.parquet", rows=20 * groups_per_file, row_groups=[20] * groups_per_file)
              for i in range(files)]  # fmt: skip
    write_manifest(url, Manifest(splitter={"name": "hat-splitter", "version": "0"}, max_word_bytes=32, seq_words=256,
                                 files=listed, languages={}))  # fmt: skip
    del listed
    start = time.perf_counter()
    manifest = read_manifest(url)
    parsed = time.perf_counter()
    tracemalloc.start()
    rows = ShardRows(url, manifest)
    state = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del rows
    return {"files": files, "row_groups": files * groups_per_file, "read_manifest_s": parsed - start,
            "reader_start_s": time.perf_counter() - parsed, "reader_state_bytes": state}  # fmt: skip


def training_wait_share(shards: str, root: Path, steps: int) -> dict:
    import ray

    from hierpt.train.config import TrainJob
    from hierpt.train.run import train

    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(root / "ray"), log_to_driver=False)
    job = TrainJob(name="wait", storage=str(root / "runs"), data={"shards": shards}, model={"preset": "small"},
                   steps=steps, global_batch=4, micro_batch=2, zero_stage=2, num_workers=1)  # fmt: skip
    train(job)
    ray.shutdown()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(job.resolved_tensorboard_dir())  # every step (Ray keeps metrics per checkpoint)
    events.Reload()
    wait, step = ([e.value for e in events.Scalars(f"train/{k}")] for k in ("data_wait_s", "step_seconds"))
    return {"data_wait_share": sum(wait[1:]) / sum(step[1:]), "data_wait_s_median": statistics.median(wait[1:]),
            "step_seconds_median": statistics.median(step[1:]), "first_step_data_wait_s": wait[0],
            "first_step_seconds": step[0], "steps": len(step)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rows-per-file", type=int, default=240)
    parser.add_argument("--group-rows", type=int, default=20)
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--cache-share", type=float, default=0.1, help="cache bytes / decoded shard set bytes")
    parser.add_argument("--train-steps", type=int, default=4)
    args = parser.parse_args()
    started = time.perf_counter()

    from hierpt.model.hat import HATConfig
    from tests.fixtures.s3 import seaweedfs_server

    small = HATConfig.from_name("small")
    root = Path(tempfile.mkdtemp(prefix="hierpt-bench-loader-"))
    (root / "seaweedfs").mkdir()
    results: dict = {"files": args.files}
    with seaweedfs_server(root / "seaweedfs") as server:
        bucket = server.new_bucket()
        urls = {"local": str(root / "shards"), "s3": f"s3://{bucket}/shards"}
        manifest = write_shards(urls["local"], args.files, args.rows_per_file, args.group_rows, small.seq_words,
                                small.max_word_bytes)  # fmt: skip
        upload(urls["local"], urls["s3"], manifest)
        rows, groups = manifest.total_rows, args.files * -(-args.rows_per_file // args.group_rows)
        steps = rows // args.global_batch
        decoded = _decoded_bytes(urls["local"], manifest)
        cache_bytes = int(decoded * args.cache_share)
        for where, url in urls.items():
            arrow, python = scan(url, manifest, to_python=False), scan(url, manifest, to_python=True)
            one = run_loader(url, manifest, 1, 0, args.global_batch, cache_bytes, steps)
            ranks = [run_loader(url, manifest, 4, r, args.global_batch, cache_bytes, steps // 4) for r in (0, 3)]
            results[where] = {"scan_arrow": arrow, "scan_rows": python, "loader": one, "cache_bytes": cache_bytes,
                              "decoded_bytes": decoded,
                              "read_amplification_world_4": [r["read_amplification"] for r in ranks],
                              "throughput_over_scan": one["samples_per_s"] / python["rows_per_s"],
                              "throughput_over_arrow_scan": one["samples_per_s"] / arrow["rows_per_s"]}  # fmt: skip
            print(f"{where}: {rows} rows, {groups} row groups in {args.files} files; cache {cache_bytes / 2**20:.1f} "
                  f"MiB of {decoded / 2**20:.1f} MiB decoded; scan {arrow['rows_per_s']:.0f} rows/s (Arrow), "
                  f"{python['rows_per_s']:.0f} rows/s (rows); loader {one['samples_per_s']:.0f} samples/s "
                  f"({results[where]['throughput_over_scan']:.2f}x scan), read amplification "
                  f"{one['read_amplification']:.3f} (world 4: {[round(r['read_amplification'], 3) for r in ranks]}), "
                  f"{one['requests_per_group_consumed']:.2f} requests per row group consumed, "
                  f"peak RSS +{one['peak_rss'] / 2**20:.0f} MiB (scan +{python['peak_rss'] / 2**20:.0f} MiB)",
                  flush=True)  # fmt: skip
        order = {rows: order_bytes(rows) for rows in (10**6, 10**9)}
        print(f"order object: {order[10**6]} bytes at 1e6 rows, {order[10**9]} bytes at 1e9 rows", flush=True)
        listing = [listing_cost(root, files, groups) for files, groups in ((10**3, 51), (10**4, 51), (10**4, 5))]
        for cost in listing:
            print(f"start-up, {cost['files']} files x {cost['row_groups'] // cost['files']} row groups: read_manifest "
                  f"{cost['read_manifest_s']:.2f} s, reader {cost['reader_start_s'] * 1e3:.0f} ms and "
                  f"{cost['reader_state_bytes'] / cost['files']:.0f} B per file", flush=True)  # fmt: skip
        wait = training_wait_share(urls["s3"], root, args.train_steps) if args.train_steps else {}
        if wait:
            print(f"small on S3 shards: data_wait_s {wait['data_wait_s_median']:.4f}s of {wait['step_seconds_median']:.2f}s "
                  f"per step ({wait['data_wait_share']:.2%})", flush=True)  # fmt: skip
    worst = max(results[w]["loader"]["read_amplification"] for w in urls)
    print(json.dumps({
        "benchmark": "loader_scale", "rows": rows, "row_groups": groups, "files": args.files,
        "throughput_over_scan": min(results[w]["throughput_over_scan"] for w in urls),
        "throughput_over_arrow_scan": min(results[w]["throughput_over_arrow_scan"] for w in urls),
        "read_amplification": worst,
        "read_amplification_world_4": max(a for w in urls for a in results[w]["read_amplification_world_4"]),
        "order_bytes_at_1e6_rows": order[10**6], "order_bytes_at_1e9_rows": order[10**9],
        "data_wait_share": wait.get("data_wait_share"), "training": wait, "seconds": time.perf_counter() - started,
        "requests_per_group_consumed": max(results[w]["loader"]["requests_per_group_consumed"] for w in urls),
        "reader_state_bytes_per_file": [c["reader_state_bytes"] / c["files"] for c in listing], "start_up": listing,
        "local": results["local"], "s3": results["s3"],
        "targets": {"throughput_over_scan": 0.5, "read_amplification": 1.5, "order_bytes_at_1e9_rows": 2**20,
                    "data_wait_share": 0.02},
    }))  # fmt: skip


def _decoded_bytes(url: str, manifest) -> int:
    """Arrow bytes of the whole decoded sequence column (what a cache holding everything would need)."""
    from hierpt.data.row_groups import ShardRows

    reader = ShardRows(url, manifest, cache_bytes=0)
    total = 0
    for file_index in range(len(manifest.files)):
        for group in range(reader.footer(file_index).metadata.num_row_groups):
            total += reader.group(file_index, group).nbytes
    return total


if __name__ == "__main__":
    main()
