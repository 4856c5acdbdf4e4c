"""config.json ⇄ SpeechConfig (SPEC §9): presets round-trip; official layouts parse to the presets."""

from __future__ import annotations

import dataclasses
import json

import pytest

from granite_asr.api import EMBEDDED_DIR
from granite_asr.config import PRESETS, preset
from granite_asr.model.checkpoint import read_config
from granite_asr.model.hf_config import (
    OURS_KEY,
    config_from_hf,
    config_to_hf,
    infer_bpe_scheme,
    preprocessor_to_hf,
)

# SPEC §5.1 values of granite-4.0-1b-base as the 4.1 text_config carries them.
TEXT_2B = dict(
    vocab_size=100353,
    hidden_size=2048,
    intermediate_size=4096,
    num_hidden_layers=40,
    num_attention_heads=16,
    num_key_value_heads=4,
    max_position_embeddings=4096,
    rms_norm_eps=1e-5,
    embedding_multiplier=12.0,
    attention_multiplier=0.0078125,
    residual_multiplier=0.22,
    logits_scaling=8.0,
    bos_token_id=100257,
    eos_token_id=100257,
    pad_token_id=100256,
)
ENCODER_2B = dict(
    input_dim=160,
    num_layers=16,
    hidden_dim=1024,
    feedforward_mult=4,
    num_heads=8,
    dim_head=128,
    output_dim=348,
    context_size=200,
    max_pos_emb=512,
    dropout=0.1,
    conv_kernel_size=15,
    conv_expansion_factor=2,
)
QFORMER_2B = dict(
    model_type="blip_2_qformer",
    hidden_size=1024,
    num_hidden_layers=2,
    num_attention_heads=16,
    intermediate_size=4096,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
    cross_attention_frequency=1,
    encoder_hidden_size=1024,
    use_qformer_text_input=False,
)
PREPROCESSOR_2B = {
    "feature_extractor_type": "GraniteSpeechFeatureExtractor",
    "processor_class": "GraniteSpeechProcessor",
    "melspec_kwargs": {
        "sample_rate": 16000,
        "n_fft": 512,
        "win_length": 400,
        "hop_length": 160,
        "n_mels": 80,
    },
    "projector_window_size": 15,
    "projector_downsample_rate": 5,
    "sampling_rate": 16000,
}


def assert_same_config(got, want):
    """Field by field, so a failure names the field."""
    for section in ("features", "encoder", "projector", "text"):
        g, w = dataclasses.asdict(getattr(got, section)), dataclasses.asdict(getattr(want, section))
        for key in w:
            assert g[key] == w[key], f"{section}.{key}: got {g[key]!r}, want {w[key]!r}"
        assert type(getattr(got, section)) is type(getattr(want, section))
    for f in dataclasses.fields(want):
        if f.name not in ("features", "encoder", "projector", "text"):
            assert getattr(got, f.name) == getattr(want, f.name), f"{f.name}"
    assert got == want


def nar_config_json(bpe_output_dim: int = 100352) -> dict:
    """A hand-written 2b-nar config.json in the remote-code layout of rev 99a4df9 (SPEC §3.1, §4.2, §9.3)."""
    text = {**TEXT_2B, "vocab_size": 100352, "tie_word_embeddings": True, "embedding_multiplier": 12}
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000}
    return {
        "architectures": ["NLENARDecoder"],
        "auto_map": {"AutoModel": "modeling_nle.NLENARDecoder"},
        "attn_implementation": "flash_attention_2",
        "encoder_layer_indices": [4, 8, 12, -1],
        "scale_projected_embeddings": True,
        "blank_token_id": 100257,
        "min_edit_sequence_length": 8,
        "encoder_config": {
            **ENCODER_2B,
            "bpe_output_dim": bpe_output_dim,
            "bpe_pooling_window": 4,
            "self_conditioning_layer": 8,
            "attn_type": "block",
            "loss_lambda": 0.2,
            "pred_dropout": 0.25,
        },
        "projector_config": {
            "encoder_dim": 1024,
            "num_encoder_layers": 4,
            "hidden_size": 2048,
            "num_heads": 32,
            "num_layers": 2,
            "block_size": 15,
            "downsample_rate": 5,
            "mlp_ratio": 2,
            "llm_dim": 2048,
            "layernorm_eps": 1e-6,
            "attn_bias": True,
            "mlp_bias": True,
            "dropout_prob": 0.1,
        },
        "text_config": text,
        "ctc_tokenizer_config": {"char2idx": {" ": 32}},
    }


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name):
    cfg = preset(name)
    d = json.loads(json.dumps(config_to_hf(cfg)))
    assert config_from_hf(d) == cfg
    assert config_from_hf(d, preprocessor=preprocessor_to_hf(cfg)) == cfg


@pytest.mark.parametrize("name", ["2b", "2b-plus", "2b-nar"])
def test_official_presets_write_no_private_fields(name):
    assert OURS_KEY not in config_to_hf(preset(name))


def test_private_fields_round_trip():
    base = preset("tiny")
    cfg = base.replace(
        features=dataclasses.replace(base.features, n_mels=40, hop_length=200),
        encoder=dataclasses.replace(base.encoder, bpe_pooling_window=3, self_conditioning_layer=1),
        blank_token_id=5,
        extra=(("languages", ("en", "fr")), ("note", "ours")),
    )
    d = json.loads(json.dumps(config_to_hf(cfg)))
    assert d[OURS_KEY]["features"] == {"hop_length": 200, "n_mels": 40}
    assert "bpe_pooling_window" not in d["encoder_config"]  # not an official 2b encoder field
    assert config_from_hf(d) == cfg


def test_transformers_granite_speech_config_parses_to_2b():
    transformers = pytest.importorskip("transformers")
    hf = transformers.GraniteSpeechConfig(
        text_config={"model_type": "granite", **TEXT_2B, "tie_word_embeddings": False},
        encoder_config=ENCODER_2B,
        projector_config=QFORMER_2B,
        audio_token_index=100352,
        has_lora_adapter=False,
        downsample_rate=5,
        window_size=15,
        tie_word_embeddings=False,
    )
    d = json.loads(hf.to_json_string())
    assert_same_config(config_from_hf(d, preprocessor=PREPROCESSOR_2B), preset("2b"))


def test_transformers_granite_speech_plus_config_parses_to_2b_plus():
    transformers = pytest.importorskip("transformers")
    hf = transformers.GraniteSpeechPlusConfig(
        text_config={"model_type": "granite", **TEXT_2B, "tie_word_embeddings": True},
        encoder_config={**ENCODER_2B, "cat_hidden_layers": [3]},
        projector_config={**QFORMER_2B, "encoder_hidden_size": 2048},
        audio_token_index=100352,
        has_lora_adapter=False,
    )
    d = json.loads(hf.to_json_string())
    assert d["model_type"] == "granite_speech_plus"
    # SPEC §9.2: no preprocessor_config.json in the plus repo → defaults.
    assert_same_config(config_from_hf(d), preset("2b-plus"))


def test_our_config_is_accepted_by_transformers():
    transformers = pytest.importorskip("transformers")
    for name, cls in (("2b", "GraniteSpeechConfig"), ("2b-plus", "GraniteSpeechPlusConfig")):
        d = config_to_hf(preset(name))
        hf = getattr(transformers, cls).from_dict(d)
        assert hf.text_config.vocab_size == 100353
        assert config_from_hf(json.loads(hf.to_json_string())) == preset(name)


def test_hand_written_nar_config_parses_to_2b_nar():
    assert_same_config(config_from_hf(nar_config_json(), preprocessor=None), preset("2b-nar"))
    flat = {"sampling_rate": 16000, "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 80}
    assert config_from_hf(nar_config_json(), preprocessor=flat) == preset("2b-nar")


def test_nar_bpe_scheme_follows_the_tensor_shape():
    # transcribe.cpp's intake still says 100353; the weight at rev 99a4df9 has 100352 rows (SPEC §3.6, §11.3).
    d = nar_config_json(bpe_output_dim=100353)
    cfg = config_from_hf(d, state_shapes={"encoder.out_bpe.weight": (100352, 1024)})
    assert_same_config(cfg, preset("2b-nar"))
    old = config_from_hf(d, state_shapes={"encoder.out_bpe.weight": (100353, 1024)})
    assert (old.encoder.bpe_output_dim, old.bpe_blank_id, old.bpe_label_offset) == (100353, 0, 1)


def test_ar_bpe_head_from_out_llm_shape():
    d = config_to_hf(preset("2b"))
    with_head = config_from_hf(d, state_shapes={"encoder.out_bpe.weight": (100353, 1024)})
    assert (with_head.encoder.bpe_output_dim, with_head.bpe_blank_id, with_head.bpe_label_offset) == (
        100353,
        0,
        1,
    )
    without = config_from_hf(d, state_shapes={"encoder.input_linear.weight": (1024, 160)})
    assert without.encoder.bpe_output_dim == 0
    with pytest.raises(ValueError, match="BPE label scheme"):
        config_from_hf(d, state_shapes={"encoder.out_bpe.weight": (5000, 1024)})


def test_infer_bpe_scheme_rule():
    assert infer_bpe_scheme(100353, 100353, 100352, 100257) == (0, 1)  # 2b out_llm
    assert infer_bpe_scheme(100352, 100352, 100352, 100257) == (100257, 0)  # NAR 99a4df9
    assert infer_bpe_scheme(100353, 100352, 100352, 100257) == (0, 1)  # NAR 7d20732d
    assert infer_bpe_scheme(10, 100352, 100352, 100257) is None


def test_legacy_llm_config_and_flat_rope_theta():
    d = config_to_hf(preset("2b"))
    text = d.pop("text_config")
    text["rope_theta"] = text.pop("rope_parameters")["rope_theta"]
    d["llm_config"] = text
    assert config_from_hf(d) == preset("2b")


def test_tie_word_embeddings_text_config_wins_then_top_level():
    d = config_to_hf(preset("2b"))
    d["tie_word_embeddings"] = True  # top level disagrees; text_config says false
    assert config_from_hf(d).text.tie_word_embeddings is False
    del d["text_config"]["tie_word_embeddings"]
    assert config_from_hf(d).text.tie_word_embeddings is True


def test_dim_head_none_and_int_floats():
    d = config_to_hf(preset("2b"))
    d["encoder_config"]["dim_head"] = None
    d["text_config"]["embedding_multiplier"] = 12
    d["text_config"]["rope_parameters"]["rope_theta"] = 10000
    cfg = config_from_hf(d)
    assert cfg.encoder.dim_head == 1024 // 8
    assert isinstance(cfg.text.embedding_multiplier, float) and isinstance(cfg.text.rope_theta, float)
    assert cfg == preset("2b")


@pytest.mark.parametrize(
    "changes",
    [
        {"model_type": "nle"},
        {"model_type": "granite_speech_nar"},
        {"model_type": "x", "architectures": ["GraniteSpeechNarForASR"]},
        {"model_type": "x", "architectures": ["NLENARDecoder"]},
    ],
)
def test_nar_detection_without_layer_indices(changes):
    d = nar_config_json()
    del d["encoder_layer_indices"]
    d.update(changes)
    assert config_from_hf(d).variant == "nar"


def test_preprocessor_melspec_and_flat_forms():
    d = config_to_hf(preset("2b"))
    mel = {**PREPROCESSOR_2B, "melspec_kwargs": {**PREPROCESSOR_2B["melspec_kwargs"], "hop_length": 200}}
    assert config_from_hf(d, preprocessor=mel).features.hop_length == 200
    flat = {"sampling_rate": 8000, "n_fft": 256, "win_length": 200, "hop_length": 80, "n_mels": 80}
    f = config_from_hf(d, preprocessor=flat).features
    assert (f.sample_rate, f.n_fft, f.win_length, f.hop_length) == (8000, 256, 200, 80)


def test_default_preset_is_the_shipped_embedded_geometry():
    """`preset("default")` builds what `granite_asr/assets/default` holds (the preset is the shipped
    model's shape; its own decode settings, such as `auto_mode`, live in its config.json)."""
    shipped, want = read_config(EMBEDDED_DIR), preset("default")
    for section in ("features", "encoder", "projector", "text"):
        g, w = dataclasses.asdict(getattr(shipped, section)), dataclasses.asdict(getattr(want, section))
        assert {k: g[k] for k in w} == w, section
