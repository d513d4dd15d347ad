"""Consolidated weights (safetensors) + config JSON: what eval and generation load, without DeepSpeed.

An export is a directory (local or any fsspec URL) holding ``model.safetensors`` and ``config.json``, and for
a family that uses a tokenizer also its ``tokenizer.json`` (the model is meaningless without it).
``config.json`` is written last, so a directory without it is an incomplete export and is refused. It holds
``model`` (the hierpt config) and ``hierpt`` (metadata; ``model_kind`` names the family, and an export without
it is a HAT's, written before baselines existed), plus a Hugging Face ``model_type``. What the family writes
beside its weights is the family's `HubFormat` (hierpt/model/family.py):

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

from hierpt.data.bpe import BPETokenizer
from hierpt.model.family import FAMILIES, Family, family_of
from hierpt.model.hat import HAT

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


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
    tensors = {k: v.detach().to("cpu", DTYPES[dtype]).contiguous() for k, v in state_dict.items()}
    tensors, fields, family_metadata, files = family.hub.write(config, tensors, tokenizer, DTYPES[dtype])
    for name, text in files.items():
        fs.pipe_file(f"{root}/{name}", text.encode())
    fs.pipe_file(f"{root}/{WEIGHTS}", save(tensors, metadata={"format": "pt"}))
    metadata = {**(metadata or {}), "model_kind": family.name, **family_metadata}
    with fs.open(f"{root}/{CONFIG}", "w") as f:  # last: marks the export complete
        json.dump({"model_type": family.hub.model_type, **fields, "model": config.to_dict(), "hierpt": metadata},
                  f, indent=2)  # fmt: skip
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
    family = export_family(document)
    if document.get("model_type") == family.hub.model_type:
        return family.hub.read(family.config_type.from_dict(document["model"]), tensors)
    return tensors  # written before `model_type` existed: hierpt's names


def load_any_export(url: str, device: str | torch.device = "cpu") -> tuple[nn.Module, BPETokenizer | None]:
    """The model of either family in eval mode (fp32 weights, whatever the export's dtype), and its tokenizer
    (None for a family without one)."""
    document = read_export_document(url)
    family = export_family(document)
    model = family.model_type(family.config_type.from_dict(document["model"])).to(device)
    model.load_state_dict(read_weights(url, device))
    tokenizer = family.saved_tokenizer(url)
    return model.eval(), tokenizer


def load_export(url: str, device: str | torch.device = "cpu") -> HAT:
    """A HAT export (what generation and the demo read); another family's is refused."""
    family = export_family(read_export_document(url))
    if family.name != "hat":
        raise ValueError(f"{url} is a {family.name} export, not a HAT (only `hierpt eval` reads both)")
    return load_any_export(url, device)[0]
