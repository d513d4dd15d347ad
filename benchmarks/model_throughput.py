"""Training-step throughput of a HAT preset on this machine: bytes/s and words/s of forward + backward +
AdamW, and where the time goes (encoder / backbone / decoder, each timed forward + backward on the same
batch). Baseline for the ratios: the full step measured in the same run.

    python benchmarks/model_throughput.py [--preset small] [--batch 8] [--steps 10]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from hierpt.data.sample_corpus import LANGUAGES, documents
from hierpt.model.hat import HAT, HATConfig
from hierpt.splitting import document_words, words_to_tensors


def sample_batch(config: HATConfig, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` full sequences of packed multilingual sample documents (one language per sequence)."""
    sequences = []
    for i in range(batch):
        lang = LANGUAGES[i % len(LANGUAGES)]
        words: list[bytes] = []
        for text in documents(lang, "bench", target_bytes=10**9, seed=i):
            words += document_words(text, config.max_word_bytes)
            if len(words) >= config.seq_words:
                break
        sequences.append(words[: config.seq_words])
    return words_to_tensors(sequences, config.max_word_bytes)


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` runs after one warm-up."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = HATConfig.from_name(args.preset)
    model = HAT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    word_bytes, lengths = sample_batch(config, args.batch)
    present = lengths > 0
    n_words = int(present.sum())
    n_bytes = int(lengths.sum())

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(word_bytes, lengths).loss.backward()
        optimizer.step()

    # Each module alone, forward + backward, on the same words (inputs detached so only it is measured).
    flat_bytes, flat_lens = word_bytes[present].long(), lengths[present]
    with torch.no_grad():
        vectors = model.encode_words(flat_bytes, flat_lens)
        backbone_in = vectors.new_zeros(*lengths.shape, vectors.shape[-1]).index_put((present,), vectors)
        predictive, spelled, spelled_lens = model.predicted_words(word_bytes, lengths)

    parts = {
        "encoder": lambda: model.encode_words(flat_bytes, flat_lens).sum().backward(),
        "backbone": lambda: model.run_backbone(backbone_in.detach().requires_grad_()).sum().backward(),
        "decoder": lambda: model.spelling_loss(predictive.detach().requires_grad_(), spelled, spelled_lens)
        .loss.backward(),
    }
    step_s = timed(step, args.steps)
    part_s = {name: timed(fn, args.steps) for name, fn in parts.items()}
    total_parts = sum(part_s.values())

    result = {
        "preset": args.preset,
        "params": model.num_params()["total"],
        "batch_sequences": args.batch,
        "words_per_step": n_words,
        "bytes_per_step": n_bytes,
        "step_s": round(step_s, 4),
        "bytes_per_s": round(n_bytes / step_s, 1),
        "words_per_s": round(n_words / step_s, 1),
        "share": {name: round(s / total_parts, 3) for name, s in part_s.items()},
        "parts_over_step": round(total_parts / step_s, 3),
        "threads": args.threads,
    }
    print(f"{args.preset}: {result['params'] / 1e6:.1f}M params, {n_words} words / {n_bytes} bytes per step")
    print(f"step {step_s * 1e3:.1f} ms -> {result['bytes_per_s']:,.0f} bytes/s, {result['words_per_s']:,.0f} words/s")
    for name, share in result["share"].items():
        print(f"  {name:<8} {part_s[name] * 1e3:8.1f} ms  {share:6.1%} of fwd+bwd")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
