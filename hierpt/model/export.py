"""Consolidated weights (safetensors) + config JSON: what eval and generation load, without DeepSpeed.

An export is a directory (local or any fsspec URL) holding ``model.safetensors`` and ``config.json``.
``config.json`` is written last, so a directory without it is an incomplete export and is refused.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import fsspec
import torch
from safetensors.torch import load_file, save_file

from hierpt.model.hat import HAT, HATConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_export(state_dict: dict[str, torch.Tensor], config: HATConfig, url: str, metadata: dict | None = None) -> str:
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()}
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / WEIGHTS
        save_file(tensors, str(local), metadata={"format": "pt"})
        fs.put_file(str(local), f"{root}/{WEIGHTS}")
    document = {"model": config.to_dict(), "hierpt": metadata or {}}
    with fs.open(f"{root}/{CONFIG}", "w") as f:
        json.dump(document, f, indent=2)
    return url


def read_export_config(url: str) -> tuple[HATConfig, dict]:
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(f"{root}/{CONFIG}"):
        raise FileNotFoundError(f"{url} is not a complete hierpt export (no {CONFIG})")
    with fs.open(f"{root}/{CONFIG}") as f:
        document = json.load(f)
    return HATConfig.from_dict(document["model"]), document.get("hierpt", {})


def load_export(url: str, device: str | torch.device = "cpu") -> HAT:
    config, _ = read_export_config(url)
    fs, root = fsspec.core.url_to_fs(url)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / WEIGHTS
        fs.get_file(f"{root}/{WEIGHTS}", str(local))
        state = load_file(str(local), device=str(device))
    model = HAT(config).to(device)
    model.load_state_dict(state)
    return model.eval()
