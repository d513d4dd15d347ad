"""The HAT model (paper variant, arXiv 2501.10322): byte encoder -> word backbone -> byte decoder.

Every word is ``[W] + its UTF-8 bytes``. A small bidirectional encoder reads each word on its own; its output
at ``[W]``, projected to the backbone width, is the word's vector. A causal Llama backbone runs over the
words of a sequence. The backbone output at word i, projected to the byte width, is position 0 of a small
causal decoder that spells word i+1 and then ``[W]`` (end of word). ``[S]`` is a one-byte dummy word that
ends a document; it is predicted like a word but without the trailing ``[W]``.

All words of a batch go through the encoder and the decoder as one ``[num_words, word_len]`` tensor.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from hierpt.splitting import END_OF_DOC, IGNORE, PAD, SPLITTER_NAME, WORD_MARK, splitter_version

VOCAB_SIZE = 256
# Byte modules run on words in length groups, four per doubling of length (words of up to 7 bytes share one):
# measured on `small` (benchmarks/RESULTS.md), padding fell from 24% to 13% of the computed byte positions
# and a CPU training step got 10% faster than with one group per doubling; more groups cost more calls.
GROUPS_PER_OCTAVE = 4
FIRST_GROUP = 3 * GROUPS_PER_OCTAVE


@dataclass(frozen=True)
class StackConfig:
    """One transformer stack (encoder, backbone or decoder): Llama blocks of one width."""

    dim: int
    layers: int
    heads: int
    mlp_multiple_of: int = 256

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def mlp_hidden(self) -> int:
        """Llama's SwiGLU width: 8/3 of dim rounded up, so a block holds ~12 dim^2 parameters."""
        hidden = int(8 * self.dim / 3)
        return self.mlp_multiple_of * math.ceil(hidden / self.mlp_multiple_of)


@dataclass(frozen=True)
class HATConfig:
    encoder: StackConfig
    backbone: StackConfig
    decoder: StackConfig
    max_word_bytes: int = 100
    seq_words: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("encoder", "backbone", "decoder"):
            stack = getattr(self, name)
            if stack.dim % stack.heads or stack.head_dim % 2:
                raise ValueError(f"{name}: dim {stack.dim} must split into {stack.heads} heads of even size")

    @classmethod
    def from_name(cls, name: str, **overrides) -> HATConfig:
        return from_preset(PRESETS, name, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> HATConfig:
        stacks = {k: StackConfig(**raw[k]) for k in ("encoder", "backbone", "decoder")}
        rest = {k: v for k, v in raw.items() if k not in stacks}
        return cls(**stacks, **rest)


def from_preset(presets: dict, name: str, **overrides):
    """A named config with field overrides; shared by the HAT and the baseline presets."""
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
    return replace(presets[name], **overrides)


def _paper(backbone_layers: int, backbone_dim: int, byte_layers: int, byte_heads: int) -> HATConfig:
    """Table 2 of the paper: head_dim 128 everywhere, heads = layers in the backbone."""
    byte = StackConfig(dim=byte_heads * 128, layers=byte_layers, heads=byte_heads)
    return HATConfig(
        encoder=byte,
        backbone=StackConfig(dim=backbone_dim, layers=backbone_layers, heads=backbone_dim // 128),
        decoder=byte,
        seq_words=2730,  # 16,384 bytes per document at ~6 bytes per word (paper §6.1)
    )


PRESETS: dict[str, HATConfig] = {
    "tiny": HATConfig(
        encoder=StackConfig(dim=64, layers=1, heads=2, mlp_multiple_of=32),
        backbone=StackConfig(dim=128, layers=2, heads=4, mlp_multiple_of=32),
        decoder=StackConfig(dim=64, layers=1, heads=2, mlp_multiple_of=32),
        max_word_bytes=32,
        seq_words=64,
    ),
    "small": HATConfig(
        encoder=StackConfig(dim=256, layers=2, heads=4),
        backbone=StackConfig(dim=512, layers=6, heads=8),
        decoder=StackConfig(dim=256, layers=2, heads=4),
        seq_words=256,
    ),
    "1b": _paper(backbone_layers=18, backbone_dim=2304, byte_layers=3, byte_heads=6),
    "3b": _paper(backbone_layers=28, backbone_dim=3584, byte_layers=3, byte_heads=6),
    "7b": _paper(backbone_layers=36, backbone_dim=4608, byte_layers=4, byte_heads=8),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(length: int, head_dim: int, theta: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :h/2], x[..., h/2:]) by position; x is [batch, heads, length, head_dim]."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.type_as(x)


class KVCache:
    """Keys and values of every layer of a causal stack, for generation: each new position attends to the
    cached ones instead of re-running the prefix.

    Row b holds positions [0, lengths[b]). A forward writes each row's new positions at that row's own end, so
    prompts of different lengths share one right-padded tensor and every position keeps the RoPE angle it has
    in training (left padding would shift them).
    """

    def __init__(self, stack: StackConfig, batch: int, capacity: int, like: torch.Tensor):
        shape = (stack.layers, batch, stack.heads, capacity, stack.head_dim)
        self.keys, self.values = like.new_zeros(shape), like.new_zeros(shape)
        self.lengths = torch.zeros(batch, dtype=torch.long, device=like.device)
        self.rope: tuple[torch.Tensor, torch.Tensor] | None = None  # RoPE tables over the capacity, made on first use

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]


class CacheSlot(NamedTuple):
    """One layer's part of a `KVCache` and where this forward's positions go: [B, T] indices."""

    keys: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor


class Attention(nn.Module):
    def __init__(self, stack: StackConfig):
        super().__init__()
        self.heads, self.head_dim = stack.heads, stack.head_dim
        self.qkv = nn.Linear(stack.dim, 3 * stack.dim, bias=False)
        self.out = nn.Linear(stack.dim, stack.dim, bias=False)

    def forward(self, x, cos, sin, causal: bool, mask: torch.Tensor | None, cache: CacheSlot | None = None):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # store this forward's keys and values, attend over all the row's positions
            rows = torch.arange(B, device=x.device)[:, None]
            cache.keys[rows, :, cache.positions] = k.transpose(1, 2)
            cache.values[rows, :, cache.positions] = v.transpose(1, 2)
            k, v = cache.keys, cache.values
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        return self.out(y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim))


class SwiGLU(nn.Module):
    def __init__(self, stack: StackConfig):
        super().__init__()
        self.gate_up = nn.Linear(stack.dim, 2 * stack.mlp_hidden, bias=False)
        self.down = nn.Linear(stack.mlp_hidden, stack.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, stack: StackConfig, eps: float):
        super().__init__()
        self.attn_norm, self.attn = RMSNorm(stack.dim, eps), Attention(stack)
        self.mlp_norm, self.mlp = RMSNorm(stack.dim, eps), SwiGLU(stack)

    def forward(self, x, cos, sin, causal: bool, mask: torch.Tensor | None = None, cache: CacheSlot | None = None):
        x = x + self.attn(self.attn_norm(x), cos, sin, causal, mask, cache)
        return x + self.mlp(self.mlp_norm(x))


class Stack(nn.Module):
    """Llama blocks with RoPE; causal (backbone, decoder) or bidirectional with a key mask (encoder)."""

    def __init__(self, stack: StackConfig, eps: float, theta: float, causal: bool):
        super().__init__()
        self.config, self.theta, self.causal = stack, theta, causal
        self.blocks = nn.ModuleList(Block(stack, eps) for _ in range(stack.layers))
        self.norm = RMSNorm(stack.dim, eps)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [B, T, dim]; key_mask [B, T] (encoder). With a cache, x holds each row's next T positions, of
        which `counts` [B] (default all T) are real: the row's cached length grows by that much."""
        if cache is not None:
            return self._cached(x, cache, counts)
        cos, sin = rope_tables(x.shape[1], self.config.head_dim, self.theta, x.device)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        for block in self.blocks:
            x = block(x, cos, sin, self.causal, mask)
        return self.norm(x)

    def _cached(self, x: torch.Tensor, cache: KVCache, counts: torch.Tensor | None) -> torch.Tensor:
        T = x.shape[1]
        counts = torch.full_like(cache.lengths, T) if counts is None else counts
        if int((cache.lengths + counts).max()) > cache.capacity:
            raise ValueError(f"KV cache of {cache.capacity} positions is full")
        # padding positions (past a row's count) may run past the end: clamped, they only overwrite padding
        positions = (cache.lengths[:, None] + torch.arange(T, device=x.device)).clamp(max=cache.capacity - 1)
        if cache.rope is None:  # once per cache, not per generated position
            cache.rope = rope_tables(cache.capacity, self.config.head_dim, self.theta, x.device)
        cos, sin = (table[positions][:, None] for table in cache.rope)  # [B, 1, T, head_dim/2]
        visible = torch.arange(cache.capacity, device=x.device) <= positions[..., None]  # causal over the row
        for layer, block in enumerate(self.blocks):
            slot = CacheSlot(cache.keys[layer], cache.values[layer], positions)
            x = block(x, cos, sin, False, visible[:, None], slot)
        cache.lengths += counts
        return self.norm(x)


class HATOutput(NamedTuple):
    """Loss plus the sums a caller needs to aggregate metrics exactly over many batches and ranks."""

    loss: torch.Tensor  # mean cross-entropy (nats) over all predicted positions
    nll_sum: torch.Tensor  # summed cross-entropy (nats)
    targets: torch.Tensor  # predicted positions: bytes + [W] + [S]
    utf8_bytes: torch.Tensor  # predicted positions that are real text bytes
    words: torch.Tensor  # predicted words
    words_correct: torch.Tensor  # words whose every byte and end mark the argmax got right

    @property
    def units(self) -> torch.Tensor:
        """Units of the model's sequence predicted (words), for throughput: the baseline counts tokens."""
        return self.words


class WordScores(NamedTuple):
    """Per predicted word, what `HATOutput` sums over a batch: evaluation splits the sums by document."""

    nll: torch.Tensor  # [n, L+1] cross-entropy (nats) per position: summed whole, the loss keeps training's order
    targets: torch.Tensor  # [n] predicted positions
    utf8_bytes: torch.Tensor  # [n] of them real text bytes
    correct: torch.Tensor  # [n] bool: the argmax got every byte and the end mark


# The paper's Table 2 split: each projection belongs to the byte module on its side.
MODULE_GROUPS = {
    "encoder": ("encoder_embed", "encoder", "encoder_to_backbone"),
    "backbone": ("backbone",),
    "decoder": ("backbone_to_decoder", "decoder_embed", "decoder", "lm_head"),
}


class HAT(nn.Module, PyTorchModelHubMixin, library_name="hierpt", tags=["hat", "byte-level"]):
    """`save_pretrained` writes a hierpt export (hierpt.model.export); `from_pretrained` reads one from a local
    directory or a Hugging Face Hub repository (`export.load_export` also reads any fsspec URL)."""

    module_groups = MODULE_GROUPS  # what `freeze` names

    def __init__(self, config: HATConfig):
        super().__init__()
        self.config = config
        enc, bb, dec = config.encoder, config.backbone, config.decoder
        self.encoder_embed = nn.Embedding(VOCAB_SIZE, enc.dim)
        self.encoder = Stack(enc, config.norm_eps, config.rope_theta, causal=False)
        self.encoder_to_backbone = nn.Linear(enc.dim, bb.dim, bias=False)
        self.backbone = Stack(bb, config.norm_eps, config.rope_theta, causal=True)
        self.backbone_to_decoder = nn.Linear(bb.dim, dec.dim, bias=False)
        self.decoder_embed = nn.Embedding(VOCAB_SIZE, dec.dim)
        self.decoder = Stack(dec, config.norm_eps, config.rope_theta, causal=True)
        self.lm_head = nn.Linear(dec.dim, VOCAB_SIZE, bias=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def encode_words(self, word_bytes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Word vectors [n, backbone_dim] from word bytes [n, L] (PAD after each word's `lengths` bytes).

        Words run in groups of similar length, each trimmed to its longest word: multilingual batches mix
        2-byte and 40-byte words, and padding all to the longest would multiply the encoder's work.
        """
        groups = length_groups(lengths, self.config.max_word_bytes)
        vectors = [self._encode_group(word_bytes[index, :width], lengths[index]) for index, width in groups]
        order = torch.cat([index for index, _ in groups])
        return torch.cat(vectors)[torch.argsort(order)]

    def _encode_group(self, word_bytes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        n, L = word_bytes.shape
        marks = torch.full((n, 1), WORD_MARK, dtype=torch.long, device=word_bytes.device)
        tokens = torch.cat((marks, word_bytes.long()), dim=1)
        key_mask = torch.arange(L + 1, device=tokens.device) <= lengths[:, None]
        hidden = self.encoder(self.encoder_embed(tokens), key_mask=key_mask)
        return self.encoder_to_backbone(hidden[:, 0])

    def run_backbone(self, word_vectors: torch.Tensor, cache: KVCache | None = None, counts=None) -> torch.Tensor:
        """Predictive embeddings [B, N, decoder_dim]: entry i conditions the spelling of word i+1.

        With a cache (generation), `word_vectors` are each row's next words (see `Stack.forward`)."""
        return self.backbone_to_decoder(self.backbone(word_vectors, cache=cache, counts=counts))

    def decode_logits(self, predictive: torch.Tensor, word_bytes: torch.Tensor) -> torch.Tensor:
        """Logits [n, L+1, 256] for spelling words [n, L] (teacher-forced) from predictive embeddings [n, d]."""
        inputs = torch.cat((predictive[:, None, :], self.decoder_embed(word_bytes.long())), dim=1)
        return self.lm_head(self.decoder(inputs))

    def forward(self, word_bytes: torch.Tensor, lengths: torch.Tensor) -> HATOutput:
        return self.spelling_loss(*self.predicted_words(word_bytes, lengths))

    def spelling_loss(self, predictive: torch.Tensor, spelled: torch.Tensor, spelled_lens: torch.Tensor) -> HATOutput:
        """Decoder loss of spelling words [n, L] from their predictive embeddings [n, d], teacher-forced."""
        groups = self.spelling_groups(predictive, spelled, spelled_lens)
        return merge_scores([self.score(logits, targets) for _, logits, targets in groups])

    def spelling_groups(self, predictive: torch.Tensor, spelled: torch.Tensor, spelled_lens: torch.Tensor):
        """Per length group of the words (as in encode_words): their indices, decoder logits [m, width+1, 256]
        and targets [m, width+1]."""
        for index, width in length_groups(spelled_lens, self.config.max_word_bytes):
            group_bytes = spelled[index, :width]
            logits = self.decode_logits(predictive[index], group_bytes)
            yield index, logits, end_of_word_targets(group_bytes, spelled_lens[index])

    def predict(self, word_bytes: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder logits [n, L+1, 256] and targets [n, L+1] of every predicted word, in row-major order."""
        predictive, spelled, spelled_lens = self.predicted_words(word_bytes, lengths)
        return self.decode_logits(predictive, spelled), end_of_word_targets(spelled, spelled_lens)

    def predicted_words(
        self, word_bytes: torch.Tensor, lengths: torch.Tensor, vectors: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Encoder + backbone: the predictive embedding [n, d] of every predicted word, its bytes and length.

        `vectors` [present words, backbone_dim] are the words' `encode_words` output when the caller has them:
        the encoder reads each word alone, so evaluation encodes each distinct word once."""
        B, N, L = word_bytes.shape  # sequences, words per sequence, bytes per word; lengths: [B, N], 0 = no word
        word_bytes = word_bytes.long()
        present = lengths > 0
        if vectors is None:
            vectors = self.encode_words(word_bytes[present], lengths[present])
        backbone_in = vectors.new_zeros(B, N, vectors.shape[-1]).index_put((present,), vectors)
        predictive = self.run_backbone(backbone_in)
        # word j is spelled from the backbone output at word j-1; the first word of a sequence is context only
        predicted = present[:, 1:]
        return predictive[:, :-1][predicted], word_bytes[:, 1:][predicted], lengths[:, 1:][predicted]

    @staticmethod
    def score(logits: torch.Tensor, targets: torch.Tensor) -> HATOutput:
        words = word_scores(logits, targets)
        count, nll_sum = words.targets.sum(), words.nll.sum()
        return HATOutput(
            loss=nll_sum / count.clamp(min=1),
            nll_sum=nll_sum.detach(),
            targets=count,
            utf8_bytes=words.utf8_bytes.sum(),
            words=torch.tensor(targets.shape[0], device=targets.device),
            words_correct=words.correct.sum(),
        )

    def num_params(self) -> dict[str, int]:
        return count_params(self)

    def _save_pretrained(self, save_directory) -> None:
        from hierpt.model.export import save_export  # the export module builds on this one

        save_export(self.state_dict(), self.config, str(save_directory))

    @classmethod
    def _from_pretrained(cls, *, model_id: str, map_location: str = "cpu", **hub_kwargs) -> HAT:
        from huggingface_hub import snapshot_download

        from hierpt.model.export import load_export

        if not os.path.isdir(model_id):  # a Hub repository id
            hub = ("revision", "cache_dir", "force_download", "local_files_only", "token")
            model_id = snapshot_download(model_id, **{key: hub_kwargs[key] for key in hub if key in hub_kwargs})
        return load_export(model_id, map_location)


def length_groups(lengths: torch.Tensor, max_word_bytes: int) -> list[tuple[torch.Tensor, int]]:
    """Words grouped by length + 1 on a log scale (`GROUPS_PER_OCTAVE`): (indices, longest length).

    The set of groups depends only on max_word_bytes, never on the batch: empty groups are kept, so every
    rank calls the byte modules equally often (ZeRO-3 gathers parameters per call, in lockstep).
    """
    keys = torch.ceil(GROUPS_PER_OCTAVE * torch.log2(lengths.float() + 1)).long().clamp(min=FIRST_GROUP)
    last = max(FIRST_GROUP, math.ceil(GROUPS_PER_OCTAVE * math.log2(max_word_bytes + 1)))
    groups = []
    for key in range(FIRST_GROUP, last + 1):
        index = torch.nonzero(keys == key).squeeze(1)
        groups.append((index, int(lengths[index].max()) if len(index) else 1))
    return groups


def merge_scores(scores: list[HATOutput]) -> HATOutput:
    """Sum the scores of disjoint groups of words; the loss stays the mean over all their targets."""
    targets = sum(s.targets for s in scores)
    return HATOutput(
        loss=sum(s.loss * s.targets for s in scores) / targets.clamp(min=1),
        nll_sum=sum(s.nll_sum for s in scores),
        targets=targets,
        utf8_bytes=sum(s.utf8_bytes for s in scores),
        words=sum(s.words for s in scores),
        words_correct=sum(s.words_correct for s in scores),
    )


def end_of_word_targets(word_bytes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Decoder targets [n, L+1]: the word's bytes, then [W] — except after the one-byte [S] word."""
    n, L = word_bytes.shape
    positions = torch.arange(L + 1, device=word_bytes.device)
    targets = torch.cat((word_bytes, word_bytes.new_full((n, 1), PAD)), dim=1).clone()
    is_doc_end = (lengths == 1) & (word_bytes[:, 0] == END_OF_DOC)
    targets[positions[None, :] == lengths[:, None]] = WORD_MARK
    targets[positions[None, :] > lengths[:, None]] = IGNORE
    targets[is_doc_end, 1] = IGNORE
    return targets.long()


def word_scores(logits: torch.Tensor, targets: torch.Tensor) -> WordScores:
    """Sums per word of decoder logits [n, L+1, 256] against targets [n, L+1] (`end_of_word_targets`)."""
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE, reduction="none")
    valid = targets != IGNORE
    byte_targets = valid & (targets < 256) & (targets != WORD_MARK) & (targets != END_OF_DOC)
    right = (logits.argmax(-1) == targets) | ~valid
    return WordScores(nll.view(targets.shape), valid.sum(1), byte_targets.sum(1), right.all(dim=1))


def group_parameters(model: nn.Module, group: str) -> list[nn.Parameter]:
    """Parameters of a freeze group (`module_groups` of the HAT or the baseline)."""
    return [p for part in model.module_groups[group] for p in getattr(model, part).parameters()]


def count_params(model: HAT) -> dict[str, int]:
    counts = {group: sum(p.numel() for p in group_parameters(model, group)) for group in MODULE_GROUPS}
    counts["total"] = sum(counts.values())
    return counts


def build_meta(config: HATConfig) -> HAT:
    """The model on the meta device: shapes and parameter counts without allocating a 7B model."""
    with torch.device("meta"):
        return HAT(config)


def stack_flops(stack: StackConfig, tokens_per_seq: float) -> float:
    """Forward FLOPs per token: 2 x weights, plus attention scores and values over tokens_per_seq keys."""
    weights = stack.layers * (4 * stack.dim**2 + 3 * stack.dim * stack.mlp_hidden)
    attention = stack.layers * 2 * 2 * stack.dim * tokens_per_seq
    return 2 * weights + attention


def flops_per_word(config: HATConfig, bytes_per_word: float) -> float:
    """Training FLOPs (forward + backward = 3 x forward) per word, for MFU and compute matching.

    Encoder and decoder each see bytes_per_word + 1 positions per word; the backbone one position per word
    with causal attention over seq_words/2 words on average.
    """
    enc, bb, dec = config.encoder, config.backbone, config.decoder
    byte_positions = bytes_per_word + 1
    encoder = byte_positions * stack_flops(enc, byte_positions) + 2 * enc.dim * bb.dim
    backbone = stack_flops(bb, config.seq_words / 2)
    decoder = 2 * bb.dim * dec.dim + byte_positions * (stack_flops(dec, byte_positions / 2) + 2 * dec.dim * VOCAB_SIZE)
    return 3 * (encoder + backbone + decoder)


def hub_export(
    config: HATConfig, tensors: dict[str, torch.Tensor], tokenizer: None, dtype: torch.dtype
) -> tuple[dict[str, torch.Tensor], dict, dict, dict[str, str]]:
    """A HAT export keeps hierpt's tensor names (`HAT.from_pretrained` reads it) and records the word splitter
    its words come from (`hierpt.model.family.HubFormat.write`)."""
    return tensors, {}, {"splitter": {"name": SPLITTER_NAME, "version": splitter_version()}}, {}
