"""The batched engine on tiny random models: every mode, batched == alone, bucketing, result fields,
errors before compute (issue 3 item 1)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from granite_asr import char_vocab
from granite_asr.audio.features import FeatureExtractor
from granite_asr.decoding.ctc import char_logits
from granite_asr.decoding.simple import greedy_transcribe
from granite_asr.engine import Engine, EngineResult, plan_batches
from granite_asr.engine.engine import TIMESTAMP_TOKENS_PER_SECOND
from granite_asr.model.build import build_model as granite_asr_build
from granite_asr.model.ctc import greedy_decode
from granite_asr.options import DecodeOptions, TranscribeOptions

from .helpers_model import build_tiny
from .test_decoding import clips


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def engines():
    return {name: Engine(build_tiny(name)) for name in ("tiny", "tiny-plus", "tiny-nar")}


AUDIOS = clips((1.0, 0.6, 1.4, 2.0, 0.3))


def opts(mode="auto", **decode) -> TranscribeOptions:
    return TranscribeOptions(
        decode=DecodeOptions(mode=mode, max_new_tokens=decode.pop("max_new_tokens", 10), **decode)
    )


def assert_same(a: EngineResult, b: EngineResult) -> None:
    assert a.tokens == b.tokens and a.text == b.text and a.mode_used == b.mode_used
    assert a.draft_tokens == b.draft_tokens and a.stop_reason == b.stop_reason
    assert a.encoder_frames == b.encoder_frames
    assert np.allclose(a.token_logprobs, b.token_logprobs, atol=1e-4)
    assert torch.allclose(a.char_logits, b.char_logits, atol=1e-4)


CASES = [
    ("tiny", opts("ar")),
    ("tiny", opts("ar", beam_size=3)),
    ("tiny", opts("ctc")),
    # The random model's draft tokens have p ≈ 0.002: this threshold verifies rows 0 and 4, rejects 1-3.
    ("tiny", opts("speculative", confidence_threshold=0.0022)),
    ("tiny-plus", opts("ar").replace(speakers=True)),
    ("tiny-plus", opts("ctc")),
    # timestamp mode: each row's token budget follows its own audio length (Engine._budgets)
    ("tiny-plus", opts("ar", max_new_tokens=4).replace(model_timestamps=True)),
    ("tiny-plus", opts("ar", max_new_tokens=4, beam_size=2).replace(model_timestamps=True)),
    ("tiny-nar", opts("nar")),
    ("tiny-nar", opts("ctc")),
]


@pytest.mark.parametrize(
    ("name", "options"), CASES, ids=[f"{n}-{o.decode.mode}-{i}" for i, (n, o) in enumerate(CASES)]
)
def test_batched_equals_alone(engines, name, options):
    engine = engines[name]
    batched = engine.run(AUDIOS, options.replace(decode=dataclasses.replace(options.decode, batch_size=3)))
    assert len(batched) == len(AUDIOS)
    for audio, res in zip(AUDIOS, batched, strict=True):
        assert_same(res, engine.run([audio], options)[0])


def test_result_fields(engines):
    engine = engines["tiny"]
    results = engine.run(AUDIOS, opts("ar"))
    for audio, res in zip(AUDIOS, results, strict=True):
        assert res.mode_used == "ar" and res.stop_reason in ("eos", "length", "repeat")
        assert res.encoder_frames == engine.encoder_frames(len(audio))
        assert res.char_logits.shape == (res.encoder_frames, 348)
        assert res.char_logits.dtype == torch.float32 and res.char_logits.device.type == "cpu"
        assert torch.allclose(res.char_logits.logsumexp(-1), torch.zeros(res.encoder_frames), atol=1e-4)
        assert res.frame_seconds == pytest.approx(0.02)
        assert len(res.token_logprobs) == len(res.tokens) and res.draft_tokens == ()
        assert res.avg_logprob <= 0


@pytest.mark.parametrize("name", ["tiny", "tiny-plus", "tiny-nar"])
def test_default_mode_matches_generate(engines, name):
    """Greedy (guard off) through the engine gives model.generate's text (decoding/simple.py)."""
    engine = engines[name]
    results = engine.run(AUDIOS[:3], opts(max_new_tokens=8, max_repeats=0))
    assert [r.text for r in results] == greedy_transcribe(engine.model, AUDIOS[:3], max_new_tokens=8)
    assert {r.mode_used for r in results} == {"nar" if name == "tiny-nar" else "ar"}


def test_nar_tokens_and_draft(engines):
    engine = engines["tiny-nar"]
    batch = FeatureExtractor.from_config(engine.model.config)(AUDIOS)
    ref = engine.model.generate(batch.input_features, batch.feature_lengths)
    results = engine.run(AUDIOS, opts())
    assert [list(r.tokens) for r in results] == ref.tokens
    assert [list(r.draft_tokens) for r in results] == ref.draft


def test_speculative_paths(engines):
    engine = engines["tiny"]
    ar = engine.run(AUDIOS, opts("ar", max_repeats=0))
    rejected = engine.run(AUDIOS, opts("speculative", confidence_threshold=1.0, max_repeats=0))
    assert {r.mode_used for r in rejected} == {"speculative-ar"}
    assert [r.tokens for r in rejected] == [r.tokens for r in ar]
    accepted = engine.run(AUDIOS, opts("speculative", confidence_threshold=0.0))
    for r in accepted:
        assert r.draft_tokens and r.mode_used == "speculative-verified" and r.tokens == r.draft_tokens
        assert r.stop_reason == "draft" and r.text == engine.tokenizer.decode(r.tokens).strip()


def test_repetition_guard_in_engine(engines):
    results = engines["tiny-plus"].run(AUDIOS, opts(max_new_tokens=40, max_repeats=3, repeat_window=16))
    assert any(r.stop_reason == "repeat" for r in results)  # the random Plus model loops
    assert all(len(r.tokens) < 40 for r in results if r.stop_reason == "repeat")


def test_timestamp_mode_budget_follows_the_audio(engines):
    """`word [T:N]` costs ~9 tokens a word: in timestamp mode a row may write TIMESTAMP_TOKENS_PER_SECOND
    per second of its audio, above max_new_tokens; plain transcription keeps max_new_tokens."""
    engine, audios = engines["tiny-plus"], clips((1.0, 2.0))
    plain = engine.run(audios, opts(max_new_tokens=4, max_repeats=0))
    assert [len(r.tokens) for r in plain if r.stop_reason == "length"] == [4, 4]
    timed = engine.run(audios, opts(max_new_tokens=4, max_repeats=0).replace(model_timestamps=True))
    budgets = [math.ceil(len(a) / 16000 * TIMESTAMP_TOKENS_PER_SECOND) for a in audios]
    assert [r.stop_reason for r in timed] == ["length", "length"]  # the random model never ends
    assert [len(r.tokens) for r in timed] == budgets and budgets[1] > budgets[0] > 4


def test_plan_batches_buckets_and_restores_order():
    frames = [30, 100, 50, 100, 10, 70, 20]
    plan = plan_batches(frames, max_batch_size=3, max_frames=210)
    assert sorted(plan.order) == list(range(len(frames)))
    for batch in plan.batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(frames[i] for i in batch) <= 210
    lengths = [frames[i] for i in plan.order]
    assert lengths == sorted(lengths, reverse=True)  # longest first, so batches pad little
    assert plan.restore([frames[i] for i in plan.order]) == frames
    assert plan_batches([500, 10], max_batch_size=8, max_frames=100).batches == (
        (0,),
        (1,),
    )  # too long runs alone


def test_run_restores_input_order_and_reports_progress(engines):
    engine = engines["tiny"]
    seen = []
    small = opts("ctc", batch_size=2)
    results = engine.run(AUDIOS, small, on_batch=lambda done, total: seen.append((done, total)))
    assert [r.encoder_frames for r in results] == [engine.encoder_frames(len(a)) for a in AUDIOS]
    assert seen[-1] == (5, 5) and len(seen) == 3
    assert engine.run([], small) == []


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("tiny-plus", opts("speculative"), "speculative"),
        ("tiny-nar", opts("ar"), "autoregressive"),
        ("tiny", opts("ctc").replace(keywords=("IBM",)), "keywords need mode 'ar'"),
        ("tiny-plus", opts("ctc").replace(speakers=True), "speakers need mode 'ar'"),
        (
            "tiny",
            opts("speculative").replace(task="translate", target_language="fr", language="en"),
            "translate",
        ),
        ("tiny-nar", opts().replace(task="translate"), "translate"),
        ("tiny", opts("ar").replace(model_timestamps=True), "plus"),
        ("tiny-plus", opts("ar").replace(model_timestamps=True, speakers=True), "one at a time"),
    ],
)
def test_errors_before_compute(engines, name, options, message):
    with pytest.raises(ValueError, match=message):
        engines[name].run(AUDIOS, options)


def test_bad_audio_raises_before_compute(engines):
    bad = AUDIOS[:2] + [np.array([0.0, np.nan] * 8000, dtype=np.float32)]
    with pytest.raises(ValueError, match="NaN"):
        engines["tiny"].run(bad, opts())


def test_bf16_engine_runs():
    engine = Engine(build_tiny("tiny"), dtype=torch.bfloat16)
    results = engine.run(AUDIOS[:2], opts(max_new_tokens=4))
    assert all(r.char_logits.dtype == torch.float32 and len(r.tokens) <= 4 for r in results)
    assert next(engine.model.parameters()).dtype == torch.bfloat16
    assert engine.model.language_model.model.rotary.inv_freq.dtype == torch.float32  # RoPE stays exact


def test_checkpoint_auto_mode_and_ctc_head(engines, tmp_path):
    """A checkpoint may say what `mode="auto"` runs for plain transcription (`auto_mode`) and which CTC
    head `mode="ctc"` reads (`ctc_head`); prompts (translation, keywords) still take the variant's own
    mode, and both fields survive save/load. Official configs keep the defaults."""
    from granite_asr.api import load_model
    from granite_asr.config import preset
    from granite_asr.decoding.ctc import char_greedy
    from granite_asr.model.checkpoint import save_pretrained

    assert preset("2b").auto_mode is None and preset("2b").ctc_head == "bpe"
    model = build_tiny("tiny")
    model.config = model.config.replace(auto_mode="ctc", ctc_head="char")
    save_pretrained(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert (loaded.config.auto_mode, loaded.config.ctc_head) == ("ctc", "char")
    engine = Engine(loaded)
    assert engine.check(opts()) == "ctc"
    assert engine.check(opts().replace(task="translate", language="fr", target_language="en")) == "ar"
    assert engine.check(opts().replace(keywords=("hello",))) == "ctc"  # the word-LM search biases
    assert engine.check(opts(word_lm="none").replace(keywords=("hello",))) == "ar"
    assert engines["tiny"].check(opts()) == "ar"  # a plain checkpoint: the variant's own
    got = engine.run(AUDIOS[:2], opts(ctc_tempo=1.0))  # the head as it is (re-encoding: below)
    feats = FeatureExtractor.from_config(loaded.config)
    for audio, res in zip(AUDIOS[:2], got, strict=True):
        x = feats.clip_features(torch.from_numpy(audio))[None]
        with torch.no_grad():
            enc = loaded.encoder(x.to(next(loaded.parameters()).dtype), torch.tensor([x.shape[1]]))
        assert res.mode_used == "ctc" and res.text == char_greedy(loaded, enc)[0]


def test_saturated_char_head_is_encoded_again_at_a_slower_tempo():
    """Char-CTC rows whose head labels more than `ctc_saturation` of its frames are encoded again from
    log-mel stretched `ctc_tempo` times (`Engine._retempo`): their posteriors, frame count and frame
    duration are the stretched features', they are the same alone and in a batch, and rows under the
    limit keep their first pass."""
    model = build_tiny("tiny-plus")  # no BPE head: mode "ctc" reads the char head
    engine, tempo = Engine(model), 1.5
    feats = FeatureExtractor.from_config(model.config)
    first = engine.run(AUDIOS, opts("ctc", ctc_tempo=1.0))
    rates = [len(char_vocab.encode(r.text)) / r.encoder_frames for r in first]
    limit = sorted(rates)[
        len(rates) // 2
    ]  # the busier half is re-encoded (the random head labels most frames)
    got = engine.run(AUDIOS, opts("ctc", ctc_tempo=tempo, ctc_saturation=limit))
    stretched = [i for i, rate in enumerate(rates) if rate > limit]
    assert 0 < len(stretched) < len(AUDIOS)
    for i, (audio, before, res) in enumerate(zip(AUDIOS, first, got, strict=True)):
        if i not in stretched:
            assert_same(before, res)
            assert res.frame_seconds == engine.geometry.encoder_frame_seconds
            continue
        x = feats.clip_features(torch.from_numpy(audio), tempo)[None]  # (1, T', D)
        assert res.encoder_frames == x.shape[1] == engine.geometry.encoder_frames(len(audio), tempo)
        assert res.encoder_frames > before.encoder_frames
        assert res.frame_seconds == pytest.approx(engine.geometry.encoder_frame_seconds / tempo)
        with torch.no_grad():
            enc = model.encoder(x, torch.tensor([x.shape[1]]))
        expected = torch.log_softmax(char_logits(model, enc).float(), -1)[0]
        assert torch.allclose(res.char_logits, expected, atol=1e-4)
        alone = engine.run([audio], opts("ctc", ctc_tempo=tempo, ctc_saturation=limit))[0]
        assert_same(alone, res)
    with pytest.raises(ValueError, match="ctc_tempo"):
        engine.run(AUDIOS[:1], opts("ctc", ctc_tempo=0.5))


def test_checkpoint_ctc_char_layer_moves_transcripts_and_alignment(tmp_path):
    """`ctc_char_layer="final"` (saved with the checkpoint) makes the CTC transcript and the posteriors
    the aligner reads come from the char head on the last block instead of the mid layer."""
    from granite_asr import char_vocab
    from granite_asr.api import load_model
    from granite_asr.config import preset
    from granite_asr.model.checkpoint import save_pretrained
    from granite_asr.model.ctc import greedy_decode

    assert preset("2b").ctc_char_layer == "mid"
    model = build_tiny("tiny")
    model.config = model.config.replace(auto_mode="ctc", ctc_head="char", ctc_char_layer="final")
    save_pretrained(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt", dtype=torch.float32)
    assert loaded.config.ctc_char_layer == "final"
    res = Engine(loaded).run(AUDIOS[:1], opts())[0]
    x = FeatureExtractor.from_config(loaded.config).clip_features(torch.from_numpy(AUDIOS[0]))[None]
    with torch.no_grad():
        enc = loaded.encoder(x, torch.tensor([x.shape[1]]))
    final, mid = loaded.encoder.char_logits(enc, final=True)[0], enc.mid_logits[0]
    assert not torch.allclose(final, mid, atol=1e-3)  # the two places differ, so the test can fail
    torch.testing.assert_close(res.char_logits, torch.log_softmax(final.float(), -1), atol=1e-5, rtol=1e-5)
    assert res.text == char_vocab.decode(greedy_decode(final[None], enc.lengths, char_vocab.BLANK)[0])


def test_ctc_word_lm_searches_the_char_posteriors(tmp_path):
    """`word_lm` (char-CTC transcription): "none" is the greedy spelling; a word-LM directory and a
    language give the lexicon search over the same posteriors, every word from the lexicon; Japanese
    (no word LM there) keeps the greedy text."""
    from granite_asr.decoding.ctc import greedy_decode
    from granite_asr.decoding.lexicon import LexiconDecoder
    from granite_asr.decoding.word_lm import WordLM

    lm = WordLM.train(["the cat sat on the mat", "a dog and a cat", "on and on"], "en")
    lm.save(tmp_path / "en.tsv.gz")
    model = build_tiny("tiny")
    model.config = model.config.replace(auto_mode="ctc", ctc_head="char")
    engine = Engine(model)
    plain = engine.run(AUDIOS[:3], opts(word_lm="none"))
    searched = engine.run(AUDIOS[:3], opts(word_lm=str(tmp_path)).replace(language="English"))
    japanese = engine.run(AUDIOS[:3], opts(word_lm=str(tmp_path)).replace(language="ja"))
    decoder = LexiconDecoder(lm)
    for p, s, j in zip(plain, searched, japanese, strict=True):
        lp = p.char_logits
        assert p.text == char_vocab.decode(greedy_decode(lp[None], torch.tensor([lp.shape[0]]), 0)[0])
        assert s.text == (decoder.decode(lp) if p.text.strip() else p.text)  # silence stays as it was
        assert set(s.text.split()) <= set(lm.words)
        assert j.text == p.text
    assert any(p.text != s.text for p, s in zip(plain, searched, strict=True))
    # keywords: auto mode stays on the char head, whose search is biased towards them
    biased_options = opts(word_lm=str(tmp_path)).replace(language="English", keywords=("Zebra",))
    assert engine.check(biased_options) == "ctc"
    biased = engine.run(AUDIOS[:3], biased_options)
    keyword_decoder = LexiconDecoder(lm, keywords=("Zebra",))
    for p, b in zip(plain, biased, strict=True):
        assert b.mode_used == "ctc"
        assert b.text == (keyword_decoder.decode(p.char_logits) if p.text.strip() else p.text)


def test_upsampled_char_head_gives_u_label_frames_per_encoder_frame(tmp_path):
    """`encoder.char_upsample` = 2 (not an official field; saved in our config sub-dict) splits every
    last-block frame into two label frames (`ConformerEncoder.out_up`): a new head starts as the old one
    with each label repeated, the engine's posteriors, frame count and frame duration follow the label
    rate, the saturation rule counts label frames, and a clip is the same alone and in a batch."""
    import json

    from granite_asr.api import load_model
    from granite_asr.model.checkpoint import save_pretrained

    base = build_tiny("tiny")
    cfg = base.config.replace(auto_mode="ctc", ctc_head="char", ctc_char_layer="final")
    up_cfg = cfg.replace(encoder=dataclasses.replace(cfg.encoder, char_upsample=2))
    model = granite_asr_build(up_cfg)
    model.load_state_dict(base.state_dict(), strict=False)
    model.tokenizer = base.tokenizer
    x = FeatureExtractor.from_config(cfg).clip_features(torch.from_numpy(AUDIOS[0]))[None]
    with torch.no_grad():
        enc = model.encoder(x, torch.tensor([x.shape[1]]))
        fresh = model.encoder.char_logits(enc, final=True)[0]  # (2T, V)
        old = base.encoder.char_logits(base.encoder(x, torch.tensor([x.shape[1]])), final=True)[0]
        torch.testing.assert_close(fresh, old.repeat_interleave(2, dim=0), atol=1e-5, rtol=1e-5)
        model.encoder.out_up.weight.add_(0.3 * torch.randn_like(model.encoder.out_up.weight))
    save_pretrained(model, tmp_path / "ckpt")
    hf = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert "char_upsample" not in hf["encoder_config"]  # the official layout stays official
    assert hf["granite_asr"]["encoder"]["char_upsample"] == 2
    loaded = load_model(tmp_path / "ckpt", dtype=torch.float32)
    engine = Engine(loaded)
    assert engine.geometry.char_frames(7) == 14
    got = engine.run(AUDIOS, opts(ctc_tempo=1.0))
    for audio, res in zip(AUDIOS, got, strict=True):
        frames = engine.encoder_frames(len(audio))
        assert res.encoder_frames == res.char_logits.shape[0] == 2 * frames
        assert res.frame_seconds == pytest.approx(engine.geometry.encoder_frame_seconds / 2)
        assert_same(res, engine.run([audio], opts(ctc_tempo=1.0))[0])
    with torch.no_grad():
        enc = loaded.encoder(x, torch.tensor([x.shape[1]]))
    split = torch.log_softmax(loaded.encoder.char_logits(enc, final=True).float(), -1)[0]
    assert not torch.allclose(split[0::2], split[1::2], atol=1e-3)  # the two halves now differ
    torch.testing.assert_close(got[0].char_logits, split, atol=1e-5, rtol=1e-5)
    greedy = greedy_decode(split[None], torch.tensor([split.shape[0]]), char_vocab.BLANK)[0]
    assert got[0].text == char_vocab.decode(greedy)
    # the saturation rule divides by label frames: a limit above every row's rate re-encodes none
    rates = [len(char_vocab.encode(r.text)) / r.encoder_frames for r in got]
    again = engine.run(AUDIOS, opts(ctc_tempo=1.5, ctc_saturation=min(1.0, max(rates) + 1e-6)))
    for a, b in zip(got, again, strict=True):
        assert_same(a, b)
