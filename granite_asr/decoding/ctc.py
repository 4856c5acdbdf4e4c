"""CTC-only decoding on the encoder's two heads (SPEC §3.6): the fastest path, no LLM.

- char head (348 labels, blank 0): greedy → collapse → characters (`granite_asr.char_vocab`);
- BPE head (`encoder.out_bpe`): posterior-pooled frames → greedy → collapse → token ids with the
  checkpoint's label scheme (2b's out_llm: blank 0, id = label − 1; NAR: blank = <|end_of_text|>).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import char_vocab
from ..model.conformer import EncoderOutput
from ..model.ctc import greedy_decode


@torch.inference_mode()
def encode(
    model: nn.Module, input_features: torch.Tensor, feature_lengths: torch.Tensor | None
) -> EncoderOutput:
    dtype = next(model.encoder.parameters()).dtype
    return model.encoder(input_features.to(dtype), feature_lengths)


def char_logits(model: nn.Module, enc: EncoderOutput) -> torch.Tensor:
    """Char-head logits (B, T', 348) where the checkpoint reads them (`SpeechConfig.ctc_char_layer`);
    T' = T · `encoder.char_upsample` at the last block (`char_lengths`)."""
    return model.encoder.char_logits(enc, final=model.config.ctc_char_layer == "final")


def char_lengths(model: nn.Module, enc: EncoderOutput) -> torch.Tensor:
    """(B,) valid frames of `char_logits(model, enc)`: `FrameGeometry.char_frames`, the one place that
    knows which head the checkpoint reads and its label rate (the engine's frame times use it too)."""
    return model.geometry.char_frames(enc.lengths)


def char_greedy(model: nn.Module, enc: EncoderOutput, logits: torch.Tensor | None = None) -> list[str]:
    """Greedy char-CTC transcripts from the char head (`char_logits`, or its (B, T, C) `logits` or
    log-probabilities when the caller already has them: the argmax is the same)."""
    logits = char_logits(model, enc) if logits is None else logits
    lengths = char_lengths(model, enc)
    return [char_vocab.decode(ids) for ids in greedy_decode(logits, lengths, char_vocab.BLANK)]


def bpe_greedy(model: nn.Module, enc: EncoderOutput) -> list[list[int]]:
    """Greedy BPE-CTC token ids (the NAR draft; 2b's self-speculative draft, SPEC §5.8)."""
    logits, lengths = model.encoder.bpe_logits(enc)
    cfg = model.config
    return greedy_decode(logits, lengths, cfg.bpe_blank_id, cfg.bpe_label_offset)
