"""Keep Plus speaker labels consistent across windows (issue 3 §3; PEERS §5.4: "speaker IDs not
consistent across chunks of 1 h audio").

2b-plus numbers speakers by order of appearance inside each window (SPEC §7.3), so "Speaker 1" of window
k is not "Speaker 1" of window k+1. The engine runs windows as one batch, so feeding the previous window's
text as `prefix_text` (the model's own mechanism) would serialise the windows; instead each window-local
speaker gets a voice signature — the mean of cepstral coefficients c1..c19 of the log-mel over its
words' loud frames, unit length — and is matched to the file's speakers found so far:

- local speakers of one window map to *distinct* file speakers (the model said they differ);
- a pair matches when its cosine similarity ≥ `MATCH_SIMILARITY`; best pairs are taken first;
- unmatched local speakers become new file speakers, numbered by order of appearance ("Speaker 1", …);
- a local speaker with less than `MIN_SECONDS` of speech has no reliable signature: it keeps the file
  speaker its local label had in the previous window, or takes the most similar one.

This is a heuristic, not a diarisation model: on synthetic voices it separates male/female clearly
(cosine ≈ 0.68 vs ≥ 0.99 for the same voice) but two similar voices can merge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..audio.features import power_mel
from ..config import FeatureConfig

MATCH_SIMILARITY = 0.85
MIN_SECONDS = 1.0
LOUD_DB = 3.0  # frames within 30 dB (3 log10 units) of the loudest frame count as speech
_FEATURES = FeatureConfig()
_N_MELS = _FEATURES.n_mels
# DCT-II rows 1..19 over the mel bands (c0, the loudness, says nothing about who speaks).
_DCT = np.cos(np.pi / _N_MELS * (np.arange(_N_MELS)[None, :] + 0.5) * np.arange(1, 20)[:, None])


def voice_signature(samples: np.ndarray) -> np.ndarray | None:
    """(L,) 16 kHz speech → (19,) unit cepstral mean, or None when there is too little audio."""
    if len(samples) < _FEATURES.n_fft:
        return None
    power = power_mel(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), _FEATURES)[0]
    log_mel = np.log10(np.maximum(power.numpy(), 1e-10))  # (M, N)
    level = log_mel.max(axis=1)
    loud = log_mel[level > level.max() - LOUD_DB]
    vec = (loud @ _DCT.T).mean(axis=0)  # (19,)
    norm = np.linalg.norm(vec)
    return vec / norm if norm > 0 else None


class SpeakerTracker:
    """One per file. `assign` maps a window's local labels to file-wide labels "Speaker N"."""

    def __init__(self, sample_rate: int = 16000):
        self.sample_rate = sample_rate
        self.centroids: list[np.ndarray] = []
        self.weights: list[float] = []
        self.previous: dict[str, int] = {}  # last window's local label → file speaker index

    @staticmethod
    def label(index: int) -> str:
        return f"Speaker {index + 1}"

    def assign(self, audio: np.ndarray, spans: Sequence[tuple[str, float, float]]) -> dict[str, str]:
        """spans: (local label, start s, end s) of each segment in the window → {local: global label}."""
        locals_ = list(dict.fromkeys(label for label, _, _ in spans))
        seconds = {lab: sum(e - s for lb, s, e in spans if lb == lab) for lab in locals_}
        sigs = {lab: self._signature(audio, [(s, e) for lb, s, e in spans if lb == lab]) for lab in locals_}
        mapping: dict[str, int] = {}
        # Reliable signatures first: best (similarity) pairs, each file speaker used once per window.
        pairs = sorted(
            (
                (float(sigs[lab] @ c), lab, j)
                for lab in locals_
                if sigs[lab] is not None and seconds[lab] >= MIN_SECONDS
                for j, c in enumerate(self.centroids)
            ),
            reverse=True,
        )
        for sim, lab, j in pairs:
            if sim >= MATCH_SIMILARITY and lab not in mapping and j not in mapping.values():
                mapping[lab] = j
        for lab in locals_:  # in order of appearance, so new speakers are numbered that way
            if lab in mapping:
                continue
            mapping[lab] = self._fallback(lab, sigs[lab], seconds[lab], set(mapping.values()))
        for lab in locals_:  # short turns still add evidence, weighted by their duration
            if sigs[lab] is not None:
                self._update(mapping[lab], sigs[lab], seconds[lab])
        self.previous = mapping
        return {lab: self.label(j) for lab, j in mapping.items()}

    def _fallback(self, lab: str, sig: np.ndarray | None, seconds: float, taken: set[int]) -> int:
        reliable = sig is not None and seconds >= MIN_SECONDS
        if not reliable:
            prev = self.previous.get(lab)
            if prev is not None and prev not in taken:
                return prev
            free = [j for j in range(len(self.centroids)) if j not in taken]
            if free and sig is not None:
                return max(free, key=lambda j: float(sig @ self.centroids[j]))
            if free:
                return free[0]
        self.centroids.append(sig if sig is not None else np.zeros(len(_DCT)))
        self.weights.append(0.0)
        return len(self.centroids) - 1

    def _update(self, j: int, sig: np.ndarray, seconds: float) -> None:
        w = self.weights[j]
        vec = (self.centroids[j] * w + sig * seconds) / (w + seconds)
        self.centroids[j] = vec / max(np.linalg.norm(vec), 1e-12)
        self.weights[j] = w + seconds

    def _signature(self, audio: np.ndarray, spans: list[tuple[float, float]]) -> np.ndarray | None:
        sr = self.sample_rate
        pieces = [audio[int(s * sr) : int(e * sr)] for s, e in spans]
        pieces = [p for p in pieces if len(p)]
        return voice_signature(np.concatenate(pieces)) if pieces else None
