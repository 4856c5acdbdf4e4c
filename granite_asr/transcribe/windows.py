"""Cut long audio into windows the model handles, at pauses (issue 3 §2; PEERS §7.2).

Speech regions (from `vad.speech_regions`) are merged greedily into windows of at most
`max_seconds`; a region too long for one window is cut at the quietest 20 ms frame in the last third of
the allowed span, so a cut almost never falls inside a word. Windows never overlap and never drop speech:
consecutive windows share their boundary when a long region is cut, and otherwise each window extends at
most `pad` into the pause, never past the pause's midpoint. No merge-and-deduplicate step is needed, so
no word can be repeated or lost at a boundary (the failure mode of overlapping 30 s chunks).

Windows are sample offsets into the file's waveform (absolute), so every timestamp derived from a window
is absolute: t = window.start / 16000 + time inside the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .vad import FRAME, SAMPLE_RATE, frame_energy_db, speech_regions

PAD_SECONDS = 0.2  # context kept around speech inside a window
SEARCH_FRACTION = 1 / 3  # a long region is cut in the last third of the allowed span
SMOOTH_FRAMES = 5  # 100 ms moving average of the frame energy before choosing a cut


@dataclass(frozen=True)
class Window:
    start: int  # absolute sample offsets of the audio handed to the model
    end: int
    speech_start: int  # first / last speech sample inside (absolute); segments without words use these
    speech_end: int

    @property
    def num_samples(self) -> int:
        return self.end - self.start

    def seconds(self, sample_rate: int = SAMPLE_RATE) -> tuple[float, float]:
        return self.start / sample_rate, self.end / sample_rate


def quietest_cut(audio: np.ndarray, lo: int, hi: int) -> int:
    """The sample offset in [lo, hi] at the centre of the quietest (smoothed) 20 ms frame; ties → latest."""
    f_lo, f_hi = lo // FRAME, max(lo // FRAME + 1, hi // FRAME)
    db = frame_energy_db(audio[f_lo * FRAME : f_hi * FRAME])  # (n,)
    if len(db) >= SMOOTH_FRAMES:
        db = np.convolve(db, np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES, mode="same")
    k = len(db) - 1 - int(np.argmin(db[::-1]))  # latest minimum: longer windows, fewer of them
    return int(min(max((f_lo + k) * FRAME + FRAME // 2, lo), hi))


def split_long_regions(
    audio: np.ndarray, regions: list[tuple[int, int]], limit: int
) -> list[tuple[int, int]]:
    """Regions longer than `limit` samples → consecutive pieces ≤ limit, cut at quiet frames."""
    out: list[tuple[int, int]] = []
    for a, b in regions:
        while b - a > limit:
            cut = quietest_cut(audio, a + int(limit * (1 - SEARCH_FRACTION)), a + limit)
            out.append((a, cut))
            a = cut
        out.append((a, b))
    return out


def plan_windows(
    audio: np.ndarray,
    regions: list[tuple[int, int]],
    *,
    max_seconds: float,
    sample_rate: int = SAMPLE_RATE,
    pad_seconds: float = PAD_SECONDS,
) -> list[Window]:
    """Speech regions → non-overlapping windows of at most `max_seconds`, each padded into its pauses."""
    if max_seconds <= 0:
        raise ValueError(f"chunk_seconds must be positive, got {max_seconds}")
    max_samples = int(max_seconds * sample_rate)
    pad = min(int(pad_seconds * sample_rate), max_samples // 4)
    pieces = split_long_regions(audio, regions, max_samples - 2 * pad)
    groups: list[list[int]] = []  # [core start, core end]
    for a, b in pieces:
        if groups and b - groups[-1][0] + 2 * pad <= max_samples:
            groups[-1][1] = b
        else:
            groups.append([a, b])
    windows = []
    for i, (a, b) in enumerate(groups):
        left = 0 if i == 0 else (groups[i - 1][1] + a) // 2
        right = len(audio) if i == len(groups) - 1 else (b + groups[i + 1][0]) // 2
        start, end = max(a - pad, left), min(b + pad, right)
        windows.append(Window(start, end, a, b))
    return windows


def windows_for(audio: np.ndarray, *, max_seconds: float, vad: bool = True) -> list[Window]:
    """The whole step: speech regions, then windows. Pure silence → []."""
    return plan_windows(audio, speech_regions(audio, vad=vad), max_seconds=max_seconds)
