"""Parity of our 2b / Plus models with transformers' reference classes (the oracle), CPU fp32.

Tolerances: logits max-abs ≤ 1e-4; greedy tokens identical for 30 new tokens; char-CTC and
projector outputs equal to 1e-4. Our logits are ÷ logits_scaling (Granite's head, SPEC §5.2); the
transformers-5 speech wrapper applies its own `lm_head` without that division, so we compare
ours × logits_scaling. The reference has no encoder padding mask (SPEC §2.3), so it is compared one
clip at a time, and on batches of equal-length audio with left-padded prompts of different lengths.
"""

from __future__ import annotations

import pytest
import torch

import granite_asr
from granite_asr.lengths import FrameGeometry

from .reference import prompt_batch, save_reference

pytestmark = pytest.mark.parity
CASES = [("ar", False, 2), ("ar", True, 4), ("plus", True, 2)]  # (variant, tied, kv heads: GQA 4/2 or MHA)


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-tied{c[1]}-kv{c[2]}")
def pair(request, tmp_path_factory):
    variant, tied, kv = request.param
    ref, path = save_reference(tmp_path_factory.mktemp("ref"), variant, tied=tied, kv_heads=kv)
    ours = granite_asr.load_model(path, dtype=torch.float32)
    return ref, ours


def _features(frames: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, frames, 160, generator=g)


def _ref_logits(ref, **kw):
    with torch.no_grad():
        return ref(**kw).logits


def test_loaded_variant_and_config(pair):
    ref, ours = pair
    assert ours.variant == ("plus" if ref.config.model_type == "granite_speech_plus" else "ar")
    assert ours.config.text.tie_word_embeddings == ref.config.text_config.tie_word_embeddings


@pytest.mark.parametrize("frames", [47, 23, 61])  # different lengths, incl. partial blocks and windows
def test_single_clip_logits_ctc_projector(pair, frames):
    ref, ours = pair
    feats = _features(frames, frames)
    geo = FrameGeometry.from_config(ours.config)
    n = geo.audio_tokens(frames)
    ids, mask = prompt_batch([n], [3])
    fmask = torch.ones(1, n, dtype=torch.bool)
    captured = {}
    hook = ref.model.encoder.out.register_forward_hook(lambda m, i, o: captured.setdefault("mid", o.clone()))
    try:
        want = _ref_logits(
            ref, input_ids=ids, input_features=feats, attention_mask=mask, input_features_mask=fmask
        )
    finally:
        hook.remove()
    with torch.no_grad():
        got = ours(ids, feats, mask, fmask)
        ref_proj = ref.model.get_audio_features(feats).pooler_output
    scale = ours.config.text.logits_scaling
    assert (got.logits * scale - want).abs().max() <= 1e-4
    assert (got.encoder.mid_logits - captured["mid"]).abs().max() <= 1e-4
    assert (got.audio_embeds - ref_proj).abs().max() <= 1e-4
    assert want.abs().max() > 0.1  # the comparison is not between near-zero tensors


def test_left_padded_prompt_batch(pair):
    ref, ours = pair
    frames = 52
    feats = torch.cat([_features(frames, s) for s in (1, 2, 3)])
    n = FrameGeometry.from_config(ours.config).audio_tokens(frames)
    ids, mask = prompt_batch([n] * 3, [1, 6, 3], seed=5)
    fmask = torch.ones(3, n, dtype=torch.bool)
    want = _ref_logits(
        ref, input_ids=ids, input_features=feats, attention_mask=mask, input_features_mask=fmask
    )
    with torch.no_grad():
        got = ours(ids, feats, mask, fmask).logits * ours.config.text.logits_scaling
    valid = mask.bool()
    assert (got[valid] - want[valid]).abs().max() <= 1e-4


def test_greedy_tokens_identical(pair):
    ref, ours = pair
    frames = 40
    feats = torch.cat([_features(frames, s) for s in (7, 8)])
    n = FrameGeometry.from_config(ours.config).audio_tokens(frames)
    ids, mask = prompt_batch([n] * 2, [2, 5], seed=9)
    fmask = torch.ones(2, n, dtype=torch.bool)
    kw = dict(input_ids=ids, input_features=feats, attention_mask=mask, input_features_mask=fmask)
    with torch.no_grad():
        want = ref.generate(**kw, max_new_tokens=30, min_new_tokens=30, do_sample=False, num_beams=1)
    got = ours.generate(ids, feats, mask, fmask, max_new_tokens=30, min_new_tokens=30)
    assert got.shape == (2, 30)
    assert torch.equal(got, want[:, ids.shape[1] :])


def test_parity_test_sees_a_one_percent_change(pair):
    """A 1 % change to one encoder layer's relative-position table must move the logits past 1e-4."""
    _, ours = pair
    feats = _features(47, 3)
    n = FrameGeometry.from_config(ours.config).audio_tokens(47)
    ids, mask = prompt_batch([n], [3])
    with torch.no_grad():
        before = ours(ids, feats, mask).logits * 8
        table = ours.encoder.layers[1].attn.rel_pos_emb.weight
        table.mul_(1.01)
        after = ours(ids, feats, mask).logits * 8
        table.div_(1.01)
    assert (after - before).abs().max() > 1e-4
