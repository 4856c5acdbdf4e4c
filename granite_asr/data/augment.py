"""Waveform augmentations that make clean synthetic speech look more like real recordings.

All functions take float32 mono samples at ``sr`` (16 kHz) and an explicit ``np.random.Generator`` where
they draw anything, so a corpus built from a seed is reproducible. Only ``speed`` changes the length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soxr

SR = 16000


def speed(x: np.ndarray, factor: float, sr: int = SR) -> np.ndarray:
    """Kaldi-style speed perturbation: play ``factor`` times faster (tempo and pitch both move)."""
    return soxr.resample(x, sr * factor, sr).astype(np.float32)


def time_stretch(x: np.ndarray, factor: float, sr: int = SR) -> np.ndarray:
    """WSOLA: change tempo by ``factor`` keeping pitch. Output length ≈ len(x) / factor."""
    win = int(0.030 * sr)
    hop = win // 2
    tol = int(0.010 * sr)  # how far each input frame may slide to line up with the previous output
    w = np.hanning(win).astype(np.float32)
    n_out = int(len(x) / factor)
    xp = np.pad(x, (tol, win + tol + hop))
    out = np.zeros(n_out + win, np.float32)
    norm = np.zeros_like(out)
    prev = xp[tol : tol + win]  # the natural continuation of the previously copied frame
    for k, o in enumerate(range(0, n_out, hop)):
        center = int(k * hop * factor) + tol
        if k:
            # pick the offset whose frame best continues the previous one (max cross-correlation)
            seg = xp[center - tol : center + tol + win]
            corr = np.correlate(seg, prev[:win], mode="valid")
            center = center - tol + int(np.argmax(corr))
        frame = xp[center : center + win]
        out[o : o + win] += frame * w
        norm[o : o + win] += w
        prev = xp[center + hop : center + hop + win]
    return (out / np.maximum(norm, 1e-3))[:n_out]


def pitch_shift(x: np.ndarray, semitones: float, sr: int = SR) -> np.ndarray:
    """Shift pitch AND formants together (resample) then restore the duration (WSOLA).

    Moving formants with pitch imitates a shorter/longer vocal tract, i.e. a different-sized speaker,
    which is the speaker variation TTS voices lack most.
    """
    f = 2.0 ** (semitones / 12)
    y = time_stretch(speed(x, f, sr), 1.0 / f, sr)
    return _fit(y, len(x))


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-9)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    spec /= np.sqrt(np.maximum(f, 1.0))  # 1/f power
    return np.fft.irfft(spec, n).astype(np.float32)


def babble(n: int, rng: np.random.Generator, pool: list[np.ndarray], talkers: int = 4) -> np.ndarray:
    """Sum of random excerpts of other utterances: speech-shaped, speech-like interference."""
    out = np.zeros(n, np.float32)
    for _ in range(talkers):
        src = pool[int(rng.integers(len(pool)))]
        src = np.tile(src, int(np.ceil(n / max(len(src), 1))) + 1)
        start = int(rng.integers(len(src) - n + 1))
        seg = src[start : start + n]
        out += seg / _rms(seg)
    return out


def add_noise(
    x: np.ndarray,
    rng: np.random.Generator,
    snr_db: float,
    kind: str = "white",
    pool: list[np.ndarray] | None = None,
) -> np.ndarray:
    n = len(x)
    if kind == "babble" and pool:
        noise = babble(n, rng, pool)
    elif kind == "pink":
        noise = pink_noise(n, rng)
    else:
        noise = rng.standard_normal(n).astype(np.float32)
    scale = _rms(x) / (_rms(noise) * 10 ** (snr_db / 20))
    return (x + scale * noise).astype(np.float32)


def fftconvolve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = len(a) + len(b) - 1
    nfft = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(a, nfft) * np.fft.rfft(b, nfft), nfft)[:n]


def synthetic_rir(rng: np.random.Generator, rt60: float, sr: int = SR) -> np.ndarray:
    """Room impulse response: direct path + exponentially decaying noise tail (60 dB down at rt60)."""
    n = max(int(rt60 * sr), 16)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # ln(1000) = 6.9 -> -60 dB amplitude
    pre = int(rng.uniform(0.002, 0.010) * sr)  # gap before the first reflections
    tail[:pre] = 0.0
    rir = tail * rng.uniform(0.2, 0.6) / _rms(tail[pre:]) / np.sqrt(n)
    rir[0] = 1.0
    return rir.astype(np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator, rt60: float, sr: int = SR) -> np.ndarray:
    y = fftconvolve(x, synthetic_rir(rng, rt60, sr))[: len(x)]
    return (y * _rms(x) / _rms(y)).astype(np.float32)


def telephone(x: np.ndarray, sr: int = SR, mu_law: bool = True) -> np.ndarray:
    """Narrowband telephone channel: 8 kHz, 300-3400 Hz band-pass, optional 8-bit mu-law (G.711)."""
    y = soxr.resample(x, sr, 8000)
    spec = np.fft.rfft(y)
    f = np.fft.rfftfreq(len(y), 1 / 8000)
    spec *= ((f >= 300) & (f <= 3400)).astype(np.float64)
    y = np.fft.irfft(spec, len(y))
    if mu_law:
        peak = np.abs(y).max() + 1e-9
        c = np.sign(y) * np.log1p(255 * np.abs(y / peak)) / np.log1p(255)
        c = np.round(c * 127) / 127  # 8-bit code words
        y = peak * np.sign(c) * np.expm1(np.abs(c) * np.log1p(255)) / 255
    return _fit(soxr.resample(y.astype(np.float32), 8000, sr).astype(np.float32), len(x))


def gain(x: np.ndarray, db: float) -> np.ndarray:
    return (x * 10 ** (db / 20)).astype(np.float32)


def clip(x: np.ndarray, fraction: float) -> np.ndarray:
    """Hard-clip at ``fraction`` of the peak (an overdriven input stage)."""
    level = fraction * (np.abs(x).max() + 1e-9)
    return np.clip(x, -level, level).astype(np.float32)


@dataclass(frozen=True)
class AugmentPolicy:
    """Probability of each augmentation and the range its parameter is drawn from."""

    p_speed: float = 0.3
    speed_range: tuple[float, float] = (0.9, 1.1)
    p_pitch: float = 0.3
    pitch_range: tuple[float, float] = (-3.0, 3.0)  # semitones
    p_reverb: float = 0.3
    rt60_range: tuple[float, float] = (0.15, 0.8)
    p_noise: float = 0.5
    snr_range: tuple[float, float] = (5.0, 30.0)
    p_telephone: float = 0.15
    p_gain: float = 0.5
    gain_range: tuple[float, float] = (-12.0, 6.0)
    p_clip: float = 0.05
    clip_range: tuple[float, float] = (0.3, 0.8)


def augment(
    samples: np.ndarray,
    rng: np.random.Generator,
    policy: AugmentPolicy = AugmentPolicy(),
    *,
    pool: list[np.ndarray] | Callable[[], list[np.ndarray]] | None = None,
    log: list[str] | None = None,
) -> np.ndarray:
    """Apply a random subset of augmentations in a realistic order (talker → room → noise → channel).

    ``pool`` holds other utterances for babble noise (or is a callable making them, called only if babble
    is drawn, since making them costs synthesis time); ``log`` (if given) receives a description of each
    step, which the corpus writes to the manifest.
    """
    p, x = policy, np.asarray(samples, np.float32)
    log = [] if log is None else log

    def draw(prob: float) -> bool:
        return bool(rng.random() < prob)

    if draw(p.p_speed):
        f = float(rng.uniform(*p.speed_range))
        x = speed(x, f)
        log.append(f"speed={f:.3f}")
    if draw(p.p_pitch):
        s = float(rng.uniform(*p.pitch_range))
        x = pitch_shift(x, s)
        log.append(f"pitch={s:+.2f}st")
    if draw(p.p_reverb):
        t = float(rng.uniform(*p.rt60_range))
        x = reverb(x, rng, t)
        log.append(f"reverb_rt60={t:.2f}")
    if draw(p.p_noise):
        kind = ("white", "pink", "babble")[int(rng.integers(3))] if pool is not None else "white"
        if kind == "babble" and callable(pool):
            pool = pool()
        if kind == "babble" and not pool:
            kind = "pink"
        snr = float(rng.uniform(*p.snr_range))
        x = add_noise(x, rng, snr, kind, pool)
        log.append(f"noise={kind}@{snr:.1f}dB")
    if draw(p.p_telephone):
        x = telephone(x)
        log.append("telephone")
    if draw(p.p_gain):
        g = float(rng.uniform(*p.gain_range))
        x = gain(x, g)
        log.append(f"gain={g:+.1f}dB")
    if draw(p.p_clip):
        c = float(rng.uniform(*p.clip_range))
        x = clip(x, c)
        log.append(f"clip={c:.2f}")
    # keep within [-1, 1] so FLAC/PCM16 storage doesn't wrap; this is a limiter, not part of the policy
    peak = float(np.abs(x).max()) if x.size else 0.0
    return x / peak * 0.99 if peak > 0.99 else x
