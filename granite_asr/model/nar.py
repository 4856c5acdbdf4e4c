"""2b-nar: the NLE non-autoregressive editor (SPEC §6.2 at rev 99a4df9).

Legend:
    B  batch    T  encoder frames    K  BPE CTC frames (T / 4)    n  draft tokens    S = max(2n+1, 8) slots
    A  audio prefix tokens (T // 5)   E  LLM width    V  vocabulary (blank = blank_token_id)

One pass: CTC draft → blank-interleaved slots → [audio prefix ; slot embeddings] per clip, all clips
packed into ONE row with per-clip positions and a block-diagonal, non-causal mask → logits at the
slots → argmax → collapse → drop blank. No flash-attn needed: attention never crosses clips because
of the segment mask (SPEC §6.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import SpeechConfig
from ..lengths import FrameGeometry, lengths_to_mask
from .conformer import ConformerEncoder, EncoderOutput
from .ctc import collapse, greedy_decode
from .granite import GraniteForCausalLM
from .nar_projector import NarProjector


@dataclass
class NAROutput:
    tokens: list[list[int]]  # edited transcript token ids per clip
    draft: list[list[int]]  # the BPE CTC draft per clip
    slot_logits: list[torch.Tensor]  # (S_i, V) per clip, ÷ logits_scaling
    encoder: EncoderOutput | None = None


@dataclass
class PackedBatch:
    embeds: torch.Tensor  # (1, ΣL, E) unscaled (the decoder multiplies by 12)
    positions: torch.Tensor  # (1, ΣL) restarting at 0 for every clip
    segments: torch.Tensor  # (1, ΣL) clip index
    slot_spans: list[tuple[int, int]]  # [start, end) of each clip's slots in the packed row


class GraniteSpeechNAR(nn.Module):
    def __init__(self, config: SpeechConfig):
        super().__init__()
        if config.variant != "nar":
            raise ValueError("GraniteSpeechNAR needs a 'nar' config")
        if len(config.encoder_layer_indices) != config.projector.num_encoder_layers:
            raise ValueError("encoder_layer_indices and projector.num_encoder_layers disagree")
        self.config = config
        self.variant = "nar"
        self.geometry = FrameGeometry.from_config(config)
        self.tokenizer = None
        self.encoder = ConformerEncoder(config.encoder, taps=config.encoder_layer_indices, fp32_feedback=True)
        self.projector = NarProjector(config.projector)
        self.language_model = GraniteForCausalLM(config.text)

    # ------------------------------------------------------------------ stages
    def encode(self, input_features, feature_lengths=None) -> tuple[EncoderOutput, list[torch.Tensor]]:
        """Encoder + projector → encoder output and each clip's audio prefix (A_i, E)."""
        dtype = self.language_model.model.embed_tokens.weight.dtype
        enc = self.encoder(input_features.to(dtype), feature_lengths)
        valid = lengths_to_mask(enc.lengths, enc.features.shape[1]) if feature_lengths is not None else None
        audio = self.projector(enc.features, valid)  # (B, nb·Q, E)
        if self.config.scale_projected_embeddings:
            audio = audio / self.config.text.embedding_multiplier  # SPEC §6.2 step 5
        counts = self.geometry.audio_tokens(enc.lengths)
        return enc, [audio[i, : int(n)] for i, n in enumerate(counts)]

    def draft(self, enc: EncoderOutput) -> list[list[int]]:
        logits, lengths = self.encoder.bpe_logits(enc)
        return greedy_decode(logits, lengths, self.config.bpe_blank_id, self.config.bpe_label_offset)

    def slots(self, draft: list[int]) -> list[int]:
        """[b, t1, b, …, tn, b], right-padded with b to `min_edit_sequence_length` (SPEC §6.2 step 4)."""
        b = self.config.blank_token_id
        seq = [b]
        for t in draft:
            seq += [t, b]
        return seq + [b] * (self.geometry.edit_slots(len(draft)) - len(seq))

    def pack(self, audio: list[torch.Tensor], slots: list[list[int]]) -> PackedBatch:
        device = audio[0].device
        parts, positions, segments, spans = [], [], [], []
        start = 0
        for i, (a, s) in enumerate(zip(audio, slots, strict=True)):
            ids = torch.tensor(s, dtype=torch.long, device=device)
            parts += [a, self.language_model.embed(ids).to(a.dtype)]
            n = a.shape[0] + len(s)
            positions.append(torch.arange(n, device=device))
            segments.append(torch.full((n,), i, device=device))
            spans.append((start + a.shape[0], start + n))
            start += n
        return PackedBatch(
            torch.cat(parts)[None], torch.cat(positions)[None], torch.cat(segments)[None], spans
        )

    def edit(self, packed: PackedBatch) -> list[torch.Tensor]:
        """One bidirectional pass over the packed row → slot logits (S_i, V) per clip."""
        valid = torch.ones_like(packed.positions, dtype=torch.bool)
        hidden = self.language_model(
            packed.embeds, valid, packed.positions, causal=False, segments=packed.segments
        )[0]  # (ΣL, E)
        return [self.language_model.logits(hidden[a:b]) for a, b in packed.slot_spans]

    # ------------------------------------------------------------------ end to end
    def forward(self, input_features: torch.Tensor, feature_lengths: torch.Tensor | None = None) -> NAROutput:
        """Stacked features (B, T, Din) → edited token ids per clip (one editing pass)."""
        enc, audio = self.encode(input_features, feature_lengths)
        drafts = self.draft(enc)
        logits = self.edit(self.pack(audio, [self.slots(d) for d in drafts]))
        blank = self.config.blank_token_id
        tokens = [collapse(lg.argmax(-1), blank).tolist() for lg in logits]
        return NAROutput(tokens=tokens, draft=drafts, slot_logits=logits, encoder=enc)

    @torch.inference_mode()
    def generate(
        self, input_features: torch.Tensor, feature_lengths: torch.Tensor | None = None
    ) -> NAROutput:
        return self.forward(input_features, feature_lengths)
