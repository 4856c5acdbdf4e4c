"""The one place for sample → mel frame → encoder frame → window → audio-token arithmetic.

Every other module (features, model masks, prompts, engine, timestamps, server, tests) asks a
`FrameGeometry` instead of redoing the division. Rules (SPEC §2.2, §3.6, §4.1, §6.2):

- mel frames:      M = L // hop + 1                        (torch.stft, center=True)
- tempo τ (char-CTC re-encoding of fast speech, AR/Plus geometry only): the log-mel time axis is
                   resampled to M' = round(M · τ) frames before stacking; each encoder frame then
                   spans 1/τ of its usual time (`frame_seconds`)
- encoder frames:  AR/Plus: T = M // s  (the odd trailing mel frame is dropped; s = frames stacked)
                   NAR:     T = L // (hop · s)              (mel truncated to s · (L // (hop · s)) first)
- projector:       windows W = ceil(T / window_size); AR tokens = W · (window_size / downsample_rate)
                   NAR tokens = T // downsample_rate         (the NAR keeps the first T // 5 of 3·W)
- BPE CTC frames:  ceil(T / bpe_pooling_window)
- char CTC frames: T · u where the checkpoint reads its char head at the last block with
                   `encoder.char_upsample` = u (else T); each spans 1/u of an encoder frame
- NAR edit slots:  max(2 n + 1, min_edit_sequence_length) for a draft of n tokens
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import SpeechConfig


def _ceil_div(a, b):
    return -(-a // b)


@dataclass(frozen=True)
class FrameGeometry:
    sample_rate: int
    hop_length: int
    frames_stacked: int
    window_size: int
    downsample_rate: int
    bpe_pooling_window: int
    nar: bool
    min_edit_sequence_length: int = 8
    char_upsample: int = 1

    @classmethod
    def from_config(cls, config: SpeechConfig) -> FrameGeometry:
        return cls(
            sample_rate=config.features.sample_rate,
            hop_length=config.features.hop_length,
            frames_stacked=config.frames_stacked,
            window_size=config.window_size,
            downsample_rate=config.downsample_rate,
            bpe_pooling_window=config.encoder.bpe_pooling_window,
            nar=config.variant == "nar",
            min_edit_sequence_length=config.min_edit_sequence_length,
            char_upsample=config.encoder.char_upsample if config.ctc_char_layer == "final" else 1,
        )

    # ------------------------------------------------------------------ counts (ints or LongTensors)
    def mel_frames(self, num_samples, tempo: float = 1.0):
        """Mel frames of a clip; with `tempo` ≠ 1, the count after its time axis is resampled."""
        return self.stretched(num_samples // self.hop_length + 1, tempo)

    @staticmethod
    def stretched(mel_frames, tempo: float):
        """M' = round(M · τ): mel frames after the time axis is resampled by `tempo` (1: unchanged)."""
        if tempo == 1.0:
            return mel_frames
        if isinstance(mel_frames, torch.Tensor):
            return torch.round(mel_frames.double() * tempo).long()
        return round(mel_frames * tempo)

    def stretched_encoder_frames(self, encoder_frames: int, tempo: float) -> int:
        """Encoder frames after `tempo` stretches the mel frames an encoder sequence was stacked from
        (training's tempo perturbation of cached features): stretched(T · s) // s."""
        return self.stretched(encoder_frames * self.frames_stacked, tempo) // self.frames_stacked

    def encoder_frames(self, num_samples, tempo: float = 1.0):
        if self.nar:
            if tempo != 1.0:
                raise ValueError("a tempo other than 1 applies to the AR/Plus geometry only")
            return num_samples // (self.hop_length * self.frames_stacked)
        return self.mel_frames(num_samples, tempo) // self.frames_stacked

    def used_mel_frames(self, num_samples, tempo: float = 1.0):
        """Mel frames kept before stacking (the rest are dropped)."""
        return self.encoder_frames(num_samples, tempo) * self.frames_stacked

    def projector_windows(self, encoder_frames):
        return _ceil_div(encoder_frames, self.window_size)

    @property
    def queries_per_window(self) -> int:
        return self.window_size // self.downsample_rate

    def audio_tokens(self, encoder_frames):
        """LLM audio positions for a clip of `encoder_frames` frames."""
        if self.nar:
            return encoder_frames // self.downsample_rate
        return self.projector_windows(encoder_frames) * self.queries_per_window

    def audio_tokens_for_samples(self, num_samples):
        return self.audio_tokens(self.encoder_frames(num_samples))

    def bpe_frames(self, encoder_frames):
        return _ceil_div(encoder_frames, self.bpe_pooling_window)

    def char_frames(self, encoder_frames):
        """Label frames of the char head the checkpoint reads (`ctc_char_layer`)."""
        return encoder_frames * self.char_upsample

    def edit_slots(self, draft_tokens: int) -> int:
        return max(2 * draft_tokens + 1, self.min_edit_sequence_length)

    # ------------------------------------------------------------------ time
    @property
    def encoder_frame_seconds(self) -> float:
        return self.hop_length * self.frames_stacked / self.sample_rate

    def frame_seconds(self, tempo: float = 1.0) -> float:
        """Audio time per encoder frame of features stretched by `tempo`."""
        return self.encoder_frame_seconds / tempo

    def char_frame_seconds(self, tempo: float = 1.0) -> float:
        """Audio time per char-head label frame (`char_frames`) of features stretched by `tempo`."""
        return self.frame_seconds(tempo) / self.char_upsample

    @property
    def audio_token_seconds(self) -> float:
        return self.encoder_frame_seconds * self.downsample_rate

    def seconds(self, num_samples: int) -> float:
        return num_samples / self.sample_rate

    def min_samples(self) -> int:
        """Shortest input that yields at least one encoder frame (and one NAR audio token)."""
        frames = self.downsample_rate if self.nar else 1
        n = 0
        while self.encoder_frames(n) < frames:
            n += self.hop_length
        return n


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) lengths → (B, max_len) bool mask, True on valid positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]
