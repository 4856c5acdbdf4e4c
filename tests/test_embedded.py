"""Slow tier: the embedded default model, end to end, on the bundled samples (issues 3 and 4).

The samples are voices and sentences the model never saw in training (`granite_asr.data.samples`). The
embedded model transcribes with its char CTC head by default (`config.json`: `auto_mode` "ctc",
`ctc_head` "char"; recipes/RESULTS.md says why), so its words come out spelled as heard: the assertions
bound each sample's character error rate against the reference (Japanese against its katakana reading,
the head's alphabet) at the value measured when the model shipped plus a margin, and check that the same
text comes out of every path a user takes: a batch, one file at a time, the CLI on an mp3, a long
recording cut by the VAD. Translation runs the decoder and must answer in the language asked for.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import jiwer
import numpy as np
import pytest
import soundfile as sf
import soxr

import granite_asr
from granite_asr import char_vocab
from granite_asr.api import EMBEDDED_DIR
from granite_asr.decoding import lexicon
from granite_asr.demo import SAMPLES
from granite_asr.evaluate import error_rate, normalize, target_language_rate
from granite_asr.train.objectives import char_targets

from .helpers_audio import encode_mp3

pytestmark = pytest.mark.slow

ITEMS = json.loads((SAMPLES / "samples.json").read_text("utf-8"))
# Per-language CER bound (%) on the bundled sample: the value measured at ship time plus a margin for
# float summation order across machines (bf16 weights, fp32 activations).
# Shipped (session 3, mid-layer char head): en 49.2, fr 37.9, de 36.2, es 27.4, pt 24.2, ja 10.6 (katakana
# reading); the same weights read at the last block (`ctc_char_layer` "final", session 5): en 43.7,
# fr 43.9, de 17.4, es 10.5, pt 12.1, ja 12.8; joint27 (session 7, last block): en 40.5, fr 43.2, de 14.5,
# es 8.1, pt 7.6, ja 8.5; grow8c (session 12, 8-layer encoder): en 34.9, fr 39.4, de 13.0, es 6.5, pt 6.1,
# ja 6.4; grow8e (session 15): en 38.1, fr 35.6, de 7.2, es 4.0, pt 6.1, ja 10.6; soup-ef (session 16):
# en 34.1, fr 34.8, de 5.8, es 4.8, pt 6.1, ja 6.4; soup-efj (session 22): en 34.9, fr 37.1, de 8.7,
# es 4.0, pt 6.1, ja 6.4; swa-l (session 24): en 36.5, fr 39.4, de 10.1, es 4.8, pt 4.5, ja 6.4; the same
# weights with saturated rows encoded again at tempo 1.2 (`DecodeOptions.ctc_tempo`, session 25; the en, fr
# and es samples are re-encoded): en 22.2, fr 15.9, de 10.1, es 3.2, pt 4.5, ja 6.4; soup-ln (session 27,
# the mean of swa-l and grow12c's last nine snapshots, tempo rule on): en 19.8, fr 19.7, de 5.8, es 3.2,
# pt 4.5, ja 8.5; soup-tc (session 28, the mean of soup-ln, swa-t and swa-c): en 21.4, fr 21.2, de 7.2,
# es 2.4, pt 4.5, ja 6.4; soup-14 (session 29, the mean of soup-tc and grow14's last 17 snapshots): en 19.0,
# fr 20.5, de 10.1, es 3.2, pt 4.5, ja 6.4; soup-15 (session 30, the mean of soup-14 and grow15's last 17
# snapshots): en 19.0, fr 21.2, de 11.6, es 4.0, pt 4.5, ja 8.5.
CER_BOUND = {"en": 28.0, "fr": 22.0, "de": 18.0, "es": 11.0, "pt": 11.0, "ja": 11.0}


def cer(item: dict, hypothesis: str) -> float:
    """CER in %; Japanese is scored against its katakana reading, spaces ignored (no word spacing)."""
    if item["language"] == "ja":
        reading = char_vocab.decode(char_targets(item["text"], "ja")).replace(" ", "")
        return 100 * jiwer.cer(reading, hypothesis.replace(" ", ""))
    return error_rate([item["text"]], [hypothesis], item["language"], unit="char")


@pytest.fixture(scope="module")
def model():
    return granite_asr.load_model()


@pytest.fixture(scope="module")
def batch(model):
    """What a user gets: char CTC searched with the bundled word LMs (`word_lm="auto"`)."""
    return model.transcribe([str(SAMPLES / it["file"]) for it in ITEMS], progress=False)


@pytest.fixture(scope="module")
def greedy(model):
    """The char head alone (`word_lm="none"`): the acoustic model's own spelling."""
    return model.transcribe([str(SAMPLES / it["file"]) for it in ITEMS], progress=False, word_lm="none")


def test_embedded_model_ships_in_the_official_layout():
    names = {p.name for p in EMBEDDED_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    size = sum(p.stat().st_size for p in EMBEDDED_DIR.iterdir())
    assert size < 50 * 2**20
    config = json.loads((EMBEDDED_DIR / "config.json").read_text())
    assert config["encoder_config"]["input_dim"] == 320  # 4 stacked frames: the 25 Hz default preset


@pytest.mark.parametrize("item", ITEMS, ids=[it["language"] for it in ITEMS])
def test_transcript_of_bundled_sample(greedy, item):
    res = greedy[ITEMS.index(item)]
    assert res.ok, res.error
    lang, got = item["language"], cer(item, res.text)
    assert got <= CER_BOUND[lang], f"{item['file']}: {res.text!r} (CER {got:.1f} %)"


# The shipped model's exact transcripts (issue 4: "slow tests assert the embedded model's exact
# transcripts"): a regression guard on the whole inference path (features, encoder, CTC decoding, the
# word-LM search) for this checkpoint and the bundled word LMs, keyed by their digests so a new model or
# LM states that it needs new values (and read where its config.json says: `ctc_char_layer`).
# Regenerate: transcribe the samples with `granite_asr.load_model()` (and `word_lm="none"`) and copy
# the texts (RESULTS.md).
MODEL_SHA256 = "fcedc67244cd3e57c413208ed6d6db20afa55342e6586901758df3ab60360c75"
EXACT_GREEDY = {
    "en.flac": "this beme requize one or mor us amay dadons to beinstalld or updated anod outoe join do you want to trite install them",
    "fr.flac": "les catres peuve être lier de faont à ce que le texte piespacés de le nalotre comment publication asistés par ordinateur",
    "de.flac": "wier sollten nicht imarnur an die dun kluen tager unseres lebensdenken",
    "es.flac": "especifica que los pará metros de la impresora se a pliqen para imprimir asi como para formatear la visualización en pantala",
    "pt.flac": "se proceguir a informação de conta sera definitivamente eliminada",
    "ja.flac": "コレイチブノサビスヲヨビホストニカンレンスルセツゾクノデータノテンソリツヲセーゲンシマス",
}
WORD_LM_SHA256 = {  # first 16 hex digits of each file's sha256
    "de.tsv.gz": "7187f90708f6f1fc",
    "en.tsv.gz": "8cb348f0f2e789e0",
    "es.tsv.gz": "cb8e9ff320d703c4",
    "fr.tsv.gz": "c984698cae6de777",
    "ja.tsv.gz": "8603edab593e43b9",
    "pt.tsv.gz": "bf09f633ca247c24",
}
EXACT = {
    "en.flac": "this be require one or more user done to be installed or update not to join do you want to try to install them",
    "fr.flac": "les cadres peuvent être lier de façon à ce que le texte puisse de l alors comment publication aster pardi nature",
    "de.flac": "wir sollten nicht immer nur an die dunklen tage unseres lebens denken",
    "es.flac": "especifica que los parámetros de la impresora se apliquen para imprimir así como para formatear la visualización en pantalla",
    "pt.flac": "se prosseguir a informação de conta será definitivamente eliminado",
    "ja.flac": "これ一部のサービスを予備ホストに関連する接続のデータの転送率を制限します",
}


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_exact_transcripts_of_the_shipped_model(batch, greedy):
    assert _digest(EMBEDDED_DIR / "model.safetensors") == MODEL_SHA256, (
        "a new embedded model: record its transcripts in EXACT, EXACT_GREEDY and its sha256"
    )
    assert {it["file"]: res.text for it, res in zip(ITEMS, greedy, strict=True)} == EXACT_GREEDY
    lms = {p.name: _digest(p)[:16] for p in sorted(lexicon.BUNDLED.glob("*.tsv.gz"))}
    assert lms == WORD_LM_SHA256, "new word LMs: record their transcripts in EXACT and their digests"
    assert {it["file"]: res.text for it, res in zip(ITEMS, batch, strict=True)} == EXACT


# WER (%) of the word-LM transcripts (Japanese: CER against the written text, kanji and all) when the
# bundled LMs shipped (session 8: general words and a Japanese LM; session 9: spell-checked general words),
# plus a margin of about one word: the search must keep the words it found. Measured with joint27: en 69.2,
# fr 92.3 (96.2), de 25.0, es 5.3, pt 11.1, ja 10.8; with grow8c (session 12): en 50.0, fr 96.2, de 8.3,
# es 5.3, pt 11.1, ja 10.8; with grow8e (session 15): en 50.0, fr 76.9, de 0.0, es 5.3, pt 11.1, ja 10.8;
# with soup-ef (session 16): en 53.8, fr 80.8, de 0.0, es 0.0, pt 11.1, ja 10.8;
# with soup-efj (session 22): en 50.0, fr 88.5, de 8.3, es 0.0, pt 11.1, ja 10.8;
# with swa-l (session 24): en 61.5, fr 96.2, de 0.0, es 0.0, pt 11.1, ja 10.8; the same weights with
# `ctc_tempo` (session 25): en 38.5, fr 50.0, de 0.0, es 0.0, pt 11.1, ja 10.8; soup-ln (session 27): en 34.6,
# fr 42.3, de 0.0, es 0.0, pt 11.1, ja 10.8; soup-tc (session 28): en 30.8, fr 46.2, de 0.0, es 0.0, pt 11.1,
# ja 10.8; soup-14 (session 29): en 30.8, fr 46.2, de 0.0, es 0.0, pt 11.1, ja 10.8; soup-15 (session 30): en 26.9,
# fr 42.3, de 0.0, es 0.0, pt 11.1, ja 10.8.
WER_BOUND = {"en": 45.0, "fr": 58.0, "de": 17.0, "es": 10.0, "pt": 15.0, "ja": 16.0}


@pytest.mark.parametrize(
    "item", [it for it in ITEMS if it["language"] in WER_BOUND], ids=lambda it: it["file"]
)
def test_word_lm_search_finds_the_words(batch, item):
    res = batch[ITEMS.index(item)]
    got = error_rate([item["text"]], [res.text], item["language"])
    assert got <= WER_BOUND[item["language"]], f"{item['file']}: {res.text!r} (WER {got:.1f} %)"


# Words of the references that the plain search misses on these samples (session 8; de's "dunklen" left
# in session 12 and "immer" in session 15, es's "apliquen" in session 16, when the plain search began to
# find them; es and de are exact again with swa-l, session 24)
KEYWORDS = {"pt.flac": "eliminada"}


@pytest.mark.parametrize("file", sorted(KEYWORDS))
def test_keywords_bias_the_embedded_search(model, batch, file):
    """`keywords` on the embedded model stay on its char-CTC path: the word-LM search writes a keyword
    the audio supports, and not a distractor it does not ("Granite")."""
    plain = batch[[it["file"] for it in ITEMS].index(file)].text
    assert KEYWORDS[file] not in plain.split()
    got = model.transcribe(str(SAMPLES / file), keywords=(KEYWORDS[file], "Granite"), progress=False)
    assert KEYWORDS[file] in got.text.split() and "Granite" not in got.text, got.text


def test_batch_gives_the_same_words_as_one_at_a_time(model, batch):
    for item, res in zip(ITEMS, batch, strict=True):
        alone = model.transcribe(str(SAMPLES / item["file"]), progress=False)
        assert alone.text == res.text, item["file"]


def test_cli_acceptance_mp3_corrupt_and_silence(batch, tmp_path):
    """Issue 3 "Done when", with real speech: the English sample as a 44.1 kHz stereo mp3, a corrupt file
    and 5 s of silence through `python -m granite_asr transcribe`: every format for the good inputs, the
    corrupt one named on stderr, empty text for silence, exit code 1."""
    en = next(i for i, it in enumerate(ITEMS) if it["language"] == "en")
    x, _ = sf.read(SAMPLES / ITEMS[en]["file"], dtype="float32")
    x44 = soxr.resample(x, 16000, 44100)
    encode_mp3(tmp_path / "talk.mp3", np.stack([x44, 0.8 * x44]), 44100)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 7)
    sf.write(tmp_path / "silence.wav", np.zeros(5 * 16000, np.float32), 16000)
    out = tmp_path / "out"
    files = [str(tmp_path / f) for f in ("talk.mp3", "broken.wav", "silence.wav")]
    proc = subprocess.run(
        [sys.executable, "-m", "granite_asr", "transcribe", *files, "--output-dir", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "broken.wav" in proc.stderr
    for stem in ("talk", "silence"):
        assert sorted(f.suffix for f in out.glob(f"{stem}.*")) == [".json", ".srt", ".tsv", ".txt", ".vtt"]
    talk = json.loads((out / "talk.json").read_text("utf-8"))
    # the mp3 round trip (lossy codec, 44.1 kHz, stereo downmix) must be as accurate as the flac: scored
    # against the reference, not against the flac's words, which the word-LM search can tip from one
    # spelling to another on a small acoustic change (swa-l, session 24: CER 0.165 between the two
    # transcripts, the mp3's the closer to the reference)
    assert cer(ITEMS[en], talk["text"]) <= cer(ITEMS[en], batch[en].text) + 5.0, (
        talk["text"],
        batch[en].text,
    )
    assert json.loads((out / "silence.json").read_text("utf-8"))["text"] == ""


def test_long_recording_keeps_every_sample_in_order(model, greedy, tmp_path):
    """Three samples with pauses, as one file: the long-form path (VAD windows, absolute timestamps)
    must give each sample's words once, in order, at the right place in time. Greedy char CTC on both
    sides: the ~25 s file is one window in three languages, which no single word LM can spell."""
    langs = ("en", "es", "de")
    picks = [next(i for i, it in enumerate(ITEMS) if it["language"] == lang) for lang in langs]
    pause = np.zeros(16000 * 2, np.float32)
    parts, starts, t = [], [], 0.0
    for i in picks:
        x, sr = sf.read(SAMPLES / ITEMS[i]["file"], dtype="float32")
        assert sr == 16000
        starts.append(t + len(pause) / sr)
        parts += [pause, x]
        t += (len(pause) + len(x)) / sr
    path = tmp_path / "long.flac"
    sf.write(path, np.concatenate(parts + [pause]), 16000)
    res = model.transcribe(str(path), word_timestamps=True, progress=False, word_lm="none")
    assert res.ok, res.error
    assert len(res.segments) >= len(picks)
    assert all(s.start < s.end for s in res.segments)
    # every sample's text once, in order: the whole transcript against the clips transcribed one by one
    # (a window also hears its neighbours' pauses, so a char or two per word may differ: 30 % CER; a lost
    # or repeated clip would move the length by a third)
    alone = " ".join(greedy[i].text for i in picks)
    assert jiwer.cer(alone, res.text) <= 0.3, (alone, res.text)
    assert abs(len(res.text) - len(alone)) <= 0.15 * len(alone), (alone, res.text)
    for i, start in zip(picks, starts, strict=True):
        near = [s for s in res.segments if abs(s.start - start) < 1.0]
        assert near, (ITEMS[i]["file"], start, [(s.start, s.text) for s in res.segments])


def test_silence_gives_empty_text(model):
    res = model.transcribe(np.zeros(16000 * 5, np.float32), progress=False)
    assert res.ok and res.text.strip() == ""


# The language the answer is written in, by langid.py over the six languages (what `granite-asr eval`
# reports as `in_target`). A stopword list missed plain English without "the/is/to" ("You must select a
# person as a folder.", pt→en, session 15), so the identifier decides.
@pytest.mark.parametrize("item", ITEMS, ids=lambda it: it["file"])
def test_translation_answers_in_the_target_language(model, item):
    res = model.transcribe(
        str(SAMPLES / item["file"]), task="translate", language=item["language"],
        target_language=item["translate_to"], progress=False,
    )  # fmt: skip
    assert res.ok, res.error
    assert target_language_rate([res.text], item["translate_to"]) == 100.0, res.text


def test_int8_keeps_the_accuracy(greedy):
    """`quantize="int8"` on the shipped model: each bundled sample's char-CTC CER against its reference
    stays within a few points of the fp32 one (measured −1.5 to +0.8 points for joint27, while the two
    transcripts differ by 0–9 % of their characters; bench/RESULTS.md "int8" has the held-out figures),
    and the decoder still answers (AR transcript of the English sample)."""
    q = granite_asr.load_model(quantize="int8")
    got = q.transcribe([str(SAMPLES / it["file"]) for it in ITEMS], progress=False, word_lm="none")
    for item, fp32, int8 in zip(ITEMS, greedy, got, strict=True):
        assert int8.ok, int8.error
        assert cer(item, int8.text) <= cer(item, fp32.text) + 4.0, (item["language"], fp32.text, int8.text)
    en = next(it for it in ITEMS if it["language"] == "en")
    ar = q.transcribe(str(SAMPLES / en["file"]), mode="ar", language="en", progress=False)
    assert ar.ok and len(normalize(ar.text, "en").split()) >= 3, ar.text
