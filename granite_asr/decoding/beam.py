"""Batched beam search over the speech LM's KV cache (transformers' `num_beams`, `early_stopping=True`).

Legend:
    B  rows    G  rows still searching    k  beam size    V  vocabulary    t  tokens generated so far

Each row keeps k live beams in the cache (rows G·k, reordered with `KVCache.select`). Per step the
2k best extensions of a row are scanned in score order, as transformers does: an EOS among the first
k finishes a hypothesis (score normalised by length ** length_penalty), other tokens fill the k live
beams. A row stops once it holds k finished hypotheses (`early_stopping=True`, the setting of the
leaderboard's speculative fallback, SPEC §5.8) or at `max_new_tokens`; finished rows leave the cache.
With k = 1 this is greedy decoding. A beam caught by the repetition guard (SPEC §10) is finished
with its loop cut to one copy and stops extending.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..options import DecodeOptions
from .greedy import DecoderState, Hypothesis, greedy_search, loop_cut

NEG_INF = float("-inf")


def _normalised(hyp: Hypothesis, penalty: float) -> float:
    """Length-normalised score; the EOS counts as a token when the hypothesis ended on it."""
    length = len(hyp.tokens) + (hyp.stop == "eos")
    return hyp.score / max(length, 1) ** penalty


def _choose(values, sources, tokens, k: int, eos_id: int):
    """One row's 2k ranked candidates → (live beams [(src, tok, score)], EOS candidates [(src, score)])."""
    beams, ended = [], []
    for rank, (val, src, tok) in enumerate(zip(values, sources, tokens, strict=True)):
        if val == NEG_INF:
            break
        if tok == eos_id:
            if rank < k:  # transformers ignores EOS candidates ranked beyond the beam width
                ended.append((src, val))
            continue
        beams.append((src, tok, val))
        if len(beams) == k:
            break
    return beams, ended


@torch.inference_mode()
def beam_search(
    model: nn.Module,
    state: DecoderState,
    *,
    eos_id: int,
    options: DecodeOptions,
    guard_skip: torch.Tensor | None = None,
    budgets: Sequence[int] | None = None,
) -> list[Hypothesis]:
    """Beam search from `state` (its cache is expanded and reordered in place) → best Hypothesis per row.

    guard_skip: token ids the repetition guard looks through (`greedy.loop_cut`); budgets: each row's
    token limit (default `options.max_new_tokens`), as in `greedy_search`."""
    k, penalty = options.beam_size, options.length_penalty
    b, v = state.logits.shape
    limits = list(budgets) if budgets is not None else [options.max_new_tokens] * b
    max_new = max(limits, default=0)
    if max_new < 1:
        return [Hypothesis((), (), 0.0, "length") for _ in range(b)]
    device, cache = state.logits.device, state.cache
    expand = torch.arange(b, device=device).repeat_interleave(k)  # (B·k,)
    cache.select(expand)
    logits, pos = state.logits[expand], state.positions[expand]  # (G·k, V), (G·k,)
    scores = torch.full((b, k), NEG_INF, device=device)
    scores[:, 0] = 0.0  # one real beam at the start, so the first step does not pick k copies
    rows = list(range(b))  # original row of each group
    done: list[list[Hypothesis]] = [[] for _ in range(b)]
    hist = torch.zeros(b * k, 0, dtype=torch.long, device=device)  # (G·k, t)
    hist_lp = torch.zeros(b * k, 0, dtype=torch.float32, device=device)
    for t in range(max_new):
        g = len(rows)
        lp = torch.log_softmax(logits.float(), -1)  # (G·k, V)
        cand = (scores[:, :, None] + lp.view(g, k, v)).view(g, k * v)
        top_val, top_idx = cand.topk(2 * k, dim=-1)  # (G, 2k), best first
        src_all = (top_idx // v).tolist()
        tok_all = (top_idx % v).tolist()
        val_all = top_val.tolist()
        src, tok, new_scores, alive = [], [], [], []
        for gi in range(g):
            beams, ended = _choose(val_all[gi], src_all[gi], tok_all[gi], k, eos_id)
            for s, val in ended:
                slot = gi * k + s
                lps = hist_lp[slot].tolist()
                done[rows[gi]].append(Hypothesis(tuple(hist[slot].tolist()), tuple(lps), val, "eos"))
            alive.append(bool(beams) and len(done[rows[gi]]) < k)
            # Keep k slots per group: pad with dead copies (score -inf never extends).
            pad = (beams[0][0], beams[0][1], NEG_INF) if beams else (0, eos_id, NEG_INF)
            for s, tk, val in beams + [pad] * (k - len(beams)):
                src.append(gi * k + s)
                tok.append(tk)
                new_scores.append(val)
        src_t = torch.tensor(src, device=device)
        tok_t = torch.tensor(tok, device=device)
        hist = torch.cat([hist[src_t], tok_t[:, None]], dim=1)  # (G·k, t + 1)
        hist_lp = torch.cat([hist_lp[src_t], lp[src_t, tok_t][:, None]], dim=1)
        scores = torch.tensor(new_scores, device=device).view(g, k)
        last = [t >= limits[r] - 1 for r in rows]
        scores = _guard_and_length(hist, hist_lp, scores, rows, done, alive, last, options, guard_skip)
        if not any(alive):
            break
        keep_groups = [gi for gi in range(g) if alive[gi]]
        keep = torch.tensor([gi * k + j for gi in keep_groups for j in range(k)], device=device)
        cache.select(src_t[keep])
        rows = [rows[gi] for gi in keep_groups]
        hist, hist_lp, scores = hist[keep], hist_lp[keep], scores[keep_groups]
        logits = model.step(tok_t[keep], pos[src_t[keep]], cache)
        pos = pos[src_t[keep]] + 1
    return [max(hyps, key=lambda h: _normalised(h, penalty)) for hyps in done]  # every row finished


def _guard_and_length(hist, hist_lp, scores, rows, done, alive, last, options, skip) -> torch.Tensor:
    """Finish looping beams (cut to one loop copy) and, at a group's last step (`last`, one flag per
    group), every live beam; update `alive`.

    hist, hist_lp (G·k, t + 1); scores (G, k) → scores with finished beams set to -inf.
    """
    g, k = scores.shape
    period, cut = loop_cut(hist, options.max_repeats, options.repeat_window, skip)
    period, cut = period.view(g, k).tolist(), cut.view(g, k).tolist()
    live = (scores > NEG_INF).tolist()
    for gi in range(g):
        if not alive[gi]:
            continue
        for j in range(k):
            if not live[gi][j] or not (period[gi][j] or last[gi]):
                continue
            keep = cut[gi][j]
            lps = hist_lp[gi * k + j, :keep].tolist()
            stop = "repeat" if period[gi][j] else "length"
            done[rows[gi]].append(
                Hypothesis(tuple(hist[gi * k + j, :keep].tolist()), tuple(lps), sum(lps), stop)
            )
            scores[gi, j] = NEG_INF
        alive[gi] = not last[gi] and len(done[rows[gi]]) < k and bool((scores[gi] > NEG_INF).any())
    return scores


def autoregressive(
    model: nn.Module,
    state: DecoderState,
    *,
    eos_id: int,
    options: DecodeOptions,
    guard_skip: torch.Tensor | None = None,
    budgets: Sequence[int] | None = None,
) -> list[Hypothesis]:
    """Greedy for beam_size 1, beam search otherwise (the AR path and the speculative fallback)."""
    search = greedy_search if options.beam_size == 1 else beam_search
    return search(model, state, eos_id=eos_id, options=options, guard_skip=guard_skip, budgets=budgets)
