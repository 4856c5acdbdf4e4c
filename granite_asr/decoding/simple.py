"""Minimal end-to-end decoding that proves a loaded model: audio arrays → text, one batch, greedy.

The production path (bucketing, beam search, long-form, timestamps) is `granite_asr.engine` and
`granite_asr.transcribe`; this one stays small on purpose and is what the model-core tests use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..audio.features import FeatureExtractor
from ..prompts import build_prompt, encode_prompts


@torch.inference_mode()
def greedy_transcribe(
    model: nn.Module,
    audios: Sequence[np.ndarray],
    *,
    task: str = "transcribe",
    language: str | None = None,
    target_language: str | None = None,
    max_new_tokens: int = 200,
) -> list[str]:
    """16 kHz mono float arrays → one string each, with the variant's own algorithm (AR greedy / NAR pass)."""
    if model.tokenizer is None:
        raise ValueError("this checkpoint has no tokenizer.json; cannot turn tokens into text")
    batch = FeatureExtractor.from_config(model.config)(list(audios))
    device = next(model.parameters()).device
    feats, lengths = batch.input_features.to(device), batch.feature_lengths.to(device)
    if model.variant == "nar":
        ids = model.generate(feats, lengths).tokens
    else:
        prompt = build_prompt(model.variant, task=task, language=language, target_language=target_language)
        input_ids, mask = encode_prompts(
            model.tokenizer, [prompt] * len(audios), batch.audio_token_counts.tolist()
        )
        out = model.generate(
            input_ids.to(device),
            feats,
            mask.to(device),
            feature_lengths=lengths,
            max_new_tokens=max_new_tokens,
            eos_token_id=model.tokenizer.eos_id,
        )
        eos, pad = model.tokenizer.eos_id, model.tokenizer.pad_id
        ids = [[t for t in row if t not in (eos, pad)] for row in out.tolist()]
    return [model.tokenizer.decode(r).strip() for r in ids]
