"""Evaluation throughput of a HAT preset against its own training throughput, measured in one run.

Evaluation (`evaluate_model`: clean text + the four perturbations, each document after [S], the windows of all
documents and passes batched together longest first up to the device's `BATCH_POSITIONS` padded words, each
distinct word encoded once) reports the UTF-8 bytes it scored per second. Baselines, on full sequences of the
same sample corpus: a training step (forward + backward + AdamW; the issue's target is evaluation >= 3x its
bytes/s) and the training forward alone (with autograd recording, as in a step).

    python benchmarks/eval_throughput.py [--preset small] [--docs 24] [--threads 1] [--budget WORDS]

The last line is one JSON object with `eval_over_train_bytes_per_s` and `eval_over_train_forward_bytes_per_s`
(wall clock), and the same over this process's CPU time (`..._cpu`), which a busy machine distorts less.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

from hierpt.data.sample_corpus import LANGUAGES, documents
from hierpt.eval.evaluate import evaluate_model
from hierpt.model.hat import HAT, HATConfig
from hierpt.splitting import document_words, words_to_tensors


class Rate(NamedTuple):
    """Bytes per second of wall time, and per second of this process's CPU time: on a shared machine only
    the second is comparable between the measurements of one run (with --threads 1)."""

    wall: float
    cpu: float


def measure(run, repeats: int = 1) -> tuple[tuple[float, float], object]:
    """(wall seconds, CPU seconds) of `repeats` runs, and the last run's result."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        out = run()
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def rate(n_bytes: int, seconds: tuple[float, float]) -> Rate:
    return Rate(*(n_bytes / s for s in seconds))


def train_bytes_per_s(model: HAT, batch: int, steps: int) -> tuple[Rate, Rate]:
    """Bytes/s of a training step and of its forward alone."""
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

    def bytes_per_s(run) -> Rate:
        run()  # warm-up
        return rate(steps * int(lengths.sum()), measure(run, steps)[0])

    return bytes_per_s(step), bytes_per_s(lambda: model(word_bytes, lengths).loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--docs", type=int, default=24, help="held-out documents (spread over the languages)")
    parser.add_argument("--batch", type=int, default=4, help="training sequences per step")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--budget", type=int, help="padded words per forward (default: the device's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = HAT(HATConfig.from_name(args.preset))
    train, forward = train_bytes_per_s(model, args.batch, args.steps)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "heldout.jsonl"
        lines = []
        for i in range(args.docs):
            lang = LANGUAGES[i % len(LANGUAGES)]
            text = next(iter(documents(lang, "heldout", target_bytes=1, seed=i)))
            lines.append(json.dumps({"text": text, "lang": lang}))
        path.write_text("\n".join(lines) + "\n")
        seconds, result = measure(lambda: evaluate_model(model, None, str(path), budget=args.budget))
    n_bytes = result["throughput"]["bytes"]  # every pass's bytes (perturbed text has a few more or fewer)
    evaluation = rate(n_bytes, seconds)
    out = {"preset": args.preset, "threads": args.threads, "budget": args.budget, "eval_bytes": n_bytes}
    out["eval_seconds"] = round(seconds[0], 2)
    for clock in Rate._fields:
        rates = {"train": getattr(train, clock), "train_forward": getattr(forward, clock)}
        eval_rate = getattr(evaluation, clock)
        suffix = "" if clock == "wall" else "_cpu"
        out |= {f"{name}_bytes_per_s{suffix}": round(rate, 1) for name, rate in rates.items()}
        out[f"eval_bytes_per_s{suffix}"] = round(eval_rate, 1)
        out |= {f"eval_over_{name}_bytes_per_s{suffix}": round(eval_rate / rate, 2) for name, rate in rates.items()}
        print(f"{clock:4}: train step {rates['train']:,.0f} bytes/s, train forward {rates['train_forward']:,.0f}, "
              f"eval {eval_rate:,.0f} ({n_bytes} bytes, 5 passes): {out[f'eval_over_train_bytes_per_s{suffix}']}x "
              f"the step, {out[f'eval_over_train_forward_bytes_per_s{suffix}']}x the forward")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
