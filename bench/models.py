"""Random-weight models and inputs for the speed bench (issue 6 item 2): presets at their real shapes.

Weights are random (speed does not depend on their values); the AR bench disables EOS and the repetition
guard so every row generates exactly `new_tokens` tokens, the same count transformers is forced to with
`min_new_tokens`. A small byte-level BPE trained in memory supplies the prompt text and `<|audio|>`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
from tokenizers import Tokenizer as HFTokenizer

import granite_asr
from granite_asr.config import NarProjectorConfig, SpeechConfig, preset
from granite_asr.tokenizer import Tokenizer
from granite_asr.train.text_data import train_bpe

SPECIAL = ("<|end_of_text|>", "<|pad|>", "<|start_of_role|>", "<|end_of_role|>", "<|audio|>")
CORPUS = [
    "USER: can you transcribe the speech into a written format? ASSISTANT:",
    "transcribe the speech with proper punctuation and capitalization.",
    "translate the speech to French with proper punctuation and capitalization.",
    "system user assistant Keywords: Granite, IBM. Speaker attribution, timestamps.",
]
SR = 16000
# Shapes the quick profile can afford on two CPU cores, and the real ones (`--full`).
QUICK_PRESETS = ("tiny", "default")
FULL_PRESETS = ("tiny", "default", "2b")


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    return train_bpe(CORPUS * 4, 400, SPECIAL).to_str()


def tokenizer() -> Tokenizer:
    return Tokenizer(HFTokenizer.from_str(_tokenizer_json()))


def nar_of(cfg: SpeechConfig) -> SpeechConfig:
    """A 2b-nar-style editor at another preset's widths ("default-nar"), so NAR vs AR compares like shapes."""
    enc, text = cfg.encoder, cfg.text
    proj = NarProjectorConfig(
        encoder_dim=enc.hidden_dim,
        num_encoder_layers=4,
        hidden_size=text.hidden_size,
        num_heads=text.num_attention_heads,
        llm_dim=text.hidden_size,
    )
    n = enc.num_layers
    return cfg.replace(
        variant="nar",
        projector=proj,
        encoder=dataclasses.replace(enc, self_conditioning_layer=n // 2),
        encoder_layer_indices=(n // 4 or 1, n // 2, 3 * n // 4, -1),
        bpe_blank_id=0,
        bpe_label_offset=0,
    )


def bench_config(name: str) -> SpeechConfig:
    """Preset `name` (or `<preset>-nar` for an editor at that preset's widths) fitted to the bench tokenizer."""
    tok = tokenizer()
    base = name.removesuffix("-nar") if name not in ("tiny-nar", "2b-nar") else name
    cfg = preset(base)
    if name.endswith("-nar") and cfg.variant != "nar":
        cfg = nar_of(cfg)
    text = cfg.text
    vocab = max(text.vocab_size, tok.vocab_size + 1)
    bpe = cfg.encoder.bpe_output_dim
    if bpe and bpe < tok.vocab_size:
        bpe = vocab + (cfg.variant == "ar")
    return cfg.replace(
        text=dataclasses.replace(text, vocab_size=vocab, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id),
        encoder=dataclasses.replace(cfg.encoder, bpe_output_dim=bpe),
        audio_token_index=tok.audio_token_id,
        blank_token_id=tok.eos_id,
    )


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build parameters directly in `dtype`: the 2b never exists in fp32 when the bench wants bf16."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@torch.no_grad()
def _fill(model: torch.nn.Module, seed: int) -> None:
    """Cheap random weights: matrices cycle through one pool of N(0, 0.02) values (a copy, not a random
    draw per element: drawing 2.3 G numbers takes minutes on two shared cores); norms 1, biases 0,
    BatchNorm statistics (0, 1). Matmul speed does not depend on the values."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(1 << 20, generator=g) * 0.02
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if not t.is_floating_point():
            continue
        if t.dim() >= 2:
            n = t.numel()
            flat = pool.repeat(-(-n // pool.numel()))[:n] if n > pool.numel() else pool[:n]
            t.copy_(flat.view(t.shape))
        elif name.endswith("running_var") or ("norm" in name and name.endswith(".weight")):
            t.fill_(1.0)
        else:
            t.zero_()


def build(name: str, dtype: torch.dtype, seed: int = 0, device: str = "cpu") -> torch.nn.Module:
    """Preset `name` with random weights, built directly in `dtype` on `device` (no fp32 copy ever)."""
    with default_dtype(dtype):
        model = granite_asr.build_model(bench_config(name), device="meta")
    model.to_empty(device=device)
    _fill(model, seed)
    for m in model.modules():
        if hasattr(m, "reset_buffers"):
            m.reset_buffers()  # RoPE table (fp32) and the Shaw distance table
    model.to(device)
    model.tokenizer = tokenizer()
    # Inference only; also lets PyTorch's FLOP counter run under inference_mode.
    return model.eval().requires_grad_(False)


def clips(n: int, seconds: float, seed: int = 0, spread: float = 0.25) -> list[np.ndarray]:
    """`n` noise clips of `seconds` ± `spread`·seconds (evenly spaced lengths: bucketing matters)."""
    rng = np.random.default_rng(seed)
    lens = np.linspace(1 - spread, 1 + spread, n) if n > 1 else np.ones(1)
    return [(0.1 * rng.standard_normal(int(seconds * f * SR))).astype(np.float32) for f in lens]
