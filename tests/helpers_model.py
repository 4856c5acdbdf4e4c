"""Tiny random models with a real tokenizer, shared by the decoding, engine, transcribe, CLI, eval and
server tests."""

from __future__ import annotations

import dataclasses

import torch

import granite_asr
from granite_asr.config import preset

from .helpers_tokenizer import make_tokenizer
from .reference import unit_scale_init


def build_tiny(name: str = "tiny", seed: int = 0, plain_multipliers: bool = True):
    """A tiny model of preset `name` sized to the test tokenizer, at unit signal scale (not degenerate).

    `plain_multipliers`: with ×12 inputs and ×0.22 residuals a 2-layer decoder echoes its input token
    whatever the audio says (tied Plus loops on its last prompt token); unit multipliers let the audio matter.
    """
    tok = make_tokenizer()
    cfg = preset(name)
    text = {
        "vocab_size": tok.vocab_size,
        "eos_token_id": tok.eos_id,
        "bos_token_id": tok.eos_id,
        "pad_token_id": tok.pad_id,
    }
    if plain_multipliers:
        text |= {"embedding_multiplier": 1.0, "residual_multiplier": 1.0}
    bpe = {"tiny": tok.vocab_size + 1, "tiny-nar": tok.vocab_size, "tiny-plus": 0}[name]
    cfg = cfg.replace(
        text=dataclasses.replace(cfg.text, **text),
        encoder=dataclasses.replace(cfg.encoder, bpe_output_dim=bpe),
        audio_token_index=tok.audio_token_id,
        blank_token_id=tok.eos_id,
        bpe_blank_id=tok.eos_id if name == "tiny-nar" else 0,
    )
    torch.manual_seed(seed)
    model = granite_asr.build_model(cfg)
    unit_scale_init(model, seed)
    model.tokenizer = tok
    return model
