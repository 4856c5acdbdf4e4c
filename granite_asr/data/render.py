"""Rendering one planned corpus item (`corpus.plan_language`) to audio: single utterances and multi-speaker
conversations with word times known from synthesis (issue 4 §1, §3d), augmentation, atomic FLAC writes.

Every function here is a pure function of the item dict (its seed included), so any worker renders any
item identically and a killed build resumes without changing what was already written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from . import augment as aug
from . import text as textmod
from . import tts
from . import voice_conv as vc

SR = tts.SAMPLE_RATE


def _babble_pool(item: dict, rng: np.random.Generator) -> list[np.ndarray]:
    """Three other sentences from random espeak voices: cheap, and a pure function of the item seed."""
    lang = item["lang"]
    voices = [v for v in tts.list_voices(lang, for_training=True) if v.engine == "espeak"]
    text = item.get("text") or " ".join(t["text"] for t in item["turns"])
    words = conversation_words(text, lang)
    if not voices:
        return []
    out = []
    for _ in range(3):
        v = voices[int(rng.integers(len(voices)))]
        fake = ("" if lang == "ja" else " ").join(rng.permutation(words))  # same words, shuffled: babble
        try:
            out.append(tts.synthesize(v, textmod.tts_text(fake, lang, "espeak"))[0])
        except tts.SynthesisError:
            continue
    return out


def _finish(x: np.ndarray, item: dict, policy: aug.AugmentPolicy) -> tuple[np.ndarray, list[str]]:
    log: list[str] = []
    if item["augment"]:
        rng = np.random.default_rng(item["seed"] + 1)
        x = aug.augment(x, rng, policy, pool=lambda: _babble_pool(item, rng), log=log)
    peak = float(np.abs(x).max())
    return (x / peak * 0.95 if peak > 0.95 else x), log


def render_utt(item: dict) -> tuple[dict, np.ndarray]:
    voice = tts.Voice(**item["voice"])
    say = textmod.tts_text(item["text"], item["lang"], voice.engine)
    _seed_neural(item["seed"])
    x, _ = tts.synthesize(voice, say, rate=item["rate"], pitch=item["pitch"], seed=item["seed"])
    conv = item.get("convert")
    if conv:  # before augmentation: WORLD analyses clean speech, noise and reverb come after
        x = vc.convert(x, SR, vc.Conversion(**conv))
    x, log = _finish(x, item, aug.AugmentPolicy())
    row = {k: item[k] for k in ("id", "audio", "text", "lang", "split", "rate", "pitch", "seed")}
    row.update(
        duration=round(len(x) / SR, 3),
        voice=voice.name,
        engine=voice.engine,
        family=voice.family,
        augment=log,
    )
    if conv:
        row["convert"] = conv
    if say != item["text"]:
        row["tts_text"] = say  # what the engine actually read (kana for espeak/mbrola Japanese)
    if item["translation"]:
        row["translation"] = item["translation"]
    return row, x


def _seed_neural(seed: int) -> None:
    # piper/kokoro sample noise inside the ONNX graph; seeding it makes durations reproducible
    if "onnxruntime" in sys.modules:
        sys.modules["onnxruntime"].set_seed(seed % 2**31)


def conversation_words(text: str, lang: str) -> list[str]:
    """Units synthesised one at a time. Japanese: content word + its particles (は alone reads "ha")."""
    if lang != "ja":
        units = []
        for tok in text.split():  # "?" or "«" standing alone (French spacing) has no sound: glue it on
            if units and not (any(c.isalpha() for c in tok) and any(c.isalpha() for c in units[-1])):
                units[-1] += " " + tok
            else:
                units.append(tok)
        return units
    import pyopenjtalk

    units: list[str] = []
    lead = ""  # symbols before the first word (an opening quote) have no sound of their own
    for node in pyopenjtalk.run_frontend(text, use_vanilla=True):
        tok, pos = node["string"], node["pos"]
        if not units and pos == "記号":
            lead += tok
        elif units and (pos in ("助詞", "助動詞", "記号") or node.get("pos_group1") == "接尾"):
            units[-1] += tok
        else:
            units.append(lead + tok)
            lead = ""
    return units


def _trim(x: np.ndarray, pad: int = int(0.01 * SR)) -> np.ndarray:
    idx = np.flatnonzero(np.abs(x) > 0.02 * (np.abs(x).max() + 1e-9))
    return x[max(0, idx[0] - pad) : idx[-1] + pad] if idx.size else x[:0]


def render_conv(item: dict) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(item["seed"])
    lang, speakers = item["lang"], [tts.Voice(**v) for v in item["speakers"]]
    pitch = [float(rng.uniform(-2, 2)) for _ in speakers]  # fixed per speaker: one person, one voice
    chunks, words, turns = [np.zeros(int(rng.uniform(0.1, 0.5) * SR), np.float32)], [], []
    t = len(chunks[0]) / SR
    for turn in item["turns"]:
        k = turn["speaker"] - 1
        start = t
        for w in conversation_words(turn["text"], lang):
            _seed_neural(item["seed"] + len(words))
            say = textmod.tts_text(w, lang, speakers[k].engine)
            x = _trim(
                tts.synthesize(speakers[k], say, rate=item["rate"], pitch=pitch[k], seed=item["seed"])[0]
            )
            if x.size == 0:  # every word must be heard, or the transcript would lie
                raise tts.SynthesisError(f"{speakers[k].name}: no audio for {w!r}")
            words.append(
                {"word": w, "start": round(t, 3), "end": round(t + len(x) / SR, 3), "speaker": k + 1}
            )
            gap = np.zeros(int(rng.uniform(0.03, 0.12) * SR), np.float32)
            chunks += [x, gap]
            t += (len(x) + len(gap)) / SR
        turns.append(
            {"speaker": k + 1, "text": turn["text"], "start": round(start, 3), "end": words[-1]["end"]}
        )
        pause = np.zeros(int(rng.uniform(0.2, 0.9) * SR), np.float32)  # turn-taking gap
        chunks.append(pause)
        t += len(pause) / SR
    # no speed change here: it would move every word time; pitch shift and the rest keep the timeline
    x, log = _finish(np.concatenate(chunks), item, aug.AugmentPolicy(p_speed=0.0))
    sep = "" if lang == "ja" else " "
    row = {k: item[k] for k in ("id", "audio", "lang", "split", "rate", "seed")}
    row.update(
        duration=round(len(x) / SR, 3),
        text=sep.join(tr["text"] for tr in turns),
        speakers=[v.name for v in speakers],
        engine=sorted({v.engine for v in speakers}),
        turns=turns,
        words=words,
        augment=log,
    )
    return row, x


def render(args: tuple[dict, str]) -> tuple[str, dict | None, str | None]:
    """Worker entry: synthesise one item and write its FLAC. Returns (split, row or None, error)."""
    item, out = args
    try:
        row, x = (render_conv if item["kind"] == "conv" else render_utt)(item)
    except (tts.SynthesisError, ImportError) as e:  # ImportError: no pyopenjtalk for Japanese kana
        return item["split"], None, f"{item['id']}: {e}"
    path = Path(out) / item["audio"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.flac")
    sf.write(str(tmp), x, SR, format="FLAC", subtype="PCM_16")
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written file behind
    return item["split"], row, None


def init_worker() -> None:
    """Pool initialiser: one BLAS/ONNX thread per worker (the pool is the parallelism)."""
    os.environ["OMP_NUM_THREADS"] = "1"
