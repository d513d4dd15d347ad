"""Compute matching (paper §2.3): a baseline shape with the HAT's training FLOPs per byte.

FLOPs per byte are `hat.flops_per_word / bytes_per_word` for the HAT and `baseline.flops_per_token /
bytes_per_token` for the baseline, with both ratios measured on the same corpus. The HAT shape is given; the
baseline keeps the HAT backbone's head size and sees the same bytes per sequence, and its depth and width are
searched. Among shapes within `CLOSE` of the target, the one whose depth is nearest the HAT backbone's wins
(the paper's baselines are a little shallower than its HAT backbones); the result must hold within
`TOLERANCE` (the paper's "deviation < 5%").

``hierpt compute-match`` (hierpt/cli.py) measures the two ratios and prints both shapes and the baseline's
`model:` block for a job spec.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hierpt.model.baseline import BaselineConfig, flops_per_token
from hierpt.model.hat import HATConfig, StackConfig, flops_per_word

TOLERANCE = 0.05
CLOSE = 0.01
PAPER_COMPRESSION = {"bytes_per_word": 5.97, "bytes_per_token": 4.12}  # DCLM English, as the paper measured it


@dataclass(frozen=True)
class ComputeMatch:
    hat: HATConfig
    baseline: BaselineConfig
    bytes_per_word: float
    bytes_per_token: float
    hat_flops_per_byte: float
    baseline_flops_per_byte: float

    @property
    def deviation(self) -> float:
        """Relative gap of the baseline's FLOPs per byte from the HAT's."""
        return self.baseline_flops_per_byte / self.hat_flops_per_byte - 1

    def summary(self) -> dict:
        bb = self.baseline.backbone
        return {
            "bytes_per_word": self.bytes_per_word,
            "bytes_per_token": self.bytes_per_token,
            "hat": {
                "encoder": _shape(self.hat.encoder),
                "backbone": _shape(self.hat.backbone),
                "decoder": _shape(self.hat.decoder),
                "seq_words": self.hat.seq_words,
                "flops_per_byte": self.hat_flops_per_byte,
            },
            "baseline": {
                "backbone": _shape(bb),
                "vocab_size": self.baseline.vocab_size,
                "seq_tokens": self.baseline.seq_tokens,
                "flops_per_byte": self.baseline_flops_per_byte,
            },
            "deviation": self.deviation,
        }


def _shape(stack: StackConfig) -> str:
    return f"{stack.layers} layers x dim {stack.dim} ({stack.heads} heads)"


def baseline_flops_per_byte(config: BaselineConfig, bytes_per_token: float) -> float:
    return flops_per_token(config) / bytes_per_token


def hat_flops_per_byte(config: HATConfig, bytes_per_word: float) -> float:
    return flops_per_word(config, bytes_per_word) / bytes_per_word


def match_baseline(
    hat: HATConfig, vocab_size: int, bytes_per_word: float, bytes_per_token: float, max_layers: int | None = None
) -> ComputeMatch:
    """The baseline shape whose training FLOPs per byte match the HAT's; ValueError if none within 5%."""
    if bytes_per_word <= 0 or bytes_per_token <= 0:
        raise ValueError(f"bytes_per_word={bytes_per_word} and bytes_per_token={bytes_per_token} must be positive")
    target = hat_flops_per_byte(hat, bytes_per_word)
    head_dim = hat.backbone.head_dim
    seq_tokens = max(2, round(hat.seq_words * bytes_per_word / bytes_per_token))  # same bytes per sequence
    base = BaselineConfig(backbone=hat.backbone, vocab_size=vocab_size, seq_tokens=seq_tokens)
    candidates = []
    for layers in range(1, (max_layers or 2 * hat.backbone.layers + 2) + 1):
        for heads in range(1, 4 * hat.backbone.heads + 1):
            stack = replace(hat.backbone, layers=layers, heads=heads, dim=heads * head_dim)
            config = replace(base, backbone=stack)
            gap = abs(baseline_flops_per_byte(config, bytes_per_token) / target - 1)
            candidates.append((gap, abs(layers - hat.backbone.layers), config))
    close = [c for c in candidates if c[0] <= CLOSE]
    gap, _, best = min(close, key=lambda c: (c[1], c[0])) if close else min(candidates, key=lambda c: c[0])
    if gap > TOLERANCE:
        raise ValueError(
            f"no baseline shape within {TOLERANCE:.0%} of the HAT's FLOPs per byte (best is {gap:.1%} off); "
            "the LM head alone may cost more than the HAT at this vocab_size"
        )
    return ComputeMatch(
        hat=hat,
        baseline=best,
        bytes_per_word=bytes_per_word,
        bytes_per_token=bytes_per_token,
        hat_flops_per_byte=target,
        baseline_flops_per_byte=baseline_flops_per_byte(best, bytes_per_token),
    )


def baseline_model_spec(config: BaselineConfig) -> dict:
    """The `model:` block of a job spec for this baseline: the nearest preset (by width) plus what differs,
    less `seq_tokens`, which the token shards fix (`tokens.seq_tokens` of their prep)."""
    from hierpt.model.baseline import PRESETS

    preset = min(PRESETS, key=lambda name: abs(PRESETS[name].backbone.dim - config.backbone.dim))
    base, wanted = PRESETS[preset].to_dict(), config.to_dict()
    del wanted["seq_tokens"]
    overrides = {}
    for key, value in wanted.items():
        if isinstance(value, dict):
            changed = {k: v for k, v in value.items() if base[key][k] != v}
            if changed:
                overrides[key] = changed
        elif base[key] != value:
            overrides[key] = value
    return {"family": "baseline", "preset": preset, "overrides": overrides}
