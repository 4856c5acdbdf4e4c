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


class FusedLinears:
    """One weight for several bias-free projections of the same input (issue 6: fused QKV and gate/up).

    The checkpoint layout keeps separate `q_proj`/`k_proj`/`v_proj` (`gate_proj`/`up_proj`) tensors, so
    the fusion happens on first inference use: the weights are concatenated once and each Linear's weight
    becomes a VIEW of the fused tensor. No extra memory, `state_dict` still has the official names, and
    in-place updates (load_state_dict, optimiser steps) reach the fused tensor. A weight replaced by a new
    tensor (`.to(dtype)`, an `assign` load) no longer points into it, which the pointer check notices, and
    the next inference call fuses again. Training (grad enabled) runs the separate Linears, so gradients
    reach the parameters as usual.
    """

    enabled = True  # class-wide switch: the bench times the unfused path against it (issue 6)

    def __init__(self, owner: nn.Module, *names: str):
        # Looked up by name on every call: LoRA wrappers or int8 modules may replace the Linears.
        self.owner, self.names = owner, names
        self.weight: torch.Tensor | None = None
        self.ptrs: tuple[int, ...] = ()

    @property
    def linears(self) -> list[nn.Module]:
        return [getattr(self.owner, n) for n in self.names]

    def usable(self) -> bool:
        """Plain bias-free Linears (not LoRA, not quantised), outside autograd."""
        return (
            FusedLinears.enabled
            and not torch.is_grad_enabled()
            and all(type(m) is nn.Linear and m.bias is None for m in self.linears)
        )

    def get(self) -> torch.Tensor:
        ws = [m.weight for m in self.linears]
        if self.weight is None or tuple(w.data_ptr() for w in ws) != self.ptrs:
            with torch.inference_mode(False), torch.no_grad():  # a normal tensor: training may follow
                fused = torch.cat([w.detach() for w in ws])
                start = 0
                for m in self.linears:
                    n = m.weight.shape[0]
                    m.weight.data = fused[start : start + n]
                    start += n
            self.weight, self.ptrs = fused, tuple(m.weight.data_ptr() for m in self.linears)
        return self.weight

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (…, E) → each projection's output, from one matmul when usable."""
        linears = self.linears
        if not self.usable():
            return [m(x) for m in linears]
        sizes = [m.weight.shape[0] for m in linears]
        return list(F.linear(x, self.get()).split(sizes, dim=-1))


def fuse_projections(module: nn.Module) -> None:
    """Fuse every decoder layer's projections now (before sharing the weights with another model)."""
    for m in module.modules():
        for fused in (getattr(m, "_qkv", None), getattr(m, "_gate_up", None)):
            if isinstance(fused, FusedLinears) and all(
                type(lin) is nn.Linear and lin.bias is None for lin in fused.linears
            ):
                fused.get()


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
        self._qkv = FusedLinears(self, "q_proj", "k_proj", "v_proj")

    def forward(self, x, cos, sin, mask: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """x (B, L, E), mask (B, 1, L, S) bool (True = may attend) → (B, L, E)."""
        b, n, _ = x.shape
        q, k, v = self._qkv(x)
        q = q.view(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, Dh)
        k = k.view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hk, L, Dh)
        v = v.view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
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
        self._gate_up = FusedLinears(self, "gate_proj", "up_proj")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self._gate_up(x)
        return self.down_proj(F.silu(gate) * up)


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
        # A module call, not `.weight`: LoRA or int8 may replace the head; an int8 model also gives a
        # tied head its own int8 copy (model/quantize.py), which then wins over the embedding matrix.
        head = getattr(self, "lm_head", None)
        if head is not None:
            return head(hidden) / self.config.logits_scaling
        return F.linear(hidden, self.model.embed_tokens.weight) / self.config.logits_scaling

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
