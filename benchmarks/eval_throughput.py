"""Evaluation throughput of a HAT preset against its own training throughput, measured in one run.

Evaluation (`evaluate_model`: clean text + the four perturbations, each document after [S], windows batched
longest first up to `BATCH_POSITIONS` padded words) reports the UTF-8 bytes it scored per second; the
baseline for the ratio is a training step (forward + backward + AdamW) on full sequences of the same
sample corpus. Target: evaluation >= 3x the training bytes/s.

    python benchmarks/eval_throughput.py [--preset small] [--docs 24] [--threads 1]

The last line is one JSON object with `eval_over_train_bytes_per_s`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from hierpt.data.sample_corpus import LANGUAGES, documents
from hierpt.eval.evaluate import evaluate_model
from hierpt.model.hat import HAT, HATConfig
from hierpt.splitting import document_words, words_to_tensors


def train_bytes_per_s(model: HAT, batch: int, steps: int) -> float:
    config, sequences = model.config, []
    for i in range(batch):
        words: list[bytes] = []
        for text in documents(LANGUAGES[i % len(LANGUAGES)], "bench", target_bytes=10**9, seed=i):
            words += document_words(text, config.max_word_bytes)
            if len(words) >= config.seq_words:
                break
        sequences.append(words[: config.seq_words])
    word_bytes, lengths = words_to_tensors(sequences, config.max_word_bytes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(word_bytes, lengths).loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * int(lengths.sum()) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--docs", type=int, default=24, help="held-out documents (spread over the languages)")
    parser.add_argument("--batch", type=int, default=4, help="training sequences per step")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = HAT(HATConfig.from_name(args.preset))
    train = train_bytes_per_s(model, args.batch, args.steps)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "heldout.jsonl"
        lines = []
        for i in range(args.docs):
            lang = LANGUAGES[i % len(LANGUAGES)]
            text = next(iter(documents(lang, "heldout", target_bytes=1, seed=i)))
            lines.append(json.dumps({"text": text, "lang": lang}))
        path.write_text("\n".join(lines) + "\n")
        throughput = evaluate_model(model, None, str(path))["throughput"]
    result = {
        "preset": args.preset,
        "threads": args.threads,
        "train_bytes_per_s": round(train, 1),
        "eval_bytes": throughput["bytes"],
        "eval_seconds": throughput["seconds"],
        "eval_bytes_per_s": round(throughput["bytes_per_s"], 1),
        "eval_over_train_bytes_per_s": round(throughput["bytes_per_s"] / train, 2),
    }
    print(f"train {result['train_bytes_per_s']:,.0f} bytes/s, eval {result['eval_bytes_per_s']:,.0f} bytes/s "
          f"({throughput['bytes']} bytes in {throughput['seconds']} s, 5 passes)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
