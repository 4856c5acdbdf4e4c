"""Top-level entry points: `load_model` (checkpoint directory, hub id, or the embedded default) and
`build_model` (random weights from a preset)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .model.build import build_model
from .model.checkpoint import load_pretrained

# The embedded default model ships inside the package (training issue); its directory is the official layout.
EMBEDDED_DIR = Path(__file__).parent / "assets" / "default"


def load_model(
    path_or_hub_id: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    revision: str | None = None,
) -> nn.Module:
    """Load a Granite Speech model: `.variant` in {"ar", "plus", "nar"}, `.config`, `.tokenizer`.

    `None` loads the embedded default model; otherwise a local directory in the official layout or a
    Hugging Face hub id (resolved through huggingface_hub, honouring HF_HUB_OFFLINE and its cache).
    """
    if path_or_hub_id is None:
        if not (EMBEDDED_DIR / "config.json").exists():
            raise FileNotFoundError(
                f"no embedded default model at {EMBEDDED_DIR}; pass a checkpoint directory or hub id"
            )
        path_or_hub_id = EMBEDDED_DIR
    return load_pretrained(path_or_hub_id, device=device, dtype=dtype, revision=revision)


__all__ = ["load_model", "build_model"]
