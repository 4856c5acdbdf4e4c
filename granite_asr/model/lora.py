"""A small LoRA module: low-rank adapters on chosen Linear layers, with on/off, merge/unmerge and
adapter-only state dicts.

The NAR editor was trained with LoRA rank 128 on attention and MLP (SPEC §6.1), and the AR models with
projector + LLM LoRA (SPEC §5.3); the released weights are merged. Our training recipes use this to
fine-tune the official checkpoints cheaply, then merge before saving in the official layout.

    y = x Wᵀ + b + (alpha / r) · (x Aᵀ) Bᵀ        A (r, in), B (out, r); B starts at zero
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Linear):
    """A Linear whose `weight`/`bias` keep their names (so base checkpoints load) plus `lora_A`/`lora_B`."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None)
        self.to(device=base.weight.device, dtype=base.weight.dtype)
        self.weight, self.bias = base.weight, base.bias
        self.r, self.scaling = r, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout)
        self.enabled = True
        self.merged = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.enabled and not self.merged:
            a, b = self.lora_A.to(x.dtype), self.lora_B.to(x.dtype)
            y = y + F.linear(F.linear(self.lora_dropout(x), a), b) * self.scaling
        return y

    def delta(self) -> torch.Tensor:
        return (self.lora_B.float() @ self.lora_A.float()) * self.scaling  # (out, in)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.weight += self.delta().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight -= self.delta().to(self.weight.dtype)
            self.merged = False

    def to_linear(self) -> nn.Linear:
        """A plain Linear with the adapter folded in (for saving in the official layout)."""
        self.merge()
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        out.to(device=self.weight.device, dtype=self.weight.dtype)
        out.weight, out.bias = self.weight, self.bias
        return out


def apply_lora(
    module: nn.Module,
    targets: tuple[str, ...] = ATTENTION + MLP,
    r: int = 8,
    alpha: float = 16.0,
    dropout=0.0,
) -> list[str]:
    """Wrap every Linear whose attribute name is in `targets`; freeze all other parameters.

    Returns the wrapped module paths.
    """
    wrapped = []
    for path, parent in list(module.named_modules()):
        for name, child in list(parent.named_children()):
            if name in targets and type(child) is nn.Linear:
                setattr(parent, name, LoRALinear(child, r, alpha, dropout))
                wrapped.append(f"{path}.{name}" if path else name)
    for name, p in module.named_parameters():
        p.requires_grad = "lora_" in name
    return wrapped


def lora_layers(module: nn.Module) -> list[LoRALinear]:
    return [m for m in module.modules() if isinstance(m, LoRALinear)]


def set_lora_enabled(module: nn.Module, enabled: bool) -> None:
    for m in lora_layers(module):
        m.enabled = enabled


def merge_lora(module: nn.Module) -> None:
    """Fold every adapter into its base weight and restore plain Linear layers (official layout)."""
    for _, parent in list(module.named_modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.to_linear())


def lora_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Adapter-only checkpoint: just the `lora_A`/`lora_B` tensors."""
    return {k: v for k, v in module.state_dict().items() if ".lora_" in k}
