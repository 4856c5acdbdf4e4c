"""CTC greedy collapse shared by the BPE draft, the NAR edit output and the CTC-only mode (SPEC §3.6, §6.2).

Legend: B batch, K frames, V labels.
"""

from __future__ import annotations

import torch


def collapse(labels: torch.Tensor, blank: int) -> torch.Tensor:
    """1-D label sequence → repeats merged (`unique_consecutive`), then blanks dropped."""
    merged = torch.unique_consecutive(labels)
    return merged[merged != blank]


def greedy_decode(
    logits: torch.Tensor, lengths: torch.Tensor, blank: int, offset: int = 0
) -> list[list[int]]:
    """logits (B, K, V), lengths (B,) → token ids per row: argmax → collapse → label − offset.

    `offset` maps head labels to token ids (1 for 2b's out_llm head, where label 0 is blank; SPEC §3.6).
    """
    best = logits.argmax(-1)  # (B, K)
    return [(collapse(best[i, : int(n)], blank) - offset).tolist() for i, n in enumerate(lengths)]
