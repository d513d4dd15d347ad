"""The paper's baseline: a Llama-style model over byte-level BPE tokens, built from the HAT's own blocks.

Same `Stack` (RMSNorm, RoPE, SwiGLU) as the HAT backbone, plus a token embedding and an untied LM head
(paper Table 2 counts both). It returns the same kind of sums as `HATOutput`, so bits/byte is comparable:
cross-entropy summed over predicted tokens, divided by the UTF-8 bytes those tokens stand for.

Trainer plug-in point: a batch is a dict ``{"tokens": [B, T] int64, "token_bytes": [B, T] int64}`` and
``model(**batch)`` returns `BaselineOutput` (``loss`` to backpropagate, sums to aggregate) — the HAT's batch is
``{"word_bytes", "lengths"}`` with the same call. As for the HAT, the first position of a sequence is context
only; padding is `IGNORE` in ``tokens``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hierpt.model.hat import IGNORE, Stack, StackConfig, from_preset, stack_flops


@dataclass(frozen=True)
class BaselineConfig:
    backbone: StackConfig
    vocab_size: int
    seq_tokens: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        stack = self.backbone
        if stack.dim % stack.heads or stack.head_dim % 2:
            raise ValueError(f"backbone: dim {stack.dim} must split into {stack.heads} heads of even size")
        if self.vocab_size < 2:
            raise ValueError(f"vocab_size: {self.vocab_size} is too small")
        if self.seq_tokens < 2:
            raise ValueError(f"seq_tokens: {self.seq_tokens} leaves nothing to predict")

    @classmethod
    def from_name(cls, name: str, **overrides) -> BaselineConfig:
        return from_preset(PRESETS, name, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> BaselineConfig:
        return cls(**{**raw, "backbone": StackConfig(**raw["backbone"])})


def _paper(layers: int, dim: int) -> BaselineConfig:
    """Table 2 of the paper: head_dim 128, heads = layers, 64k BPE vocabulary, 16,384-byte sequences."""
    return BaselineConfig(
        backbone=StackConfig(dim=dim, layers=layers, heads=dim // 128), vocab_size=65536, seq_tokens=4096
    )


# tiny/small: the compute matches of the HAT presets of the same name at the paper's compression
# (5.97 bytes/word, 4.12 bytes/token; `compute_match.PAPER_COMPRESSION`); 1b/3b/7b: the paper's Table 2.
PRESETS: dict[str, BaselineConfig] = {
    "tiny": BaselineConfig(
        backbone=StackConfig(dim=128, layers=3, heads=4, mlp_multiple_of=32), vocab_size=2048, seq_tokens=93
    ),
    "small": BaselineConfig(backbone=StackConfig(dim=640, layers=5, heads=10), vocab_size=8192, seq_tokens=371),
    "1b": _paper(layers=16, dim=2048),
    "3b": _paper(layers=24, dim=3072),
    "7b": _paper(layers=32, dim=4096),
}


class BaselineOutput(NamedTuple):
    """Loss plus sums for exact aggregation; bits/byte = nll_sum / ln 2 / utf8_bytes, as for `HATOutput`."""

    loss: torch.Tensor  # mean cross-entropy (nats) over predicted tokens
    nll_sum: torch.Tensor  # summed cross-entropy (nats)
    targets: torch.Tensor  # predicted tokens (text tokens + end of document)
    utf8_bytes: torch.Tensor  # UTF-8 bytes the predicted tokens stand for
    tokens_correct: torch.Tensor  # predicted tokens the argmax got right

    @property
    def units(self) -> torch.Tensor:
        return self.targets


class Baseline(nn.Module):
    # `freeze` groups, by analogy with the HAT's: what maps units to vectors, the backbone, what predicts units
    module_groups = {"encoder": ("embed",), "backbone": ("backbone",), "decoder": ("lm_head",)}

    def __init__(self, config: BaselineConfig):
        super().__init__()
        self.config = config
        dim = config.backbone.dim
        self.embed = nn.Embedding(config.vocab_size, dim)
        self.backbone = Stack(config.backbone, config.norm_eps, config.rope_theta, causal=True)
        self.lm_head = nn.Linear(dim, config.vocab_size, bias=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def forward(self, tokens: torch.Tensor, token_bytes: torch.Tensor) -> BaselineOutput:
        return self.score(*self.predict(tokens), token_bytes[:, 1:])

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, vocab] for token ids [B, T] (IGNORE after each sequence's end): entry t predicts t+1.

        Right padding never reaches a real position through causal attention, so no key mask is needed.
        """
        return self.lm_head(self.backbone(self.embed(tokens.clamp(min=0))))

    def predict(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [B, T-1, vocab] and targets [B, T-1] of the positions that have a next token (as `HAT.predict`)."""
        return self.logits(tokens)[:, :-1], tokens[:, 1:]

    @staticmethod
    def score(logits: torch.Tensor, targets: torch.Tensor, target_bytes: torch.Tensor) -> BaselineOutput:
        """Sums over the predicted tokens [B, T-1]; target_bytes [B, T-1] holds the UTF-8 bytes of each target."""
        valid = targets != IGNORE
        nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="none")
        nll_sum, count = nll.sum(), valid.sum()
        return BaselineOutput(
            loss=nll_sum / count.clamp(min=1),
            nll_sum=nll_sum.detach(),
            targets=count,
            utf8_bytes=target_bytes[valid].sum(),
            tokens_correct=((logits.argmax(-1) == targets) & valid).sum(),
        )

    def num_params(self) -> dict[str, int]:
        counts = {
            name: sum(p.numel() for p in getattr(self, name).parameters()) for name in ("embed", "backbone", "lm_head")
        }
        counts["total"] = sum(counts.values())
        return counts


def flops_per_token(config: BaselineConfig) -> float:
    """Training FLOPs (forward + backward = 3 x forward) per token, counted like `hat.flops_per_word`.

    The backbone attends over seq_tokens/2 tokens on average; the LM head is a dim x vocab matmul; the
    embedding is a lookup (no FLOPs). FLOPs per byte = this / bytes_per_token.
    """
    return 3 * (stack_flops(config.backbone, config.seq_tokens / 2) + 2 * config.backbone.dim * config.vocab_size)


def build_meta(config: BaselineConfig) -> Baseline:
    with torch.device("meta"):
        return Baseline(config)

