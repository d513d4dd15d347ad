"""The paper's baseline: a Llama-style model over byte-level BPE tokens, built from the HAT's own blocks.

Same `Stack` (RMSNorm, RoPE, SwiGLU) as the HAT backbone, plus a token embedding and an untied LM head
(paper Table 2 counts both). It returns the same kind of sums as `HATOutput`, so bits/byte is comparable:
cross-entropy summed over predicted tokens, divided by the UTF-8 bytes those tokens stand for.

Trainer plug-in point: a batch is a dict ``{"tokens": [B, T] int64, "token_bytes": [B, T] int64}`` and
``model(**batch)`` returns `BaselineOutput` (``loss`` to backpropagate, sums to aggregate) — the HAT's batch is
``{"word_bytes", "lengths"}`` with the same call. As for the HAT, the first position of a sequence is context
only; padding is `IGNORE` in ``tokens``.

Its export is a standard Llama checkpoint (`llama_export`): the same weights under Llama's tensor names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from hierpt.data.bpe import TOKENIZER_FILE, BPETokenizer
from hierpt.model.hat import IGNORE, Stack, StackConfig, from_preset, stack_flops

TOKENIZER_CONFIG = "tokenizer_config.json"


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


# The baseline's end-of-document id has no text in hierpt's vocabulary (hierpt.data.bpe); for Hugging Face
# tokenizers it is this special token, which `AutoTokenizer` appends at exactly that id.
EOD_TOKEN = "<|endoftext|>"

# hierpt's baseline tensors -> Llama's (transformers' LlamaForCausalLM): a fused tensor splits along dim 0 into
# the listed parts, in order. Both rotate query/key halves (x[:h/2], x[h/2:]) for RoPE, so no permutation.
LLAMA_LAYER = {
    "attn_norm.weight": ("input_layernorm.weight",),
    "attn.qkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attn.out.weight": ("self_attn.o_proj.weight",),
    "mlp_norm.weight": ("post_attention_layernorm.weight",),
    "mlp.gate_up.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "mlp.down.weight": ("mlp.down_proj.weight",),
}
LLAMA_OUTER = {
    "embed.weight": ("model.embed_tokens.weight",),
    "backbone.norm.weight": ("model.norm.weight",),
    "lm_head.weight": ("lm_head.weight",),
}


def llama_names(config: BaselineConfig) -> dict[str, tuple[str, ...]]:
    """Each baseline tensor's name and the Llama tensor(s) it becomes."""
    names = dict(LLAMA_OUTER)
    for layer in range(config.backbone.layers):
        ours, theirs = f"backbone.blocks.{layer}.", f"model.layers.{layer}."
        names |= {ours + name: tuple(theirs + part for part in parts) for name, parts in LLAMA_LAYER.items()}
    return names


def to_llama(state_dict: dict[str, torch.Tensor], config: BaselineConfig) -> dict[str, torch.Tensor]:
    return {
        part: tensor
        for name, parts in llama_names(config).items()
        for part, tensor in zip(parts, state_dict[name].chunk(len(parts)))
    }


def from_llama(config: BaselineConfig, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Llama export's tensors under the baseline's names (`hierpt.model.family.HubFormat.read`)."""
    return {name: torch.cat([tensors[part] for part in parts]) for name, parts in llama_names(config).items()}


def llama_config(config: BaselineConfig, tokenizer: BPETokenizer, dtype: torch.dtype) -> dict:
    """transformers' LlamaConfig fields of the baseline: no biases, untied head, multi-head (not grouped) keys."""
    stack = config.backbone
    return {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": config.vocab_size,
        "hidden_size": stack.dim,
        "intermediate_size": stack.mlp_hidden,
        "num_hidden_layers": stack.layers,
        "num_attention_heads": stack.heads,
        "num_key_value_heads": stack.heads,
        "head_dim": stack.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.seq_tokens,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,  # transformers 4's field; 5 reads rope_parameters
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": config.init_std,
        "bos_token_id": None,
        "eos_token_id": tokenizer.eod_id,
        "pad_token_id": None,
        "dtype": str(dtype).removeprefix("torch."),
    }


def tokenizer_config(config: BaselineConfig) -> dict:
    """What `AutoTokenizer` needs beside tokenizer.json: the fast tokenizer class and the end-of-document token."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOD_TOKEN,
        "model_max_length": config.seq_tokens,
        "clean_up_tokenization_spaces": False,
    }


def llama_export(
    config: BaselineConfig, tensors: dict[str, torch.Tensor], tokenizer: BPETokenizer, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], dict, dict, dict[str, str]]:
    """The baseline as a standard Llama checkpoint (`hierpt.model.family.HubFormat.write`): `LlamaForCausalLM`
    and `AutoTokenizer` load the export directory as it is."""
    files = {TOKENIZER_FILE: tokenizer.to_json(), TOKENIZER_CONFIG: json.dumps(tokenizer_config(config), indent=2)}
    metadata = {"tokenizer_sha256": tokenizer.sha256()}
    return to_llama(tensors, config), llama_config(config, tokenizer, dtype), metadata, files

