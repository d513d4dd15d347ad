"""Consolidated weights (safetensors) + config JSON: what eval and generation load, without DeepSpeed.

An export is a directory (local or any fsspec URL) holding ``model.safetensors`` and ``config.json``, and for
a family that uses a tokenizer also its ``tokenizer.json`` (the model is meaningless without it).
``config.json`` is written last, so a directory without it is an incomplete export and is refused. Its
``hierpt.model_kind`` names the family; an export without it is a HAT's (written before baselines existed).
"""

from __future__ import annotations

import json

import fsspec
import torch
from safetensors.torch import load, save
from torch import nn

from hierpt.data.bpe import TOKENIZER_FILE, BPETokenizer
from hierpt.model.family import FAMILIES, Family, family_of
from hierpt.model.hat import HAT

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_export(state_dict: dict[str, torch.Tensor], config, url: str, metadata: dict | None = None,
                tokenizer: BPETokenizer | None = None) -> str:  # fmt: skip
    """Write an export of `config`'s family; a family that uses a tokenizer needs `tokenizer`."""
    family = family_of(config)
    if family.uses_tokenizer != (tokenizer is not None):
        raise ValueError(f"a {family.name} export {'needs' if family.uses_tokenizer else 'takes no'} tokenizer")
    if tokenizer is not None and tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids but the model embeds {config.vocab_size}")
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    metadata = {**(metadata or {}), "model_kind": family.name}
    if tokenizer is not None:
        tokenizer.save(f"{url.rstrip('/')}/{TOKENIZER_FILE}")
        metadata["tokenizer_sha256"] = tokenizer.sha256()
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()}
    fs.pipe_file(f"{root}/{WEIGHTS}", save(tensors, metadata={"format": "pt"}))
    with fs.open(f"{root}/{CONFIG}", "w") as f:  # last: marks the export complete
        json.dump({"model": config.to_dict(), "hierpt": metadata}, f, indent=2)
    return url


def read_export_document(url: str) -> dict:
    """The export's config.json: {"model": <config>, "hierpt": <metadata, incl. model_kind>}."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(f"{root}/{CONFIG}"):
        raise FileNotFoundError(f"{url} is not a complete hierpt export (no {CONFIG})")
    with fs.open(f"{root}/{CONFIG}") as f:
        return json.load(f)


def export_family(document: dict) -> Family:
    return FAMILIES[document.get("hierpt", {}).get("model_kind", "hat")]


def read_weights(url: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    fs, root = fsspec.core.url_to_fs(url)
    with fs.open(f"{root}/{WEIGHTS}", "rb") as f:
        return {name: tensor.to(device) for name, tensor in load(f.read()).items()}


def load_any_export(url: str, device: str | torch.device = "cpu") -> tuple[nn.Module, BPETokenizer | None]:
    """The model of either family in eval mode, and its tokenizer (None for a family without one)."""
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
