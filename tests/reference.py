"""Helpers that build transformers' reference models (the oracle) at tiny shapes.

Weights are re-initialised at unit signal scale (NOTES: "make the parity test able to see every part"):
with the library's small-std init most of the encoder is invisible in the logits.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ENCODER = dict(
    input_dim=160,
    num_layers=4,
    hidden_dim=32,
    feedforward_mult=4,
    num_heads=2,
    dim_head=16,
    output_dim=348,
    context_size=20,
    max_pos_emb=24,
    dropout=0.0,
    conv_kernel_size=5,
)


def hf_config(variant: str = "ar", *, tied: bool | None = None, kv_heads: int = 2):
    from transformers import GraniteSpeechConfig, GraniteSpeechPlusConfig

    tied = (variant == "plus") if tied is None else tied
    enc = dict(ENCODER)
    width = 32
    if variant == "plus":
        enc["cat_hidden_layers"] = [1]
        width = 64
    text = dict(
        model_type="granite",
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        embedding_multiplier=12.0,
        attention_multiplier=1 / 16,
        residual_multiplier=0.22,
        logits_scaling=8.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )
    proj = dict(
        model_type="blip_2_qformer",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        encoder_hidden_size=width,
        layer_norm_eps=1e-12,
        cross_attention_frequency=1,
    )
    cls = GraniteSpeechPlusConfig if variant == "plus" else GraniteSpeechConfig
    if variant == "plus":
        from transformers import GraniteSpeechPlusEncoderConfig

        enc = GraniteSpeechPlusEncoderConfig(**enc)
    return cls(
        encoder_config=enc,
        projector_config=proj,
        text_config=text,
        audio_token_index=96,
        has_lora_adapter=False,
        tie_word_embeddings=tied,
        downsample_rate=5,
        window_size=15,
    )


@torch.no_grad()
def unit_scale_init(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)

    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=g) * std)

    def uniform(t, lo, hi):
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    for mod in model.modules():
        if isinstance(mod, (nn.Linear, nn.Conv1d)):
            fan_in = mod.weight[0].numel()
            normal(mod.weight, 1 / math.sqrt(fan_in))
            if mod.bias is not None:
                uniform(mod.bias, -0.1, 0.1)
        elif isinstance(mod, nn.Embedding):
            normal(mod.weight, 1 / math.sqrt(mod.weight.shape[1]))
        elif isinstance(mod, nn.BatchNorm1d):
            uniform(mod.weight, 0.9, 1.1)
            uniform(mod.bias, -0.1, 0.1)
            uniform(mod.running_mean, -0.1, 0.1)
            uniform(mod.running_var, 0.5, 1.5)
        elif isinstance(mod, nn.LayerNorm) or type(mod).__name__.endswith("RMSNorm"):
            uniform(mod.weight, 0.9, 1.1)
            if getattr(mod, "bias", None) is not None:
                uniform(mod.bias, -0.1, 0.1)
    for name, p in model.named_parameters():
        if name.endswith("projector.query"):
            normal(p, 1.0)


def save_reference(tmp_path, variant="ar", *, tied=None, kv_heads=2, seed=0):
    """Build, re-initialise and `save_pretrained` a reference model; return (model, directory)."""
    from transformers import GraniteSpeechForConditionalGeneration, GraniteSpeechPlusForConditionalGeneration

    cfg = hf_config(variant, tied=tied, kv_heads=kv_heads)
    cls = (
        GraniteSpeechPlusForConditionalGeneration
        if variant == "plus"
        else GraniteSpeechForConditionalGeneration
    )
    torch.manual_seed(seed)
    ref = cls(cfg).eval()
    unit_scale_init(ref, seed)
    if cfg.text_config.tie_word_embeddings:
        ref.tie_weights()
    out = tmp_path / f"ref-{variant}"
    ref.save_pretrained(out)
    return ref, out


def prompt_batch(n_audio: list[int], prefix: list[int], suffix: int = 4, audio_id=96, seed=0):
    """Left-padded prompts: `prefix[i]` text tokens, `n_audio[i]` audio tokens, `suffix` text tokens."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n, p in zip(n_audio, prefix, strict=True):
        text = torch.randint(2, 90, (p + suffix,), generator=g).tolist()
        rows.append(text[:p] + [audio_id] * n + text[p:])
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return ids, mask
