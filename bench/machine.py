"""What the bench runs on and the physical limit it is judged against (issue 6: "measured matmul peak").

The peak is a large square matmul timed in the same run as the figures it normalises, so CPU contention
from other work on the machine hits both alike. Peak RSS is the process high-water mark (each bench group
runs in its own worker process, so it is that group's peak).
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import torch


@dataclass(frozen=True)
class Timing:
    seconds: list[float]  # one per timed iteration (warm-up excluded)

    @property
    def total(self) -> float:
        return sum(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], *, warmup: int, iters: int, device="cpu") -> Timing:
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return Timing(out)


def matmul_peak(dtype: torch.dtype, *, n: int = 2048, iters: int = 5, device="cpu") -> float:
    """Best-of-`iters` GFLOP/s of an n×n @ n×n matmul in `dtype`."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    t = timed(lambda: a @ b, warmup=2, iters=iters, device=device)
    return 2 * n**3 / t.best / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        )
        return out.stdout.strip()
    except OSError:
        return ""


def machine_info(device: str) -> dict:
    info = {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_1m_at_start": os.getloadavg()[0],
        "git_commit": _git_commit(),
        "device": device,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            info["mem_total_gb"] = round(int(f.readline().split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return info
