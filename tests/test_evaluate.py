"""The eval harness: metrics on known strings, and a full run over a manifest with a tiny model."""

import json
import math
import subprocess
import sys

import numpy as np
import soundfile as sf

from granite_asr.evaluate import bleu, error_rate, evaluate, normalize
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
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "nar" and set(report["asr"]) == {"en", "fr"} and report["translation"] == {}
