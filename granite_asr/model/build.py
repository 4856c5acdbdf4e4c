"""Build a randomly initialised model of any variant from a config or a preset name."""

from __future__ import annotations

import torch
from torch import nn

from ..config import SpeechConfig, preset


def build_model(config: SpeechConfig | str, *, device="cpu", dtype: torch.dtype | None = None) -> nn.Module:
    """`build_model("tiny")`, `build_model("2b-nar", device="meta")`, or from a `SpeechConfig`."""
    cfg = preset(config) if isinstance(config, str) else config
    with torch.device(device):
        if cfg.variant == "nar":
            from .nar import GraniteSpeechNAR

            model = GraniteSpeechNAR(cfg)
        else:
            from .speech_lm import GraniteSpeechLM

            model = GraniteSpeechLM(cfg)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()
