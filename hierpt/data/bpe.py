"""Byte-level BPE for the baseline (HF `tokenizers`): train on text, save/load as one JSON file, encode.

Byte-level BPE is lossless: every token stands for a run of UTF-8 bytes, so the bytes a token covers are
known exactly and the baseline's bits/byte is measured over the same bytes as the HAT's. The end-of-document
token is *not* part of the BPE vocabulary: it gets the id right after it (`eod_id`), so no input text can
produce it — the same reason the HAT keeps its specials in byte values that never occur in UTF-8.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import fsspec
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from hierpt.splitting import IGNORE

TOKENIZER_FILE = "tokenizer.json"  # its name beside token shards, in checkpoints and in exports


@dataclass(frozen=True)
class BPETokenizer:
    tokenizer: Tokenizer

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> BPETokenizer:
        """`vocab_size` counts every id the model sees: the 256 byte tokens, the merges and the end-of-document id."""
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(alphabet) + 1:
            raise ValueError(
                f"vocab_size={vocab_size} must be at least {len(alphabet) + 1} (256 bytes + end of document)"
            )
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - 1, min_frequency=min_frequency, initial_alphabet=alphabet, show_progress=False
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, url: str) -> BPETokenizer:
        fs, path = fsspec.core.url_to_fs(url)
        if not fs.exists(path):
            raise FileNotFoundError(f"no tokenizer file at {url}")
        with fs.open(path, "r") as f:
            raw = f.read()
        try:
            return cls(Tokenizer.from_str(raw))
        except Exception as error:  # tokenizers raises its own exception type for malformed JSON
            raise ValueError(f"{url} is not a tokenizers JSON file: {error}") from None

    def save(self, url: str) -> str:
        fs, path = fsspec.core.url_to_fs(url)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "w") as f:
            f.write(self.to_json())
        return url

    def to_json(self) -> str:
        """The tokenizers JSON document (what `save` writes and `load` reads)."""
        return self.tokenizer.to_str()

    def sha256(self) -> str:
        """Identifies the vocabulary: token shards, checkpoints and exports must agree on it."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @property
    def eod_id(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def vocab_size(self) -> int:
        """Ids the model must embed: the BPE vocabulary plus the end-of-document id."""
        return self.eod_id + 1

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i != self.eod_id])

    def batch(self, rows: Sequence[Sequence[int]], token_bytes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The baseline's inputs for rows of ids: ``tokens`` right-padded with IGNORE, and their UTF-8 byte counts."""
        table = self.token_bytes() if token_bytes is None else token_bytes
        tokens = torch.full((len(rows), max(len(r) for r in rows)), IGNORE, dtype=torch.int64)
        for index, row in enumerate(rows):
            tokens[index, : len(row)] = torch.as_tensor(row, dtype=torch.int64)
        return {"tokens": tokens, "token_bytes": torch.where(tokens >= 0, table[tokens.clamp(min=0)], 0)}

    def token_bytes(self) -> torch.Tensor:
        """UTF-8 bytes each id stands for ([vocab_size] int64; 0 for end of document).

        The byte-level alphabet maps every byte to one printable character, so a token's byte count is the
        length of its string.
        """
        counts = torch.zeros(self.vocab_size, dtype=torch.int64)
        for token, index in self.tokenizer.get_vocab().items():
            counts[index] = len(token)
        return counts
