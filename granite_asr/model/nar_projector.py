"""The NLE projector of 2b-nar (SPEC §4.2): a cross-attention-only Q-Former over tapped encoder layers.

Legend:
    B  batch    T  encoder frames    k  tapped layers (4)    De  encoder width (1024)
    Hp projector hidden (2048)    W  block_size (15)    nb = ceil(T / W)    Q  queries per window (3)
    E  LLM width (2048)

Per window the Q queries start as a learned query plus the mean of their 5-frame group, then attend
(pre-LN, no query self-attention) to the window frames plus learned in-window positions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import NarProjectorConfig


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, bias: bool):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, dim, bias=bias)
        self.v_proj = nn.Linear(dim, dim, bias=bias)
        self.o_proj = nn.Linear(dim, dim, bias=bias)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """q (N, Q, Hp), kv (N, W, Hp) → (N, Q, Hp)."""
        n, nq, d = q.shape
        split = lambda t: t.view(n, t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(
            split(self.q_proj(q)), split(self.k_proj(kv)), split(self.v_proj(kv))
        )
        return self.o_proj(out.transpose(1, 2).reshape(n, nq, d))  # (N, Q, Hp)


class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: int, bias: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * ratio, bias=bias)
        self.fc2 = nn.Linear(dim * ratio, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)))


class QFormerLayer(nn.Module):
    def __init__(self, cfg: NarProjectorConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_eps)
        self.cross_attention = CrossAttention(cfg.hidden_size, cfg.num_heads, cfg.attn_bias)
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_eps)
        self.mlp = Mlp(cfg.hidden_size, cfg.mlp_ratio, cfg.mlp_bias)

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        q = q + self.cross_attention(self.attn_norm(q), kv)
        return q + self.mlp(self.mlp_norm(q))


class _QFormer(nn.Module):
    def __init__(self, cfg: NarProjectorConfig):
        super().__init__()
        self.layers = nn.ModuleList(QFormerLayer(cfg) for _ in range(cfg.num_layers))


class NarProjector(nn.Module):
    """Tapped encoder states (B, T, k·De) → LLM audio embeddings (B, nb·Q, E)."""

    def __init__(self, cfg: NarProjectorConfig):
        super().__init__()
        self.config = cfg
        nq = cfg.block_size // cfg.downsample_rate
        self.layer_norms = nn.ModuleList(
            nn.LayerNorm(cfg.encoder_dim, eps=cfg.layernorm_eps) for _ in range(cfg.num_encoder_layers)
        )
        self.layer_projector = nn.Linear(cfg.encoder_dim * cfg.num_encoder_layers, cfg.hidden_size)
        self.query = nn.Parameter(torch.zeros(1, nq, cfg.hidden_size))
        self.window_positions = nn.Parameter(torch.zeros(1, cfg.block_size, cfg.hidden_size))
        self.qformer = _QFormer(cfg)
        self.out_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_eps)
        self.out_linear = nn.Linear(cfg.hidden_size, cfg.llm_dim)

    def forward(self, taps: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """taps (B, T, k·De); valid (B, T) bool zeroes padding like a lone clip's window padding."""
        cfg = self.config
        b, t, _ = taps.shape
        parts = taps.split(cfg.encoder_dim, dim=-1)
        x = torch.cat([norm(p) for norm, p in zip(self.layer_norms, parts, strict=True)], dim=-1)
        x = F.gelu(self.layer_projector(x))  # (B, T, Hp)
        if valid is not None:
            x = x * valid[..., None].to(x.dtype)
        nb = math.ceil(t / cfg.block_size)
        x = F.pad(x, (0, 0, 0, nb * cfg.block_size - t))
        win = x.view(b * nb, cfg.block_size, -1)  # (B·nb, W, Hp)
        nq = self.query.shape[1]
        pooled = win.view(b * nb, nq, cfg.downsample_rate, -1).mean(2)  # (B·nb, Q, Hp)
        q = self.query + pooled
        kv = win + self.window_positions
        for layer in self.qformer.layers:
            q = layer(q, kv)
        q = q.reshape(b, nb * nq, -1)  # (B, nb·Q, Hp)
        return self.out_linear(self.out_norm(q))  # (B, nb·Q, E)
