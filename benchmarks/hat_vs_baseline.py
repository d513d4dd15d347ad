"""Training bytes/s of a HAT preset vs its compute-matched BPE baseline, in one run, on the same text.

Single process, one training step = forward + backward + AdamW step. A BPE tokenizer is trained on sample
corpus text (all languages), bytes/word and bytes/token are measured on the benchmark text, and
`compute_match` picks the baseline shape with the HAT's training FLOPs per byte (``--match paper``: the
baseline preset instead, i.e. the match at the paper's compression). Both models get batches holding exactly the same
documents, so they train on the same bytes; steps of the two alternate so machine load hits both alike.
Baseline for the ratio: the BPE model's bytes/s measured in the same run (paper target: HAT >= 1.0x).

    python benchmarks/hat_vs_baseline.py [--preset small] [--batch 4] [--steps 3] [--match measured|paper] [--threads N]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from hierpt.data.bpe import BPETokenizer
from hierpt.data.sample_corpus import LANGUAGES, documents
from hierpt.eval.metrics import compression
from hierpt.model.baseline import Baseline, BaselineConfig
from hierpt.model.compute_match import PAPER_COMPRESSION, match_baseline
from hierpt.model.hat import HAT, HATConfig, length_groups
from hierpt.splitting import END_OF_DOC_WORD, split_words, words_to_tensors


def sequence_texts(config: HATConfig, batch: int) -> list[list[str]]:
    """`batch` lists of whole documents, each list about one HAT sequence (seq_words words) long."""
    sequences = []
    for i in range(batch):
        lang, texts, words = LANGUAGES[i % len(LANGUAGES)], [], 0
        for text in documents(lang, "bench", target_bytes=10**9, seed=i):
            n = len(split_words(text, config.max_word_bytes)) + 1
            if texts and words + n > config.seq_words:
                break
            texts.append(text)
            words += n
        sequences.append(texts)
    return sequences


def hat_batch(config: HATConfig, sequences: list[list[str]]) -> dict[str, torch.Tensor]:
    rows = []
    for texts in sequences:
        rows.append(
            [END_OF_DOC_WORD] + [w for t in texts for w in (*split_words(t, config.max_word_bytes), END_OF_DOC_WORD)]
        )
    word_bytes, lengths = words_to_tensors(rows, config.max_word_bytes)
    return {"word_bytes": word_bytes, "lengths": lengths}


def baseline_batch(tokenizer: BPETokenizer, sequences: list[list[str]]) -> dict[str, torch.Tensor]:
    eod = tokenizer.eod_id
    return tokenizer.batch([[eod] + [i for ids in tokenizer.encode_batch(t) for i in (*ids, eod)] for t in sequences])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model (after one warm-up each)")
    parser.add_argument("--match", choices=("measured", "paper"), default="measured")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    hat_config = HATConfig.from_name(args.preset)
    vocab_size = BaselineConfig.from_name(args.preset).vocab_size
    train_text = [t for lang in LANGUAGES for t in documents(lang, "train", target_bytes=200_000)]
    tokenizer = BPETokenizer.train(train_text, vocab_size=vocab_size)
    sequences = sequence_texts(hat_config, args.batch)
    stats = compression([t for texts in sequences for t in texts], hat_config.max_word_bytes, tokenizer)
    if args.match == "paper":  # the baseline preset: its vocabulary, the paper's compression
        match = match_baseline(hat_config, vocab_size, **PAPER_COMPRESSION)
    else:  # the vocabulary the tokenizer reached (a small corpus may not fill vocab_size), measured compression
        ratios = {"bytes_per_word": stats["bytes_per_word"], "bytes_per_token": stats["bytes_per_token"]}
        match = match_baseline(hat_config, tokenizer.vocab_size, **ratios)

    models = {"hat": HAT(hat_config), "baseline": Baseline(match.baseline)}
    batches = {"hat": hat_batch(hat_config, sequences), "baseline": baseline_batch(tokenizer, sequences)}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, model in models.items()}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    predicted_bytes: dict[str, int] = {}
    for step in range(args.steps + 1):
        for name, model in models.items():
            start = time.perf_counter()
            optimizers[name].zero_grad(set_to_none=True)
            out = model(**batches[name])
            out.loss.backward()
            optimizers[name].step()
            if step:  # the first step of each is warm-up
                seconds[name].append(time.perf_counter() - start)
            predicted_bytes[name] = int(out.utf8_bytes)

    step_s = {name: statistics.median(s) for name, s in seconds.items()}
    # The byte modules run on words in length groups, each padded to its longest word + 1 (hat.length_groups):
    # the share of the positions they compute on that is padding.
    lengths = batches["hat"]["lengths"]
    present = lengths[lengths > 0]
    computed = sum(len(index) * (width + 1) for index, width in length_groups(present, hat_config.max_word_bytes))
    padding = 1 - (int(present.sum()) + len(present)) / computed
    bytes_per_s = {name: predicted_bytes[name] / step_s[name] for name in models}
    ratio = bytes_per_s["hat"] / bytes_per_s["baseline"]
    summary = match.summary()
    result = {
        "preset": args.preset,
        "match": args.match,
        "batch_sequences": args.batch,
        "threads": args.threads,
        "bytes_per_word": round(stats["bytes_per_word"], 3),
        "bytes_per_token": round(stats["bytes_per_token"], 3),
        "hat_shape": summary["hat"]["backbone"],
        "baseline_shape": summary["baseline"]["backbone"],
        "baseline_seq_tokens": match.baseline.seq_tokens,
        "baseline_vocab_size": match.baseline.vocab_size,
        "flops_deviation": round(match.deviation, 4),
        "params": {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()},
        "bytes_per_step": predicted_bytes,
        "step_s": {name: round(s, 4) for name, s in step_s.items()},
        "bytes_per_s": {name: round(v, 1) for name, v in bytes_per_s.items()},
        "hat_over_baseline": round(ratio, 3),
        "hat_byte_module_padding": round(padding, 3),
    }
    print(
        f"compression: {stats['bytes_per_word']:.2f} bytes/word, {stats['bytes_per_token']:.2f} bytes/token "
        f"(BPE vocabulary reached {tokenizer.vocab_size} of {vocab_size})"
    )
    print(
        f"HAT backbone {summary['hat']['backbone']}; baseline {summary['baseline']['backbone']}, "
        f"{match.baseline.seq_tokens} tokens/seq (FLOPs/byte deviation {match.deviation:+.1%})"
    )
    for name in models:
        print(
            f"{name:>8}: {result['params'][name] / 1e6:6.1f}M params, {predicted_bytes[name]} bytes/step, "
            f"{step_s[name] * 1e3:8.1f} ms/step -> {bytes_per_s[name]:,.0f} bytes/s"
        )
    print(f"HAT / baseline bytes/s: {ratio:.2f}x (HAT byte-module positions that are padding: {padding:.0%})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
