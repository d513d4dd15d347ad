"""The two model families hierpt trains, the HAT and the paper's BPE baseline: the one place they differ.

Data order, DeepSpeed, checkpoints, metrics and the scheduler are shared. A family says what a shard row
holds for it (words, or BPE ids of token shards) and which shape fields the shards fix, how its config is
made from a preset, how rows become model inputs, its training FLOPs per unit, how it generates text, and how
its export reads outside hierpt.
Adding a family is one model file and one entry in `FAMILIES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, NamedTuple

import torch
from torch import nn

from hierpt.data.bpe import TOKENIZER_FILE, BPETokenizer
from hierpt.data.loader import Collate, word_batch
from hierpt.data.shards import Manifest
from hierpt.model import baseline, hat
from hierpt.model.generate import SamplingConfig, generate_baseline, generate_hat_texts
from hierpt.splitting import DEFAULT_MAX_WORD_BYTES

FamilyName = Literal["hat", "baseline"]
SHARD_KIND = {"words": "word", "tokens": "BPE token"}  # a shard set by what its rows hold
Tensors = dict[str, torch.Tensor]


class HubFormat(NamedTuple):
    """How a family's export reads in the Hugging Face ecosystem (`hierpt.model.export`)."""

    model_type: str  # config.json's `model_type`
    # (config, tensors under hierpt's names, tokenizer or None, dtype) -> (tensors as written, config.json
    # fields, hierpt metadata, side files {name: text})
    write: Callable[[object, Tensors, BPETokenizer | None, torch.dtype], tuple[Tensors, dict, dict, dict[str, str]]]
    read: Callable[[object, Tensors], Tensors]  # (config, tensors as written) -> tensors under hierpt's names


@dataclass(frozen=True)
class Family:
    name: FamilyName
    unit: Literal["words", "tokens"]  # what a shard row holds and the model predicts one at a time
    config_type: type
    model_type: type[nn.Module]
    flops_per_unit: Callable[[object, float], float]  # training FLOPs per word or token, for MFU
    build_meta: Callable[[object], nn.Module]  # the model on the meta device: shapes and counts, no weights
    shard_shape: Callable[[Manifest], dict]  # the config fields the shards were cut to, by name
    generate: Callable[[nn.Module, BPETokenizer | None, Sequence[str], SamplingConfig], list[str]]
    # the longest word when its text is split into HAT words (word accuracy and compression, for every family)
    word_limit: Callable[[object], int]
    hub: HubFormat

    @property
    def uses_tokenizer(self) -> bool:
        """A token model is meaningless without its tokenizer: shards, checkpoints and exports carry it."""
        return self.unit == "tokens"

    def config(self, preset: str, overrides: dict | None = None, shards: Manifest | None = None, url: str = ""):
        """A preset with field overrides (nested configs merge); unknown fields are named in the error.

        Given the manifest of the shard set at `url`, the shape fields the shards were cut to come from it: an
        override may repeat one, and one that differs is refused by name. The shards must hold this family's
        unit, with a vocabulary that fits the config."""
        base = self.config_type.from_name(preset).to_dict()
        overrides = overrides or {}
        for key, value in overrides.items():
            if key not in base:
                raise ValueError(
                    f"model.overrides.{key}: not a {self.config_type.__name__} field ({', '.join(sorted(base))})"
                )
            base[key] = {**base[key], **value} if isinstance(base[key], dict) else value
        if shards is None:
            return self.config_type.from_dict(base)
        self._check_unit(shards, url)
        for field, prepared in self.shard_shape(shards).items():
            if overrides.get(field, prepared) != prepared:
                raise ValueError(
                    f"model.overrides.{field}={overrides[field]} but the shards {url} were prepared with "
                    f"{field}={prepared}: drop the override (the shards set it) or re-run prep"
                )
            base[field] = prepared
        config = self.config_type.from_dict(base)
        if shards.tokens is not None and shards.tokens.vocab_size > config.vocab_size:
            raise ValueError(
                f"model vocab_size={config.vocab_size} is smaller than the tokenizer of {url} "
                f"({shards.tokens.vocab_size} ids): set model.overrides.vocab_size"
            )
        return config

    def _check_unit(self, shards: Manifest, url: str) -> None:
        if shards.column != self.unit:
            held, needed = (SHARD_KIND[unit] for unit in (shards.column, self.unit))
            raise ValueError(
                f"data.shards {url} holds {held} shards but model.family {self.name} trains on {needed} shards "
                f"(token shards come from `hierpt prep --seq-tokens`)"
            )

    def saved_tokenizer(self, directory: str) -> BPETokenizer | None:
        """The tokenizer an export or checkpoint directory (local or a URL) holds, for a family that has one."""
        return BPETokenizer.load(f"{str(directory).rstrip('/')}/{TOKENIZER_FILE}") if self.uses_tokenizer else None

    def inputs(self, config, manifest: Manifest, url: str) -> tuple[Collate, BPETokenizer | None]:
        """How the shard set's rows become model inputs, and the tokenizer that travels with the model."""
        if not self.uses_tokenizer:
            return word_batch(config.max_word_bytes), None
        tokenizer = BPETokenizer.load(f"{url.rstrip('/')}/{manifest.tokens.tokenizer}")
        return partial(tokenizer.batch, token_bytes=tokenizer.token_bytes()), tokenizer


FAMILIES: dict[str, Family] = {
    "hat": Family(
        "hat", "words", hat.HATConfig, hat.HAT, hat.flops_per_word, hat.build_meta,
        shard_shape=lambda manifest: {"seq_words": manifest.seq_words, "max_word_bytes": manifest.max_word_bytes},
        generate=lambda model, _, prompts, sampling: generate_hat_texts(model, prompts, sampling),
        word_limit=lambda config: config.max_word_bytes,
        hub=HubFormat("hierpt_hat", hat.hub_export, read=lambda _, tensors: tensors),
    ),
    "baseline": Family(
        "baseline", "tokens", baseline.BaselineConfig, baseline.Baseline,
        lambda config, _: baseline.flops_per_token(config), baseline.build_meta,
        shard_shape=lambda manifest: {"seq_tokens": manifest.tokens.seq_tokens},
        generate=generate_baseline,
        word_limit=lambda _: DEFAULT_MAX_WORD_BYTES,
        hub=HubFormat("llama", baseline.llama_export, baseline.from_llama),
    ),
}  # fmt: skip


def family_of(config) -> Family:
    return next(f for f in FAMILIES.values() if isinstance(config, f.config_type))


def continue_texts(
    model: nn.Module, tokenizer: BPETokenizer | None, prompts: Sequence[str], sampling: SamplingConfig
) -> list[str]:
    """Either family's continuations of `prompts` (a loaded export: `hierpt.model.export.load_any_export`)."""
    return family_of(model.config).generate(model, tokenizer, prompts, sampling)
