"""Window Q-Former projector of 2b and Plus (SPEC §4.1): BLIP-2 Q-Former layers over 15-frame windows.

Legend:
    B  batch     T  encoder frames     C  encoder width the projector sees (1024; 2048 for Plus)
    W  window_size (15)   nb = ceil(T / W) windows   Q  queries per window (3)
    H  Q-Former hidden (1024)   E  LLM width (2048)

Module names mirror the official checkpoint (`projector.qformer.encoder.layer.{i}.…`) so the
state dict loads without renaming. Post-LN BERT layers: self-attention over the Q queries,
cross-attention to the window frames, GELU FFN; the query LayerNorm comes first.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import QFormerConfig


class _Attention(nn.Module):
    """`…attention.{query,key,value}` (the BERT naming)."""

    def __init__(self, hidden: int, kv_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(kv_dim, hidden)
        self.value = nn.Linear(kv_dim, hidden)

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """x (N, Q, H), kv (N, S, C) → (N, Q, H)."""
        n, q_len, hid = x.shape
        split = lambda t: t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(kv)), split(self.value(kv))  # (N, h, ·, Dh)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(Dh), no mask (SPEC §4.1)
        return out.transpose(1, 2).reshape(n, q_len, hid)


class _Output(nn.Module):
    """`…output.{dense,LayerNorm}`: dense, then post-LN over the residual."""

    def __init__(self, in_dim: int, hidden: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(in_dim, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _AttentionBlock(nn.Module):
    def __init__(self, hidden: int, kv_dim: int, heads: int, eps: float):
        super().__init__()
        self.attention = _Attention(hidden, kv_dim, heads)
        self.output = _Output(hidden, hidden, eps)

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return self.output(self.attention(x, kv), x)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.dense = nn.Linear(hidden, inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # exact (erf) GELU, BLIP-2's "gelu"


class QFormerLayer(nn.Module):
    def __init__(self, cfg: QFormerConfig, cross: bool):
        super().__init__()
        h, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.attention = _AttentionBlock(h, h, cfg.num_attention_heads, eps)
        if cross:
            self.crossattention = _AttentionBlock(h, cfg.encoder_hidden_size, cfg.num_attention_heads, eps)
        self.intermediate_query = _Intermediate(h, cfg.intermediate_size)
        self.output_query = _Output(cfg.intermediate_size, h, eps)

    def forward(self, q: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        q = self.attention(q, q)
        if hasattr(self, "crossattention"):
            q = self.crossattention(q, frames)
        return self.output_query(self.intermediate_query(q), q)


class _Encoder(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.layer = nn.ModuleList(
            QFormerLayer(cfg, cross=i % cfg.cross_attention_frequency == 0)
            for i in range(cfg.num_hidden_layers)
        )


class QFormer(nn.Module):
    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = _Encoder(cfg)

    def forward(self, queries: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """queries (N, Q, H), frames (N, W, C) → (N, Q, H)."""
        q = self.layernorm(queries)
        for layer in self.encoder.layer:
            q = layer(q, frames)
        return q


class WindowQFormerProjector(nn.Module):
    """Encoder frames (B, T, C) → LLM audio embeddings (B, nb·Q, E)."""

    def __init__(self, cfg: QFormerConfig, window_size: int, num_queries: int, llm_dim: int):
        super().__init__()
        self.window_size = window_size
        self.query = nn.Parameter(torch.randn(1, num_queries, cfg.hidden_size))
        self.qformer = QFormer(cfg)
        self.linear = nn.Linear(cfg.hidden_size, llm_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames must be zero beyond each clip's length (the encoder output is masked by the caller)."""
        b, t, c = frames.shape
        nb = math.ceil(t / self.window_size)
        frames = F.pad(frames, (0, 0, 0, nb * self.window_size - t))
        frames = frames.view(b * nb, self.window_size, c)  # (B·nb, W, C)
        q = self.query.expand(b * nb, -1, -1)  # (B·nb, Q, H)
        out = self.qformer(q, frames)
        return self.linear(out.reshape(b, -1, out.shape[-1]))  # (B, nb·Q, E)
