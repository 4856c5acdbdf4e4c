"""The speech stage over encoder outputs computed once (`train speech --precompute-encoder`).

In the speech stage the encoder is frozen (IBM trains projector + LLM on a fixed encoder), so its output
for an utterance never changes; recomputing it every step spends most of a CPU step on a forward whose
result is known. `EncodedCache.build` runs the encoder once over a `FeatureCache` (bf16 autocast, length
buckets) and keeps `enc.features` in memory as float16, with the same `Utterance` index and the same
`features(u)` interface, so `epoch_batches`/`collate` batch it unchanged. A step is then the projector
and the decoder only: on this CPU about ten times more updates per hour for the part that has to learn
to read audio. What is lost is input augmentation (SpecAugment, VTLP act on log-mels); the recipe masks
channels and time spans of the encoder output instead (`spec_augment` with one "bin" per channel).

Shapes: B batch, T encoder frames, C encoder feature width (`EncoderConfig.output_width`), N audio
tokens per clip, L prompt + answer tokens, E decoder width.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from ..lengths import lengths_to_mask
from .data import FeatureCache, Utterance, bucket_batches, collate
from .objectives import SpeechExample, answer_loss, speech_inputs
from .precision import bf16_pays


class EncodedCache:
    """Encoder outputs of a whole split, in memory: `feats` (ΣT, C) float16 and the utterance index."""

    def __init__(self, items: list[Utterance], feats: np.ndarray):
        self.items, self.feats, self.dim = items, feats, int(feats.shape[1])

    def __len__(self) -> int:
        return len(self.items)

    def features(self, u: Utterance) -> np.ndarray:
        return np.asarray(self.feats[u.offset : u.offset + u.frames], dtype=np.float32)

    @staticmethod
    @torch.no_grad()
    def build(model: nn.Module, cache: FeatureCache, batch_frames: int = 20000) -> EncodedCache:
        """Run `model.encoder` (eval mode: BatchNorm running statistics, no dropout) over every utterance."""
        was_training = model.training
        model.eval()
        width = model.config.encoder.output_width
        device = next(model.parameters()).device  # the training device (recipe `--device`)
        chunks: dict[int, np.ndarray] = {}
        for batch in bucket_batches(cache.items, batch_frames, 64, None):
            fb = collate(cache, batch)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_pays(device.type)):
                enc = model.encoder(fb.features.to(device), fb.lengths.to(device))
            out = enc.features.float().cpu().numpy().astype(np.float16)  # (B, T, C)
            for i, u in enumerate(batch):
                chunks[u.index] = out[i, : int(enc.lengths[i])]
        model.train(was_training)
        items, parts, offset = [], [], 0
        for u in cache.items:
            x = chunks[u.index]
            items.append(dataclasses.replace(u, offset=offset, frames=int(x.shape[0])))
            parts.append(x)
            offset += x.shape[0]
        feats = np.concatenate(parts) if parts else np.zeros((0, width), np.float16)
        return EncodedCache(items, feats)


def encoded_speech_loss(model: nn.Module, batch, tokenizer, examples: list[SpeechExample]) -> dict:
    """`objectives.speech_loss` with `batch.features` = encoder outputs (B, T, C): projector → the
    audio slots of each prompt → decoder; cross-entropy on the answer tokens only. Encoder frames equal
    the log-mel frames after stacking, so `speech_inputs` counts the audio tokens from the same lengths."""
    ids, valid, labels = speech_inputs(model, tokenizer, batch, examples)
    feats = batch.features * lengths_to_mask(batch.lengths, batch.features.shape[1])[..., None]
    audio = model.projector(feats)  # (B, N, E)
    counts = model.geometry.audio_tokens(batch.lengths)
    embeds = model.merge_audio(ids, audio, lengths_to_mask(counts, audio.shape[1]))  # (B, L, E)
    return {"loss": answer_loss(model, embeds, valid, labels)}
