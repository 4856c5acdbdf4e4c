"""`granite-asr` on a tiny random checkpoint (real tokenizer): files in, every format out, errors per file.

The acceptance run (issue 3 "Done when") goes through a real subprocess, `python -m granite_asr`; the
other cases call `cli.main` in-process to keep the suite fast.
"""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from granite_asr import cli
from granite_asr.model.checkpoint import save_pretrained

from .helpers_audio import encode_mp3
from .test_decoding import clips
from .test_transcribe import tiny_model

SR = 16000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_pretrained(tiny_model("tiny"), path)
    return path


def write_mp3(path, seconds=3.0, rate=44100):
    """A 44.1 kHz stereo mp3 (two detuned chirps) encoded with PyAV."""
    t = np.arange(int(seconds * rate)) / rate
    left = 0.3 * np.sin(2 * np.pi * (300 + 200 * t) * t)
    right = 0.3 * np.sin(2 * np.pi * (310 + 150 * t) * t)
    encode_mp3(path, np.stack([left, right]), rate)  # (2, n) planar


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    write_mp3(d / "talk.mp3")
    (d / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 7)  # truncated header
    sf.write(d / "silence.wav", np.zeros(5 * SR, np.float32), SR)
    sf.write(d / "noise.wav", (0.1 * np.random.default_rng(0).standard_normal(2 * SR)).astype(np.float32), SR)
    return d


def test_acceptance_mp3_corrupt_silence_every_format(checkpoint, inputs, tmp_path):
    out = tmp_path / "out"
    files = [inputs / "talk.mp3", inputs / "broken.wav", inputs / "silence.wav"]
    cmd = [
        sys.executable,
        "-m",
        "granite_asr",
        "transcribe",
        *map(str, files),
        "--model",
        str(checkpoint),
        "--output-dir",
        str(out),
        "--no-vad",
        "--max-new-tokens",
        "4",
        "--word-timestamps",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    err_lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(err_lines) == 1 and "broken.wav" in err_lines[0] and "cannot decode" in err_lines[0]
    for stem in ("talk", "silence"):
        assert sorted(p.name for p in out.glob(f"{stem}.*")) == sorted(
            f"{stem}.{ext}" for ext in ("json", "srt", "tsv", "txt", "vtt")
        )
    assert not list(out.glob("broken.*"))
    talk = json.loads((out / "talk.json").read_text())
    assert talk["duration"] == pytest.approx(3.0, abs=0.05) and talk["segments"]
    silence = json.loads((out / "silence.json").read_text())
    assert silence["text"] == "" and silence["segments"] == []
    assert (out / "silence.txt").read_text() == ""


def test_stdout_and_stdin(checkpoint, inputs, capsys, monkeypatch):
    code = cli.main(
        [
            "transcribe",
            str(inputs / "noise.wav"),
            "--model",
            str(checkpoint),
            "--no-vad",
            "--max-new-tokens",
            "4",
            "--no-progress",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and text.endswith("\n")
    data = (inputs / "noise.wav").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code = cli.main(
        [
            "transcribe",
            "-",
            "--model",
            str(checkpoint),
            "--no-vad",
            "--max-new-tokens",
            "4",
            "--format",
            "json",
            "--no-progress",
        ]
    )
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["source"] == "<stdin>" and d["duration"] == pytest.approx(2.0)


def test_bad_stdin_is_named(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"not audio" * 50)))
    code = cli.main(["transcribe", "-", "--model", str(checkpoint), "--no-progress"])
    assert code == 1 and "error: -: cannot decode" in capsys.readouterr().err


def test_impossible_task_is_fatal_before_compute(checkpoint, inputs, capsys):
    for extra in (["--speakers"], ["--language", "klingon"]):
        code = cli.main(["transcribe", str(inputs / "noise.wav"), "--model", str(checkpoint), *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("granite-asr: error:") and len(err.splitlines()) == 1
    code = cli.main(["translate", str(inputs / "noise.wav"), "--model", str(checkpoint), "--to", "xx"])
    assert code == 2 and "unknown language" in capsys.readouterr().err
    args = ["--model", str(checkpoint), "--to", "fr", "--from", "en", "--mode", "speculative"]
    code = cli.main(["translate", str(inputs / "noise.wav"), *args])  # refused by Engine.check
    assert code == 2 and "speculative" in capsys.readouterr().err


def test_missing_model_is_fatal(inputs, tmp_path, capsys):
    code = cli.main(["transcribe", str(inputs / "noise.wav"), "--model", str(tmp_path / "nope")])
    assert code == 2 and "nope" in capsys.readouterr().err


def test_info(checkpoint, capsys):
    assert cli.main(["info", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "variant:     ar" in out and "translation:" in out
    assert cli.main(["info", str(checkpoint), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["variant"] == "ar" and "ja" in info["languages"] and "translate" in info["tasks"]
    assert info["parameters"]["total"] == sum(v for k, v in info["parameters"].items() if k != "total")


def test_duplicate_stems_do_not_overwrite(checkpoint, inputs, tmp_path, capsys):
    other = tmp_path / "b"
    other.mkdir()
    (other / "noise.wav").write_bytes((inputs / "noise.wav").read_bytes())
    code = cli.main(
        [
            "transcribe",
            str(inputs / "noise.wav"),
            str(other / "noise.wav"),
            "--model",
            str(checkpoint),
            "--no-vad",
            "--max-new-tokens",
            "2",
            "-o",
            str(tmp_path / "o"),
            "-f",
            "txt",
            "--no-progress",
        ]
    )
    assert code == 0 and sorted(p.name for p in (tmp_path / "o").iterdir()) == ["noise.txt", "noise_2.txt"]


def test_quantize_int8_is_the_api_option(checkpoint, inputs, capsys):
    """`--quantize int8` loads through `load_model(quantize="int8")`: the same transcript, and a clear
    error where int8 cannot run (fbgemm is CPU-only)."""
    from granite_asr import load_model

    noise = str(inputs / "noise.wav")
    flags = ["--model", str(checkpoint), "--no-vad", "--max-new-tokens", "6", "--mode", "ar", "--no-progress"]
    code = cli.main(["transcribe", noise, *flags, "--quantize", "int8", "--format", "json"])
    got = json.loads(capsys.readouterr().out)["text"]
    model = load_model(checkpoint, quantize="int8")
    assert model.quantized == ("encoder", "projector", "language_model")
    want = model.transcribe(noise, mode="ar", max_new_tokens=6, vad=False, progress=False).text
    assert code == 0 and got == want
    code = cli.main(["transcribe", noise, *flags, "--quantize", "int8", "--device", "meta"])
    assert code == 2 and "CPU only" in capsys.readouterr().err


def test_word_lm_flag_is_the_api_option(inputs, tmp_path, capsys):
    """`--word-lm DIR` (char-CTC transcription) gives what `word_lm=DIR` gives through the API; a path
    that is no directory is refused before any compute."""
    from granite_asr import load_model
    from granite_asr.decoding.word_lm import WordLM

    model = tiny_model("tiny")
    model.config = model.config.replace(ctc_head="char")  # mode "ctc" reads the char head
    checkpoint = save_pretrained(model, tmp_path / "ckpt")
    WordLM.train(["the cat sat on the mat", "a dog and a cat"], "en").save(tmp_path / "lm" / "en.tsv.gz")
    noise = str(tmp_path / "clip.wav")  # a clip the random char head spells as a few symbols
    sf.write(noise, np.asarray(clips((1.4,))[0], np.float32), SR)
    flags = ["--model", str(checkpoint), "--no-vad", "--mode", "ctc", "--language", "en", "--no-progress"]
    code = cli.main(["transcribe", noise, *flags, "--word-lm", str(tmp_path / "lm"), "--format", "json"])
    got = json.loads(capsys.readouterr().out)["text"]
    model = load_model(checkpoint)
    kw = dict(mode="ctc", language="en", vad=False, progress=False)
    want = model.transcribe(noise, word_lm=str(tmp_path / "lm"), **kw).text
    assert code == 0 and got == want
    assert set(got.split()) <= {"the", "cat", "sat", "on", "mat", "a", "dog", "and"}
    assert got != model.transcribe(noise, word_lm="none", **kw).text  # so the flag is seen to act
    code = cli.main(["transcribe", noise, *flags, "--word-lm", str(tmp_path / "nowhere")])
    assert code == 2 and "word_lm" in capsys.readouterr().err
