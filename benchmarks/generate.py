"""Generation speed of `small` against context length: words/s with the KV caches (hierpt.model.generate)
and with the uncached reference generator, at contexts of 64, 256 and 1024 words, measured in one run.

`small` trains on 256-word sequences; here its `seq_words` is raised to hold the longest context plus the
generated words (RoPE extends to any position; speed does not depend on what the weights learnt). The model
is first trained for a few steps on the sample corpus, so it spells words of realistic length instead of a
random model's 100-byte ones. Both generators are greedy, so they produce the same words. Words/s counts
the words after the first: the first one also pays for reading the prompt (reported as `*_prompt_s`).

    python benchmarks/generate.py [--words 16] [--train-steps 20]

The last line is one JSON object; `cached_cost_ratio_1024_over_64` is the cached seconds per generated word
at context 1024 over those at 64 (target <= 2), `cached_over_uncached_at_1024` the words/s ratio.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from hierpt.data.sample_corpus import documents
from hierpt.model.generate import SamplingConfig, generate_hat, generate_words_uncached
from hierpt.model.hat import HAT, HATConfig
from hierpt.splitting import document_words, split_words, words_to_tensors

CONTEXTS = (64, 256, 1024)


def corpus_words(max_word_bytes: int, count: int, seed: int) -> list[bytes]:
    words: list[bytes] = []
    for text in documents("en", "bench", target_bytes=10**9, seed=seed):
        words += document_words(text, max_word_bytes)
        if len(words) >= count:
            return words[:count]


def train(model: HAT, steps: int) -> float:
    config = model.config
    sequences = [corpus_words(config.max_word_bytes, 256, seed) for seed in range(4)]
    word_bytes, lengths = words_to_tensors(sequences, config.max_word_bytes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(word_bytes, lengths).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item()


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, default=16, help="words generated per measurement")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = replace(HATConfig.from_name("small"), seq_words=max(CONTEXTS) + args.words + 1)
    model = HAT(config)
    loss = train(model, args.train_steps)
    model.eval()
    # the generators stop at [S]; the prompt ends mid-document so the model keeps writing
    text_words = [w for w in corpus_words(config.max_word_bytes, 2 * max(CONTEXTS), seed=99) if w != b"\xf9"]
    generate_hat(model, [b"".join(text_words[:8]).decode()], SamplingConfig(max_words=2))  # warm-up
    rows = {}
    for context in CONTEXTS:
        prompt = b"".join(text_words[: context - 1]).decode()  # + [S] = `context` words
        assert len(split_words(prompt)) == context - 1
        row = {}
        for name, generate in (
            ("cached", lambda s: generate_hat(model, [prompt], s)[0]),
            ("uncached", lambda s: generate_words_uncached(model, prompt, s)),
        ):
            # the first word carries the prompt's cost (prefill); the words after it are the per-word cost
            first_s, _ = timed(lambda: generate(SamplingConfig(max_words=1)))
            total_s, words = timed(lambda: generate(SamplingConfig(max_words=args.words + 1)))
            per_word = (total_s - first_s) / (len(words) - 1)
            row[name] = words
            row |= {f"{name}_words_per_s": round(1 / per_word, 2), f"{name}_prompt_s": round(first_s, 3)}
        cached, uncached = row.pop("cached"), row.pop("uncached")
        rows[context] = {
            "words": len(cached) - 1,
            "bytes": sum(map(len, cached[1:])),
            **row,
            "cached_ms_per_word": round(1e3 / row["cached_words_per_s"], 2),
            "same_words": cached == uncached,
        }
        r = rows[context]
        print(
            f"context {context:5d}: cached {r['cached_words_per_s']:7.2f} words/s, uncached "
            f"{r['uncached_words_per_s']:7.2f} words/s; prompt {r['cached_prompt_s']:.2f} s cached, "
            f"{r['uncached_prompt_s']:.2f} s uncached ({r['words']} words, {r['bytes']} bytes, same: {r['same_words']})"
        )
    first, last = rows[CONTEXTS[0]], rows[CONTEXTS[-1]]
    result = {
        "preset": "small",
        "seq_words": config.seq_words,
        "train_steps": args.train_steps,
        "train_loss": round(loss, 3),
        "threads": args.threads,
        "contexts": rows,
        "cached_cost_ratio_1024_over_64": round(last["cached_ms_per_word"] / first["cached_ms_per_word"], 3),
        "cached_over_uncached_at_1024": round(last["cached_words_per_s"] / last["uncached_words_per_s"], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
