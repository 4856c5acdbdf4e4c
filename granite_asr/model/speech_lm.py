"""The autoregressive speech LLM: 2b ("ar") and 2b-plus ("plus") (SPEC §1, §4.1, §5.4, §7.1).

Legend:
    B  batch    T  encoder frames    Din  stacked mel width    N  audio tokens (padded to the batch max)
    L  prompt length (left padded)   E  LLM width    V  vocabulary    G  generated tokens

Audio path: stacked log-mel → Conformer → (Plus: concat block-3 output) → window Q-Former → E.
The projector output replaces the `<|audio|>` placeholders in the prompt embeddings; the whole
sequence is then ×12 inside the decoder (SPEC §5.4).

Inputs mirror the transformers reference (`input_features`, `input_ids`, `attention_mask`,
`input_features_mask`); `feature_lengths` (B,) is our addition so padded clips are masked in the
encoder (the reference has no such mask, SPEC §2.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import SpeechConfig
from ..lengths import FrameGeometry, lengths_to_mask
from .conformer import ConformerEncoder, EncoderOutput
from .granite import GraniteForCausalLM
from .kv_cache import KVCache
from .qformer import WindowQFormerProjector


@dataclass
class SpeechLMOutput:
    logits: torch.Tensor  # (B, L, V), already ÷ logits_scaling
    hidden: torch.Tensor  # (B, L, E) final-normed
    audio_embeds: torch.Tensor | None = None  # (B, N, E)
    encoder: EncoderOutput | None = None


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Left-padded (B, L) validity → RoPE positions counting valid tokens only (pads get 0)."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


class GraniteSpeechLM(nn.Module):
    def __init__(self, config: SpeechConfig):
        super().__init__()
        if config.variant not in ("ar", "plus"):
            raise ValueError(f"GraniteSpeechLM builds 'ar' or 'plus', not {config.variant!r}")
        self.config = config
        self.variant = config.variant
        self.geometry = FrameGeometry.from_config(config)
        self.tokenizer = None
        self.encoder = ConformerEncoder(config.encoder)
        self.projector = WindowQFormerProjector(
            config.projector, config.window_size, config.num_queries, config.text.hidden_size
        )
        self.language_model = GraniteForCausalLM(config.text)

    # ------------------------------------------------------------------ audio → embeddings
    def encode_audio(
        self, input_features: torch.Tensor, feature_lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, EncoderOutput]:
        """(B, T, Din) → audio embeddings (B, N, E), tokens per clip (B,), encoder output."""
        dtype = self.language_model.model.embed_tokens.weight.dtype
        enc = self.encoder(input_features.to(dtype), feature_lengths)
        feats = enc.features
        if feature_lengths is not None:
            # A lone clip's last window is zero-padded; make batched clips see the same zeros.
            feats = feats * lengths_to_mask(enc.lengths, feats.shape[1])[..., None].to(feats.dtype)
        embeds = self.projector(feats)
        return embeds, self.geometry.audio_tokens(enc.lengths), enc

    def merge_audio(
        self, input_ids: torch.Tensor, audio_embeds: torch.Tensor, audio_valid: torch.Tensor
    ) -> torch.Tensor:
        """Token embeddings with each row's `<|audio|>` slots filled by its valid audio embeddings."""
        is_audio = input_ids == self.config.audio_token_index
        embeds = self.language_model.embed(torch.where(is_audio, 0, input_ids))  # (B, L, E)
        audio = audio_embeds[audio_valid].to(embeds.dtype)  # (ΣN_i, E)
        if int(is_audio.sum()) != audio.shape[0]:
            raise ValueError(
                f"audio placeholders and audio features do not match: {int(is_audio.sum())} "
                f"<|audio|> tokens in the prompts, {audio.shape[0]} audio embeddings"
            )
        return embeds.masked_scatter(is_audio[..., None], audio)

    def _audio_valid(self, counts, input_features_mask, n):
        if input_features_mask is not None:
            return input_features_mask.bool()
        return lengths_to_mask(counts, n)

    def embed_inputs(
        self, input_ids, input_features=None, input_features_mask=None, feature_lengths=None
    ) -> tuple[torch.Tensor, torch.Tensor | None, EncoderOutput | None]:
        if input_features is None:
            return self.language_model.embed(input_ids), None, None
        audio, counts, enc = self.encode_audio(input_features, feature_lengths)
        valid = self._audio_valid(counts, input_features_mask, audio.shape[1])
        return self.merge_audio(input_ids, audio, valid), audio, enc

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        feature_lengths: torch.Tensor | None = None,
    ) -> SpeechLMOutput:
        """Full-sequence forward (training, scoring): logits (B, L, V) for every prompt position."""
        embeds, audio, enc = self.embed_inputs(
            input_ids, input_features, input_features_mask, feature_lengths
        )
        valid = (
            torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        )
        hidden = self.language_model(embeds, valid, positions_from_mask(valid))
        return SpeechLMOutput(self.language_model.logits(hidden), hidden, audio, enc)

    # ------------------------------------------------------------------ incremental decoding
    def prefill(
        self, embeds: torch.Tensor, valid: torch.Tensor, capacity: int
    ) -> tuple[torch.Tensor, KVCache]:
        """Run the prompt into a fresh cache; return last-position logits (B, V) and the cache."""
        cache = self.language_model.new_cache(embeds.shape[0], capacity, dtype=embeds.dtype)
        hidden = self.language_model(embeds, valid, positions_from_mask(valid), cache)
        return self.language_model.logits(hidden[:, -1]), cache

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One decode step: tokens (B,), positions (B,) → logits (B, V)."""
        embeds = self.language_model.embed(tokens[:, None])  # (B, 1, E)
        valid = torch.ones_like(tokens[:, None], dtype=torch.bool)
        hidden = self.language_model(embeds, valid, positions[:, None], cache)
        return self.language_model.logits(hidden[:, -1])

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        feature_lengths: torch.Tensor | None = None,
        max_new_tokens: int = 200,
        min_new_tokens: int = 0,
        eos_token_id: int | None = None,
    ) -> torch.Tensor:
        """Greedy decoding with the KV cache → new tokens (B, G); rows that ended are padded with pad id.

        The batched engine (beam search, repetition guard, bucketing) lives in `granite_asr.engine`;
        this is the minimal reference-equivalent loop.
        """
        eos = self.config.text.eos_token_id if eos_token_id is None else eos_token_id
        pad = self.config.text.pad_token_id
        embeds, _, _ = self.embed_inputs(input_ids, input_features, input_features_mask, feature_lengths)
        valid = (
            torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        )
        logits, cache = self.prefill(embeds, valid, input_ids.shape[1] + max_new_tokens)
        pos = valid.long().sum(-1)  # next position per row
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        out = []
        for i in range(max_new_tokens):
            if i < min_new_tokens:
                logits[:, eos] = -float("inf")
            tok = torch.where(done, pad, logits.argmax(-1))
            out.append(tok)
            done = done | (tok == eos)
            if bool(done.all()) or i == max_new_tokens - 1:
                break
            logits = self.step(tok, pos, cache)
            pos = pos + 1
        return torch.stack(out, dim=1) if out else input_ids.new_zeros(input_ids.shape[0], 0)
