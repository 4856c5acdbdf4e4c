"""Decoding strategies on tiny random models with a real tokenizer: greedy, beam, repetition guard,
speculative (issue 3 item 1; SPEC §5.7, §5.8, §10)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from granite_asr.audio.features import FeatureExtractor
from granite_asr.decoding.beam import beam_search
from granite_asr.decoding.greedy import greedy_search, loop_cut, loop_period, prefill
from granite_asr.decoding.speculative import ctc_scored, speculative_decode
from granite_asr.lengths import lengths_to_mask
from granite_asr.model.ctc import greedy_decode
from granite_asr.options import DecodeOptions
from granite_asr.prompts import build_prompt, encode_prompts

from .helpers_model import build_tiny


def clips(seconds=(1.0, 0.6, 1.4), seed: int = 0) -> list[np.ndarray]:
    """Clips of different kinds (tone, noise, gated chirp, clicks), so rows decode differently."""
    rng = np.random.default_rng(seed)
    out = []
    for k, s in enumerate(seconds):
        n = int(s * 16000)
        t = np.arange(n) / 16000
        kind = (k + seed) % 4
        if kind == 0:
            x = 0.3 * np.sin(2 * np.pi * (200 + 400 * rng.random()) * t)
        elif kind == 1:
            x = 0.2 * rng.standard_normal(n)
        elif kind == 2:
            freq = 200 + 3000 * rng.random() * t / s
            gate = np.floor(t * 8) % 2
            x = 0.3 * np.sin(2 * np.pi * np.cumsum(freq) / 16000) * gate + 0.05 * rng.standard_normal(n) * (
                1 - gate
            )
        else:
            x = 0.2 * np.sign(np.sin(2 * np.pi * 3 * t)) * rng.random(n)
        out.append(x.astype(np.float32))
    return out


def prompt_inputs(model, audios):
    """Encoder output, merged prompt embeddings (B, L, E), validity (B, L) and the raw generate() inputs."""
    batch = FeatureExtractor.from_config(model.config)(audios)
    ids, mask = encode_prompts(
        model.tokenizer, [build_prompt(model.variant)] * len(audios), batch.audio_token_counts.tolist()
    )
    with torch.inference_mode():
        audio, counts, enc = model.encode_audio(batch.input_features, batch.feature_lengths)
        embeds = model.merge_audio(ids, audio, lengths_to_mask(counts, audio.shape[1]))
    raw = dict(
        input_ids=ids,
        input_features=batch.input_features,
        attention_mask=mask,
        feature_lengths=batch.feature_lengths,
    )
    return enc, embeds, mask.bool(), raw


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls on a shared 2-core machine: one thread is ~10× faster and steady under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny("tiny")


def run_greedy(model, embeds, valid, opts):
    state = prefill(model, embeds, valid, opts.max_new_tokens)
    return greedy_search(model, state, eos_id=model.tokenizer.eos_id, options=opts)


def run_beam(model, embeds, valid, opts):
    state = prefill(model, embeds, valid, opts.max_new_tokens)
    return beam_search(model, state, eos_id=model.tokenizer.eos_id, options=opts)


def test_greedy_equals_generate(tiny):
    """Token-identical to model.generate, including rows that stop early and leave the batch."""
    _, embeds, valid, raw = prompt_inputs(tiny, clips((1.0, 0.6, 1.4, 2.0)))
    opts = DecodeOptions(max_new_tokens=12, max_repeats=0)
    free = greedy_search(tiny, prefill(tiny, embeds, valid, 12), eos_id=-1, options=opts)
    # The random model rarely emits its EOS; use a token row 0 emits at step 2 as the stop token instead.
    eos = free[0].tokens[2]
    hyps = greedy_search(tiny, prefill(tiny, embeds, valid, 12), eos_id=eos, options=opts)
    ref = tiny.generate(**raw, max_new_tokens=12, eos_token_id=eos).tolist()
    for hyp, row in zip(hyps, ref, strict=True):
        expected = row[: row.index(eos)] if eos in row else row
        assert list(hyp.tokens) == expected
        assert hyp.stop == ("eos" if eos in row else "length")
        assert len(hyp.logprobs) == len(hyp.tokens) and all(lp <= 0 for lp in hyp.logprobs)
    assert hyps[0].stop == "eos" and len({len(h.tokens) for h in hyps}) > 1


def test_greedy_logprobs_are_log_softmax_of_scaled_logits(tiny):
    _, embeds, valid, raw = prompt_inputs(tiny, clips((0.8,)))
    hyp = run_greedy(tiny, embeds, valid, DecodeOptions(max_new_tokens=4, max_repeats=0))[0]
    ids = torch.cat([raw["input_ids"], torch.tensor([hyp.tokens[:3]])], dim=1)
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        out = tiny(ids, raw["input_features"], mask, feature_lengths=raw["feature_lengths"])
    lp = torch.log_softmax(out.logits[0, -4:].float(), -1)  # positions predicting tokens 0..3
    expected = [float(lp[j, t]) for j, t in enumerate(hyp.tokens[:4])]
    assert np.allclose(hyp.logprobs[:4], expected, atol=1e-4)


def test_beam_one_equals_greedy(tiny):
    _, embeds, valid, _ = prompt_inputs(tiny, clips((1.0, 0.6, 1.4, 2.0)))
    opts = DecodeOptions(max_new_tokens=10, beam_size=1, max_repeats=0)
    eos = greedy_search(tiny, prefill(tiny, embeds, valid, 10), eos_id=-1, options=opts)[0].tokens[2]
    greedy = greedy_search(tiny, prefill(tiny, embeds, valid, 10), eos_id=eos, options=opts)
    beam = beam_search(tiny, prefill(tiny, embeds, valid, 10), eos_id=eos, options=opts)
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    assert [h.stop for h in beam] == [h.stop for h in greedy]
    assert np.allclose([h.score for h in beam], [h.score for h in greedy], atol=1e-5)


def test_beam_batched_equals_alone(tiny):
    _, embeds, valid, _ = prompt_inputs(tiny, clips((1.0, 0.6, 1.4)))
    opts = DecodeOptions(max_new_tokens=8, beam_size=3, max_repeats=0)
    eos = run_greedy(tiny, embeds, valid, opts)[1].tokens[1]  # rows end at different steps
    batched = beam_search(tiny, prefill(tiny, embeds, valid, 8), eos_id=eos, options=opts)
    for i, hyp in enumerate(batched):
        e, v = embeds[i : i + 1, -int(valid[i].sum()) :], valid[i : i + 1, -int(valid[i].sum()) :]
        (alone,) = beam_search(tiny, prefill(tiny, e, v, 8), eos_id=eos, options=opts)
        assert alone.tokens == hyp.tokens and alone.stop == hyp.stop
    assert any(h.stop == "eos" for h in batched)


def test_beam_finds_at_least_greedy_log_prob():
    """Over seeds where beam and greedy disagree, beam's hypothesis is never less likely (penalty 0)."""
    opts = DecodeOptions(max_new_tokens=6, beam_size=4, max_repeats=0, length_penalty=0.0)
    differing = 0
    for seed in range(6):
        model = build_tiny("tiny", seed)
        _, embeds, valid, _ = prompt_inputs(model, clips((0.7, 1.1), seed=seed))
        greedy = run_greedy(model, embeds, valid, opts)
        beam = run_beam(model, embeds, valid, opts)
        for g, b in zip(greedy, beam, strict=True):
            if g.tokens != b.tokens:
                differing += 1
                assert b.score >= g.score - 1e-6
        if differing >= 2:
            break
    assert differing, "no seed made beam search differ from greedy"


def test_beam_length_penalty_orders_by_normalised_score(tiny):
    _, embeds, valid, _ = prompt_inputs(tiny, clips((0.9,)))
    for penalty in (0.0, 2.0):
        opts = DecodeOptions(max_new_tokens=6, beam_size=3, max_repeats=0, length_penalty=penalty)
        (hyp,) = run_beam(tiny, embeds, valid, opts)
        assert len(hyp.tokens) <= 6 and len(hyp.logprobs) == len(hyp.tokens)


def test_loop_period():
    hist = torch.tensor([[5, 1, 2, 1, 2, 1, 2], [3, 3, 3, 3, 3, 3, 3], [1, 2, 3, 4, 5, 6, 7]])
    assert loop_period(hist, max_repeats=2, window=64).tolist() == [2, 1, 0]
    assert loop_period(hist, max_repeats=0, window=64).tolist() == [0, 0, 0]
    assert loop_period(hist, max_repeats=2, window=5).tolist() == [0, 1, 0]  # 3 copies of a 2-gram need 6


def test_loop_cut_looks_through_skipped_tokens():
    """A loop whose copies differ only in skipped tokens (2b-plus time digits) is found and cut to one copy."""
    tagged = [5, 1, 90, 2, 91, 1, 92, 2, 93, 1, 94, 2, 95]  # 5, then (1 2) three times, a digit after each
    hist = torch.tensor(
        [tagged, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [90, 91, 92, 93, 94, 95, 96, 1, 2, 1, 2, 1, 2]]
    )
    skip = torch.arange(90, 100)
    assert loop_cut(hist, 2, 64)[0].tolist() == [0, 0, 2]  # exact n-grams only: the digits hide row 0's loop
    period, keep = loop_cut(hist, 2, 64, skip)
    assert period.tolist() == [2, 0, 2]
    assert keep.tolist() == [5, 13, 9]  # row 0 keeps 5 1 90 2 91: one copy with its own digits
    assert loop_cut(hist, 2, 5, skip)[0].tolist() == [0, 0, 0]  # the window counts unskipped tokens only
    # only skipped tokens (a run of one digit): nothing counted, so no loop
    digits_only = torch.full((1, 7), 90)
    assert [t.tolist() for t in loop_cut(digits_only, 2, 64, skip)] == [[0], [7]]
    assert loop_cut(hist, 2, 64, torch.tensor([], dtype=torch.long))[1].tolist() == [13, 13, 9]


def looping_model(tiny):
    """The tiny model with a +10 bias on one ordinary token's ÷8 logit (logits are ~±1): it repeats forever."""
    favourite = tiny.tokenizer.encode(" the")[0]
    bias = torch.zeros(tiny.config.text.vocab_size)
    bias[favourite] = 10.0
    head = tiny.language_model.logits
    return lambda hidden: head(hidden) + bias, favourite


def test_repetition_guard_stops_a_loop(tiny, monkeypatch):
    biased, favourite = looping_model(tiny)
    monkeypatch.setattr(tiny.language_model, "logits", biased)
    _, embeds, valid, _ = prompt_inputs(tiny, clips((0.8, 1.2)))
    off = run_greedy(tiny, embeds, valid, DecodeOptions(max_new_tokens=40, max_repeats=0))
    assert all(h.stop == "length" and h.tokens == (favourite,) * 40 for h in off)  # the loop is real
    opts = DecodeOptions(max_new_tokens=40, max_repeats=4, repeat_window=32)
    beam = dataclasses.replace(opts, beam_size=2)
    for hyps in (run_greedy(tiny, embeds, valid, opts), run_beam(tiny, embeds, valid, beam)):
        for h in hyps:
            assert h.stop == "repeat" and len(h.tokens) < 40
            assert h.tokens.count(favourite) == 1  # the loop is cut to one copy
            assert len(h.logprobs) == len(h.tokens)


def test_repetition_guard_looks_through_time_tags(tiny, monkeypatch):
    """A loop of one word whose every copy has its own 'time' token: the plain guard cannot see it,
    the guard told to skip those tokens (the engine does so in timestamp mode) cuts it to one copy."""
    favourite = tiny.tokenizer.encode(" the")[0]
    digits = [i for i in range(200, 300) if i != favourite]
    head, calls = tiny.language_model.logits, []

    def alternating(hidden):  # step k favours " the" on even k, a new digit token on odd k
        out, k = head(hidden), len(calls)
        calls.append(k)
        out[..., favourite if k % 2 == 0 else digits[k // 2]] += 10.0
        return out

    monkeypatch.setattr(tiny.language_model, "logits", alternating)
    _, embeds, valid, _ = prompt_inputs(tiny, clips((0.8,)))
    opts = DecodeOptions(max_new_tokens=40, max_repeats=4, repeat_window=32)
    for search in (greedy_search, beam_search):
        for skip, stop in ((None, "length"), (torch.tensor(digits), "repeat")):
            calls.clear()
            (h,) = search(tiny, prefill(tiny, embeds, valid, 40), eos_id=-1, options=opts, guard_skip=skip)
            assert h.stop == stop
            if stop == "repeat":
                assert h.tokens == (favourite, digits[0]) and len(h.logprobs) == 2
            else:  # the loop is real: " the", a new digit, " the", … to the token limit
                assert h.tokens[:4] == (favourite, digits[0], favourite, digits[1]) and len(h.tokens) == 40


def test_ctc_scored_matches_greedy_decode():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 12, generator=g)
    logits[::3, 0] += 4  # some blanks
    logits[5:9, 7] += 6  # a run
    dec = ctc_scored(logits, blank=0, offset=1)
    assert list(dec.tokens) == greedy_decode(logits[None], torch.tensor([40]), 0, 1)[0]
    assert len(dec.logprobs) == len(dec.tokens) and dec.max_entropy > 0


def test_speculative_thresholds(tiny):
    enc, embeds, valid, _ = prompt_inputs(tiny, clips())
    eos = tiny.tokenizer.eos_id
    accept = speculative_decode(
        tiny,
        enc,
        embeds,
        valid,
        eos_id=eos,
        options=DecodeOptions(confidence_threshold=0.0, max_new_tokens=8),
    )
    assert all(r.draft for r in accept), "the test clips should give non-empty drafts"
    assert all(r.path == "verified" and r.hypothesis.tokens == r.draft for r in accept)
    assert all(len(r.hypothesis.logprobs) == len(r.draft) for r in accept)
    opts = DecodeOptions(confidence_threshold=1.0, max_new_tokens=8, max_repeats=0)
    reject = speculative_decode(tiny, enc, embeds, valid, eos_id=eos, options=opts)
    greedy = run_greedy(tiny, embeds, valid, opts)
    assert all(r.path == "ar" for r in reject)
    assert [r.hypothesis.tokens for r in reject] == [h.tokens for h in greedy]
    assert np.allclose([r.hypothesis.logprobs for r in reject], [h.logprobs for h in greedy], atol=1e-6)
    gate = speculative_decode(
        tiny, enc, embeds, valid, eos_id=eos, options=DecodeOptions(ctc_threshold=float("inf"))
    )
    assert all(r.path == "ctc" and r.hypothesis.tokens == r.draft for r in gate)


def test_speculative_mixed_paths(tiny):
    """A threshold between the rows' weakest draft probabilities: some rows verified, the rest equal AR."""
    enc, embeds, valid, _ = prompt_inputs(tiny, clips((1.0, 0.6, 1.4, 2.0)))
    eos = tiny.tokenizer.eos_id
    probe = speculative_decode(
        tiny,
        enc,
        embeds,
        valid,
        eos_id=eos,
        options=DecodeOptions(confidence_threshold=0.0, max_new_tokens=6),
    )
    weakest = sorted(min(r.hypothesis.logprobs) for r in probe)
    assert weakest[0] < weakest[-1]
    threshold = float(np.exp((weakest[1] + weakest[2]) / 2))
    opts = DecodeOptions(confidence_threshold=threshold, max_new_tokens=6, max_repeats=0)
    rows = speculative_decode(tiny, enc, embeds, valid, eos_id=eos, options=opts)
    greedy = run_greedy(tiny, embeds, valid, opts)
    assert sorted(r.path for r in rows) == ["ar", "ar", "verified", "verified"]
    for r, g, p in zip(rows, greedy, probe, strict=True):
        if r.path == "verified":
            assert r.hypothesis.tokens == r.draft and min(np.exp(r.hypothesis.logprobs)) >= threshold
            assert np.allclose(r.hypothesis.logprobs, p.hypothesis.logprobs, atol=1e-5)
        else:
            assert r.hypothesis.tokens == g.tokens


def test_speculative_empty_draft_falls_back(tiny, monkeypatch):
    """An empty draft never passes the entropy gate (SPEC §5.8 script: entropy = inf) and is never verified."""
    import granite_asr.decoding.speculative as speculative

    enc, embeds, valid, _ = prompt_inputs(tiny, clips((1.0, 0.6, 1.4)))
    drafts = speculative.bpe_drafts(tiny, enc)
    drafts[1] = speculative.CTCDecoded((), (), float("inf"))
    monkeypatch.setattr(speculative, "bpe_drafts", lambda model, enc: drafts)
    opts = DecodeOptions(
        confidence_threshold=0.0, ctc_threshold=float("inf"), max_new_tokens=6, max_repeats=0
    )
    rows = speculative.speculative_decode(
        tiny, enc, embeds, valid, eos_id=tiny.tokenizer.eos_id, options=opts
    )
    assert [r.path for r in rows] == ["ctc", "ar", "ctc"]
    assert rows[1].hypothesis.tokens == run_greedy(tiny, embeds, valid, opts)[1].tokens
