"""Frozen configuration dataclasses for the Granite Speech 4.1 family and its presets.

One `SpeechConfig` describes a whole model: the audio front end, the Conformer encoder, the projector
(window Q-Former for "ar"/"plus", the NLE projector for "nar"), the Granite decoder and the top-level
fields (audio token, window geometry, NAR editing rules). Field names follow the official `config.json`
(SPEC §9) so the mapping in `granite_asr.model.hf_config` stays a rename table, not logic.

Presets: `tiny` (tests), `default` (the embedded model shipped in the repo), `2b`, `2b-nar`, `2b-plus`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Variant = Literal["ar", "plus", "nar"]
VARIANTS: tuple[str, ...] = ("ar", "plus", "nar")


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel front end (SPEC §2.1). `frames_stacked` is derived from the encoder's `input_dim`."""

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 80


@dataclass(frozen=True)
class EncoderConfig:
    """Conformer CTC encoder (SPEC §3.1). `input_dim` = n_mels × frames stacked (160 for the official 2b)."""

    input_dim: int = 160
    num_layers: int = 16
    hidden_dim: int = 1024
    feedforward_mult: int = 4
    num_heads: int = 8
    dim_head: int = 128
    output_dim: int = 348  # char CTC vocabulary (blank = 0), SPEC §3.6
    context_size: int = 200
    max_pos_emb: int = 512
    dropout: float = 0.1
    conv_kernel_size: int = 15
    conv_expansion_factor: int = 2
    # Plus (SPEC §3.5): block outputs (1-based; 0 = input_linear output) concatenated before the final one.
    cat_hidden_layers: tuple[int, ...] = ()
    # BPE CTC head (SPEC §3.6): 0 means no head. Pooled over `bpe_pooling_window` encoder frames.
    bpe_output_dim: int = 0
    bpe_pooling_window: int = 4
    # 1-based block after which the char-CTC self-conditioning residual is added (SPEC §3.4).
    self_conditioning_layer: int = 0  # 0 → num_layers // 2, the reference rule
    # Not an official field (official checkpoints keep 1): char-CTC labels per encoder frame at the last
    # block (`ConformerEncoder.out_up`). A 25 Hz encoder gives the letters of fast speech too few frames,
    # one per letter and space plus a blank between doubled letters (recipes/RESULTS.md, session 25); 2
    # splits each frame in two, the official 50 Hz label rate. The mid-layer head keeps one per frame.
    # On the embedded model it trained worse than the 25 Hz head on the same batches (session 26).
    char_upsample: int = 1

    @property
    def mid_layer(self) -> int:
        return self.self_conditioning_layer or self.num_layers // 2

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.dim_head

    @property
    def output_width(self) -> int:
        """Width of the encoder output the AR projector sees (Plus concatenates layers)."""
        return self.hidden_dim * (len(self.cat_hidden_layers) + 1)


@dataclass(frozen=True)
class QFormerConfig:
    """Window Q-Former projector of 2b/Plus (`projector_config`, model_type blip_2_qformer; SPEC §4.1)."""

    hidden_size: int = 1024
    num_hidden_layers: int = 2
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    layer_norm_eps: float = 1e-12
    encoder_hidden_size: int = 1024
    hidden_act: str = "gelu"
    cross_attention_frequency: int = 1


@dataclass(frozen=True)
class NarProjectorConfig:
    """The NLE projector of 2b-nar (SPEC §4.2): cross-attention-only Q-Former over tapped layers."""

    encoder_dim: int = 1024
    num_encoder_layers: int = 4
    hidden_size: int = 2048
    num_heads: int = 32
    num_layers: int = 2
    block_size: int = 15
    downsample_rate: int = 5
    mlp_ratio: int = 2
    llm_dim: int = 2048
    layernorm_eps: float = 1e-6
    attn_bias: bool = True
    mlp_bias: bool = True
    dropout_prob: float = 0.1


@dataclass(frozen=True)
class TextConfig:
    """Granite decoder (`text_config`, model_type granite; SPEC §5.1–5.2)."""

    vocab_size: int = 100353
    hidden_size: int = 2048
    intermediate_size: int = 4096
    num_hidden_layers: int = 40
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    embedding_multiplier: float = 12.0
    attention_multiplier: float = 0.0078125
    residual_multiplier: float = 0.22
    logits_scaling: float = 8.0
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int = 100257
    eos_token_id: int = 100257
    pad_token_id: int = 100256

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class SpeechConfig:
    """A whole model. `variant` selects the composition: "ar" (2b), "plus" (2b-plus), "nar" (2b-nar)."""

    variant: str = "ar"
    features: FeatureConfig = field(default_factory=FeatureConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    projector: QFormerConfig | NarProjectorConfig = field(default_factory=QFormerConfig)
    text: TextConfig = field(default_factory=TextConfig)
    audio_token_index: int = 100352
    window_size: int = 15
    downsample_rate: int = 5
    has_lora_adapter: bool = False
    # BPE CTC label scheme (SPEC §3.6): token id = label - offset; blank label given separately.
    # AR's out_llm.safetensors: blank 0, offset 1. NAR rev 99a4df9: blank 100257, offset 0.
    bpe_blank_id: int = 0
    bpe_label_offset: int = 1
    # NAR only (SPEC §6.2, §9.3).
    encoder_layer_indices: tuple[int, ...] = (4, 8, 12, -1)
    scale_projected_embeddings: bool = True
    blank_token_id: int = 100257
    min_edit_sequence_length: int = 8
    # Not official fields (official checkpoints keep these defaults; NOTES "same architecture"): what
    # `mode="auto"` runs for plain transcription on this checkpoint (None: the variant's own, ar or nar;
    # translation, keywords and speakers always take the variant's own), and which CTC head `mode="ctc"`
    # reads when the encoder has both. The embedded default names "ctc" and "char": its char head
    # transcribes unseen voices better than its small decoder does (recipes/RESULTS.md, session 3).
    auto_mode: str | None = None
    ctc_head: str = "bpe"
    # Where the char head reads for CTC transcripts and word alignment: "mid" (the official place, the
    # self-conditioning layer, SPEC §3.4) or "final" (the last block). Our recipe trains the head on the
    # last block too (`objectives.encoder_loss`, weight 1 against 0.3 at the mid layer), where it sees
    # twice the layers: 8–13 CER points better on unseen voices and text (recipes/RESULTS.md, session 5).
    ctc_char_layer: str = "mid"
    # Free-form extras carried through save/load untouched (e.g. chat template name, languages).
    extra: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {VARIANTS}")
        if self.encoder.input_dim % self.features.n_mels:
            raise ValueError(
                f"encoder.input_dim {self.encoder.input_dim} is not a multiple of "
                f"n_mels {self.features.n_mels}"
            )
        if self.window_size % self.downsample_rate:
            raise ValueError("window_size must be a multiple of downsample_rate")
        if self.auto_mode not in (None, "ar", "nar", "ctc", "speculative"):
            raise ValueError(f"auto_mode {self.auto_mode!r}: expected None, ar, nar, ctc or speculative")
        if self.ctc_head not in ("bpe", "char"):
            raise ValueError(f"ctc_head {self.ctc_head!r}: expected 'bpe' or 'char'")
        if self.ctc_char_layer not in ("mid", "final"):
            raise ValueError(f"ctc_char_layer {self.ctc_char_layer!r}: expected 'mid' or 'final'")
        if self.variant == "nar":
            if not isinstance(self.projector, NarProjectorConfig):
                raise ValueError("variant 'nar' needs a NarProjectorConfig")
        else:
            if not isinstance(self.projector, QFormerConfig):
                raise ValueError(f"variant {self.variant!r} needs a QFormerConfig")
            if self.projector.encoder_hidden_size != self.encoder.output_width:
                raise ValueError(
                    f"projector.encoder_hidden_size {self.projector.encoder_hidden_size} != encoder output "
                    f"width {self.encoder.output_width} (hidden_dim × (len(cat_hidden_layers) + 1))"
                )
        if self.encoder.char_upsample < 1:
            raise ValueError(f"encoder.char_upsample {self.encoder.char_upsample}: expected >= 1")
        for idx in self.encoder.cat_hidden_layers:
            if not 0 <= idx < self.encoder.num_layers:
                raise ValueError(f"cat_hidden_layers index {idx} out of range [0, {self.encoder.num_layers})")

    @property
    def frames_stacked(self) -> int:
        return self.encoder.input_dim // self.features.n_mels

    @property
    def num_queries(self) -> int:
        return self.window_size // self.downsample_rate

    def replace(self, **changes: Any) -> SpeechConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpeechConfig:
        d = dict(d)
        variant = d.get("variant", "ar")
        proj_cls = NarProjectorConfig if variant == "nar" else QFormerConfig
        enc = dict(d.get("encoder", {}))
        enc["cat_hidden_layers"] = tuple(enc.get("cat_hidden_layers", ()))
        return cls(
            variant=variant,
            features=FeatureConfig(**d.get("features", {})),
            encoder=EncoderConfig(**enc),
            projector=proj_cls(**d.get("projector", {})),
            text=TextConfig(**d.get("text", {})),
            encoder_layer_indices=tuple(d.pop("encoder_layer_indices", (4, 8, 12, -1))),
            extra=tuple(sorted(dict(d.pop("extra", {}) or {}).items())),
            **{
                k: v
                for k, v in d.items()
                if k not in ("variant", "features", "encoder", "projector", "text", "extra")
            },
        )


# ----------------------------------------------------------------------------------------------- presets


def _official_ar() -> SpeechConfig:
    """granite-speech-4.1-2b (SPEC §3.1, §4.1, §5.1, §9.1)."""
    return SpeechConfig(
        variant="ar",
        encoder=EncoderConfig(bpe_output_dim=100353),
        projector=QFormerConfig(),
        text=TextConfig(vocab_size=100353, tie_word_embeddings=False),
        bpe_blank_id=0,
        bpe_label_offset=1,
    )


def _official_plus() -> SpeechConfig:
    """granite-speech-4.1-2b-plus (SPEC §7.1, §9.2): layer 3 concatenated, tied embeddings, no BPE head."""
    return SpeechConfig(
        variant="plus",
        encoder=EncoderConfig(cat_hidden_layers=(3,)),
        projector=QFormerConfig(encoder_hidden_size=2048),
        text=TextConfig(vocab_size=100353, tie_word_embeddings=True),
    )


def _official_nar() -> SpeechConfig:
    """granite-speech-4.1-2b-nar at rev 99a4df9 (SPEC §3.6, §4.2, §6, §9.3)."""
    return SpeechConfig(
        variant="nar",
        encoder=EncoderConfig(bpe_output_dim=100352, self_conditioning_layer=8),
        projector=NarProjectorConfig(),
        text=TextConfig(vocab_size=100352, tie_word_embeddings=True),
        bpe_blank_id=100257,
        bpe_label_offset=0,
    )


def _tiny(variant: str = "ar") -> SpeechConfig:
    """Small shapes for fast CPU tests: every code path, a few thousand parameters per part."""
    enc = EncoderConfig(
        input_dim=160,
        num_layers=4,
        hidden_dim=32,
        num_heads=2,
        dim_head=16,
        output_dim=348,
        context_size=20,
        max_pos_emb=24,
        dropout=0.0,
        conv_kernel_size=5,
        cat_hidden_layers=(1,) if variant == "plus" else (),
        bpe_output_dim=0 if variant == "plus" else (96 if variant == "nar" else 97),
    )
    text = TextConfig(
        vocab_size=96 if variant == "nar" else 97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=variant != "ar",
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )
    if variant == "nar":
        proj: QFormerConfig | NarProjectorConfig = NarProjectorConfig(
            encoder_dim=32, num_encoder_layers=4, hidden_size=48, num_heads=4, llm_dim=64, mlp_ratio=2
        )
        return SpeechConfig(
            variant="nar",
            encoder=enc,
            projector=proj,
            text=text,
            audio_token_index=96,
            encoder_layer_indices=(1, 2, 3, -1),
            bpe_blank_id=1,
            bpe_label_offset=0,
            blank_token_id=1,
        )
    proj = QFormerConfig(
        hidden_size=32,
        num_attention_heads=4,
        intermediate_size=64,
        encoder_hidden_size=enc.output_width,
    )
    return SpeechConfig(variant=variant, encoder=enc, projector=proj, text=text, audio_token_index=96)


def _default_50hz() -> SpeechConfig:
    """The embedded model's widths with the official frame geometry (2 stacked mel frames at 50 Hz,
    200-frame blocks, 3 queries per 15 frames = 10 audio tokens/s, BPE pooling over 4 frames).

    Trained from scratch on this CPU its char CTC stayed on the plateau where the 25 Hz `default`
    learned (recipes/RESULTS.md, session 2); kept for that comparison and for benchmarks at the official
    geometry. A 6-layer, 256-wide Conformer and a 4-layer decoder with the Granite multipliers set to
    plain values (1, 1/sqrt(head_dim), 1, 1), which train reliably at this width from scratch.
    Vocabulary: our 8192-token byte-level BPE plus `<|audio|>` as the last id.
    """
    enc = EncoderConfig(
        input_dim=160,
        num_layers=6,
        hidden_dim=256,
        num_heads=4,
        dim_head=64,
        context_size=200,
        max_pos_emb=200,
        conv_kernel_size=15,
        bpe_output_dim=8193,
        bpe_pooling_window=4,
    )
    text = TextConfig(
        vocab_size=8193,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        embedding_multiplier=1.0,
        attention_multiplier=0.125,
        residual_multiplier=1.0,
        logits_scaling=1.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=1,
    )
    return SpeechConfig(
        variant="ar",
        encoder=enc,
        projector=QFormerConfig(
            hidden_size=256, num_attention_heads=4, intermediate_size=512, encoder_hidden_size=256
        ),
        text=text,
        audio_token_index=8192,
        window_size=15,
        downsample_rate=5,
        blank_token_id=0,
    )


def _default_25hz() -> SpeechConfig:
    """`default-50hz` with 4 stacked mel frames (`input_dim` 320, a 25 Hz encoder, 5 audio tokens/s), the
    geometry of the NOTES run that learned char CTC on this CPU, at half the encoder cost per second of
    audio: the 6-layer model the embedded default was trained as until session 10 (its recipe's first
    stages build it). Every value is a field of the official config (NOTES: same architecture, its own
    sizes)."""
    c = _default_50hz()
    return c.replace(encoder=dataclasses.replace(c.encoder, input_dim=320))


def _default() -> SpeechConfig:
    """The embedded model shipped in the repo (~23 M parameters, ~45 MiB bf16): `default-25hz` with its
    encoder grown to 8 layers (recipes/RESULTS.md, sessions 10-12: two layers repeated, then trained)."""
    c = _default_25hz()
    return c.replace(encoder=dataclasses.replace(c.encoder, num_layers=8))


PRESETS = {
    "tiny": lambda: _tiny("ar"),
    "tiny-plus": lambda: _tiny("plus"),
    "tiny-nar": lambda: _tiny("nar"),
    "default": _default,
    "default-50hz": _default_50hz,
    "default-25hz": _default_25hz,  # 6 layers: the recipe's first stages (recipes/RESULTS.md)
    "2b": _official_ar,
    "2b-plus": _official_plus,
    "2b-nar": _official_nar,
}


def preset(name: str) -> SpeechConfig:
    """Return the named preset (see `PRESETS`)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}") from None
