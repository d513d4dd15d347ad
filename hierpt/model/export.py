"""Consolidated weights (safetensors) + config JSON: what eval and generation load, without DeepSpeed.

An export is a directory (local or any fsspec URL) holding ``model.safetensors`` and ``config.json``.
``config.json`` is written last, so a directory without it is an incomplete export and is refused.
"""

from __future__ import annotations

import json

import fsspec
import torch
from safetensors.torch import load, save

from hierpt.model.hat import HAT, HATConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_export(state_dict: dict[str, torch.Tensor], config: HATConfig, url: str, metadata: dict | None = None) -> str:
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()}
    fs.pipe_file(f"{root}/{WEIGHTS}", save(tensors, metadata={"format": "pt"}))
    document = {"model": config.to_dict(), "hierpt": metadata or {}}
    with fs.open(f"{root}/{CONFIG}", "w") as f:
        json.dump(document, f, indent=2)
    return url


def read_export_document(url: str) -> dict:
    """The export's config.json: {"model": <config>, "hierpt": <metadata, incl. model_kind for baselines>}."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(f"{root}/{CONFIG}"):
        raise FileNotFoundError(f"{url} is not a complete hierpt export (no {CONFIG})")
    with fs.open(f"{root}/{CONFIG}") as f:
        return json.load(f)


def read_weights(url: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    fs, root = fsspec.core.url_to_fs(url)
    with fs.open(f"{root}/{WEIGHTS}", "rb") as f:
        return {name: tensor.to(device) for name, tensor in load(f.read()).items()}


def read_export_config(url: str) -> tuple[HATConfig, dict]:
    document = read_export_document(url)
    metadata = document.get("hierpt", {})
    if metadata.get("model_kind", "hat") != "hat":
        raise ValueError(f"{url} is a {metadata['model_kind']} export, not a HAT (only `hierpt eval` reads both)")
    return HATConfig.from_dict(document["model"]), metadata


def load_export(url: str, device: str | torch.device = "cpu") -> HAT:
    config, _ = read_export_config(url)
    model = HAT(config).to(device)
    model.load_state_dict(read_weights(url, device))
    return model.eval()
