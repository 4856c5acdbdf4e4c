"""An explicit, preallocated key/value cache for the Granite decoder.

Legend:
    B  batch rows     Hk  key/value heads     S  capacity (max positions)     Dh  head dim

One tensor pair per layer, written in place (no concatenation per step), plus a key-validity mask
shared by all layers. Rows can be reordered (beam search) or dropped (finished rows) with `select`.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        num_layers: int,
        batch: int,
        kv_heads: int,
        head_dim: int,
        capacity: int,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
    ):
        shape = (batch, kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)  # (B, S)
        self.length = 0  # positions written so far (same for every row; padding is marked invalid)

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    @property
    def batch(self) -> int:
        return self.valid.shape[0]

    def append_mask(self, step_valid: torch.Tensor) -> None:
        """Record validity (B, L) of the positions about to be written, before the layers run."""
        n = step_valid.shape[1]
        if self.length + n > self.capacity:
            raise RuntimeError(f"KV cache full: {self.length} + {n} > capacity {self.capacity}")
        self.valid[:, self.length : self.length + n] = step_valid

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, Hk, L, Dh) at the current length; return the filled prefix (B, Hk, S', Dh)."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on (speculative verification rewinds to the prompt)."""
        self.valid[:, length:] = False
        self.length = length

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder) batch rows: beam reordering or dropping finished sequences."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
        self.valid = self.valid.index_select(0, rows)
