"""Top-level entry points: `load_model` (checkpoint directory, hub id, or the embedded default) and
`build_model` (random weights from a preset).

Both return plain `nn.Module`s with one extra instance attribute, `model.transcribe(...)` (issue 3's API),
a bound method set here so that model code never imports the transcription layer (pipeline rule:
audio → model → decoding → engine → transcribe → api/cli). `copy.deepcopy` rebinds it to the copy.
"""

from __future__ import annotations

import os
import types
from pathlib import Path

import torch
from torch import nn

from .model.build import build_model as _build_model
from .model.checkpoint import load_pretrained
from .model.quantize import quantize_int8

# The embedded default model ships inside the package (training issue); its directory is the official layout.
EMBEDDED_DIR = Path(__file__).parent / "assets" / "default"
# Its siblings, loadable by name: the 2b-nar and 2b-plus compositions trained from it (they read the
# shared encoder from `default`, `checkpoint.BASE_WEIGHTS`).
EMBEDDED_NAMES = ("default", "default-nar", "default-plus")
# `load_model(quantize=...)`: None (weights as stored) or "int8" (CPU, `granite_asr.model.quantize`; issue 6).
QUANTIZE = (None, "int8")


def resolve_embedded(path_or_hub_id: str | os.PathLike | None) -> str | os.PathLike:
    """None → the embedded default's directory; an embedded name → its directory (unless a local
    directory of that name exists); anything else unchanged."""
    name = "default" if path_or_hub_id is None else str(path_or_hub_id)
    if name not in EMBEDDED_NAMES or Path(name).exists():
        return path_or_hub_id
    directory = EMBEDDED_DIR.parent / name
    if not (directory / "config.json").exists():
        raise FileNotFoundError(
            f"no embedded model {name!r} at {directory}; pass a checkpoint directory or hub id"
        )
    return directory


def load_model(
    path_or_hub_id: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    revision: str | None = None,
    quantize: str | None = None,
) -> nn.Module:
    """Load a Granite Speech model: `.variant` in {"ar", "plus", "nar"}, `.config`, `.tokenizer`.

    `None` loads the embedded default model; otherwise a local directory in the official layout or a
    Hugging Face hub id (resolved through huggingface_hub, honouring HF_HUB_OFFLINE and its cache).
    The names in `EMBEDDED_NAMES` ("default-nar", "default-plus") load the embedded siblings unless a
    local directory of that name exists.

    `quantize="int8"`: int8 weights for CPU inference (`granite_asr.model.quantize`: every Linear of
    encoder, projector and decoder); the rest of the model stays in `dtype`.
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {QUANTIZE}, not {quantize!r}")
    path_or_hub_id = resolve_embedded(path_or_hub_id)
    model = load_pretrained(path_or_hub_id, device=device, dtype=dtype, revision=revision)
    if quantize == "int8":
        quantize_int8(model)
    return _with_transcribe(model)


def _with_transcribe(model: nn.Module) -> nn.Module:
    """Bind `granite_asr.transcribe.pipeline.transcribe_method` as `model.transcribe`."""
    from .transcribe.pipeline import transcribe_method

    model.transcribe = types.MethodType(transcribe_method, model)
    return model


def build_model(config, *, device="cpu", dtype: torch.dtype | None = None) -> nn.Module:
    """`granite_asr.model.build.build_model` (random weights) with `model.transcribe` attached."""
    return _with_transcribe(_build_model(config, device=device, dtype=dtype))


__all__ = ["load_model", "build_model"]
