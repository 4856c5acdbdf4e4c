"""Fast model tests on the tiny presets, and shape/count checks of the real sizes on the meta device."""

from __future__ import annotations

import pytest
import torch

from granite_asr.config import preset
from granite_asr.model.build import build_model
from granite_asr.model.ctc import collapse, greedy_decode

from .reference import prompt_batch, unit_scale_init


def _model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    m = build_model(name)
    unit_scale_init(m, seed)
    return m


# ----------------------------------------------------------------------------- real sizes (SPEC §1, §9)
# (preset, BF16 tensors in model.safetensors, I64 tensors, encoder/projector/LLM tensor counts, params≈)
REAL = [
    ("2b", 938, 16, 518, 57, 363, 2.313e9),
    ("2b-plus", 937, 16, 518, 57, 362, 2.112e9),
    ("2b-nar", 930, 16, 520, 48, 362, 2.255e9),
]


@pytest.mark.parametrize("name,n_float,n_i64,n_enc,n_proj,n_llm,params", REAL)
def test_real_sizes_on_meta(name, n_float, n_i64, n_enc, n_proj, n_llm, params):
    m = build_model(name, device="meta")
    sd = m.state_dict()
    if name == "2b":  # the BPE head ships separately as out_llm.safetensors (SPEC §3.6)
        assert tuple(sd.pop("encoder.out_bpe.weight").shape) == (100353, 1024)
        assert tuple(sd.pop("encoder.out_bpe.bias").shape) == (100353,)
    i64 = [k for k in sd if k.endswith("num_batches_tracked")]
    floats = [k for k in sd if k not in i64]
    assert (len(floats), len(i64)) == (n_float, n_i64)
    count = lambda prefix: sum(k.startswith(prefix) for k in floats)  # noqa: E731
    assert (count("encoder."), count("projector."), count("language_model.")) == (n_enc, n_proj, n_llm)
    total = sum(v.numel() for k, v in sd.items() if k in floats)
    assert abs(total - params) / params < 0.005
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert shapes["encoder.layers.0.attn.rel_pos_emb.weight"] == (1025, 128)
    assert shapes["encoder.layers.15.conv.depth_conv.conv.weight"] == (2048, 1, 15)
    assert shapes["encoder.layers.0.conv.up_conv.weight"] == (4096, 1024, 1)
    assert shapes["encoder.out.weight"] == (348, 1024)
    assert shapes["language_model.model.layers.39.self_attn.k_proj.weight"] == (512, 2048)
    assert ("language_model.lm_head.weight" in shapes) == (name == "2b")
    if name == "2b-plus":
        assert shapes["projector.qformer.encoder.layer.1.crossattention.attention.key.weight"] == (1024, 2048)
    if name == "2b-nar":
        assert shapes["encoder.out_bpe.weight"] == (100352, 1024)
        assert shapes["projector.layer_projector.weight"] == (2048, 4096)
        assert shapes["projector.query"] == (1, 3, 2048)
        assert shapes["projector.window_positions"] == (1, 15, 2048)
        assert shapes["projector.qformer.layers.1.mlp.fc1.weight"] == (4096, 2048)


# ----------------------------------------------------------------------------- AR / Plus mechanics
@pytest.mark.parametrize("name", ["tiny", "tiny-plus"])
def test_ar_item_alone_equals_item_in_padded_batch(name):
    m = _model(name)
    geo = m.geometry
    lengths = torch.tensor([61, 23, 44])
    feats = torch.randn(3, 61, 160)
    counts = geo.audio_tokens(lengths).tolist()
    ids, mask = prompt_batch(counts, [2, 5, 3], seed=3)
    batched = m.generate(ids, feats, mask, feature_lengths=lengths, max_new_tokens=12, min_new_tokens=12)
    full = m(ids, feats, mask, feature_lengths=lengths).logits
    for i, n in enumerate(lengths.tolist()):
        keep = mask[i].bool()
        one_ids, one_mask = ids[i : i + 1, keep], mask[i : i + 1, keep]
        alone = m.generate(one_ids, feats[i : i + 1, :n], one_mask, max_new_tokens=12, min_new_tokens=12)
        assert torch.equal(alone[0], batched[i])
        one = m(one_ids, feats[i : i + 1, :n], one_mask).logits[0]
        assert (one - full[i, keep]).abs().max() < 1e-4


def test_kv_cache_decode_equals_full_forward():
    m = _model("tiny")
    feats = torch.randn(1, 30, 160)
    n = m.geometry.audio_tokens(30)
    ids, mask = prompt_batch([n], [2])
    new = m.generate(ids, feats, mask, max_new_tokens=8, min_new_tokens=8)
    full_ids = torch.cat([ids, new], 1)
    logits = m(full_ids, feats, torch.ones_like(full_ids)).logits
    # Teacher-forced argmax over the full sequence reproduces every greedy step.
    assert torch.equal(logits[0, ids.shape[1] - 1 : -1].argmax(-1), new[0])


def test_generate_stops_at_eos_and_pads():
    m = _model("tiny")
    feats = torch.randn(2, 30, 160)
    n = m.geometry.audio_tokens(30)
    ids, mask = prompt_batch([n, n], [2, 2])
    first = m.generate(ids, feats, mask, max_new_tokens=1)[:, 0]
    # Declare the first greedy token of row 0 to be EOS: row 0 ends at once and is padded after it.
    out = m.generate(ids, feats, mask, max_new_tokens=6, eos_token_id=int(first[0]))
    assert out[0, 0] == first[0]
    assert (out[0, 1:] == m.config.text.pad_token_id).all()


def test_audio_placeholder_mismatch_is_a_clear_error():
    m = _model("tiny")
    ids, mask = prompt_batch([5], [2])
    with pytest.raises(ValueError, match="audio placeholders"):
        m(ids, torch.randn(1, 30, 160), mask)


# ----------------------------------------------------------------------------- NAR
def test_nar_packed_batch_equals_each_item_alone():
    m = _model("tiny-nar")
    lengths = torch.tensor([90, 61, 33, 12])
    feats = torch.randn(4, 90, 160)
    out = m.generate(feats, lengths)
    assert all(len(d) > 0 for d in out.draft)
    for i, n in enumerate(lengths.tolist()):
        one = m.generate(feats[i : i + 1, :n])
        assert one.draft[0] == out.draft[i]
        assert one.tokens[0] == out.tokens[i]
        assert (one.slot_logits[0] - out.slot_logits[i]).abs().max() < 1e-4


def test_nar_packed_attention_does_not_cross_clips():
    m = _model("tiny-nar")
    feats = torch.randn(2, 40, 160)
    a = m.generate(feats)
    feats2 = feats.clone()
    feats2[1] = torch.randn(40, 160)  # change clip 1 only
    b = m.generate(feats2)
    assert torch.equal(a.slot_logits[0], b.slot_logits[0])
    assert not torch.equal(a.slot_logits[1], b.slot_logits[1])


def test_nar_slots_and_prefix_lengths():
    m = _model("tiny-nar")
    b = m.config.blank_token_id
    assert m.slots([]) == [b] * 8
    assert m.slots([5, 7]) == [b, 5, b, 7, b, b, b, b]
    assert m.slots(list(range(10, 15))) == [b, 10, b, 11, b, 12, b, 13, b, 14, b]
    enc, audio = m.encode(torch.randn(2, 47, 160), torch.tensor([47, 20]))
    assert [a.shape[0] for a in audio] == [47 // 5, 20 // 5]


def test_ctc_collapse_and_label_offset():
    assert collapse(torch.tensor([0, 3, 3, 0, 3, 5, 5, 0]), 0).tolist() == [3, 3, 5]
    logits = torch.full((1, 6, 4), -5.0)
    for t, lab in enumerate([1, 1, 0, 2, 0, 3]):
        logits[0, t, lab] = 5.0
    assert greedy_decode(logits, torch.tensor([6]), blank=0, offset=1) == [[0, 1, 2]]
    assert greedy_decode(logits, torch.tensor([4]), blank=0, offset=0) == [[1, 2]]


def test_presets_are_valid_and_frozen():
    for name in ["tiny", "tiny-plus", "tiny-nar", "default", "2b", "2b-plus", "2b-nar"]:
        cfg = preset(name)
        with pytest.raises(AttributeError):
            cfg.variant = "x"  # type: ignore[misc]


def _nar_official_keys(enc_layers: int, proj_layers: int, llm_layers: int, taps: int) -> set[str]:
    """Tensor names of the 2b-nar checkpoint at rev 99a4df9, written out from SPEC §9.1/§9.3."""
    wb = lambda p: {f"{p}.weight", f"{p}.bias"}  # noqa: E731
    keys = wb("encoder.input_linear") | wb("encoder.out") | wb("encoder.out_mid") | wb("encoder.out_bpe")
    for i in range(enc_layers):
        p = f"encoder.layers.{i}"
        for ff in ("ff1", "ff2"):
            keys |= wb(f"{p}.{ff}.pre_norm") | wb(f"{p}.{ff}.up_proj") | wb(f"{p}.{ff}.down_proj")
        keys |= wb(f"{p}.attn.pre_norm") | wb(f"{p}.attn.to_out") | wb(f"{p}.post_norm")
        keys |= {f"{p}.attn.to_q.weight", f"{p}.attn.to_kv.weight", f"{p}.attn.rel_pos_emb.weight"}
        keys |= wb(f"{p}.conv.norm") | wb(f"{p}.conv.up_conv") | wb(f"{p}.conv.down_conv")
        keys |= {f"{p}.conv.depth_conv.conv.weight"} | wb(f"{p}.conv.batch_norm")
        keys |= {f"{p}.conv.batch_norm.{s}" for s in ("running_mean", "running_var", "num_batches_tracked")}
    for i in range(taps):
        keys |= wb(f"projector.layer_norms.{i}")
    keys |= wb("projector.layer_projector") | wb("projector.out_norm") | wb("projector.out_linear")
    keys |= {"projector.query", "projector.window_positions"}
    for i in range(proj_layers):
        p = f"projector.qformer.layers.{i}"
        keys |= wb(f"{p}.attn_norm") | wb(f"{p}.mlp_norm") | wb(f"{p}.mlp.fc1") | wb(f"{p}.mlp.fc2")
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            keys |= wb(f"{p}.cross_attention.{proj}")
    keys |= {"language_model.model.embed_tokens.weight", "language_model.model.norm.weight"}
    for i in range(llm_layers):
        p = f"language_model.model.layers.{i}"
        keys |= {f"{p}.input_layernorm.weight", f"{p}.post_attention_layernorm.weight"}
        keys |= {f"{p}.self_attn.{x}_proj.weight" for x in "qkvo"}
        keys |= {f"{p}.mlp.{x}_proj.weight" for x in ("gate", "up", "down")}
    return keys


def test_nar_official_tensor_names_load_strictly():
    cfg = preset("tiny-nar")
    m = build_model(cfg)
    want = _nar_official_keys(cfg.encoder.num_layers, cfg.projector.num_layers, cfg.text.num_hidden_layers, 4)
    sd = m.state_dict()
    assert set(sd) == want
    donor = _model("tiny-nar", seed=4).state_dict()
    result = m.load_state_dict({k: donor[k] for k in want}, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert (set(build_model("2b-nar", device="meta").state_dict())) == _nar_official_keys(16, 2, 40, 4)
