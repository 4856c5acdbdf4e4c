"""Where is speech? Silero VAD (the model ships inside the `silero-vad` wheel) or an energy gate.

Hallucination on silence and noise is the top complaint about Whisper-style tools (PEERS §5.1); the fix
people ship is VAD gating, so audio with no speech never reaches the LLM (→ empty text).

- **Silero**: the batched "sequence" ONNX export (`SileroVADSequence`: numpy + onnxruntime, one ONNX call
  per 16 s block, ≈ 1.8 ms per second of audio on one CPU thread), then Silero's own probability →
  timestamp state machine. Loaded once per process, offline, CPU only.
- **Energy gate** (`vad=False`, or Silero unavailable): 20 ms frame RMS; everything above −60 dBFS is kept.
  It only removes digital silence and near-silence: with `vad=False` the user asked for *no* speech
  detection, so noise, music and speech are all transcribed.

Importing `silero_vad` calls `torch.set_num_threads(1)` as a side effect; `_load_silero` restores the
caller's thread count so the engine keeps all its cores.

Regions are (start, end) sample offsets at 16 kHz, sorted and disjoint. Memory is O(frames), never a
copy of the waveform, so 1-hour inputs stay cheap.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np

SAMPLE_RATE = 16000
FRAME = 320  # 20 ms energy frames
SILENCE_DBFS = -60.0  # below this a 20 ms frame is silence whatever the detector
_BLOCK = 1 << 20  # samples per energy block (bounded temporaries on long inputs)

# Silero thresholds: its defaults, except a longer pad so word onsets/offsets are never clipped.
SILERO = {
    "threshold": 0.5,
    "min_speech_duration_ms": 250,
    "min_silence_duration_ms": 100,
    "speech_pad_ms": 100,
}
ENERGY_MIN_GAP = 0.3  # s: pauses shorter than this do not split an energy region
ENERGY_PAD = 0.1  # s


class VADUnavailableWarning(UserWarning):
    """Silero VAD could not be loaded; the energy gate is used instead."""


def frame_energy_db(audio: np.ndarray, frame: int = FRAME) -> np.ndarray:
    """(L,) samples → (ceil(L / frame),) RMS level per frame in dBFS (−120 for digital silence)."""
    n = -(-len(audio) // frame)
    out = np.empty(n, dtype=np.float32)
    for first in range(0, n, _BLOCK // frame):
        chunk = audio[first * frame : (first + _BLOCK // frame) * frame].astype(np.float32, copy=False)
        m = -(-len(chunk) // frame)
        padded = np.zeros(m * frame, dtype=np.float32)
        padded[: len(chunk)] = chunk
        power = np.square(padded).reshape(m, frame).mean(axis=1)  # (m,)
        out[first : first + m] = 10.0 * np.log10(np.maximum(power, 1e-12))
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(n,) bool → [(first, one past last)] of its True runs."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def energy_regions(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    """Everything louder than −60 dBFS, with short pauses bridged and a little padding."""
    loud = frame_energy_db(audio) > SILENCE_DBFS
    runs = _runs(loud)
    gap = int(ENERGY_MIN_GAP * sample_rate / FRAME)
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] <= gap:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    pad = int(ENERGY_PAD * sample_rate)
    return [(max(0, a * FRAME - pad), min(len(audio), b * FRAME + pad)) for a, b in merged]


@functools.lru_cache(maxsize=1)
def _load_silero():
    """The Silero sequence model, or None (with one warning) when it cannot be loaded here."""
    try:
        import torch

        threads = torch.get_num_threads()
        try:
            from silero_vad import load_silero_vad
        finally:
            torch.set_num_threads(threads)  # undo silero_vad's import-time set_num_threads(1)
        with warnings.catch_warnings():  # its resource lookup uses a deprecated importlib API
            warnings.simplefilter("ignore", DeprecationWarning)
            return load_silero_vad(sequence=True)
    except Exception as e:  # ImportError, onnxruntime missing or a broken wheel: all mean "no Silero"
        warnings.warn(
            f"Silero VAD unavailable ({type(e).__name__}: {e}); using the energy gate instead "
            "(pip install silero-vad onnxruntime)",
            VADUnavailableWarning,
            stacklevel=3,
        )
        return None


def silero_available() -> bool:
    return _load_silero() is not None


def silero_regions(audio: np.ndarray, model) -> list[tuple[int, int]]:
    from silero_vad import get_speech_timestamps_from_probs

    probs = model.audio_forward(np.ascontiguousarray(audio, dtype=np.float32), sampling_rate=SAMPLE_RATE)
    stamps = get_speech_timestamps_from_probs(
        probs.tolist(), sampling_rate=SAMPLE_RATE, audio_length_samples=len(audio), **SILERO
    )
    return [(int(s["start"]), int(s["end"])) for s in stamps]


def speech_regions(audio: np.ndarray, *, vad: bool = True) -> list[tuple[int, int]]:
    """(L,) 16 kHz samples → sorted, disjoint (start, end) sample ranges worth transcribing.

    With `vad`, Silero decides (falling back to the energy gate if it cannot load); the energy gate then
    also trims Silero's regions to what is above −60 dBFS, so digital silence never counts as speech.
    """
    if len(audio) == 0:
        return []
    if not vad:
        return energy_regions(audio)
    model = _load_silero()
    if model is None:
        return energy_regions(audio)
    loud = energy_regions(audio)
    return _intersect(silero_regions(audio, model), loud)


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out
