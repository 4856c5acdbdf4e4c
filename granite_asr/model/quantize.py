"""int8 weights for CPU inference (issue 6: "int8 dynamic quantization as an option with its accuracy
cost measured").

Every `nn.Linear` (and kernel-1 `nn.Conv1d`) of the chosen parts becomes an `Int8Linear` over fbgemm's
dynamic int8 GEMM: weights stored int8 with one scale per output row, activations quantised per row on
every call. A CPU decode step is bound by reading the weights, and fbgemm's int8 GEMV reads half the
bytes of bf16 and runs near the memory bandwidth where the bf16 GEMV does not: on this project's
2-core machines a 2048-wide projection takes 3–5× less time at 1–8 rows (bench/RESULTS.md, "int8").
Everything else (norms, convolutions, attention, embeddings, the KV cache) keeps the model's dtype:
an `Int8Linear` takes and returns that dtype and runs fbgemm in fp32 in between.

Parts are the model's top-level modules: "encoder", "projector", "language_model"; all three by
default. A bf16 model is converted one Linear at a time, so quantising the 2b never holds a whole fp32
copy. The official tensor names are gone from a quantised model: it is for inference only and is never
saved.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .granite import FusedLinears

PARTS = ("encoder", "projector", "language_model")
DEFAULT_PARTS = PARTS


def check_quantizable(model: nn.Module, parts: tuple[str, ...]) -> None:
    """Raise ValueError naming the problem when `model` cannot be quantised as asked (before any work)."""
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {unknown} to quantise; choose from {list(PARTS)}")
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        raise ValueError("int8 weights need PyTorch's fbgemm engine (x86 CPU builds); this build has none")
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"int8 weights run on CPU only; the model is on {device}")
    missing = [p for p in parts if getattr(model, p, None) is None]
    if missing:
        raise ValueError(f"the {getattr(model, 'variant', '?')} model has no {missing} to quantise")
    if is_quantized(model):
        raise ValueError(f"the model is already quantised ({', '.join(model.quantized)})")


class Int8Linear(nn.Module):
    """`y = x Wᵀ + b` with W int8 (one scale per output row) and x quantised per row.

    fbgemm's dynamic Linear quantises its whole input with ONE scale, so in a batch a row with small
    activations is crushed by a row with large ones (up to 100 % relative error measured), and a clip's
    result depends on its batch mates. Each row is therefore divided by its own abs-max before the
    call, and an anchor row (+1, −1, 0, …) pins the tensor's range to [−1, 1]: every row is quantised
    the same way alone or in any batch, the int8 GEMM is exact integer arithmetic, and the output is
    bitwise identical (tests/test_quantize.py). Scaling back by the abs-max restores the row.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        from torch.ao.nn.quantized import dynamic as nnqd

        self.out_features, self.in_features = weight.shape
        plain = nn.Linear(self.in_features, self.out_features, bias=False, device="meta")
        plain.weight = nn.Parameter(weight.detach().float(), requires_grad=False)  # (N, K)
        plain.qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        self.inner = nnqd.Linear.from_float(plain)
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), requires_grad=False)
        anchor = torch.zeros(1, self.in_features)
        anchor[0, 0], anchor[0, -1] = 1.0, -1.0
        self.register_buffer("anchor", anchor, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xf = x.float()  # fbgemm takes fp32; no copy for an fp32 input
        scale = xf.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(xf.dtype).tiny)  # (..., 1)
        # One buffer for the scaled rows and the anchor, written straight from x (even a transposed
        # view: no reshape copy), and in-place rescaling: at prefill and encoder sizes these
        # elementwise passes cost as much as a third of the int8 GEMM.
        scaled = torch.empty(lead.numel() + 1, self.in_features, dtype=xf.dtype, device=xf.device)  # (R+1, K)
        torch.div(xf, scale, out=scaled[:-1].view(*lead, self.in_features))
        scaled[-1] = self.anchor[0]
        y = self.inner(scaled)[:-1].view(*lead, self.out_features).mul_(scale)  # (..., N)
        if self.bias is not None:
            y.add_(self.bias)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


class Int8PointwiseConv(nn.Module):
    """A kernel-1 `nn.Conv1d` (the Conformer conv module's up/down projections, SPEC §3.3) as an
    `Int8Linear` over channels: x (B, C, T) → (B, C', T)."""

    def __init__(self, conv: nn.Conv1d):
        super().__init__()
        self.linear = Int8Linear(conv.weight[:, :, 0], conv.bias)  # weight (C', C, 1) → (C', C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.transpose(1, 2)).transpose(1, 2)  # (B, T, C) → (B, T, C') → (B, C', T)


def _pointwise(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv1d
        and m.kernel_size == (1,)
        and m.groups == 1
        and m.stride == (1,)
        and m.dilation == (1,)
        and m.padding in ((0,), "valid")
    )


def _replace_linears(module: nn.Module) -> int:
    """Swap every Linear (and kernel-1 Conv1d) below `module` for its int8 twin, one at a time;
    returns how many."""
    count = 0
    for name, child in module.named_children():
        if type(child) is nn.Linear:
            setattr(module, name, Int8Linear(child.weight, child.bias))
            count += 1
        elif _pointwise(child):
            setattr(module, name, Int8PointwiseConv(child))
            count += 1
        else:
            count += _replace_linears(child)
    return count


def quantize_int8(model: nn.Module, parts: tuple[str, ...] = DEFAULT_PARTS) -> nn.Module:
    """Quantise, in place, every Linear of `parts` to int8 (the rest keeps its dtype); returns `model`.

    Fused projections (`granite.FusedLinears`) fall back to separate matmuls over the int8 Linears.
    LoRA must already be merged (the loader merges it), so every projection is a plain Linear.
    """
    check_quantizable(model, parts)
    torch.backends.quantized.engine = "fbgemm"
    # torch.ao.nn.quantized warns that it moves to torchao; it remains the eager-mode path to fbgemm's
    # int8 kernels in torch 2.x, and torchao's CPU int8 path needs torch.compile to be fast.
    lm = model.language_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        for part in parts:
            if _replace_linears(getattr(model, part)) == 0:
                raise ValueError(f"{part!r} has no Linear layers to quantise")
        if "language_model" in parts and getattr(lm, "lm_head", None) is None:
            # A tied head reads the embedding matrix, the largest single weight (V × E): give it an
            # int8 copy of its own (+V·E bytes) so the logits also read int8; the lookup stays exact.
            lm.lm_head = Int8Linear(lm.model.embed_tokens.weight)
    for m in model.modules():  # fused fp32/bf16 copies made before quantising would stay alive
        for fused in (getattr(m, "_qkv", None), getattr(m, "_gate_up", None)):
            if isinstance(fused, FusedLinears):
                fused.weight, fused.ptrs = None, ()
    model.quantized = tuple(parts)
    return model.eval()


def is_quantized(model: nn.Module) -> bool:
    return bool(getattr(model, "quantized", ()))


__all__ = [
    "PARTS",
    "DEFAULT_PARTS",
    "Int8Linear",
    "Int8PointwiseConv",
    "quantize_int8",
    "check_quantizable",
    "is_quantized",
]
