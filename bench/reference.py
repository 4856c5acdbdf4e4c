"""transformers' `GraniteSpeechForConditionalGeneration` on OUR weights, for side-by-side timing (issue 6 item 2).

The reference is built on the meta device and adopts our tensors with `assign=True`, so both models hold
ONE copy of the weights (the 2b in fp32 is 9.3 GB; two copies would not fit next to the rest of the
machine). Non-persistent buffers the meta build left empty (RoPE tables) are recomputed by re-creating
the modules that own them on the CPU. Only the bench imports transformers; `granite_asr` never does.
"""

from __future__ import annotations

import torch
from torch import nn

from granite_asr.model.hf_config import config_to_hf

# Our official names → transformers-5 names (the inverse of `checkpoint.normalize_key`).
_TO_HF = (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    ("encoder.", "model.encoder."),
    ("projector.", "model.projector."),
)


def hf_key(key: str) -> str:
    for ours, theirs in _TO_HF:
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    return key


def _rebuild_meta_buffers(ref: nn.Module, ours: nn.Module) -> None:
    """Fill the meta buffers: from our same-named buffer (the encoder's Shaw table), or by re-creating
    the leaf module that owns them from its config (RoPE)."""
    own = {hf_key(k): b for k, b in ours.named_buffers()}
    for name, mod in list(ref.named_modules()):
        for bname, b in list(mod._buffers.items()):
            full = f"{name}.{bname}" if name else bname
            if b is not None and b.is_meta and full in own:
                mod._buffers[bname] = own[full]
        if not any(b is not None and b.is_meta for b in mod._buffers.values()):
            continue
        if any(p.is_meta for p in mod.parameters(recurse=False)) or list(mod.children()):
            raise RuntimeError(f"cannot rebuild {name}: it owns parameters or children")
        cfg = getattr(mod, "config", None)
        fresh = type(mod)(config=cfg) if cfg is not None else None
        if fresh is None:
            raise RuntimeError(f"meta buffer in {name} and no config to rebuild it from")
        parent_name, _, child = name.rpartition(".")
        setattr(ref.get_submodule(parent_name) if parent_name else ref, child, fresh)


def reference_model(ours: nn.Module) -> nn.Module:
    """transformers' model with `ours`' weights (shared storage, not copies); eval mode, our dtype."""
    from transformers import GraniteSpeechConfig, GraniteSpeechForConditionalGeneration

    if ours.variant != "ar":
        raise ValueError("transformers has a reference class for the 2b ('ar') only in this bench")
    d = config_to_hf(ours.config)
    d.pop("granite_asr", None)
    config = GraniteSpeechConfig(**d)
    dtype = ours.language_model.model.embed_tokens.weight.dtype
    with torch.device("meta"):
        ref = GraniteSpeechForConditionalGeneration(config)
    wanted = ref.state_dict()
    state = {hf_key(k): v for k, v in ours.state_dict().items() if hf_key(k) in wanted}
    tied = config.text_config.tie_word_embeddings
    if tied and "lm_head.weight" not in state:  # our tied head has no tensor of its own
        state["lm_head.weight"] = ours.language_model.model.embed_tokens.weight
    missing = [k for k in wanted if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise RuntimeError(f"reference keys without our tensor: {missing[:5]}")
    ref.load_state_dict(state, strict=False, assign=True)
    if tied:
        ref.tie_weights()
    for mod in ref.modules():  # BatchNorm counters the state dict may lack
        for n, b in mod._buffers.items():
            if b is not None and b.is_meta and n == "num_batches_tracked":
                mod._buffers[n] = torch.zeros((), dtype=torch.long)
    _rebuild_meta_buffers(ref, ours)
    ref.config.dtype = dtype
    return ref.eval()
