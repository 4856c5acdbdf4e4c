"""Length-bucketed batches (issue 3 item 1, issue 6 "length bucketing").

Items are sorted by encoder frames, longest first (the biggest batch runs first, so running out of memory
shows at once, and each batch pads little), then cut into batches whose padded size
(rows × longest frames) stays under a frame budget and whose row count stays under a maximum.
`BatchPlan.restore` puts per-item results back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")

# 30 s clips at the official 50 Hz encoder rate; the unit of the automatic frame budget.
FRAMES_PER_CLIP = 1500


@dataclass(frozen=True)
class BatchPlan:
    batches: tuple[tuple[int, ...], ...]  # input indices of each batch, in run order

    @property
    def order(self) -> tuple[int, ...]:
        """Input indices in run order: result k of a run belongs to input `order[k]`."""
        return tuple(i for batch in self.batches for i in batch)

    def restore(self, results: Sequence[T]) -> list[T]:
        """Results listed in run order → results in input order."""
        order = self.order
        if len(results) != len(order):
            raise ValueError(f"{len(results)} results for a plan of {len(order)} items")
        out: list[T | None] = [None] * len(order)
        for k, i in enumerate(order):
            out[i] = results[k]
        return out  # type: ignore[return-value]


def plan_batches(frames: Sequence[int], *, max_batch_size: int, max_frames: int) -> BatchPlan:
    """Bucket items of `frames[i]` encoder frames; an item longer than the budget runs alone."""
    if max_batch_size < 1 or max_frames < 1:
        raise ValueError("max_batch_size and max_frames must be >= 1")
    order = sorted(range(len(frames)), key=lambda i: (-frames[i], i))  # longest first, stable
    batches: list[list[int]] = []
    for i in order:
        cur = batches[-1] if batches else None
        # Sorted descending, so the batch's first item sets its padded length.
        if cur and len(cur) < max_batch_size and (len(cur) + 1) * frames[cur[0]] <= max_frames:
            cur.append(i)
        else:
            batches.append([i])
    return BatchPlan(tuple(tuple(b) for b in batches))


def auto_limits(device: torch.device, mode: str) -> tuple[int, int]:
    """(max_batch_size, max_frames) when the caller gives no batch size.

    A GPU wants wide batches (the NAR card's throughput figure is at batch 128, SPEC §6.4); on CPU
    matmul efficiency stops improving after a few dozen rows while the AR cache grows with every row.
    CTC-only and NAR passes hold no KV cache, so they take twice the rows.
    """
    rows = 128 if device.type == "cuda" else 16
    if mode in ("ctc", "nar"):
        rows *= 2
    return rows, rows * FRAMES_PER_CLIP
