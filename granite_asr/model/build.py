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
    if device != "meta":
        init_weights(model, std=0.02)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


@torch.no_grad()
def init_weights(model: nn.Module, std: float = 0.02) -> None:
    """Training init for the projector and decoder: normal(0, std) matrices and embeddings, zero biases
    (the transformers Granite/BLIP-2 `initializer_range`). The Conformer keeps PyTorch's fan-in defaults."""
    for name, mod in model.named_modules():
        if name.startswith("encoder"):
            continue
        if isinstance(mod, (nn.Linear, nn.Embedding)):
            mod.weight.normal_(0.0, std)
            if getattr(mod, "bias", None) is not None:
                mod.bias.zero_()
