"""The two model families hierpt trains, the HAT and the paper's BPE baseline, and the few things that differ.

Data order, DeepSpeed, checkpoints, metrics and the scheduler are shared. A family says what a shard row
holds for it (words, or BPE ids of token shards), how its config is made from a preset, its training FLOPs
per unit, and how its exports are read back (a baseline export carries its tokenizer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from hierpt.data.bpe import BPETokenizer
from hierpt.model import baseline, hat
from hierpt.model.export import load_export

FamilyName = Literal["hat", "baseline"]


@dataclass(frozen=True)
class Family:
    name: FamilyName
    unit: Literal["words", "tokens"]  # what a shard row holds and the model predicts one at a time
    config_type: type
    model_type: type[nn.Module]
    flops_per_unit: Callable[[object, float], float]  # training FLOPs per word or token, for MFU
    build_meta: Callable[[object], nn.Module]  # the model on the meta device: shapes and counts, no weights

    def config(self, preset: str, overrides: dict | None = None):
        """A preset with field overrides (nested configs merge); unknown fields are named in the error."""
        base = self.config_type.from_name(preset).to_dict()
        for key, value in (overrides or {}).items():
            if key not in base:
                raise ValueError(
                    f"model.overrides.{key}: not a {self.config_type.__name__} field ({', '.join(sorted(base))})"
                )
            base[key] = {**base[key], **value} if isinstance(base[key], dict) else value
        return self.config_type.from_dict(base)


FAMILIES: dict[str, Family] = {
    "hat": Family("hat", "words", hat.HATConfig, hat.HAT, hat.flops_per_word, hat.build_meta),
    "baseline": Family(
        "baseline", "tokens", baseline.BaselineConfig, baseline.Baseline,
        lambda config, _: baseline.flops_per_token(config), baseline.build_meta,
    ),  # fmt: skip
}


def family_of(config) -> Family:
    return next(f for f in FAMILIES.values() if isinstance(config, f.config_type))


def load_any_export(url: str, device: str | torch.device = "cpu") -> tuple[nn.Module, BPETokenizer | None]:
    """A HAT export (tokenizer None) or a baseline export with its tokenizer."""
    if baseline.is_baseline_export(url):
        return baseline.load_baseline_export(url, device)
    return load_export(url, device), None
