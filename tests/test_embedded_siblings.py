"""Slow tier: the embedded siblings `default-nar` and `default-plus` (issue 4 §4), end to end.

They are the 2b-nar and 2b-plus compositions trained from the embedded default (recipes/RESULTS.md,
sessions 4 and 12) and read the encoder they share with it from `assets/default` (`granite_asr.base_weights`),
so each ships as its own projector and decoder. Their transcripts are poor (RESULTS.md has the figures);
these tests pin what they output, exactly, for these weights (a regression guard on the NAR edit path and
the Plus tag parsing with real models), check the structure users rely on, and measure the word timing
of the char-CTC aligner against the exact word times of a synthetic conversation.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from safetensors import safe_open

import granite_asr
from granite_asr.api import EMBEDDED_DIR
from granite_asr.audio.io import load_audio
from granite_asr.demo import SAMPLES
from granite_asr.evaluate_plus import reference_alignment_errors
from granite_asr.transcribe.pipeline import engine_for

pytestmark = pytest.mark.slow

ASSETS = EMBEDDED_DIR.parent
ITEMS = [it for it in json.loads((SAMPLES / "samples.json").read_text("utf-8")) if it["language"] != "ja"]
CONVERSATION = json.loads((SAMPLES / "conversation-pt.json").read_text("utf-8"))


def _sha(name: str) -> str:
    return hashlib.sha256((ASSETS / name / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["default-nar", "default-plus"])
def test_siblings_store_only_what_differs_from_the_default(name):
    directory = ASSETS / name
    config = json.loads((directory / "config.json").read_text())
    assert config["granite_asr"]["base_weights"] == "../default"
    assert sum(p.stat().st_size for p in directory.iterdir()) < 20 * 2**20
    with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
        stored = set(f.keys())  # noqa: SIM118
    assert any(k.startswith("language_model.") for k in stored)
    if name == "default-plus":  # its encoder is the default's, untouched: nothing of it is stored
        assert not any(k.startswith("encoder.") for k in stored)


# The siblings read their encoder from `assets/default`, so their outputs are pinned for that model too.
DEFAULT_SHA256 = "fcedc67244cd3e57c413208ed6d6db20afa55342e6586901758df3ab60360c75"
NAR_SHA256 = "62f1ea003ef8a9687b3e4f88eb12ba4531ca0553c4d8154d6be62daca674a412"
NAR_EXACT = {
    "en.flac": "This be a, one or more your a a and to be a and or and data the the to to,, you want to tright in all them.",
    "fr.flac": "Lesques peuvent être de sont à que le texte pas de la zone, comme modificationsation àité par pasateurure.",
    "de.flac": "Wir nicht immer nur an die den Ken, unsliches Leben, denkenen.",
    "es.flac": "Especificapecifique que los para de la imora se a para imprim, como para formato a lavisaciónación en para deia.",
    "pt.flac": "Se o você segu a información informação de conta serátivamente eliminar selecionada.",
}


def test_nar_sibling_edits_in_one_pass_batched_as_alone():
    model = granite_asr.load_model("default-nar")
    assert model.variant == "nar"
    assert _sha("default-nar") == NAR_SHA256, "a new NAR sibling: record its transcripts in NAR_EXACT"
    assert _sha("default") == DEFAULT_SHA256, "a new default encoder: record the siblings' outputs"
    files = [str(SAMPLES / it["file"]) for it in ITEMS]
    batch = model.transcribe(files, progress=False)
    assert {it["file"]: r.text for it, r in zip(ITEMS, batch, strict=True)} == NAR_EXACT
    assert model.transcribe(files[1], progress=False).text == batch[1].text


PLUS_SHA256 = "a84db16e6befff91159e79c26f6945109e2b6d5272b2f2bcaead7f5b39000825"
PLUS_TURNS = [
    ("Speaker 1", "Padrãoia de array"),
    ("Speaker 2", "Nome ou fue inaigem para obter configurações"),
    ("Speaker 1", "Na pc para mais estraga."),
    ("Speaker 2", "Escala de grade"),
    ("Speaker 1", "A chave expirou"),
    ("Speaker 2", "Ajustar opções de rodapé novamente Ou então é inactiva ou reduzir."),
    ("Speaker 1", "A pasta onde as gravações."),
]  # fmt: skip


@pytest.fixture(scope="module")
def plus():
    return granite_asr.load_model("default-plus")


def test_plus_sibling_writes_speaker_turns(plus):
    assert _sha("default-plus") == PLUS_SHA256, "a new Plus sibling: record its outputs in PLUS_TURNS"
    assert _sha("default") == DEFAULT_SHA256, "a new default encoder: record the siblings' outputs"
    res = plus.transcribe(str(SAMPLES / CONVERSATION["file"]), speakers=True, progress=False)
    assert [(s.speaker, s.text) for s in res.segments] == PLUS_TURNS
    assert all(s.start <= s.end <= CONVERSATION["duration"] + 0.01 for s in res.segments)


def test_plus_sibling_times_words_with_its_own_tags(plus):
    res = plus.transcribe(str(SAMPLES / CONVERSATION["file"]), model_timestamps=True, progress=False)
    words = res.words
    assert len(words) > 20 and res.text.startswith("Pensé de referência")
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(0 <= w.start <= w.end <= 25.74 for w in words)
    assert "[T:" not in res.text and "_" not in res.text.split()  # tags parsed away, silences dropped


def test_ctc_aligner_times_the_reference_words_of_a_conversation():
    """Given the right words, the default model's char-CTC forced alignment places their ends within
    200 ms of the synthesis times for most words (measured with the char head on the last block, the
    config's `ctc_char_layer`: mean 102 ms, 88 % within 200 ms on this sample with soup-ln's encoder
    (session 27) and with swa-l's (session 24), 103 ms and 90 % with soup-efj's and with soup-ef's, 112 ms
    and 88 % with grow8e's, 103 ms and 88 % with grow8c's, 105 ms
    and 85 % with joint27's, 116 ms and 80 % with joint25c's; over conv-val 62 ms and 93 % at the mid
    layer)."""
    model = granite_asr.load_model()
    audio = load_audio(SAMPLES / CONVERSATION["file"])
    errors = np.array(reference_alignment_errors(engine_for(model), [CONVERSATION], [audio]))
    assert len(errors) == len(CONVERSATION["words"]) == 40
    assert errors[:, 0].mean() <= 0.2 and (errors[:, 0] <= 0.2).mean() >= 0.65
