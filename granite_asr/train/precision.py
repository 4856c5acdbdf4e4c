"""Whether bf16 autocast speeds training up on this device, or slows it down.

bf16 autocast made a CPU train step 1.9x faster than fp32 on the project's usual machines (NOTES,
"Training the embedded model"), whose cores have native bf16 matmul (AVX512-BF16 / AMX). A CPU without
it runs bf16 matmul through a slow fallback: on an AMD EPYC machine without `avx512_bf16`, a 1024x1024
bf16 matmul took 135x as long as fp32, and a train step 110 s instead of about 4 s (RESULTS, session
21). So the recipes measure once, per device type, and fall back to fp32 autocast-off where bf16 does
not pay. `GRANITE_ASR_BF16=1` / `=0` overrides the measurement.
"""

from __future__ import annotations

import functools
import os
import time

import torch

# bf16 must be at most this much slower than fp32 per matmul to be worth its rounding: where it is
# native it is 2-5x *faster*; the fallbacks seen are 10-100x slower.
MAX_SLOWDOWN = 1.5


def _seconds_per_matmul(dtype: torch.dtype, n: int = 256, repeats: int = 5) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up: kernel selection, first-touch allocation
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - t0) / repeats


@functools.cache
def bf16_pays(device_type: str) -> bool:
    """True where bf16 autocast is supported and not slower than `MAX_SLOWDOWN` x fp32 on `device_type`."""
    forced = os.environ.get("GRANITE_ASR_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return False
    fp32 = min(_seconds_per_matmul(torch.float32) for _ in range(2))
    bf16 = min(_seconds_per_matmul(torch.bfloat16) for _ in range(2))
    return bf16 <= MAX_SLOWDOWN * fp32
