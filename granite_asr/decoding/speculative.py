"""Self-speculative decoding for 2b (SPEC §5.8) and scored CTC collapse (SPEC §3.6, §6.2).

Legend:
    B  rows    K  CTC frames    V  vocabulary (BPE head: + blank)    L  prompt length    D  longest draft
    E  LLM width

Per row, as the leaderboard's `run_eval_speculative_bpe.py` does:

1. draft = greedy BPE-CTC on the `out_llm` head (posterior-pooled frames);
2. a non-empty draft whose maximum per-frame entropy is ≤ `ctc_threshold` is accepted as is (path "ctc");
3. the others get ONE LLM pass over prompt + draft; the draft is accepted when every draft token's
   probability (softmax of the ÷8 logits) is ≥ `confidence_threshold` (path "verified");
4. the rest fall back to AR decoding (greedy or beam by `beam_size`; path "ar").

Divergences from the script, both deliberate: the draft ids are verified as they are (the script decodes
them to text, strips and re-tokenises), and the fallback reuses the verification pass's prompt cache
(rewound past the draft) instead of a second prefill. The EOS probability after the draft is read off
the same pass for the hypothesis score; like the script, it does not gate acceptance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..model.conformer import EncoderOutput
from ..options import DecodeOptions
from .beam import autoregressive
from .greedy import DecoderState, Hypothesis, prefill


@dataclass(frozen=True)
class CTCDecoded:
    """Greedy CTC output of one clip with scores.

    logprobs: per token, the best frame log-posterior inside the frame run that produced it.
    max_entropy: the largest per-frame entropy (nats) over the clip's frames; inf for an empty output
    (the script's convention, so an empty draft never passes the entropy gate).
    """

    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    max_entropy: float


def ctc_scored(logits: torch.Tensor, blank: int, offset: int = 0) -> CTCDecoded:
    """logits (K, V) of one clip's valid frames → argmax → collapse → drop blank → label − offset.

    Same tokens as `model.ctc.greedy_decode` (argmax on the given logits, not on fp32 log-probs).
    """
    best = logits.argmax(-1)  # (K,)
    logp = torch.log_softmax(logits.float(), -1)  # (K, V)
    best_lp = logp.gather(-1, best[:, None])[:, 0]  # (K,)
    starts = torch.ones_like(best, dtype=torch.bool)
    starts[1:] = best[1:] != best[:-1]
    run = starts.long().cumsum(0) - 1  # (K,) run index of each frame
    labels = best[starts]  # (R,)
    run_lp = torch.full(labels.shape, -math.inf, device=logits.device).scatter_reduce(
        0, run, best_lp, "amax"
    )  # (R,)
    keep = labels != blank
    tokens = tuple((labels[keep] - offset).tolist())
    entropy = float(-(logp.exp() * logp).sum(-1).max()) if tokens else math.inf
    return CTCDecoded(tokens, tuple(run_lp[keep].tolist()), entropy)


@torch.inference_mode()
def bpe_drafts(model: nn.Module, enc: EncoderOutput) -> list[CTCDecoded]:
    """The BPE-CTC draft of every clip (one clip at a time: B·K·V fp32 log-probs would not fit at 2b)."""
    logits, lengths = model.encoder.bpe_logits(enc)  # (B, K, V)
    cfg = model.config
    return [
        ctc_scored(logits[i, :n], cfg.bpe_blank_id, cfg.bpe_label_offset)
        for i, n in enumerate(lengths.tolist())
    ]


@dataclass(frozen=True)
class SpeculativeRow:
    hypothesis: Hypothesis
    path: str  # "ctc" | "verified" | "ar"
    draft: tuple[int, ...]


def verify_drafts(
    model: nn.Module, state: DecoderState, drafts: list[tuple[int, ...]], eos_id: int
) -> list[tuple[list[float], float] | None]:
    """One causal pass of the drafts (right-padded) after the prompt in `state` → per row the draft
    tokens' log-probs and the EOS log-prob after the draft; None for an empty draft.

    Appends the drafts to `state.cache`; `state.logits` (the prompt's next-token logits) is unchanged.
    """
    lm = model.language_model
    width = max(len(d) for d in drafts)
    device = state.logits.device
    ids = torch.full((len(drafts), width), eos_id, dtype=torch.long, device=device)  # (B, D)
    for i, d in enumerate(drafts):
        ids[i, : len(d)] = torch.tensor(d, dtype=torch.long, device=device)
    lengths = torch.tensor([len(d) for d in drafts], device=device)
    valid = torch.arange(width, device=device)[None] < lengths[:, None]  # (B, D)
    positions = state.positions[:, None] + torch.arange(width, device=device)  # (B, D)
    hidden = lm(lm.embed(ids), valid, positions, state.cache)  # (B, D, E)
    out: list[tuple[list[float], float] | None] = []
    for i, d in enumerate(drafts):
        if not d:
            out.append(None)
            continue
        # Token j is predicted at the position before it: the prompt's last one for j = 0.
        first = torch.log_softmax(state.logits[i].float(), -1)[d[0]]
        logp = torch.log_softmax(lm.logits(hidden[i, : len(d)]).float(), -1)  # (n, V)
        rest = logp[torch.arange(len(d) - 1, device=device), ids[i, 1 : len(d)]]
        out.append(([float(first)] + rest.tolist(), float(logp[-1, eos_id])))
    return out


@torch.inference_mode()
def speculative_decode(
    model: nn.Module,
    enc: EncoderOutput,
    embeds: torch.Tensor,
    valid: torch.Tensor,
    *,
    eos_id: int,
    options: DecodeOptions,
) -> list[SpeculativeRow]:
    """enc: the batch's encoder output; embeds (B, L, E) / valid (B, L): the prompts with audio merged."""
    if not hasattr(model.encoder, "out_bpe"):
        raise ValueError("speculative decoding needs a BPE CTC head (2b's out_llm.safetensors)")
    drafts = bpe_drafts(model, enc)
    result: list[SpeculativeRow | None] = [None] * len(drafts)
    todo = []
    for i, d in enumerate(drafts):
        if d.tokens and d.max_entropy <= options.ctc_threshold:
            result[i] = SpeculativeRow(
                Hypothesis(d.tokens, d.logprobs, sum(d.logprobs), "draft"), "ctc", d.tokens
            )
        else:
            todo.append(i)
    if todo:
        idx = torch.tensor(todo, device=embeds.device)
        longest = max(len(drafts[i].tokens) for i in todo)
        state = prefill(model, embeds[idx], valid[idx], max(options.max_new_tokens, longest))
        prompt_len = state.cache.length
        checked = [None] * len(todo)
        if longest:
            checked = verify_drafts(model, state, [drafts[i].tokens for i in todo], eos_id)
        rejected = []
        for j, i in enumerate(todo):
            c, tokens = checked[j], drafts[i].tokens
            if c is not None and all(math.exp(lp) >= options.confidence_threshold for lp in c[0]):
                hyp = Hypothesis(tokens, tuple(c[0]), sum(c[0]) + c[1], "draft")
                result[i] = SpeculativeRow(hyp, "verified", tokens)
            else:
                rejected.append(j)
        if rejected:
            sel = torch.tensor(rejected, device=embeds.device)
            state.cache.select(sel)
            state.cache.truncate(prompt_len)
            back = DecoderState(state.logits[sel], state.cache, state.positions[sel])
            for j, hyp in zip(
                rejected, autoregressive(model, back, eos_id=eos_id, options=options), strict=True
            ):
                result[todo[j]] = SpeculativeRow(hyp, "ar", drafts[todo[j]].tokens)
    return result  # type: ignore[return-value]
