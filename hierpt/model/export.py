"""Consolidated weights (safetensors) + config JSON: what eval and generation load, without DeepSpeed.

An export is a directory (local or any fsspec URL) holding ``model.safetensors`` and ``config.json``, and for
a family that uses a tokenizer also its ``tokenizer.json`` (the model is meaningless without it).
``config.json`` is written last, so a directory without it is an incomplete export and is refused. It holds
``model`` (the hierpt config) and ``hierpt`` (metadata; ``model_kind`` names the family, and an export without
it is a HAT's, written before baselines existed), plus a Hugging Face ``model_type``:

- a HAT export is ``hierpt_hat`` with hierpt's tensor names; `HAT.from_pretrained` reads it, and its metadata
  names the word splitter (``hat-splitter`` and its version) the model's words come from;
- a baseline export is a standard Llama checkpoint (``llama``, Llama's tensor names, ``tokenizer_config.json``):
  `transformers`' ``LlamaForCausalLM`` and ``AutoTokenizer`` load the directory as it is.

Exports written before ``model_type`` existed hold hierpt's tensor names for both families and still load.
"""

from __future__ import annotations

import json

import fsspec
import torch
from safetensors.torch import load, save
from torch import nn

from hierpt.data.bpe import TOKENIZER_FILE, BPETokenizer
from hierpt.model.baseline import BaselineConfig
from hierpt.model.family import FAMILIES, Family, family_of
from hierpt.model.hat import HAT
from hierpt.splitting import SPLITTER_NAME, splitter_version

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
MODEL_TYPES = {"hat": "hierpt_hat", "baseline": "llama"}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
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


def from_llama(tensors: dict[str, torch.Tensor], config: BaselineConfig) -> dict[str, torch.Tensor]:
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


def save_export(state_dict: dict[str, torch.Tensor], config, url: str, metadata: dict | None = None,
                tokenizer: BPETokenizer | None = None, dtype: str = "fp32") -> str:  # fmt: skip
    """Write an export of `config`'s family in `dtype` (fp32 or bf16); a family that uses a tokenizer needs
    `tokenizer`."""
    family = family_of(config)
    if family.uses_tokenizer != (tokenizer is not None):
        raise ValueError(f"a {family.name} export {'needs' if family.uses_tokenizer else 'takes no'} tokenizer")
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids but the model embeds {config.vocab_size}")
    if dtype not in DTYPES:
        raise ValueError(f"export dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    metadata = {**(metadata or {}), "model_kind": family.name}
    document = {"model_type": MODEL_TYPES[family.name]}
    tensors = {k: v.detach().to("cpu", DTYPES[dtype]).contiguous() for k, v in state_dict.items()}
    if tokenizer is None:
        metadata["splitter"] = {"name": SPLITTER_NAME, "version": splitter_version()}
    else:
        tokenizer.save(f"{url.rstrip('/')}/{TOKENIZER_FILE}")
        with fs.open(f"{root}/{TOKENIZER_CONFIG}", "w") as f:
            json.dump(tokenizer_config(config), f, indent=2)
        metadata["tokenizer_sha256"] = tokenizer.sha256()
        document |= llama_config(config, tokenizer, DTYPES[dtype])
        tensors = to_llama(tensors, config)
    fs.pipe_file(f"{root}/{WEIGHTS}", save(tensors, metadata={"format": "pt"}))
    with fs.open(f"{root}/{CONFIG}", "w") as f:  # last: marks the export complete
        json.dump({**document, "model": config.to_dict(), "hierpt": metadata}, f, indent=2)
    return url


def read_export_document(url: str) -> dict:
    """The export's config.json: {"model": <config>, "hierpt": <metadata, incl. model_kind>, "model_type": …}."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(f"{root}/{CONFIG}"):
        raise FileNotFoundError(f"{url} is not a complete hierpt export (no {CONFIG})")
    with fs.open(f"{root}/{CONFIG}") as f:
        return json.load(f)


def export_family(document: dict) -> Family:
    return FAMILIES[document.get("hierpt", {}).get("model_kind", "hat")]


def read_weights(url: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The export's tensors under hierpt's names (a Llama export's are renamed back)."""
    fs, root = fsspec.core.url_to_fs(url)
    with fs.open(f"{root}/{WEIGHTS}", "rb") as f:
        tensors = {name: tensor.to(device) for name, tensor in load(f.read()).items()}
    document = read_export_document(url)
    if document.get("model_type") == MODEL_TYPES["baseline"]:
        return from_llama(tensors, export_family(document).config_type.from_dict(document["model"]))
    return tensors


def load_any_export(url: str, device: str | torch.device = "cpu") -> tuple[nn.Module, BPETokenizer | None]:
    """The model of either family in eval mode (fp32 weights, whatever the export's dtype), and its tokenizer
    (None for a family without one)."""
    document = read_export_document(url)
    family = export_family(document)
    model = family.model_type(family.config_type.from_dict(document["model"])).to(device)
    model.load_state_dict(read_weights(url, device))
    tokenizer = BPETokenizer.load(f"{url.rstrip('/')}/{TOKENIZER_FILE}") if family.uses_tokenizer else None
    return model.eval(), tokenizer


def load_export(url: str, device: str | torch.device = "cpu") -> HAT:
    """A HAT export (what generation and the demo read); another family's is refused."""
    family = export_family(read_export_document(url))
    if family.name != "hat":
        raise ValueError(f"{url} is a {family.name} export, not a HAT (only `hierpt eval` reads both)")
    return load_any_export(url, device)[0]
