"""Conformer CTC encoder of Granite Speech 4.1 (SPEC §3).

Legend:
    B  batch            T  encoder frames (50 Hz for the official 2b)      Din  stacked mel width (160)
    D  hidden_dim       H  heads        Dh  dim_head       C  context_size (block length, 200)
    nb blocks per clip  V  char vocabulary (348)           Vb  BPE head width
    u  char labels per frame at the last block (`char_upsample`, 1 for the official checkpoints)

Each block is Macaron: ½·FF → block-local Shaw relative attention → depthwise conv (BatchNorm) → ½·FF → LN.
After block `mid_layer` the char-CTC posteriors are fed back (self-conditioning, SPEC §3.4).

Unlike the reference (SPEC §2.3), padding is masked: frames at or beyond a clip's length never reach
the clip's valid frames (attention keys are masked; the depthwise conv sees zeros there), so a clip
gives the same output alone and inside a padded batch (NOTES: model core, padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EncoderConfig
from ..lengths import lengths_to_mask


@dataclass
class EncoderOutput:
    """`last` is block N's output; `features` is what the projector sees (Plus/NAR concatenate taps)."""

    last: torch.Tensor  # (B, T, D)
    features: torch.Tensor  # (B, T, D·k)
    mid_logits: torch.Tensor  # (B, T, V) char CTC logits at the self-conditioning layer (pre-feedback)
    lengths: torch.Tensor  # (B,) valid frames


class FeedForward(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.pre_norm = nn.LayerNorm(cfg.hidden_dim)
        self.up_proj = nn.Linear(cfg.hidden_dim, cfg.hidden_dim * cfg.feedforward_mult)
        self.down_proj = nn.Linear(cfg.hidden_dim * cfg.feedforward_mult, cfg.hidden_dim)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.silu(self.up_proj(self.pre_norm(x))))
        return self.dropout(self.down_proj(x))


class BlockAttention(nn.Module):
    """Self-attention inside non-overlapping blocks of C frames, Shaw relative positions (SPEC §3.3)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if not 0 < cfg.context_size <= cfg.max_pos_emb:
            raise ValueError("context_size must be in (0, max_pos_emb]")
        self.num_heads, self.dim_head, self.context_size = cfg.num_heads, cfg.dim_head, cfg.context_size
        self.scale = cfg.dim_head**-0.5
        self.pre_norm = nn.LayerNorm(cfg.hidden_dim)
        self.to_q = nn.Linear(cfg.hidden_dim, cfg.inner_dim, bias=False)
        self.to_kv = nn.Linear(cfg.hidden_dim, 2 * cfg.inner_dim, bias=False)
        self.to_out = nn.Linear(cfg.inner_dim, cfg.hidden_dim)
        self.rel_pos_emb = nn.Embedding(2 * cfg.max_pos_emb + 1, cfg.dim_head)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, dists: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x (B, T, D); dists (C, C) table indices; allowed (B·nb, 1, C, C) bool → (B, T, D)."""
        b, t, _ = x.shape
        c, h = self.context_size, self.num_heads
        nb = math.ceil(t / c)
        x = F.pad(self.pre_norm(x), (0, 0, 0, nb * c - t))  # (B, nb·C, D)
        q = self.to_q(x).view(b * nb, c, h, -1).transpose(1, 2)  # (B·nb, H, C, Dh)
        k, v = self.to_kv(x).chunk(2, dim=-1)
        k = k.reshape(b * nb, c, h, -1).transpose(1, 2)  # (B·nb, H, C, Dh)
        v = v.reshape(b * nb, c, h, -1).transpose(1, 2)
        rel = self.rel_pos_emb(dists)  # (C, C, Dh)
        bias = torch.einsum("bhcd,crd->bhcr", q, rel) * self.scale  # (B·nb, H, C, C)
        bias = bias.masked_fill(~allowed, torch.finfo(bias.dtype).min)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, nb * c, -1)[:, :t]  # (B, T, H·Dh)
        return self.dropout(self.to_out(out))


class DepthwiseConv(nn.Module):
    """Depthwise Conv1d with explicit zero padding (k//2, k//2 - (k+1)%2), no bias (SPEC §3.2)."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        pad = kernel_size // 2
        self.padding = (pad, pad - (kernel_size + 1) % 2)
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ConvModule(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        inner = cfg.hidden_dim * cfg.conv_expansion_factor
        self.norm = nn.LayerNorm(cfg.hidden_dim)
        self.up_conv = nn.Conv1d(cfg.hidden_dim, 2 * inner, 1)
        self.depth_conv = DepthwiseConv(inner, cfg.conv_kernel_size)
        self.batch_norm = nn.BatchNorm1d(inner)
        self.down_conv = nn.Conv1d(inner, cfg.hidden_dim, 1)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, D), valid (B, T) bool or None → (B, T, D)."""
        y = F.glu(self.up_conv(self.norm(x).transpose(1, 2)), dim=1)  # (B, 2D', T) → (B, D', T)
        if valid is not None:
            # Zero the padding so the depthwise kernel sees what a lone clip sees at its end.
            y = y * valid[:, None, :].to(y.dtype)
        y = F.silu(self.batch_norm(self.depth_conv(y)))
        return self.dropout(self.down_conv(y).transpose(1, 2))  # (B, T, D)


class ConformerBlock(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.ff1 = FeedForward(cfg)
        self.attn = BlockAttention(cfg)
        self.conv = ConvModule(cfg)
        self.ff2 = FeedForward(cfg)
        self.post_norm = nn.LayerNorm(cfg.hidden_dim)

    def forward(self, x, dists, allowed, valid):
        x = x + 0.5 * self.ff1(x)
        x = x + self.attn(x, dists, allowed)
        x = x + self.conv(x, valid)
        x = x + 0.5 * self.ff2(x)
        return self.post_norm(x)


class ConformerEncoder(nn.Module):
    """Stacked-mel features → hidden states, with the char-CTC self-conditioning at `mid_layer`.

    `taps` selects what `EncoderOutput.features` concatenates, indexing the tuple
    (input_linear output, block 1, …, block N) like the reference (SPEC §3.5); -1 is the last block.
    Plus uses `cat_hidden_layers + [-1]`; the NAR uses `encoder_layer_indices`. Taps are taken after
    the self-conditioning residual (the reference adds it in place, SPEC §3.5).
    """

    def __init__(self, cfg: EncoderConfig, taps: tuple[int, ...] | None = None, fp32_feedback: bool = False):
        super().__init__()
        self.config = cfg
        self.fp32_feedback = fp32_feedback
        self.taps = tuple(taps) if taps else tuple(cfg.cat_hidden_layers) + (-1,)
        self.input_linear = nn.Linear(cfg.input_dim, cfg.hidden_dim)
        self.layers = nn.ModuleList(ConformerBlock(cfg) for _ in range(cfg.num_layers))
        self.out = nn.Linear(cfg.hidden_dim, cfg.output_dim)
        self.out_mid = nn.Linear(cfg.output_dim, cfg.hidden_dim)
        if cfg.char_upsample > 1:
            self.out_up = nn.Linear(cfg.hidden_dim, cfg.hidden_dim * cfg.char_upsample)
            self.reset_char_upsample()
        if cfg.bpe_output_dim:
            self.out_bpe = nn.Linear(cfg.hidden_dim, cfg.bpe_output_dim)
        self.register_buffer("attention_dists", self._dists(), persistent=False)

    def _dists(self, device=None) -> torch.Tensor:
        """(C, C) rows of the Shaw table: clamp(i − j, ±C) + max_pos_emb (SPEC §3.3)."""
        c = self.config.context_size
        seq = torch.arange(c, device=device)
        return (seq[:, None] - seq[None, :]).clamp(-c, c) + self.config.max_pos_emb

    @torch.no_grad()
    def reset_char_upsample(self) -> None:
        """`out_up` as u copies of its input: the upsampled head starts as the 1-per-frame head, each
        label repeated u times (the same collapsed text), and learns to split frames from there."""
        d, u = self.config.hidden_dim, self.config.char_upsample
        if self.out_up.weight.is_meta:
            return
        self.out_up.weight.copy_(torch.eye(d).repeat(u, 1))
        self.out_up.bias.zero_()

    def reset_buffers(self) -> None:
        """Recompute the non-persistent table (after building on the meta device)."""
        self.attention_dists = self._dists()

    def block_mask(self, t: int, lengths: torch.Tensor) -> torch.Tensor:
        """(B·nb, 1, C, C) bool: key j is valid for its clip, or j == i (keeps padded rows finite)."""
        c = self.config.context_size
        nb = math.ceil(t / c)
        key_ok = lengths_to_mask(lengths, nb * c).view(-1, 1, 1, c)  # (B·nb, 1, 1, C)
        eye = torch.eye(c, dtype=torch.bool, device=lengths.device)
        return key_ok | eye

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """x (B, T, Din) stacked log-mel; lengths (B,) valid frames (None: all T valid)."""
        b, t, _ = x.shape
        padded = lengths is not None and bool((lengths < t).any())
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=x.device)
        valid = lengths_to_mask(lengths, t) if padded else None
        allowed = self.block_mask(t, lengths)
        h = self.input_linear(x)
        states = [h]
        mid_logits = None
        for idx, layer in enumerate(self.layers, start=1):
            h = layer(h, self.attention_dists, allowed, valid)
            if idx == self.config.mid_layer:
                mid_logits = self.out(h)
                # SPEC §3.4: the AR reference takes this softmax in model dtype, the NAR code in fp32.
                probs = torch.softmax(mid_logits.float() if self.fp32_feedback else mid_logits, dim=-1)
                h = h + self.out_mid(probs.to(h.dtype))
            states.append(h)
        feats = [states[i] for i in self.taps]
        features = feats[0] if len(feats) == 1 else torch.cat(feats, dim=-1)  # (B, T, D·k)
        return EncoderOutput(last=h, features=features, mid_logits=mid_logits, lengths=lengths)

    # ------------------------------------------------------------------ CTC heads
    def char_logits(self, out: EncoderOutput, final: bool = False) -> torch.Tensor:
        """Char CTC logits at the mid layer, (B, T, V), trained with self-conditioning, or at the last
        block, (B, T·u, V): each frame split into u label frames by `out_up` when u > 1."""
        if not final:
            return out.mid_logits
        h = out.last
        if self.config.char_upsample > 1:
            b, t, d = h.shape
            h = self.out_up(h).view(b, t * self.config.char_upsample, d)  # (B, T·u, D)
        return self.out(h)

    def char_lengths(self, out: EncoderOutput, final: bool = False) -> torch.Tensor:
        """(B,) valid label frames of `char_logits(out, final)`."""
        return out.lengths * self.config.char_upsample if final else out.lengths

    def bpe_logits(self, out: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior-weighted pooling over `bpe_pooling_window` frames, then the BPE head (SPEC §3.6).

        Returns logits (B, K, Vb) and valid pooled lengths (B,) = ceil(lengths / window).
        """
        if not hasattr(self, "out_bpe"):
            raise RuntimeError("this encoder has no BPE CTC head (encoder.bpe_output_dim = 0)")
        w = self.config.bpe_pooling_window
        b, t, d = out.last.shape
        blank = torch.softmax(out.mid_logits.float(), dim=-1)[..., 0]  # (B, T)
        weight = (1.0 - blank) * lengths_to_mask(out.lengths, t)  # padding gets no weight
        k = math.ceil(t / w)
        weight = F.pad(weight, (0, k * w - t)).view(b, k, w)  # (B, K, w)
        h = F.pad(out.last.float(), (0, 0, 0, k * w - t)).view(b, k, w, d)  # (B, K, w, D)
        weight = weight / (weight.sum(-1, keepdim=True) + 1e-8)
        pooled = (weight[..., None] * h).sum(2).to(out.last.dtype)  # (B, K, D)
        return self.out_bpe(pooled), -(-out.lengths // w)
