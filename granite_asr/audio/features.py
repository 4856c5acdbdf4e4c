"""Log-mel front end and frame stacking (SPEC §2.1–§2.3), in plain `torch.stft`.

torchaudio is not usable on our machines, so `MelSpectrogram(sample_rate=16000, n_fft=512, win_length=400,
hop_length=160, n_mels=80)` is rebuilt here with every torchaudio default made explicit. Sample → frame
arithmetic comes from `FrameGeometry` (granite_asr/lengths.py) and nowhere else.

Shapes (batch-first everywhere):
    B  clips in a batch             L  waveform samples (16 kHz)
    M  mel frames = L // hop + 1    F  one-sided FFT bins = n_fft // 2 + 1 (257)
    N  mel bands (80)               s  mel frames stacked per encoder frame (`SpeechConfig.frames_stacked`)
    T  encoder frames               D  feature width = s · N (160 for the official checkpoints)
    A  LLM audio tokens
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..config import FeatureConfig, SpeechConfig
from ..lengths import FrameGeometry, lengths_to_mask

# SPEC §2.1: log10 floor for silent bins, and the dynamic range kept below each utterance's maximum.
LOG_EPS = 1e-10
DYNAMIC_RANGE = 8.0


# ------------------------------------------------------------------------------------------ filterbank


def _hz_to_mel(freq: float) -> float:
    return 2595.0 * math.log10(1.0 + freq / 700.0)  # HTK mel scale


def mel_filterbank(cfg: FeatureConfig, device=None) -> torch.Tensor:
    """(F, N) triangular HTK filterbank, f_min = 0, f_max = sr / 2, no area normalisation.

    Mirrors `torchaudio.functional.melscale_fbanks(..., norm=None, mel_scale="htk")` step by step, in
    float64 like the rest of this module (see `power_mel`).
    """
    n_freqs = cfg.n_fft // 2 + 1
    f64 = torch.float64
    all_freqs = torch.linspace(0, cfg.sample_rate // 2, n_freqs, dtype=f64)  # (F,)
    m_max = _hz_to_mel(float(cfg.sample_rate // 2))
    m_pts = torch.linspace(_hz_to_mel(0.0), m_max, cfg.n_mels + 2, dtype=f64)  # (N + 2,)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)  # (N + 2,) band edges in Hz
    f_diff = f_pts[1:] - f_pts[:-1]  # (N + 1,)
    slopes = f_pts[None, :] - all_freqs[:, None]  # (F, N + 2)
    down = -slopes[:, :-2] / f_diff[:-1]  # (F, N) rising edge
    up = slopes[:, 2:] / f_diff[1:]  # (F, N) falling edge
    fb = torch.clamp(torch.minimum(down, up), min=0.0)  # (F, N)
    return fb.to(device) if device is not None else fb


# ------------------------------------------------------------------------------------------ log-mel


def power_mel(waveform: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """(B, L) or (L,) float waveform → (B, M, N) float64 mel power (before the log).

    torch.stft zero-pads a window shorter than n_fft centrally (400 → 512, 56 zeros each side), which is
    what torchaudio's Spectrogram does (SPEC §2.1). center=True with reflect padding gives M = L // hop + 1.

    Computed in float64, unlike the float32 reference: the "max − 8" floor keeps bins down to 1e-8 of the
    peak power, where float32 FFT rounding moves the log-mel of a pure tone by ~2e-5; float64 removes that
    (and the CPU/GPU FFT-library differences with it) for ~15 % more front-end time, which is negligible
    next to the encoder. The input is rounded to float32 first, as the reference does (`audio.float()`).
    """
    if waveform.dim() == 1:
        waveform = waveform[None]  # (1, L)
    if waveform.dim() != 2:
        raise ValueError(f"expected a waveform of shape (L,) or (B, L), got {tuple(waveform.shape)}")
    if not torch.is_floating_point(waveform):
        raise TypeError(f"waveform must be floating point, got {waveform.dtype}")
    if waveform.shape[-1] <= cfg.n_fft // 2:
        raise ValueError(
            f"{waveform.shape[-1]} samples is too short: center=True reflect padding needs more than "
            f"n_fft // 2 = {cfg.n_fft // 2}"
        )
    waveform = waveform.float().double()  # (B, L)
    window = torch.hann_window(cfg.win_length, periodic=True, dtype=torch.float64, device=waveform.device)
    spec = torch.stft(
        waveform,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )  # (B, F, M)
    power = spec.abs().pow(2.0)  # (B, F, M); torchaudio: `spec_f.abs().pow(power)`
    fb = mel_filterbank(cfg, device=waveform.device)  # (F, N)
    return torch.matmul(power.transpose(1, 2), fb)  # (B, M, N)


def log_compress(mel: torch.Tensor) -> torch.Tensor:
    """(B, M, N) mel power → float32 Whisper-style log-mel: log10, floor at (per-row max − 8), /4 + 1.

    The max is over time and bands of each batch row separately (SPEC §2.1), so the caller decides which
    frames belong to an utterance by what it passes in.
    """
    x = torch.clamp(mel, min=LOG_EPS).log10()  # (B, M, N)
    peak = x.amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1)
    return (torch.maximum(x, peak - DYNAMIC_RANGE) / 4.0 + 1.0).float()  # (B, M, N)


def log_mel(waveform: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """(L,) or (B, L) float waveform → (B, M, N) log-mel features of SPEC §2.1.

    A (B, L) input is B clips of the same length: each row gets its own max. Padded clips of different
    lengths must go through `FeatureExtractor`, which computes each clip alone.
    """
    return log_compress(power_mel(waveform, cfg))


def stretch_time(mel: torch.Tensor, size: int) -> torch.Tensor:
    """(B, M, N) log-mel → (B, size, N), its time axis resampled linearly (ends kept): the same spectra
    spoken M/size as fast, pitch and formants unchanged. One definition for the engine's re-encoding of
    saturated clips (`clip_features(tempo=...)`) and training's tempo perturbation
    (`train.data.random_tempo`), so the model trains on exactly what the engine feeds it."""
    out = torch.nn.functional.interpolate(mel.transpose(1, 2), size=size, mode="linear", align_corners=True)
    return out.transpose(1, 2)  # (B, size, N)


def stack_frames(mel: torch.Tensor, frames_stacked: int) -> torch.Tensor:
    """(B, s·T, N) → (B, T, s·N): frame s·k in dims 0..N-1, frame s·k+1 in dims N..2N-1, … (SPEC §2.2)."""
    b, m, n = mel.shape
    if m % frames_stacked:
        raise ValueError(f"{m} mel frames is not a multiple of frames_stacked={frames_stacked}")
    return mel.reshape(b, m // frames_stacked, frames_stacked * n)  # (B, T, D)


# ------------------------------------------------------------------------------------------ batches


@dataclass(frozen=True)
class AudioBatch:
    """Encoder inputs for a batch of clips, right-padded.

    input_features       (B, T, D) float32, zeros past `feature_lengths[i]`
    feature_lengths      (B,) long, valid encoder frames per clip
    audio_token_counts   (B,) long, LLM audio positions per clip (`FrameGeometry.audio_tokens`)
    input_features_mask  (B, A) bool, True on the first `audio_token_counts[i]` positions; the name and
                         meaning of the transformers reference's `input_features_mask` (projector outputs)
    num_samples          (B,) long, samples of each clip as given (before the short-clip padding)
    """

    input_features: torch.Tensor
    feature_lengths: torch.Tensor
    audio_token_counts: torch.Tensor
    input_features_mask: torch.Tensor
    num_samples: torch.Tensor

    def __len__(self) -> int:
        return self.input_features.shape[0]

    def to(self, device) -> AudioBatch:
        return AudioBatch(
            input_features=self.input_features.to(device),
            feature_lengths=self.feature_lengths.to(device),
            audio_token_counts=self.audio_token_counts.to(device),
            input_features_mask=self.input_features_mask.to(device),
            num_samples=self.num_samples.to(device),
        )


def _as_clip(audio, index: int) -> torch.Tensor:
    """One input clip → (L,) float32 tensor on its device; rejects what the reference rejects."""
    if isinstance(audio, np.ndarray):
        audio = np.require(audio, requirements=["C", "W"])  # torch.from_numpy needs writable memory
    clip = torch.from_numpy(audio) if isinstance(audio, np.ndarray) else audio
    if not isinstance(clip, torch.Tensor):
        raise TypeError(f"clip {index}: expected a numpy array or torch tensor, got {type(audio).__name__}")
    if clip.dim() == 2 and clip.shape[0] == 1:
        clip = clip[0]  # a (1, L) mono tensor, as torchaudio.load returns
    if clip.dim() != 1:
        raise ValueError(f"clip {index}: expected 1-D mono samples, got shape {tuple(clip.shape)}")
    if not torch.is_floating_point(clip):
        # SPEC §2.1: the reference raises for integer input; scaling is the loader's job (load_audio).
        raise TypeError(
            f"clip {index}: integer samples ({clip.dtype}) are not accepted; pass float audio in [-1, 1] "
            "(granite_asr.audio.load_audio converts PCM)"
        )
    if not bool(torch.isfinite(clip).all()):
        # One NaN would make the per-utterance max NaN and poison every frame of the clip.
        raise ValueError(f"clip {index}: contains NaN or Inf samples (load_audio replaces them with 0)")
    return clip.float()


class FeatureExtractor:
    """Waveforms → `AudioBatch`. Each clip is featurised alone, then padded (see `__call__`)."""

    def __init__(self, features: FeatureConfig, geometry: FrameGeometry):
        if features.hop_length != geometry.hop_length or features.sample_rate != geometry.sample_rate:
            raise ValueError("FeatureConfig and FrameGeometry disagree on hop_length / sample_rate")
        self.features = features
        self.geometry = geometry

    @classmethod
    def from_config(cls, config: SpeechConfig) -> FeatureExtractor:
        return cls(config.features, FrameGeometry.from_config(config))

    @property
    def feature_dim(self) -> int:
        return self.geometry.frames_stacked * self.features.n_mels

    @property
    def min_samples(self) -> int:
        """Shortest clip featurised as is; shorter ones are zero-padded to this (see `__call__`)."""
        return max(self.geometry.min_samples(), self.features.n_fft // 2 + 1)

    def clip_features(self, clip: torch.Tensor, tempo: float = 1.0) -> torch.Tensor:
        """(L,) float waveform → (T, D) stacked log-mel of one clip, T = FrameGeometry.encoder_frames(L).

        Which mel frames set the per-utterance max differs between the references (SPEC §2.2): the AR
        extractor takes the max over all M frames and only then drops the odd last one; the NAR extractor
        truncates the mel to s·(L // (hop·s)) frames first and takes the max over what is left.
        `used_mel_frames` gives the kept count in both cases.

        `tempo` τ ≠ 1 resamples the log-mel's time axis linearly to round(M·τ) frames before stacking:
        the same spectra, spoken 1/τ as fast (pitch and formants kept). The engine uses it to give a
        char-CTC head that has run out of frames room for every letter (`Engine._retempo`).
        """
        used = int(self.geometry.used_mel_frames(clip.shape[-1], tempo))
        mel = power_mel(clip, self.features)  # (1, M, N)
        x = log_compress(mel[:, :used]) if self.geometry.nar else log_compress(mel)  # (1, M, N)
        if tempo != 1.0:
            x = stretch_time(x, int(self.geometry.mel_frames(clip.shape[-1], tempo)))  # (1, M', N)
        return stack_frames(x[:, :used], self.geometry.frames_stacked)[0]  # (T, D)

    def __call__(self, audios, device=None, tempo: float = 1.0) -> AudioBatch:
        """`audios`: a list of 1-D float clips at `sample_rate` (numpy or torch), or one (L,) / (B, L) array.
        `tempo`: see `clip_features`.

        Features are computed per clip, then right-padded with zeros. The reference instead zero-pads
        the waveforms and takes one STFT over the batch (SPEC §2.3), so a short clip's last frames see
        zeros instead of reflect padding and it gains frames of padding. Per-clip features make a clip
        give the same result alone and in any batch (NOTES: the encoder masks padding for the same reason).

        Clips shorter than `min_samples` are zero-padded to that length, and `feature_lengths` /
        `audio_token_counts` follow the padded length. The floor is `FrameGeometry.min_samples()` (160
        samples for AR with s = 2, 1600 for the NAR, which needs 5 encoder frames for one audio token):
        an empty encoder sequence has no projector window and gives the LLM no audio position at all. It
        is raised to n_fft // 2 + 1 = 257 because reflect padding needs more samples than it pads. Trailing
        silence is the least surprising content to add. `num_samples` still reports the length as given.
        """
        clips = self.as_clips(audios)
        if device is not None:
            clips = [c.to(device) for c in clips]
        min_len = self.min_samples
        feats = []
        for clip in clips:
            if clip.shape[0] < min_len:
                clip = torch.nn.functional.pad(clip, (0, min_len - clip.shape[0]))  # (min_len,)
            feats.append(self.clip_features(clip, tempo))  # (T_i, D)
        num_samples = torch.tensor([c.shape[0] for c in clips], dtype=torch.long)
        lengths = self.geometry.encoder_frames(torch.clamp(num_samples, min=min_len), tempo)  # (B,)
        assert [f.shape[0] for f in feats] == lengths.tolist(), "features disagree with FrameGeometry"
        tokens = self.geometry.audio_tokens(lengths)  # (B,)
        padded = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True, padding_value=0.0)  # (B, T, D)
        mask = lengths_to_mask(tokens.to(padded.device))  # (B, A)
        dev = padded.device
        return AudioBatch(
            input_features=padded,
            feature_lengths=lengths.to(dev),
            audio_token_counts=tokens.to(dev),
            input_features_mask=mask,
            num_samples=num_samples.to(dev),
        )

    @staticmethod
    def as_clips(audios) -> list[torch.Tensor]:
        if isinstance(audios, (np.ndarray, torch.Tensor)):
            if audios.ndim == 1:
                audios = [audios]
            elif audios.ndim == 2:
                audios = list(audios)  # (B, L) → B clips of equal length
            else:
                raise ValueError(f"expected (L,) or (B, L) audio, got shape {tuple(audios.shape)}")
        if not isinstance(audios, Sequence) or len(audios) == 0:
            raise ValueError("expected a non-empty list of 1-D audio clips")
        return [_as_clip(a, i) for i, a in enumerate(audios)]
