"""Granite decoder (granite-4.0-1b shape for the official models; SPEC §5.1–5.2).

Legend:
    B  batch    L  new positions this call    S  key positions (cache + new)    E  hidden_size
    H  query heads    Hk  key/value heads (GQA)    Dh  head_dim    V  vocabulary

Granite's four multipliers: inputs ×embedding_multiplier, attention scale = attention_multiplier
(replaces 1/sqrt(Dh)), residual branches ×residual_multiplier, logits ÷logits_scaling.
Attention is causal for the AR models and bidirectional for the NAR editor (`causal=False`).
Module names mirror `language_model.model.*` / `language_model.lm_head` of the official checkpoints.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TextConfig
from .kv_cache import KVCache


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics in fp32 even under bf16, as the reference GraniteRMSNorm does.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class Rotary(nn.Module):
    """Default (rotate-half) RoPE over the full head dim."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self._inv_freq(), persistent=False)

    def _inv_freq(self) -> torch.Tensor:
        return 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))

    def reset_buffers(self) -> None:
        """Recompute `inv_freq` in fp32 (after building on the meta device)."""
        self.inv_freq = self._inv_freq()

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, L) → cos, sin (B, 1, L, Dh)."""
        freqs = positions.float()[..., None] * self.inv_freq  # (B, L, Dh/2)
        emb = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, L, Dh)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class GraniteAttention(nn.Module):
    def __init__(self, cfg: TextConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.heads, self.kv_heads, self.head_dim = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        )
        self.scale = cfg.attention_multiplier
        e, b = cfg.hidden_size, cfg.attention_bias
        self.q_proj = nn.Linear(e, self.heads * self.head_dim, bias=b)
        self.k_proj = nn.Linear(e, self.kv_heads * self.head_dim, bias=b)
        self.v_proj = nn.Linear(e, self.kv_heads * self.head_dim, bias=b)
        self.o_proj = nn.Linear(self.heads * self.head_dim, e, bias=b)

    def forward(self, x, cos, sin, mask: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """x (B, L, E), mask (B, 1, L, S) bool (True = may attend) → (B, L, E)."""
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)
        k = self.k_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hk, L, Dh)
        v = self.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, Hk, S, Dh)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=self.heads != self.kv_heads
        )
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class GraniteMLP(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        e, i, b = cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias
        self.gate_proj = nn.Linear(e, i, bias=b)
        self.up_proj = nn.Linear(e, i, bias=b)
        self.down_proj = nn.Linear(i, e, bias=b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GraniteLayer(nn.Module):
    def __init__(self, cfg: TextConfig, layer_idx: int):
        super().__init__()
        self.self_attn = GraniteAttention(cfg, layer_idx)
        self.mlp = GraniteMLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.residual = cfg.residual_multiplier

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.residual * self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.residual * self.mlp(self.post_attention_layernorm(x))


class GraniteModel(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(GraniteLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta)

    def forward(self, embeds, positions, mask, cache: KVCache | None = None) -> torch.Tensor:
        """embeds (B, L, E) unscaled, positions (B, L), mask (B, 1, L, S) → final-normed (B, L, E)."""
        x = embeds * self.config.embedding_multiplier
        cos, sin = self.rotary(positions, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache)
        if cache is not None:
            cache.advance(embeds.shape[1])
        return self.norm(x)


def attention_mask(
    query_valid: torch.Tensor,
    key_valid: torch.Tensor,
    offset: int = 0,
    causal: bool = True,
    segments: torch.Tensor | None = None,
) -> torch.Tensor:
    """Build the (B, 1, L, S) bool mask: key valid, causal (key ≤ offset + query) when asked, and
    same packed segment when `segments` (B, L) is given (the NAR's packed batch, SPEC §6.3).

    Each query may always see itself, so padded rows stay finite (their outputs are never used).
    """
    n, s = query_valid.shape[1], key_valid.shape[1]
    qi = torch.arange(n, device=key_valid.device)[:, None] + offset
    kj = torch.arange(s, device=key_valid.device)[None, :]
    allowed = key_valid[:, None, None, :].expand(-1, 1, n, -1)  # (B, 1, L, S)
    if causal:
        allowed = allowed & (kj <= qi)
    if segments is not None:
        allowed = allowed & (segments[:, None, :, None] == segments[:, None, None, :])
    return allowed | (kj == qi)


class GraniteForCausalLM(nn.Module):
    """`language_model`: the decoder plus its head (tied to `embed_tokens` unless the config unties it)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.config = cfg
        self.model = GraniteModel(cfg)
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final hidden (…, E) → logits (…, V), divided by logits_scaling (SPEC §5.2)."""
        w = self.model.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight
        return F.linear(hidden, w) / self.config.logits_scaling

    def new_cache(self, batch: int, capacity: int, *, dtype=None, device=None) -> KVCache:
        w = self.model.embed_tokens.weight
        cfg = self.config
        return KVCache(
            cfg.num_hidden_layers,
            batch,
            cfg.num_key_value_heads,
            cfg.head_dim,
            capacity,
            dtype=dtype or w.dtype,
            device=device or w.device,
        )

    def forward(
        self,
        embeds: torch.Tensor,
        valid: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache | None = None,
        causal: bool = True,
        segments: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """embeds (B, L, E), valid (B, L) bool, positions (B, L) → final hidden (B, L, E).

        With a cache, the new positions are appended and attend to everything valid before them.
        `segments` (B, L) keeps packed sequences apart (no cache).
        """
        if cache is None:
            mask = attention_mask(valid, valid, 0, causal, segments)
        else:
            offset = cache.length
            cache.append_mask(valid)
            mask = attention_mask(valid, cache.valid[:, : offset + valid.shape[1]], offset, causal)
        return self.model(embeds, positions, mask, cache)
