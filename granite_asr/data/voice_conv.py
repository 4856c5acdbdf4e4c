"""WORLD voice conversion: new pseudo-speakers from any training voice (issue 4: unseen voices).

A TTS voice is one speaker: its pitch, its intonation range and its vocal-tract length (formants) are
fixed. Unseen voices are what limits the embedded model most (RESULTS sessions 3-16: held-out voice WER
far above held-out sentence WER; NOTES "voices are the bottleneck"), and DATA.md lists no more free
voices. The WORLD vocoder (Morise et al. 2016, "WORLD: a vocoder-based high-quality speech synthesis
system") splits speech into F0, a smooth spectral envelope and aperiodicity, so the three can be moved
independently and resynthesised:

- F0 is scaled by ``f0_ratio`` (a higher or lower voice) and its excursions around the utterance's mean
  log-F0 by ``f0_range`` (flat or lively intonation);
- the envelope's frequency axis is stretched by ``formant_ratio`` (> 1: a shorter vocal tract, formants
  up, as in children and many women; < 1: a longer one), which a pitch shift alone does not do;
- aperiodicity is warped with the envelope so breathy bands stay where the formants put them.

Unlike feature-space VTLP (`train --vtlp`), which moves harmonics and formants together, this gives
combinations of pitch and formants that none of the source voices has, and WORLD's own vocoder
character. pyworld (`pyworld-prebuilt` wheels) is the `train` extra's; nothing else imports it.

Shapes: x (N,) float32 mono samples; f0 (F,) Hz per 5 ms frame, 0 when unvoiced; sp / ap (F, K) with
K = fft_size // 2 + 1 frequency bins from 0 to sr / 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FRAME_PERIOD_MS = 5.0
F0_FLOOR, F0_CEIL = 50.0, 700.0  # Hz: the analysis range and the clamp after scaling


@dataclass(frozen=True)
class Conversion:
    """One pseudo-speaker: how far to move a voice (1.0 everywhere leaves it as it is)."""

    f0_ratio: float = 1.0
    formant_ratio: float = 1.0
    f0_range: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ConversionRanges:
    """Where `draw` samples conversions from; the ratios are drawn log-uniformly (symmetric up/down)."""

    f0_ratio: tuple[float, float] = (0.7, 1.45)
    formant_ratio: tuple[float, float] = (0.87, 1.17)
    f0_range: tuple[float, float] = (0.6, 1.5)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def draw(rng: np.random.Generator, ranges: ConversionRanges = ConversionRanges()) -> Conversion:
    return Conversion(
        f0_ratio=_log_uniform(rng, *ranges.f0_ratio),
        formant_ratio=_log_uniform(rng, *ranges.formant_ratio),
        f0_range=_log_uniform(rng, *ranges.f0_range),
    )


def warp_frequency(env: np.ndarray, ratio: float) -> np.ndarray:
    """Stretch each frame's frequency axis by `ratio`: out[:, k] = env[:, k / ratio] (linear
    interpolation; bins read from above Nyquist repeat the last bin)."""
    n_bins = env.shape[1]
    src = np.clip(np.arange(n_bins) / ratio, 0, n_bins - 1)  # (K,) fractional source bin
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_bins - 1)
    frac = (src - lo)[None, :]  # (1, K)
    return env[:, lo] * (1 - frac) + env[:, hi] * frac  # (F, K)


def scale_f0(f0: np.ndarray, ratio: float, excursion: float) -> np.ndarray:
    """Scale F0 by `ratio` and its log-domain excursions around the voiced mean by `excursion`."""
    voiced = f0 > 0
    if not voiced.any():
        return f0
    log_f0 = np.log(f0[voiced])
    mean = log_f0.mean()
    out = np.zeros_like(f0)
    out[voiced] = np.clip(np.exp(mean + excursion * (log_f0 - mean)) * ratio, F0_FLOOR, F0_CEIL)
    return out


def convert(x: np.ndarray, sr: int, conv: Conversion) -> np.ndarray:
    """Resynthesise `x` as the pseudo-speaker `conv`, at the input's RMS level and length."""
    import pyworld  # the train extra (pyworld-prebuilt); imported here so the package does not need it

    x = np.asarray(x, dtype=np.float64)
    if len(x) < int(sr * 4 * FRAME_PERIOD_MS / 1000) or not np.any(x):
        return x.astype(np.float32)  # too short to analyse (a few frames) or silent: nothing to move
    f0, t = pyworld.dio(x, sr, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_PERIOD_MS)
    f0 = pyworld.stonemask(x, f0, t, sr)  # refine dio's coarse estimate
    sp = pyworld.cheaptrick(x, f0, t, sr)  # (F, K)
    ap = pyworld.d4c(x, f0, t, sr)  # (F, K)
    if conv.formant_ratio != 1.0:
        sp = warp_frequency(sp, conv.formant_ratio)
        ap = warp_frequency(ap, conv.formant_ratio)
    f0 = scale_f0(f0, conv.f0_ratio, conv.f0_range)
    y = pyworld.synthesize(f0, np.ascontiguousarray(sp), np.ascontiguousarray(ap), sr, FRAME_PERIOD_MS)
    y = y[: len(x)]
    if len(y) < len(x):
        y = np.pad(y, (0, len(x) - len(y)))
    gain = np.sqrt(np.mean(x**2) / max(np.mean(y**2), 1e-12))
    return (y * gain).astype(np.float32)
