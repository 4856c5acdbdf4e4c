"""Official Hugging Face `config.json` / `preprocessor_config.json` ⇄ `SpeechConfig` (SPEC §9).

Reading accepts every layout the three 4.1 checkpoints have shipped in:

- `model_type` granite_speech (2b), granite_speech_plus (2b-plus, encoder `cat_hidden_layers`), and the NAR
  remote-code configs (detected by `encoder_layer_indices`, model_type nle / granite_speech_nar, or an
  architecture name containing "Nar"/"NLE"; SPEC §1, §9.3);
- `text_config` or the legacy `llm_config` (SPEC §9.1); RoPE theta flat or under `rope_parameters` (§5.1);
  `tie_word_embeddings` in `text_config` (wins) or at the top level; ints where floats are expected (§9.3).

Facts that only the tensors know come from `state_shapes` (our normalised key names → shapes): the BPE head
width, and from it the BPE label scheme (SPEC §3.6, §6.5, §11.3).

Fields that have no official name (our front-end settings, BPE head on AR/Plus, …) are written to a
`granite_asr` sub-dict of `config.json`, and only when a reader would not infer the same value without it,
so a config written for an official preset is exactly the official layout.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import (
    EncoderConfig,
    FeatureConfig,
    NarProjectorConfig,
    QFormerConfig,
    SpeechConfig,
    TextConfig,
)

OURS_KEY = "granite_asr"
NAR_MODEL_TYPES = frozenset({"nle", "granite_speech_nar"})
BPE_WEIGHT_KEYS = ("encoder.out_bpe.weight", "model.out_bpe.weight")

_ENCODER_COMMON = (
    "input_dim",
    "num_layers",
    "hidden_dim",
    "feedforward_mult",
    "num_heads",
    "dim_head",
    "output_dim",
    "context_size",
    "max_pos_emb",
    "dropout",
    "conv_kernel_size",
    "conv_expansion_factor",
)
# Encoder fields each variant's official encoder_config carries (SPEC §3.1, §9.2, §9.3).
_ENCODER_OFFICIAL = {
    "ar": _ENCODER_COMMON,
    "plus": (*_ENCODER_COMMON, "cat_hidden_layers"),
    "nar": (*_ENCODER_COMMON, "bpe_output_dim", "bpe_pooling_window", "self_conditioning_layer"),
}
_NAR_TOP = (
    "encoder_layer_indices",
    "scale_projected_embeddings",
    "blank_token_id",
    "min_edit_sequence_length",
)
_AR_TOP = ("audio_token_index", "window_size", "downsample_rate", "has_lora_adapter")
_ARCH = {
    "ar": ("granite_speech", "GraniteSpeechForConditionalGeneration", "granite_speech_encoder"),
    "plus": (
        "granite_speech_plus",
        "GraniteSpeechPlusForConditionalGeneration",
        "granite_speech_plus_encoder",
    ),
    "nar": ("granite_speech_nar", "GraniteSpeechNarForASR", "granite_speech_nar_encoder"),
}


# ------------------------------------------------------------------------------------------ helpers


def _coerce(cls: type, src: dict[str, Any]) -> dict[str, Any]:
    """Keep the keys of `src` that are scalar fields of dataclass `cls`, cast to the field's type.

    Official configs hold ints where floats are expected and lists where we keep tuples (SPEC §9.3);
    None means "use the default" (e.g. `dim_head: null`).
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        v = src.get(f.name)
        if v is None:
            continue
        t = str(f.type)
        if t == "float":
            out[f.name] = float(v)
        elif t == "int":
            if isinstance(v, float) and not v.is_integer():
                raise ValueError(f"{cls.__name__}.{f.name} must be an integer, got {v!r}")
            out[f.name] = int(v)
        elif t == "bool":
            out[f.name] = bool(v)
        elif t in ("str", "str | None"):
            out[f.name] = str(v)
        elif t.startswith("tuple[int"):
            out[f.name] = tuple(int(x) for x in v)
    return out


def _with_defaults(cls: type, src: dict[str, Any]) -> dict[str, Any]:
    """Defaults of `cls`'s scalar fields overlaid with the coerced values of `src`."""
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING and not dataclasses.is_dataclass(f.default)
    }
    return _coerce(cls, {**defaults, **{k: v for k, v in src.items() if v is not None}})


def _json_value(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items()}
    return v


def _freeze(v: Any) -> Any:
    """JSON lists back to tuples so `SpeechConfig.extra` stays hashable and round-trips."""
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return {k: _freeze(x) for k, x in v.items()}
    return v


def detect_variant(d: dict[str, Any]) -> str:
    """'nar' / 'plus' / 'ar' from an official config dict (SPEC §1, §9)."""
    model_type = str(d.get("model_type", ""))
    archs = " ".join(d.get("architectures") or ())
    if "encoder_layer_indices" in d or model_type in NAR_MODEL_TYPES or "Nar" in archs or "NLE" in archs:
        return "nar"
    if model_type == "granite_speech_plus" or (d.get("encoder_config") or {}).get("cat_hidden_layers"):
        return "plus"
    return "ar"


def infer_bpe_scheme(
    width: int, vocab_size: int, audio_token_index: int, blank_token_id: int
) -> tuple[int, int] | None:
    """(bpe_blank_id, bpe_label_offset) for a BPE head of `width` labels, or None if undecidable.

    The head covers the Granite-4 text tokens, i.e. the LLM vocabulary without `<|audio|>` when the audio
    token is appended as the last id (AR: 100353 − 1 = 100352; NAR: 100352). Our own small models keep
    `<|audio|>` inside their tokenizer; their head is then one wider than the whole vocabulary. One label more → blank is label 0 and
    token = label − 1 (AR `out_llm.safetensors`, NAR rev 7d20732d); exactly as many → labels are token ids
    and blank is `blank_token_id` (NAR rev 99a4df9). SPEC §3.6, §6.5.
    """
    text_tokens = vocab_size - 1 if audio_token_index == vocab_size - 1 else vocab_size
    if width == text_tokens + 1:
        return 0, 1
    if width == text_tokens:
        return blank_token_id, 0
    return None


def bpe_width_from_shapes(state_shapes: dict[str, tuple]) -> int:
    """Rows of the BPE CTC head, 0 when the checkpoint has none."""
    for key in BPE_WEIGHT_KEYS:
        if key in state_shapes:
            return int(tuple(state_shapes[key])[0])
    return 0


# ------------------------------------------------------------------------------------------ reading


def _text_fields(text_d: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    src = dict(text_d)
    rope = src.get("rope_parameters") or src.get("rope_scaling") or {}
    if src.get("rope_theta") is None and isinstance(rope, dict) and rope.get("rope_theta") is not None:
        src["rope_theta"] = rope["rope_theta"]
    for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
        if isinstance(src.get(key), list):
            src[key] = src[key][0] if src[key] else None
    # SPEC §5.1: the flag lives in text_config for 2b-plus and NAR; the top level is the fallback.
    if src.get("tie_word_embeddings") is None and top.get("tie_word_embeddings") is not None:
        src["tie_word_embeddings"] = top["tie_word_embeddings"]
    return _with_defaults(TextConfig, src)


def _encoder_fields(enc_d: dict[str, Any], variant: str, text: dict[str, Any]) -> dict[str, Any]:
    enc = _coerce(EncoderConfig, enc_d)
    if "dim_head" not in enc:
        hidden = enc.get("hidden_dim", EncoderConfig.hidden_dim)
        enc["dim_head"] = hidden // enc.get("num_heads", EncoderConfig.num_heads)
    if "bpe_output_dim" not in enc:
        # 2b ships its head as out_llm.safetensors over the whole vocabulary; Plus has none (SPEC §3.6).
        enc["bpe_output_dim"] = 0 if variant == "plus" else text["vocab_size"]
    return _with_defaults(EncoderConfig, enc)


def _top_fields(d: dict[str, Any], variant: str, enc_d: dict, proj: dict[str, Any]) -> dict[str, Any]:
    src = dict(d)
    if src.get("audio_token_index") is None:
        src["audio_token_index"] = d.get("audio_token_id")
    if src.get("blank_token_id") is None:
        src["blank_token_id"] = enc_d.get("blank_token_id")  # NAR rev a1e3416e keeps it in the encoder
    if variant == "nar":
        # The NAR projector owns its geometry (SPEC §4.2); lengths.py reads the top-level copies.
        src["window_size"] = proj.get("block_size", NarProjectorConfig.block_size)
        src["downsample_rate"] = proj.get("downsample_rate", NarProjectorConfig.downsample_rate)
    top = _with_defaults(SpeechConfig, src)
    top.pop("bpe_blank_id", None)
    top.pop("bpe_label_offset", None)
    top["variant"] = variant
    return top


def _feature_fields(preprocessor: dict[str, Any] | None) -> dict[str, Any]:
    """`melspec_kwargs` (2b, SPEC §9.1) or flat fields (NAR, SPEC §9.3)."""
    preprocessor = preprocessor or {}
    mel = dict(preprocessor.get("melspec_kwargs") or {})
    for key in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
        if mel.get(key) is None and preprocessor.get(key) is not None:
            mel[key] = preprocessor[key]
    if mel.get("sample_rate") is None:
        mel["sample_rate"] = preprocessor.get("sampling_rate")
    return _with_defaults(FeatureConfig, mel)


def _official_fields(d: dict[str, Any], preprocessor: dict[str, Any] | None) -> dict[str, Any]:
    """Everything an official-layout reader infers, as `SpeechConfig.to_dict()`-shaped sections."""
    variant = detect_variant(d)
    text_d = d.get("text_config") or d.get("llm_config") or {}
    enc_d = d.get("encoder_config") or {}
    proj_cls = NarProjectorConfig if variant == "nar" else QFormerConfig
    proj = _with_defaults(proj_cls, d.get("projector_config") or {})
    text = _text_fields(text_d, d)
    fields = _top_fields(d, variant, enc_d, proj)
    fields.update(
        features=_feature_fields(preprocessor),
        encoder=_encoder_fields(enc_d, variant, text),
        projector=proj,
        text=text,
        extra={},
    )
    return fields


def _merge(base: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in ours.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "extra":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _scheme(fields: dict[str, Any]) -> tuple[int, int] | None:
    width = fields["encoder"]["bpe_output_dim"]
    if not width:
        return SpeechConfig.bpe_blank_id, SpeechConfig.bpe_label_offset
    return infer_bpe_scheme(
        width, fields["text"]["vocab_size"], fields["audio_token_index"], fields["blank_token_id"]
    )


def _build(fields: dict[str, Any]) -> SpeechConfig:
    variant = fields["variant"]
    proj_cls = NarProjectorConfig if variant == "nar" else QFormerConfig
    top = _coerce(SpeechConfig, fields)
    extra = _freeze(dict(fields.get("extra") or {}))
    return SpeechConfig(
        features=FeatureConfig(**_coerce(FeatureConfig, fields["features"])),
        encoder=EncoderConfig(**_coerce(EncoderConfig, fields["encoder"])),
        projector=proj_cls(**_coerce(proj_cls, fields["projector"])),
        text=TextConfig(**_coerce(TextConfig, fields["text"])),
        extra=tuple(sorted(extra.items())),
        **top,
    )


def config_from_hf(
    d: dict[str, Any],
    *,
    state_shapes: dict[str, tuple] | None = None,
    preprocessor: dict[str, Any] | None = None,
) -> SpeechConfig:
    """Parse an official (or our) `config.json` dict.

    `state_shapes` maps normalised tensor names to shapes for the whole checkpoint; when given, the BPE head
    width is read from `encoder.out_bpe.weight` (0 if absent). Precedence: official fields < our
    `granite_asr` sub-dict < tensor shapes; the BPE label scheme is our explicit value, else inferred.
    """
    ours = dict(d.get(OURS_KEY) or {})
    fields = _merge(_official_fields(d, preprocessor), ours)
    if state_shapes is not None:
        fields["encoder"]["bpe_output_dim"] = bpe_width_from_shapes(state_shapes)
    inferred = _scheme(fields)
    explicit = ("bpe_blank_id" in ours, "bpe_label_offset" in ours)
    if not all(explicit):
        if inferred is None:
            raise ValueError(
                f"cannot tell the BPE label scheme: head width {fields['encoder']['bpe_output_dim']} is "
                f"neither the text vocabulary nor one more (vocab_size {fields['text'].get('vocab_size')}, "
                f"audio_token_index {fields.get('audio_token_index')}); SPEC §3.6"
            )
        fields.setdefault("bpe_blank_id", inferred[0])
        fields.setdefault("bpe_label_offset", inferred[1])
    return _build(fields)


# ------------------------------------------------------------------------------------------ writing


def _text_to_hf(text: TextConfig) -> dict[str, Any]:
    d = dataclasses.asdict(text)
    theta = d.pop("rope_theta")
    return {
        "model_type": "granite",
        "architectures": ["GraniteForCausalLM"],
        "hidden_act": "silu",
        **d,
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
    }


def _official_dict(cfg: SpeechConfig) -> dict[str, Any]:
    model_type, arch, enc_type = _ARCH[cfg.variant]
    enc = dataclasses.asdict(cfg.encoder)
    encoder = {"model_type": enc_type, **{k: _json_value(enc[k]) for k in _ENCODER_OFFICIAL[cfg.variant]}}
    projector = dataclasses.asdict(cfg.projector)
    if cfg.variant != "nar":
        projector = {"model_type": "blip_2_qformer", **projector, "use_qformer_text_input": False}
    top_keys = _NAR_TOP if cfg.variant == "nar" else _AR_TOP
    return {
        "architectures": [arch],
        "model_type": model_type,
        **{k: _json_value(getattr(cfg, k)) for k in top_keys},
        "tie_word_embeddings": cfg.text.tie_word_embeddings,
        "encoder_config": encoder,
        "projector_config": projector,
        "text_config": _text_to_hf(cfg.text),
    }


def _diff(full: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in full.items():
        if isinstance(value, dict) and key != "extra":
            sub = _diff(value, base.get(key) or {})
            if sub:
                out[key] = sub
        elif base.get(key) != value:  # None reads back as the default, so it needs no entry
            out[key] = _json_value(value)
    return out


def config_to_hf(cfg: SpeechConfig) -> dict[str, Any]:
    """Official-layout `config.json` dict; non-official values go to the `granite_asr` sub-dict."""
    d = _official_dict(cfg)
    base = _official_fields(d, None)
    scheme = _scheme(base)
    base["bpe_blank_id"], base["bpe_label_offset"] = scheme if scheme else (None, None)
    full = cfg.to_dict()
    full["extra"] = dict(cfg.extra)
    ours = _diff(full, base)
    if not ours.get("extra"):
        ours.pop("extra", None)
    if ours:
        d[OURS_KEY] = ours
    return d


def preprocessor_to_hf(cfg: SpeechConfig) -> dict[str, Any]:
    """`preprocessor_config.json`: `melspec_kwargs` for 2b/Plus (SPEC §9.1), flat fields for NAR (§9.3)."""
    mel = dataclasses.asdict(cfg.features)
    if cfg.variant == "nar":
        flat = {k: v for k, v in mel.items() if k != "sample_rate"}
        return {"sampling_rate": cfg.features.sample_rate, **flat}
    return {
        "feature_extractor_type": "GraniteSpeechFeatureExtractor",
        "processor_class": "GraniteSpeechProcessor",
        "melspec_kwargs": mel,
        "projector_window_size": cfg.window_size,
        "projector_downsample_rate": cfg.downsample_rate,
        "sampling_rate": cfg.features.sample_rate,
    }
