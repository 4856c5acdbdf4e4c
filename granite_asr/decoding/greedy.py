"""Batched greedy decoding over the speech LM's KV cache, with per-row stops and a repetition guard.

Legend:
    B  rows in the batch       N  rows still decoding (finished rows are dropped)
    L  prompt length (left padded)    V  vocabulary    t  tokens generated so far

The loop is `GraniteSpeechLM.generate` (argmax of the ÷8 logits, one `step` per token), plus:

- per-row stops: EOS, `max_new_tokens`, and the repetition guard (SPEC §10: the reference loops on
  short or silent chunks; vernacula#33, transcribe.cpp on LibriSpeech 1995-1836-0004);
- per-token log-probabilities (log_softmax of the ÷8 logits), for confidence and avg_logprob;
- finished rows leave the batch (`KVCache.select`), so compute shrinks as rows end (issue 6).

When the guard does not fire the tokens are exactly `generate`'s: same prefill, same argmax on the
model-dtype logits (not on the fp32 log-probabilities, whose rounding could break a near tie differently).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..model.kv_cache import KVCache
from ..options import DecodeOptions


@dataclass(frozen=True)
class Hypothesis:
    """One decoded row. `tokens` never holds the EOS; `score` adds its log-prob when the row ended on it.

    stop: "eos" | "length" (max_new_tokens) | "repeat" (guard fired; the loop is cut to one copy)
          | "draft" (a CTC draft accepted by speculative decoding)
    """

    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]
    score: float
    stop: str


@dataclass
class DecoderState:
    """The LM right after the prompt: next-token logits (B, V), the cache, next RoPE positions (B,)."""

    logits: torch.Tensor
    cache: KVCache
    positions: torch.Tensor


def prefill(model: nn.Module, embeds: torch.Tensor, valid: torch.Tensor, max_new_tokens: int) -> DecoderState:
    """Run the prompt embeddings (B, L, E) with validity (B, L) into a cache sized for `max_new_tokens`."""
    logits, cache = model.prefill(embeds, valid, embeds.shape[1] + max_new_tokens)
    return DecoderState(logits, cache, valid.long().sum(-1))


def loop_period(
    history: torch.Tensor, max_repeats: int, window: int, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """history (N, t) → (N,) the smallest n such that the last (max_repeats + 1)·n tokens are one n-gram
    repeated, with (max_repeats + 1)·n ≤ window; 0 where no loop (or the guard is off: max_repeats < 1).
    `lengths` (N,): only each row's last `lengths` tokens count (default: all t).

    Checked after every token, so it fires at the first token that completes the (max_repeats + 1)-th copy.
    """
    rows, t = history.shape
    period = torch.zeros(rows, dtype=torch.long, device=history.device)
    if max_repeats < 1:
        return period
    copies = max_repeats + 1
    for n in range(1, window // copies + 1):
        span = copies * n
        if span > t:
            break
        tail = history[:, t - span :]  # (N, span)
        hit = (tail[:, n:] == tail[:, :-n]).all(-1) & (period == 0)  # period n over the whole span
        if lengths is not None:
            hit &= lengths >= span
        period = period.masked_fill(hit, n)
    return period


def loop_cut(
    history: torch.Tensor, max_repeats: int, window: int, skip: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """history (N, t) → (period, keep), both (N,): the guard's loop period and how many tokens to keep
    when it fires (all but the last `max_repeats` copies; t where period is 0).

    `skip` (1-D ids) are tokens the guard looks through: 2b-plus writes `word [T:N]` (SPEC §7.3), so in a
    loop every copy carries its own time digits and no exact n-gram repeats (RESULTS, session 12: the
    Plus sibling's "que [T:…] é [T:…] que …" ran to its token limit). The period is found on the other
    tokens; the cut lands just before the counted token that starts the second copy.
    """
    t = history.shape[1]
    if skip is None or skip.numel() == 0 or max_repeats < 1:  # nothing to look through, or guard off
        period = loop_period(history, max_repeats, window)
        return period, t - max_repeats * period
    counted = ~torch.isin(history, skip)  # (N, t)
    # Stable sort on "counted" moves skipped tokens to the left, counted ones right-aligned in order.
    order = torch.sort(counted.to(torch.int8), dim=1, stable=True).indices  # (N, t) raw index of each
    period = loop_period(history.gather(1, order), max_repeats, window, counted.sum(-1))
    start = (t - max_repeats * period).clamp(max=t - 1)[:, None]  # packed index of the 2nd copy's start
    keep = torch.where(period > 0, order.gather(1, start)[:, 0], torch.full_like(period, t))
    return period, keep


def _finish(tokens: list[int], lps: list[float], t: int, reason: str, keep: int):
    """A finished row's Hypothesis from its history (t + 1 tokens, the last one chosen at step t)."""
    if reason == "eos":
        return Hypothesis(tuple(tokens[:t]), tuple(lps[:t]), float(sum(lps[: t + 1])), "eos")
    keep = keep if reason == "repeat" else t + 1
    return Hypothesis(tuple(tokens[:keep]), tuple(lps[:keep]), float(sum(lps[:keep])), reason)


@torch.inference_mode()
def greedy_search(
    model: nn.Module,
    state: DecoderState,
    *,
    eos_id: int,
    options: DecodeOptions,
    guard_skip: torch.Tensor | None = None,
    budgets: Sequence[int] | None = None,
) -> list[Hypothesis]:
    """Greedy decoding from `state` (consumed: its cache is reordered in place) → one Hypothesis per row.

    guard_skip: token ids the repetition guard looks through (`loop_cut`). budgets: each row's own
    token limit (default: `options.max_new_tokens` for all), so a row decodes the same in any batch."""
    logits, cache, pos = state.logits, state.cache, state.positions
    b = logits.shape[0]
    limits = torch.tensor(list(budgets) if budgets is not None else [options.max_new_tokens] * b)
    max_new = int(limits.max()) if b else 0
    out: list[Hypothesis | None] = [None] * b
    if max_new < 1:
        return [Hypothesis((), (), 0.0, "length") for _ in range(b)]
    device = logits.device
    rows = torch.arange(b, device=device)  # original row of each batch slot
    live = torch.ones(b, dtype=torch.bool, device=device)  # slot still decoding
    hist = torch.zeros(b, max_new, dtype=torch.long, device=device)  # (N, max_new)
    hist_lp = torch.zeros(b, max_new, dtype=torch.float32, device=device)
    limits = limits.to(device)  # (N,) per slot, reindexed with the slots
    for t in range(max_new):
        tok = logits.argmax(-1)  # (N,) same argmax as generate()
        hist[:, t] = tok
        hist_lp[:, t] = torch.log_softmax(logits.float(), -1).gather(-1, tok[:, None])[:, 0]
        period, cut = loop_cut(hist[:, : t + 1], options.max_repeats, options.repeat_window, guard_skip)
        eos = tok == eos_id
        stop = live & (eos | (period > 0) | (t >= limits - 1))
        if bool(stop.any()):
            idx = stop.nonzero()[:, 0]
            for i, row, is_eos, n, keep, toks, lps in zip(
                idx.tolist(),
                rows[idx].tolist(),
                eos[idx].tolist(),
                period[idx].tolist(),
                cut[idx].tolist(),
                hist[idx, : t + 1].tolist(),
                hist_lp[idx, : t + 1].tolist(),
                strict=True,
            ):
                reason = "eos" if is_eos else ("repeat" if n else "length")
                out[row] = _finish(toks, lps, t, reason, keep)
                live[i] = False
            if not bool(live.any()):
                break
            # Dropping rows copies the whole cache, so wait until an eighth of the slots are dead;
            # the dead slots meanwhile decode garbage that no live row can see (rows never mix).
            if int((~live).sum()) >= max(1, live.shape[0] // 8):
                keep = live.nonzero()[:, 0]
                cache.select(keep)
                rows, live, hist, hist_lp = rows[keep], live[keep], hist[keep], hist_lp[keep]
                limits = limits[keep]
                tok, pos = tok[keep], pos[keep]
        logits = model.step(tok, pos, cache)
        pos = pos + 1
    assert all(h is not None for h in out), "every row stops by max_new_tokens"
    return out  # type: ignore[return-value]
