"""How `hierpt prep` grows with the corpus (issue 15, item 8): the same kind of corpus at 1x, 4x and 16x documents.

Short documents (1-3 sentences, ~100 bytes) so per-document overhead shows. Each run is `hierpt prep` in its own
process, connected to this benchmark's Ray (2 CPUs), so the driver's peak RSS is that process alone (psutil,
polled every 20 ms); the largest task's peak RSS is the prep log's "task peak RSS" (each worker's
`ru_maxrss`, so it includes the worker's imports). Files scale with the corpus (FILE_DOCS documents each), as
real corpora do.

    python benchmarks/prep_scale.py                    # 25k / 100k / 400k documents, about 6-8 minutes on 2 cores
    python benchmarks/prep_scale.py --base-docs 5000   # quick look

Also: a one-language corpus (the 16x size) with 1 and 2 workers, against the bare HAT splitter in 1 and 2
processes on its text in the same run (the machine's own parallel ceiling). The last line is one JSON object with
driver_rss_ratio, time_per_doc_ratio (16x over 1x), one_language_2w_over_1w and splitter_2p_over_1p.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_worker_niceness", "0")  # as prep_throughput.py: workers at the benchmark's priority
sys.path.insert(0, str(Path(__file__).resolve().parent))

from prep_throughput import bare_split, bare_split_two_processes  # noqa: E402

LANGS = ("en", "de", "ru", "zh")
FILE_DOCS = 6_250  # documents per input file
DOC_BYTES = 100  # about, at 1-3 sample-corpus sentences


def corpus(root: Path, docs: int, langs: tuple[str, ...]) -> Path:
    """`docs` short documents over `langs`, FILE_DOCS per file (generated once per size, then reused)."""
    from hierpt.data.sample_corpus import write_sample_corpus

    marker = root / "done"
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        per_lang = docs // len(langs)
        files = max(1, round(per_lang / FILE_DOCS))
        write_sample_corpus(root, per_lang * DOC_BYTES, 0, 0, files, langs, (1, 3))
        marker.touch()
    return root


def texts_of(root: Path) -> list[str]:
    return [json.loads(line)["text"] for path in sorted(root.glob("train/*/*.jsonl")) for line in path.open()]


def run_prep(root: Path, langs: tuple[str, ...], workers: int, scratch: Path, ray_address: str) -> dict:
    """One `hierpt prep` process: wall time, its peak RSS, and what its log says about stages and tasks."""
    import psutil
    import yaml

    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"seq_words": 1024, "sources": [{"url": f"train/{lang}", "lang": lang} for lang in langs]}))
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "hierpt.cli", "prep", str(recipe), "--output", str(out), "--workers", str(workers)]
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    wall = time.perf_counter() - start
    log = process.stderr.read()
    if process.returncode != 0:
        raise RuntimeError(f"prep failed ({process.returncode}): {log[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    times = next(line for line in log.splitlines() if line.startswith("prep times:"))
    task_peak = max(float(m.replace(",", "")) for m in re.findall(r"task peak RSS ([\d,]+) MB", times))
    mb = sum(s["bytes"] for s in manifest["languages"].values()) / 1e6
    groups = [g for f in manifest["files"] for g in f["row_groups"]]
    shard = out / manifest["files"][0]["path"]
    group_mb = _row_group_mb(shard)
    return {
        "wall_s": round(wall, 2), "driver_peak_rss_mb": round(peak / 2**20, 1), "task_peak_rss_mb": task_peak,
        "kept_docs": sum(s["docs"] for s in manifest["languages"].values()), "kept_mb": round(mb, 2),
        "mb_s": round(mb / wall, 3), "stages": times.removeprefix("prep times: "),
        "row_groups": len(groups), "rows_per_group_max": max(groups), "row_group_mb_first_file": group_mb,
    }  # fmt: skip


def _row_group_mb(path: Path) -> float:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    return round(max(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups)) / 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-docs", type=int, default=25_000, help="documents at 1x (the issue suggests 2e5)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the one-language 1 vs 2 worker runs")
    parser.add_argument("--scratch", default=os.path.join(tempfile.gettempdir(), "hierpt-prep-scale"))
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(scratch / "ray"))
    address = ray.get_runtime_context().gcs_address
    sizes = {}
    for factor in (1, 4, 16):
        docs = args.base_docs * factor
        root = corpus(scratch / f"multi-{docs}", docs, LANGS)
        if factor == 1:
            run_prep(root, LANGS, 2, scratch, address)  # warm-up: workers start and import once, as in a long job
        result = {"docs": docs, **run_prep(root, LANGS, 2, scratch, address)}
        result["s_per_mdoc"] = round(result["wall_s"] / docs * 1e6, 2)
        sizes[f"{factor}x"] = result
        print(f"{factor:>2}x {json.dumps(result)}", flush=True)

    one = corpus(scratch / f"one-{args.base_docs * 16}", args.base_docs * 16, ("en",))
    one_language: dict[int, dict] = {}
    for round_ in range(args.repeat):  # rounds interleave 1 and 2 workers; each keeps its fastest round
        for w in (1, 2):
            result = run_prep(one, ("en",), w, scratch, address)
            print(f"one language, round {round_ + 1}, {w} worker(s): {json.dumps(result)}", flush=True)
            if w not in one_language or result["wall_s"] < one_language[w]["wall_s"]:
                one_language[w] = result
    ray.shutdown()
    texts = texts_of(one)[:: 4]  # a quarter of the same text is enough for the splitter's ratio
    split_1p = min(bare_split(texts) for _ in range(2))
    split_2p = min(bare_split_two_processes(texts) for _ in range(2))

    small, large = sizes["1x"], sizes["16x"]
    result = {
        "base_docs": args.base_docs,
        "load_avg_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "sizes": sizes,
        "driver_rss_ratio": round(large["driver_peak_rss_mb"] / small["driver_peak_rss_mb"], 3),
        "time_per_doc_ratio": round(large["s_per_mdoc"] / small["s_per_mdoc"], 3),
        "time_per_doc_ratio_16x_over_4x": round(large["s_per_mdoc"] / sizes["4x"]["s_per_mdoc"], 3),
        "task_rss_ratio": round(large["task_peak_rss_mb"] / small["task_peak_rss_mb"], 3),
        "one_language_2w_over_1w": round(one_language[1]["wall_s"] / one_language[2]["wall_s"], 3),
        "splitter_2p_over_1p": round(split_1p / split_2p, 3),
    }
    print(
        f"targets: driver_rss_ratio <= 1.2 -> {result['driver_rss_ratio']}, time_per_doc_ratio <= 1.2 -> "
        f"{result['time_per_doc_ratio']}, one_language_2w_over_1w >= 0.9 x {result['splitter_2p_over_1p']} = "
        f"{0.9 * result['splitter_2p_over_1p']:.3f} -> {result['one_language_2w_over_1w']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
