"""Training recipes on tiny shapes: every stage runs, its loss goes down, and a killed run resumes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

import granite_asr
from granite_asr.train import distributed, recipe
from granite_asr.train.data import FeatureBatch
from granite_asr.train.loop import LoopConfig, Trainer, to_device
from granite_asr.train.objectives import char_targets, speech_examples

TEXTS = [
    ("en", "the cat sat on the mat", {"fr": "le chat est assis sur le tapis"}),
    ("en", "open the file menu", {"de": "öffne das dateimenü"}),
    ("fr", "bonjour tout le monde", {"en": "hello everyone"}),
    ("de", "guten morgen", {"en": "good morning"}),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, (lang, text, trans) in enumerate(TEXTS):
        t = np.arange(int(16000 * (1.0 + 0.3 * i))) / 16000
        x = 0.3 * np.sin(2 * np.pi * (200 + 90 * i) * t) + 0.02 * rng.standard_normal(t.size)
        sf.write(root / "audio" / f"{i}.flac", x.astype(np.float32), 16000)
        rows.append(
            {"id": f"u{i}", "audio": f"audio/{i}.flac", "text": text, "lang": lang, "translation": trans}
        )
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs = [t for _, t, _ in TEXTS] + [v for *_, tr in TEXTS for v in tr.values()]
    (root / "text.txt").write_text("\n".join(docs * 3) + "\n")
    return root


def _losses(out_dir) -> list[float]:
    return [json.loads(x)["loss"] for x in (out_dir / "log.jsonl").read_text().splitlines()]


def _common(out, steps):
    return [
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--log-every",
        "1",
        "--ckpt-every",
        "100",
        "--warmup",
        "1",
    ]


@pytest.fixture(scope="module")
def lm_checkpoint(corpus, tmp_path_factory):
    work = tmp_path_factory.mktemp("runs")
    recipe.main(
        ["tokenizer", "--out", str(work / "tok"), "--text", str(corpus / "text.txt"), "--vocab", "300"]
    )
    out = work / "lm"
    args = ["lm", "--tokenizer", str(work / "tok"), "--preset", "tiny", "--text", str(corpus / "text.txt")]
    recipe.main(args + _common(out, 30) + ["--lr", "1e-2", "--batch-tokens", "400", "--fp32"])
    return out


def test_tokenizer_has_official_special_tokens(lm_checkpoint):
    tok = granite_asr.load_model(lm_checkpoint / "latest").tokenizer
    assert tok.audio_token_id == tok.vocab_size - 1  # appended last, as in the official layout
    for name in ("<|end_of_text|>", "<|pad|>", "<|start_of_role|>", "<|end_of_role|>"):
        assert tok.token_to_id(name) is not None


def test_lm_stage_loss_goes_down(lm_checkpoint):
    losses = _losses(lm_checkpoint)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])


def test_lm_stage_continues_from_a_checkpoint_with_its_tokenizer(lm_checkpoint, corpus, tmp_path):
    # `--init` alone: the checkpoint carries its tokenizer (no `--tokenizer`), and the stage resumes
    # the language model where the checkpoint left it, not from a fresh initialisation.
    out = tmp_path / "lm2"
    args = ["lm", "--init", str(lm_checkpoint / "latest"), "--text", str(corpus / "text.txt")]
    recipe.main(args + _common(out, 3) + ["--lr", "1e-4", "--batch-tokens", "400", "--fp32"])
    first = _losses(out)[0]
    assert first < 0.8 * np.mean(_losses(lm_checkpoint)[:3])
    tok = granite_asr.load_model(out / "latest").tokenizer
    assert tok.vocab_size == granite_asr.load_model(lm_checkpoint / "latest").tokenizer.vocab_size
    with pytest.raises(SystemExit, match="--text-pairs"):  # pairs come from the offline text only
        recipe.main(args + ["--text-pairs"] + _common(tmp_path / "lm3", 1))


def _stage_args(stage, corpus, lm_checkpoint, tmp_path) -> list[str]:
    init = str(lm_checkpoint / "latest")
    return [stage, "--init", init, "--corpus", str(corpus), "--cache", str(tmp_path / "f")]


@pytest.mark.parametrize(
    "stage,lr", [("encoder", "3e-3"), ("speech", "5e-3"), ("joint", "3e-3"), ("nar", "2e-3")]
)
def test_speech_stages_loss_goes_down(stage, lr, corpus, lm_checkpoint, tmp_path):
    out = tmp_path / stage
    args = _stage_args(stage, corpus, lm_checkpoint, tmp_path)
    recipe.main(args + _common(out, 30) + ["--lr", lr, "--batch-seconds", "20", "--fp32"])
    losses = _losses(out)
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:3])
    model = granite_asr.load_model(out / "latest")
    assert model.variant == ("nar" if stage == "nar" else "ar")


def _encoder_args(corpus, lm_checkpoint, tmp_path) -> list[str]:
    init = str(lm_checkpoint / "latest")
    return ["encoder", "--init", init, "--corpus", str(corpus), "--cache", str(tmp_path / "f")]


def test_resume_continues_the_same_curve(corpus, lm_checkpoint, tmp_path):
    """8 steps straight == 4 steps, a stop, then 4 more from the checkpoint (same batches, same losses)."""
    args = _encoder_args(corpus, lm_checkpoint, tmp_path)
    # with every feature augmentation on: their draws must be replayed on resume too
    extra = [
        "--batch-seconds",
        "3",
        "--fp32",
        "--lr",
        "1e-3",
        "--vtlp",
        "0.1",
        "--gain-db",
        "24",
        "--eq-db",
        "6",
        "--tempo",
        "1.3",
        "--spec-augment",
    ]
    recipe.main(args + _common(tmp_path / "straight", 8) + extra)
    recipe.main(args + _common(tmp_path / "split", 8) + extra + ["--stop-at", "4"])
    recipe.main(args + _common(tmp_path / "split", 8) + extra)
    straight, split = _losses(tmp_path / "straight"), _losses(tmp_path / "split")
    assert len(split) == 8
    # The resumed run fast-forwards its batch stream and restores the optimizer moments, so with
    # several batches per epoch (3 s batches) the curves must still match step for step.
    np.testing.assert_allclose(split, straight, rtol=1e-4)


def test_to_device_moves_every_tensor_of_a_batch():
    """Speech batches (with their text batch) and lm batches reach the training device whole."""
    meta = torch.device("meta")  # any device but the CPU shows what moved
    text = (torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.bool))
    fb = FeatureBatch(torch.zeros(2, 7, 4), torch.tensor([7, 5]), ["a", "b"], text)  # type: ignore[list-item]
    moved = to_device(fb, meta)
    assert moved.items == fb.items and fb.features.device.type == "cpu"  # a new batch, the old one kept
    tensors = [moved.features, moved.lengths, *moved.text]
    assert all(t.device == meta for t in tensors)
    assert to_device(FeatureBatch(fb.features, fb.lengths, fb.items), meta).text is None
    assert all(t.device == meta for t in to_device(text, meta))


def test_training_device_is_checked_before_any_work():
    assert distributed.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(SystemExit, match="'cpu' or 'cuda"):
        distributed.resolve_device("mps")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            recipe.main(["encoder", "--init", "x", "--out", "y", "--device", "cuda"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run in a GPU session)")
def test_encoder_stage_on_cuda_resumes_on_the_cpu(corpus, lm_checkpoint, tmp_path):
    """A GPU run trains (bf16 autocast on CUDA), checkpoints from CPU copies, and resumes on the CPU."""
    args = _encoder_args(corpus, lm_checkpoint, tmp_path) + ["--batch-seconds", "20", "--lr", "3e-3"]
    out = tmp_path / "gpu"
    recipe.main(args + _common(out, 30) + ["--device", "cuda", "--stop-at", "20"])
    losses = _losses(out)
    assert len(losses) == 20 and np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:3])
    recipe.main(args + _common(out, 30))  # the rest on the CPU, from the GPU's checkpoint
    assert len(_losses(out)) == 30 and granite_asr.load_model(out / "latest").variant == "ar"


def test_encoder_bpe_weight_switches_the_bpe_loss(corpus, lm_checkpoint, tmp_path):
    args = _encoder_args(corpus, lm_checkpoint, tmp_path)
    for weight in ("0", "0.5"):
        out = tmp_path / f"w{weight}"
        recipe.main(args + _common(out, 2) + ["--bpe-weight", weight, "--fp32"])
        keys = json.loads((out / "log.jsonl").read_text().splitlines()[0])
        assert ("bpe" in keys) == (weight != "0")


def test_export_writes_a_bf16_checkpoint_with_the_same_outputs(lm_checkpoint, tmp_path):
    src = lm_checkpoint / "latest"
    recipe.main(["export", "--init", str(src), "--out", str(tmp_path / "ship")])
    shipped = granite_asr.load_model(tmp_path / "ship", dtype=torch.float32)
    assert json.loads((tmp_path / "ship" / "config.json").read_text())["dtype"] == "bfloat16"
    ref = granite_asr.load_model(src, dtype=torch.float32)
    a = dict(shipped.state_dict())
    for k, v in ref.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(a[k], v.to(torch.bfloat16).float(), rtol=0, atol=0, msg=k)
    assert shipped.tokenizer.encode("the cat") == ref.tokenizer.encode("the cat")


def test_trainer_checkpoint_is_atomic_and_loadable(tmp_path):
    model = granite_asr.build_model("tiny")
    trainer = Trainer(model, LoopConfig(out_dir=str(tmp_path), steps=1), lambda m, b: {"loss": b})
    trainer.save()
    assert (tmp_path / "latest" / "trainer_state.json").exists()
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())
    assert granite_asr.load_model(tmp_path / "latest").variant == "ar"


def test_char_targets_spell_what_the_head_can():
    from granite_asr import char_vocab

    assert char_vocab.decode(char_targets("Hello, World!", "en")) == "hello world"
    assert char_vocab.decode(char_targets("Ça va?", "fr")) == "ça va"
    assert torch.tensor(char_targets("l'été", "fr")).max() < char_vocab.SIZE


def test_vtlp_moves_formants_and_keeps_padding():
    from granite_asr.train.data import vtlp

    x = torch.zeros(3, 10, 160)  # (B, T, 2 stacked frames × 80 mels)
    x[:, :6, 40] = x[:, :6, 120] = 1.0  # a peak at mel bin 40 in both stacked frames; frames 6+ padding
    rng = np.random.default_rng(0)
    assert torch.equal(vtlp(x, 80, rng, max_warp=0.0), x)
    y = vtlp(x, 80, rng, max_warp=0.2)
    assert y.shape == x.shape and torch.all(y[:, 6:] == 0)
    peaks = y[:, 0, :80].argmax(-1)
    assert torch.equal(peaks, y[:, 0, 80:].argmax(-1))  # the same warp for every stacked frame
    assert (peaks != 40).any() and ((peaks - 40).abs() <= 10).all()


def test_random_tempo_slows_rows_and_restacks_them():
    from granite_asr.lengths import FrameGeometry
    from granite_asr.train.data import random_tempo

    b, t, stack, n_mels = 4, 12, 2, 80
    geometry = FrameGeometry(16000, 160, stack, 15, 5, 4, nar=False)
    ramp = torch.arange(t * stack, dtype=torch.float32)  # mel frame k holds the value k in every bin
    x = ramp[None, :, None].expand(b, -1, n_mels).reshape(b, t, stack * n_mels).clone()  # (B, T, D)
    lengths = torch.tensor([12, 9, 5, 12])
    for i, n in enumerate(lengths.tolist()):
        x[i, n:] = 0.0  # padding
    rng = np.random.default_rng(0)
    same, kept = random_tempo(x, lengths, geometry, rng, max_tempo=1.0)
    assert torch.equal(kept, lengths) and torch.equal(same, x)
    y, new = random_tempo(x, lengths, geometry, np.random.default_rng(3), max_tempo=1.5, p=1.0)
    assert (new >= lengths).all() and (new > lengths).any() and y.shape == (b, int(new.max()), stack * n_mels)
    assert (new <= (lengths.double() * 1.5).ceil()).all()
    for i, (n0, n) in enumerate(zip(lengths.tolist(), new.tolist(), strict=True)):
        mel = y[i, :n].reshape(n * stack, n_mels)[:, 0]  # (M',) the stretched ramp, restacked in order
        assert mel[0] == 0.0 and (mel.diff() > 0).all() and mel[-1] <= n0 * stack - 1 + 1e-4
        assert torch.all(y[i, n:] == 0)  # padding stays zero


def test_random_eq_colours_each_utterance_smoothly_and_keeps_padding():
    from granite_asr.train.data import random_eq

    x = torch.zeros(3, 10, 160)  # (B, T, 2 stacked frames × 80 mels)
    lengths = torch.tensor([10, 6, 3])
    rng = np.random.default_rng(0)
    assert torch.equal(random_eq(x, lengths, 80, rng, max_db=0.0), x)
    y = random_eq(x, lengths, 80, rng, max_db=8.0)
    for i, n in enumerate(lengths.tolist()):
        assert torch.all(y[i, n:] == 0)  # padding untouched
        assert torch.allclose(y[i, :n], y[i, :1].expand(n, -1))  # one curve for every frame
        assert torch.equal(y[i, 0, :80], y[i, 0, 80:])  # and for every stacked frame
    gain_db = y[:, 0, :80] * 40  # feature units → dB
    assert gain_db.abs().max() <= 8.0 + 1e-4 and gain_db.abs().amax(-1).min() > 0
    assert (gain_db[:, 1:] - gain_db[:, :-1]).abs().max() < 1.0  # smooth: < 1 dB between adjacent bins
    assert not torch.allclose(gain_db[0], gain_db[1])  # each utterance its own


def test_random_gain_shifts_whole_utterances_down_and_keeps_padding():
    from granite_asr.audio.features import log_compress
    from granite_asr.train.data import random_gain

    # a feature-domain gain is exactly a waveform gain: the floor follows the peak (SPEC §2.1)
    mel = torch.rand(1, 50, 80) * 100
    quiet = log_compress(mel * 10 ** (-20 / 10))
    shifted = log_compress(mel) + torch.full((1,), -20 / 40)[:, None, None]
    assert torch.allclose(quiet, shifted, atol=1e-5)
    x = torch.zeros(64, 10, 160)
    lengths = torch.randint(1, 11, (64,))
    y = random_gain(x, lengths, np.random.default_rng(0), max_db=24.0)
    db = y[:, 0, 0] * 40
    for i, n in enumerate(lengths.tolist()):
        assert torch.all(y[i, n:] == 0) and torch.all(y[i, :n] == y[i, 0, 0])  # one gain, padding kept
    assert db.max() <= 0 and db.min() >= -24 - 1e-4
    assert 10 < int((db < 0).sum()) < 54  # about half quieter, each by its own amount
    assert len(set(db[db < 0].tolist())) == int((db < 0).sum())


def test_speech_prompts_cover_what_users_send():
    """ASR prompts with and without the language, and keyword-biased ones whose keywords mix words of the
    transcript with a distractor from another item (never Japanese, which has no spaces)."""
    items = [
        SimpleNamespace(lang="en", text="Remember the umbrella tomorrow morning.", translation={}),
        SimpleNamespace(lang="ja", text="今日はとても良い天気ですね。", translation={}),
    ]
    batch = SimpleNamespace(items=items)
    rng = np.random.default_rng(0)
    plain = speech_examples(batch, "ar", rng, p_translate=0.0, p_no_language=1.0, p_keywords=0.0)
    assert all("English" not in e.prompt and "Japanese" not in e.prompt for e in plain)
    named = speech_examples(batch, "ar", rng, p_translate=0.0, p_no_language=0.0, p_keywords=0.0)
    assert "English" in named[0].prompt and "Japanese" in named[1].prompt
    for _ in range(10):
        en, ja = speech_examples(batch, "ar", rng, p_translate=0.0, p_no_language=0.0, p_keywords=1.0)
        keywords = en.prompt.split("Keywords: ")[1].split("\n")[0].split(", ")
        assert any(k in en.answer for k in keywords)
        assert "Keywords" not in ja.prompt  # no words to pick in the Japanese item
        assert en.answer == items[0].text


def test_english_items_translate_at_their_own_rate():
    """`p_translate_en` sets how often English items get an en→X prompt, apart from X→en's rate; the
    answer is the named target's text."""
    items = [
        SimpleNamespace(
            lang="en", text="Open the file.", translation={"fr": "Ouvrez le fichier.", "de": "Öffne."}
        ),
        SimpleNamespace(lang="fr", text="Ouvrez le fichier.", translation={"en": "Open the file."}),
    ]
    batch, rng = SimpleNamespace(items=items), np.random.default_rng(0)
    runs = [speech_examples(batch, "ar", rng, p_translate=0.0, p_translate_en=1.0) for _ in range(40)]
    assert all(en.answer in ("Ouvrez le fichier.", "Öffne.") for en, _ in runs)
    assert {en.answer for en, _ in runs} == {"Ouvrez le fichier.", "Öffne."}  # both targets drawn
    assert all(fr.answer == "Ouvrez le fichier." for _, fr in runs)  # French: transcribed, never translated
    same = [speech_examples(batch, "ar", rng, p_translate=1.0) for _ in range(5)]  # default: the shared rate
    assert all(fr.answer == "Open the file." and en.answer != "Open the file." for en, fr in same)


def test_precomputed_encoder_gives_the_speech_loss(corpus, lm_checkpoint, tmp_path):
    """The speech stage over encoder outputs computed once equals the loss with the encoder run in the
    step (eval mode, no augmentation): same audio tokens, same prompts, same cross-entropy."""
    from granite_asr.train import objectives as obj
    from granite_asr.train.data import FeatureCache, collate
    from granite_asr.train.encoded import EncodedCache, encoded_speech_loss

    model = granite_asr.load_model(lm_checkpoint / "latest").float().eval()
    cache = FeatureCache.build(corpus / "train.jsonl", tmp_path / "f", "train", model.config)
    encoded = EncodedCache.build(model, cache)
    assert [u.frames for u in encoded.items] == [u.frames for u in cache.items]  # 1 encoder frame per frame
    fb, eb = collate(cache, cache.items), collate(encoded, encoded.items)
    rng = np.random.default_rng(0)
    examples = obj.speech_examples(fb, "ar", rng, p_translate=0.5)
    with torch.no_grad():
        direct = obj.speech_loss(model, fb, model.tokenizer, examples)["loss"]
        cached = encoded_speech_loss(model, eb, model.tokenizer, examples)["loss"]
    # the cache holds bf16-autocast encoder outputs stored as float16: close, not bit-equal
    assert float(cached) == pytest.approx(float(direct), rel=2e-2)
    out = tmp_path / "speech"
    args = _stage_args("speech", corpus, lm_checkpoint, tmp_path)
    recipe.main(
        args + _common(out, 30) + ["--lr", "5e-3", "--batch-seconds", "20", "--fp32", "--precompute-encoder"]
    )
    losses = _losses(out)
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:3])


def test_frozen_parts_train_in_eval_mode(tmp_path):
    """A frozen encoder runs as at inference while the rest trains: its BatchNorm statistics stay put."""
    model = granite_asr.build_model("tiny")
    for name, p in model.named_parameters():
        p.requires_grad = not name.startswith("encoder.")
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    feats = torch.randn(2, 30, model.config.encoder.input_dim)

    def loss(m, _):
        assert not m.encoder.training and m.projector.training
        enc = m.encoder(feats, torch.tensor([30, 20]))
        return {"loss": m.projector(enc.features).square().mean()}

    Trainer(model, LoopConfig(out_dir=str(tmp_path), steps=2, log_every=1), loss).run(iter([0, 0]))
    after = model.encoder.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_text_weight_trains_the_language_model_beside_speech(corpus, lm_checkpoint, tmp_path):
    """`--text-weight`: every step also carries a text batch; its loss is logged and goes down, and with
    weight 0 no text loss is computed (the speech-only recipe is unchanged)."""
    args = _stage_args("speech", corpus, lm_checkpoint, tmp_path)
    extra = ["--lr", "5e-3", "--batch-seconds", "20", "--fp32", "--text", str(corpus / "text.txt")]
    out = tmp_path / "mixed"
    recipe.main(args + _common(out, 20) + extra + ["--text-weight", "0.5", "--text-batch-tokens", "60"])
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    text = [r["text"] for r in recs]
    assert np.mean(text[-4:]) < 0.9 * np.mean(text[:3])
    plain = tmp_path / "plain"
    recipe.main(args + _common(plain, 2) + extra)
    assert "text" not in json.loads((plain / "log.jsonl").read_text().splitlines()[0])


def test_nar_checkpoint_fine_tunes_as_it_is_and_takes_another_encoder(corpus, lm_checkpoint, tmp_path):
    """`train nar --init <nar checkpoint>` keeps its trained projector (no new one); `--encoder-from`
    swaps in another checkpoint's encoder first (re-basing a sibling on a retrained encoder)."""
    args = _stage_args("nar", corpus, lm_checkpoint, tmp_path)
    extra = ["--lr", "2e-3", "--batch-seconds", "20", "--fp32"]
    recipe.main(args + _common(tmp_path / "nar", 3) + extra)
    enc = tmp_path / "enc"
    recipe.main(_stage_args("encoder", corpus, lm_checkpoint, tmp_path) + _common(enc, 3) + extra)
    nar_init = str(tmp_path / "nar" / "latest")
    tuned = tmp_path / "tuned"
    cmd = ["nar", "--init", nar_init, "--encoder-from", str(enc / "latest"), "--corpus", str(corpus)]
    recipe.main(cmd + ["--cache", str(tmp_path / "f")] + _common(tuned, 1) + extra + ["--lr", "1e-9"])
    before = granite_asr.load_model(nar_init, dtype=torch.float32).state_dict()
    source = granite_asr.load_model(enc / "latest", dtype=torch.float32).state_dict()
    after = granite_asr.load_model(tuned / "latest", dtype=torch.float32).state_dict()
    proj = [k for k in before if k.startswith("projector.")]
    assert proj and all(torch.allclose(after[k], before[k], atol=1e-6) for k in proj)
    encoder = [k for k in after if k.startswith("encoder.") and k.endswith("weight")]
    assert all(torch.equal(after[k], source[k]) for k in encoder)
    assert any(not torch.equal(before[k], source[k]) for k in encoder)


def test_char_upsample_gives_the_head_more_label_frames_and_resumes(corpus, lm_checkpoint, tmp_path):
    """`--char-upsample 2`: the trained checkpoint's last-block char head gives two label frames per
    encoder frame (`encoder.char_upsample`, `encoder.out_up`), its CTC loss is computed over them, and a
    re-run with the same flags resumes the checkpoint instead of starting the head again."""
    from granite_asr.train.objectives import encoder_loss

    out = tmp_path / "up"
    args = _encoder_args(corpus, lm_checkpoint, tmp_path) + ["--char-upsample", "2", "--fp32"]
    args += _common(out, 6) + ["--lr", "3e-3", "--batch-seconds", "20"]
    recipe.main(args + ["--stop-at", "4"])
    model = granite_asr.load_model(out / "latest", dtype=torch.float32)
    assert model.config.encoder.char_upsample == 2
    up = model.encoder.out_up.weight
    assert not torch.allclose(up, torch.eye(up.shape[1]).repeat(2, 1))  # trained away from the copies
    x = torch.randn(1, 30, model.config.encoder.input_dim)
    with torch.no_grad():
        enc = model.encoder(x, torch.tensor([25]))
    assert model.encoder.char_logits(enc, final=True).shape[1] == 60
    assert model.encoder.char_lengths(enc, final=True).tolist() == [50]
    assert enc.mid_logits.shape[1] == 30  # the self-conditioning head keeps one label per frame
    batch = FeatureBatch(x, torch.tensor([25]), [SimpleNamespace(text="the cat", lang="en")])
    assert torch.isfinite(encoder_loss(model, batch, model.tokenizer)["char"])
    assert len(_losses(out)) == 4
    recipe.main(args)
    assert len(_losses(out)) == 6  # resumed at step 4


def test_rebuild_keeps_every_tensor_the_new_preset_can_hold(corpus, lm_checkpoint, tmp_path):
    """`--rebuild --preset tiny-plus` turns the tiny LM checkpoint into the Plus layout (block 1's output
    joins the encoder output, so the projector reads twice the width): the decoder is the checkpoint's,
    only projector tensors change shape, and the tokenizer travels with it."""
    out = tmp_path / "rebuilt"
    args = _encoder_args(corpus, lm_checkpoint, tmp_path) + ["--rebuild", "--preset", "tiny-plus"]
    recipe.main(args + _common(out, 1) + ["--batch-seconds", "20", "--fp32"])
    old = granite_asr.load_model(lm_checkpoint / "latest", dtype=torch.float32)
    new = granite_asr.load_model(out / "latest", dtype=torch.float32)
    assert new.config.encoder.cat_hidden_layers == (1,) and not old.config.encoder.cat_hidden_layers
    before, after = old.state_dict(), new.state_dict()
    text = [k for k in after if k.startswith("language_model.")]
    assert text and all(torch.equal(after[k], before[k]) for k in text)
    changed = [k for k in after if k in before and after[k].shape != before[k].shape]
    assert changed and all(k.startswith("projector.") for k in changed)
    assert new.tokenizer.vocab_size == old.tokenizer.vocab_size
