"""Plus-style training (issue 4 §3d): the AR → Plus conversion keeps the model's function, the targets
round-trip through the parser inference uses, and `train plus` learns on tiny shapes and resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import granite_asr
from granite_asr.train import plus, recipe
from granite_asr.transcribe import plus_tags

TURNS = [
    {"speaker": 2, "text": "hello there how are you"},
    {"speaker": 1, "text": "fine thanks"},
    {"speaker": 2, "text": "good to hear"},
]


def _words(turns, t0=0.4, word=0.31, gap=0.05, pause=0.6):
    out, t = [], t0
    for turn in turns:
        for w in turn["text"].split():
            out.append(
                {"word": w, "start": round(t, 3), "end": round(t + word, 3), "speaker": turn["speaker"]}
            )
            t += word + gap
        t += pause
    return out


def test_targets_round_trip_through_the_inference_parser():
    turns = plus_tags.parse_speaker_turns(plus.speaker_answer(TURNS))
    assert [(t.speaker, t.text) for t in turns] == [
        ("1", TURNS[0]["text"]),
        ("2", "fine thanks"),
        ("1", "good to hear"),
    ]
    words = _words(TURNS * 3)  # 30 words, ~13 s: the 10 s rollover of the tags is crossed
    text = plus.timestamp_answer(words)
    assert text.startswith("_ [T:40] hello [T:71]")  # the leading silence, then the first word's end
    timed = plus_tags.parse_timed_words(text)
    assert [w.word for w in timed] == [w["word"] for w in words]
    np.testing.assert_allclose([w.end for w in timed], [w["end"] for w in words], atol=0.006)
    # a word after a tagged silence starts where the silence ended; after a short gap, at the last end
    np.testing.assert_allclose(timed[5].start, words[5]["start"], atol=0.006)
    np.testing.assert_allclose(timed[1].start, words[0]["end"], atol=0.006)


def test_plus_from_ar_computes_what_the_ar_model_computes():
    torch.manual_seed(0)
    ar = granite_asr.build_model("tiny").eval()
    with torch.no_grad():  # non-zero everywhere, so a wrongly placed column would show
        for p in ar.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pl = plus.plus_from_ar(ar).eval()
    assert pl.variant == "plus" and pl.config.encoder.cat_hidden_layers == (1,)
    assert pl.config.projector.encoder_hidden_size == 2 * ar.config.encoder.hidden_dim
    feats = torch.randn(2, 40, ar.config.encoder.input_dim)
    lengths = torch.tensor([40, 27])
    with torch.no_grad():
        a, na, _ = ar.encode_audio(feats, lengths)
        b, nb, _ = pl.encode_audio(feats, lengths)
    assert torch.equal(na, nb)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="'ar' config"):
        plus.plus_config(pl.config)


@pytest.fixture(scope="module")
def conv_corpus(tmp_path_factory):
    """Four 'conversations' of tones (a different pitch per speaker) with word times, two utterances."""
    root = tmp_path_factory.mktemp("conv")
    (root / "audio").mkdir()
    rows = []
    for i in range(4):
        turns = [dict(t, text=" ".join(t["text"].split()[: 2 + i % 2])) for t in TURNS]
        words, x = _words(turns, word=0.2, pause=0.3), np.zeros(int(16000 * 4.0), np.float32)
        for w in words:
            s, e = int(w["start"] * 16000), int(w["end"] * 16000)
            x[s:e] = 0.3 * np.sin(2 * np.pi * (180 + 120 * w["speaker"]) * np.arange(e - s) / 16000)
        sf.write(root / "audio" / f"c{i}.flac", x, 16000)
        text = " ".join(t["text"] for t in turns)
        rows.append(
            {
                "id": f"c{i}",
                "audio": f"audio/c{i}.flac",
                "lang": "en",
                "text": text,
                "turns": turns,
                "words": words,
            }
        )
    for i, text in enumerate(["good morning", "open the file"]):
        x = 0.3 * np.sin(2 * np.pi * 250 * np.arange(16000) / 16000).astype(np.float32)
        sf.write(root / "audio" / f"u{i}.flac", x, 16000)
        rows.append({"id": f"u{i}", "audio": f"audio/u{i}.flac", "lang": "en", "text": text})
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "text.txt").write_text("\n".join([r["text"] for r in rows] * 3) + "\n")
    return root


def _args(root, out, init, steps, *extra):
    return [
        "plus", "--init", str(init), "--corpus", str(root), "--cache", str(root / "f"), "--out", str(out),
        "--steps", str(steps), "--log-every", "1", "--ckpt-every", "100", "--warmup", "1", "--fp32",
        "--lr", "5e-3", "--batch-seconds", "30", *extra,
    ]  # fmt: skip


def test_plus_stage_learns_and_resumes(conv_corpus, tmp_path):
    work = tmp_path / "runs"
    recipe.main(
        ["tokenizer", "--out", str(work / "tok"), "--text", str(conv_corpus / "text.txt"), "--vocab", "300"]
    )
    lm = ["lm", "--tokenizer", str(work / "tok"), "--preset", "tiny", "--text", str(conv_corpus / "text.txt")]
    recipe.main(lm + ["--out", str(work / "lm"), "--steps", "2", "--warmup", "1", "--fp32"])
    init = work / "lm" / "latest"
    recipe.main(_args(conv_corpus, work / "plus", init, 30, "--precompute-encoder"))
    losses = [json.loads(x)["loss"] for x in (work / "plus" / "log.jsonl").read_text().splitlines()]
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:3])
    model = granite_asr.load_model(work / "plus" / "latest")
    assert model.variant == "plus" and model.config.encoder.cat_hidden_layers == (1,)
    # a second run of the same command from the Plus checkpoint resumes it (variant kept)
    recipe.main(_args(conv_corpus, work / "plus", init, 32, "--precompute-encoder"))
    assert len((work / "plus" / "log.jsonl").read_text().splitlines()) == 32


def test_plus_examples_refuse_japanese():
    from types import SimpleNamespace

    batch = SimpleNamespace(items=[SimpleNamespace(lang="ja", text="今日は", extra={"id": "j1"}, index=0)])
    with pytest.raises(ValueError, match="j1"):
        plus.plus_examples(batch, np.random.default_rng(0))


def test_plus_stage_fine_tunes_a_plus_checkpoint(conv_corpus, tmp_path):
    """`--init` an existing Plus checkpoint (the official 2b-plus layout, tiny shapes): trained as it is."""
    from granite_asr.model.checkpoint import save_pretrained

    from .helpers_model import build_tiny

    src = build_tiny("tiny-plus")
    save_pretrained(src, tmp_path / "plus-init")
    recipe.main(_args(conv_corpus, tmp_path / "ft", tmp_path / "plus-init", 3))
    tuned = granite_asr.load_model(tmp_path / "ft" / "latest")
    assert tuned.config == src.config
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, src.state_dict()[k])]
    assert changed and all(k.startswith(("projector.", "language_model.")) for k in changed)
