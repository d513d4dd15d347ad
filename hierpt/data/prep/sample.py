"""The tokenizer's training text: a seeded sample of whole part chunks, read at the cost of the sample alone.

Chunks of sources with a positive weight are put in a seeded order (a hash of seed and chunk name) and taken
until their text reaches `train_bytes`; one task per chosen chunk returns its kept documents (first occurrences,
and for a source with weight below 1 those its first mixture copy keeps). The sample depends on the recipe and
the inputs only, and costs about `train_bytes` of reading (plus one chunk) however large the corpus.
"""

from __future__ import annotations

import hashlib

import fsspec

from hierpt.data.prep.pack import kept_groups
from hierpt.data.prep.work import WORK
from hierpt.splitting import join_words


def sample_items(chunks: list[dict], seed: int, train_bytes: int) -> list[dict]:
    """The chosen chunks (stage-2 items of mixture copy 0), in their seeded order."""
    ranked = sorted(
        (c for c in chunks if c["copy"] == 0),
        key=lambda c: hashlib.blake2b(f"{seed}\0{c['key']}\0{c['chunk']}".encode(), digest_size=8).digest(),
    )
    chosen, total = [], 0
    for chunk in ranked:
        if total >= train_bytes:
            break
        chosen.append({**chunk, "id": f"sample-{chunk['id']}"})
        total += chunk["bytes"]
    return chosen


def sample_texts(item: dict) -> dict:
    """One chosen chunk's kept documents as text (runs in a Ray task)."""
    fs, root = fsspec.core.url_to_fs(item["output"])
    texts = [join_words(words) for table in kept_groups(fs, f"{root}/{WORK}", item, ["words"])
             for words in table.column("words").to_pylist()]  # fmt: skip
    return {"texts": texts, "bytes": sum(len(t.encode()) for t in texts)}
