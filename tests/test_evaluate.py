"""The eval harness: metrics on known strings, and a full run over a manifest with a tiny model."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from granite_asr.evaluate import bleu, error_rate, evaluate, normalize, target_language_rate
from granite_asr.model.checkpoint import save_pretrained

from .helpers_model import build_tiny


def test_normalisers_and_error_rates():
    assert normalize("Hello, Mr. Smith!", "en") == "hello mister smith"
    assert error_rate(["the cat sat"], ["The cat, sat."], "en") == 0.0
    assert math.isclose(error_rate(["the cat sat on"], ["the dog sat"], "en"), 50.0)
    assert error_rate(["Bonjour à tous"], ["bonjour a tous"], "fr") > 0  # accents count
    assert math.isclose(error_rate(["今日は晴れ"], ["今日は雨"], "ja"), 40.0)  # CER: 1 sub + 1 del of 5
    assert math.isclose(error_rate(["the cat"], ["the cab"], "en", unit="char"), 100 / 7)  # 1 of 7 chars
    assert bleu(["the cat is on the mat"], ["the cat is on the mat"], "en") > 99
    assert bleu(["the cat is on the mat"], ["a dog"], "en") < 10


def test_target_language_rate_tells_the_language_a_translation_is_written_in():
    """What BLEU near zero cannot: an en→fr "translation" that answers in English scores 0 % (the
    failure that kept grow8d from shipping, recipes/RESULTS.md session 13), French text 100 %."""
    french = ["Le nombre de générations est très grand.", "Ouvrez le fichier avant de continuer."]
    english = ["The number of generations is very large.", "Open the file before you continue."]
    assert target_language_rate(french, "fr") == 100.0
    assert target_language_rate(english, "fr") == 0.0
    assert target_language_rate(english + french, "en") == 50.0
    assert target_language_rate(["", "今日は晴れです"], "ja") == 50.0  # an empty answer is a miss


def test_japanese_reading_error_rate_scores_katakana_against_kanji():
    """A katakana transcript (what the char head writes) of a kanji sentence: > 100 % CER against the
    text, 0 on the reading; one wrong mora counts once."""
    pytest.importorskip("pyopenjtalk")
    from granite_asr.evaluate import reading_error_rate

    ref = "今日は晴れです"
    assert error_rate([ref], ["キョーワハレデス"], "ja") > 100
    assert reading_error_rate([ref], ["キョーワハレデス"]) == 0.0
    assert reading_error_rate([ref], ["キョーワアレデス"]) == 100 / 8
    assert reading_error_rate([ref], ["きょうははれです"]) == 0.0  # hiragana: the same reading
    assert reading_error_rate([ref], ["kyo wa"]) == 100.0  # Latin is not spelled out: all deleted


def _manifest(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i, (lang, text) in enumerate([("en", "hello world"), ("en", "open it"), ("fr", "bonjour")]):
        sf.write(
            tmp_path / f"{i}.wav", (0.1 * rng.standard_normal(12000 + 3000 * i)).astype(np.float32), 16000
        )
        rows.append(
            {
                "id": f"u{i}",
                "audio": f"{i}.wav",
                "text": text,
                "lang": lang,
                "voice": "a" if i == 0 else "b",
                "translation": {"fr": "bonjour le monde"} if lang == "en" else {"en": "hello"},
            }
        )
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return tmp_path / "m.jsonl"


def test_evaluate_reports_every_language_and_direction(tmp_path):
    model = build_tiny("tiny")
    report = evaluate(model, _manifest(tmp_path))
    assert set(report.asr) == {"en", "fr"} and report.asr["en"]["n"] == 2
    assert all(r["cer"] >= 0 for r in report.asr.values())
    assert set(report.translation) == {"en→fr", "fr→en"}
    assert all(0 <= r["in_target"] <= 100 for r in report.translation.values())
    assert report.rtfx > 0 and report.audio_seconds > 2
    assert "RTFx" in report.table()


def test_eval_cli_writes_json(tmp_path):
    model = build_tiny("tiny-nar")
    save_pretrained(model, tmp_path / "ckpt")
    out = tmp_path / "r.json"
    cmd = [
        sys.executable,
        "-m",
        "granite_asr",
        "eval",
        str(_manifest(tmp_path)),
        "--model",
        str(tmp_path / "ckpt"),
        "--output",
        str(out),
        "--by",
        "voice",
        "--hypotheses",
        str(tmp_path / "hyps.jsonl"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "nar" and set(report["asr"]) == {"en", "fr"} and report["translation"] == {}
    assert report["options"] == {"beam_size": 1, "word_lm": "auto", "ctc_tempo": 1.2, "language_hint": True}
    # per voice: en has u0 (voice a) and u1 (b), fr only u2 (b)
    assert {lang: {g: r["n"] for g, r in gs.items()} for lang, gs in report["groups"].items()} == {
        "en": {"a": 1, "b": 1},
        "fr": {"b": 1},
    }
    assert "voice" in proc.stdout and "rows" not in report
    hyps = [json.loads(x) for x in (tmp_path / "hyps.jsonl").read_text().splitlines()]
    assert [(h["id"], h["voice"], h["ref"]) for h in hyps] == [
        ("u0", "a", "hello world"),
        ("u1", "b", "open it"),
        ("u2", "b", "bonjour"),
    ]
    assert all(isinstance(h["hyp"], str) for h in hyps)


def test_eval_skips_unreadable_audio_and_scores_the_rest(tmp_path):
    manifest = _manifest(tmp_path)
    (tmp_path / "1.wav").write_bytes(b"not audio at all")
    report = evaluate(build_tiny("tiny"), manifest, mode="ctc", translate=False)
    assert [e["id"] for e in report.errors] == ["u1"] and "1.wav" in report.errors[0]["error"]
    assert report.asr["en"]["n"] == 1 and report.asr["fr"]["n"] == 1
    assert "1 row(s) skipped" in report.table()


def test_eval_reads_audio_in_chunks_with_the_same_scores(tmp_path):
    """Chunk by chunk (one row at a time, an unreadable row among them) = everything at once."""
    manifest = _manifest(tmp_path)
    with open(manifest, "a") as f:
        f.write("\n" + json.dumps({"id": "bad", "audio": "missing.wav", "text": "x", "lang": "en"}))
    model = build_tiny("tiny")
    whole = evaluate(model, manifest, mode="ar", by="voice")
    chunked = evaluate(model, manifest, mode="ar", by="voice", chunk_rows=1)
    assert chunked.rows == whole.rows and len(whole.rows) == 3
    assert chunked.asr == whole.asr and chunked.translation == whole.translation
    assert set(whole.translation) == {"en→fr", "fr→en"} and whole.translation["en→fr"]["n"] == 2
    assert chunked.groups == whole.groups and chunked.audio_seconds == whole.audio_seconds
    assert [e["id"] for e in chunked.errors] == [e["id"] for e in whole.errors] == ["bad"]


def test_eval_records_the_decoding_options_that_change_scores(tmp_path):
    model = build_tiny("tiny")
    hinted = evaluate(model, _manifest(tmp_path), mode="ctc", translate=False)
    plain = evaluate(
        model, _manifest(tmp_path), mode="ctc", word_lm="none", ctc_tempo=1.0, language_hint=False,
        translate=False,
    )  # fmt: skip
    assert plain.options == {"beam_size": 1, "word_lm": "none", "ctc_tempo": 1.0, "language_hint": False}
    assert hinted.options["word_lm"] == "auto" and hinted.options["language_hint"]
    assert set(plain.asr) == set(hinted.asr) == {"en", "fr"}


def test_wder_maps_labels_and_counts_wrong_speakers():
    from granite_asr.evaluate_plus import wder

    ref = ["hello", "there", "how", "are", "you", "fine", "thanks"]
    spk = [1, 1, 1, 1, 1, 2, 2]
    # the hypothesis numbers speakers its own way: a consistent relabelling is no error
    assert wder(ref, spk, ["Hello,", *ref[1:]], ["B"] * 5 + ["A"] * 2) == (0, 7)
    # "fine" attributed to the first speaker: 1 wrong of 7 aligned (a deletion is not aligned)
    assert wder(ref, spk, ref, ["1"] * 6 + ["2"]) == (1, 7)
    assert wder(ref, spk, ref[:-1], ["1"] * 5 + ["2"]) == (0, 6)
    assert wder(ref, spk, [], []) == (0, 0)


def test_time_errors_use_exactly_matching_words():
    from granite_asr.evaluate_plus import time_errors
    from granite_asr.results import Word

    ref = [
        {"word": "Hello,", "start": 0.5, "end": 0.9},
        {"word": "world", "start": 1.0, "end": 1.4},
        {"word": "again", "start": 1.5, "end": 2.0},
    ]
    hyp = [Word(" hello", 0.6, 1.0), Word(" word", 1.0, 1.4), Word(" again", 1.3, 2.3)]
    np.testing.assert_allclose(time_errors(ref, hyp), [(0.1, 0.1), (0.3, 0.2)])


def test_eval_cli_scores_a_plus_model_on_conversations(tmp_path):
    """`granite-asr eval` on conversation rows with a Plus checkpoint: WDER and both timestamp paths."""
    save_pretrained(build_tiny("tiny-plus"), tmp_path / "ckpt")
    rng = np.random.default_rng(1)
    words = [
        {"word": w, "start": 0.3 + 0.4 * k, "end": 0.6 + 0.4 * k, "speaker": 1 + k // 3}
        for k, w in enumerate(["one", "two", "three", "four", "five", "six"])
    ]
    turns = [{"speaker": 1, "text": "one two three"}, {"speaker": 2, "text": "four five six"}]
    rows = []
    for i in range(2):
        sf.write(tmp_path / f"c{i}.wav", (0.1 * rng.standard_normal(48000)).astype(np.float32), 16000)
        rows.append({"id": f"c{i}", "audio": f"c{i}.wav", "lang": "en", "text": "one two three four five six",
                     "speakers": ["a", "b"], "turns": turns, "words": words})  # fmt: skip
    (tmp_path / "conv.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "r.json"
    cmd = [sys.executable, "-m", "granite_asr", "eval", str(tmp_path / "conv.jsonl"), "--model",
           str(tmp_path / "ckpt"), "--output", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["rows"] == 2 and set(report["wer"]) == {"en"} and report["wer"]["en"] >= 0
    assert set(report["timestamps"]) == {"ctc", "model", "ctc-reference"}
    assert report["timestamps"]["ctc-reference"]["words"] == 12  # every reference word, 2 rows
    assert "WDER" in proc.stdout and "timestamps (model)" in proc.stdout
