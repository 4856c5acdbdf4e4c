"""WORLD voice conversion (granite_asr/data/voice_conv.py) and its place in corpus builds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from granite_asr.data import corpus
from granite_asr.data import voice_conv as vc

SR = 16000


def _voiced(f0: float, formant: float, seconds: float = 1.5) -> np.ndarray:
    """A pulse train at `f0` through one resonance at `formant` Hz: a vowel with one formant."""
    n = int(SR * seconds)
    x = np.zeros(n)
    x[:: int(SR / f0)] = 1.0
    r, w = 0.97, 2 * np.pi * formant / SR  # two-pole resonator
    y = np.zeros(n)
    for i in range(n):
        y[i] = x[i] + 2 * r * np.cos(w) * y[i - 1] * (i >= 1) - r * r * y[i - 2] * (i >= 2)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


def _pitch(x: np.ndarray) -> float:
    """F0 by autocorrelation over 60-400 Hz (independent of WORLD's own analysis)."""
    x = x[len(x) // 4 : -len(x) // 4].astype(np.float64)
    ac = np.correlate(x, x, "full")[len(x) - 1 :]
    lo, hi = SR // 400, SR // 60
    return SR / (lo + int(np.argmax(ac[lo:hi])))


def _formant(x: np.ndarray) -> float:
    """The peak of the smoothed long-term spectrum between 500 and 2500 Hz."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    smooth = np.convolve(spec, np.ones(301) / 301, "same")  # ~200 Hz: bridges the harmonics
    band = (freqs > 500) & (freqs < 2500)
    return float(freqs[band][np.argmax(smooth[band])])


def test_warp_frequency_moves_a_peak_by_the_ratio():
    env = np.full((3, 513), 1e-3)
    env[:, 100] = 1.0
    up, down = vc.warp_frequency(env, 1.2), vc.warp_frequency(env, 0.8)
    assert up.shape == env.shape and np.argmax(up[0]) == 120 and np.argmax(down[0]) == 80
    np.testing.assert_allclose(vc.warp_frequency(env, 1.0), env)


def test_scale_f0_keeps_unvoiced_frames_and_scales_the_range():
    f0 = np.array([0.0, 100.0, 200.0, 0.0, 141.421356])
    out = vc.scale_f0(f0, 1.5, 1.0)
    np.testing.assert_allclose(out, f0 * 1.5)
    flat = vc.scale_f0(f0, 1.0, 0.0)  # no excursion: every voiced frame at the geometric mean
    np.testing.assert_allclose(flat[[1, 2, 4]], 141.421356, rtol=1e-6)
    assert flat[0] == flat[3] == 0.0
    assert vc.scale_f0(f0, 100.0, 1.0).max() == vc.F0_CEIL


def test_draw_stays_in_its_ranges_and_is_seeded():
    ranges = vc.ConversionRanges()
    draws = [vc.draw(np.random.default_rng(s), ranges) for s in range(200)]
    for name in ("f0_ratio", "formant_ratio", "f0_range"):
        lo, hi = getattr(ranges, name)
        vals = [getattr(d, name) for d in draws]
        assert lo <= min(vals) and max(vals) <= hi and max(vals) / min(vals) > (hi / lo) ** 0.8
    assert vc.draw(np.random.default_rng(3)) == vc.draw(np.random.default_rng(3))


def test_convert_moves_pitch_and_formant_and_keeps_length_and_level():
    pytest.importorskip("pyworld")
    x = _voiced(120.0, 1000.0)
    assert abs(_pitch(x) - 120) < 3 and abs(_formant(x) - 1000) < 60
    higher = vc.convert(x, SR, vc.Conversion(f0_ratio=1.3))
    assert higher.shape == x.shape and higher.dtype == np.float32
    assert abs(_pitch(higher) - 156) < 6 and abs(_formant(higher) - 1000) < 80
    rms = np.sqrt(np.mean(x**2))
    assert abs(np.sqrt(np.mean(higher**2)) / rms - 1) < 0.01
    shifted = vc.convert(x, SR, vc.Conversion(formant_ratio=1.15))
    assert abs(_pitch(shifted) - 120) < 4 and abs(_formant(shifted) - 1150) < 70
    silent = np.zeros(SR, np.float32)
    np.testing.assert_array_equal(vc.convert(silent, SR, vc.Conversion(f0_ratio=1.3)), silent)


def _rows(d: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (d / f"{split}.jsonl").read_text("utf-8").splitlines()]


def test_corpus_converts_train_utterances_only_and_plans_the_rest_unchanged(tmp_path):
    pytest.importorskip("pyworld")
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng missing (scripts/setup_data.sh)")
    kw = dict(langs=("en",), utts_per_lang=4, val_utts=1, seed=5, workers=1, engines=("espeak",))
    plain = corpus.BuildConfig(out=tmp_path / "plain", **kw)
    conv = corpus.BuildConfig(out=tmp_path / "conv", convert_prob=1.0, **kw)
    a, b = corpus.plan_language(plain, "en"), corpus.plan_language(conv, "en")
    assert [{**i, "convert": None} for i in b] == a  # same voices, sentences, rates and seeds
    assert all(i["convert"] for i in b if i["split"] == "train")
    assert not any(i["convert"] for i in b if i["split"] != "train")
    corpus.build(plain)
    corpus.build(conv)
    rows_a, rows_b = _rows(plain.out, "train"), _rows(conv.out, "train")
    assert all("convert" not in r for r in rows_a) and all(r["convert"] for r in rows_b)
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert (ra["text"], ra["voice"]) == (rb["text"], rb["voice"])
        xa, _ = sf.read(plain.out / ra["audio"], dtype="float32")
        xb, _ = sf.read(conv.out / rb["audio"], dtype="float32")
        assert abs(len(xa) - len(xb)) < SR // 10 and not np.allclose(xa[: len(xb)], xb[: len(xa)], atol=1e-2)
    assert _rows(plain.out, "val-unseen-both") == _rows(conv.out, "val-unseen-both")
