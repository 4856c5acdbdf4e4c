"""Server metrics in the Prometheus text exposition format (version 0.0.4), without a client library.

Issue 5 §2 asks for queue depth, batch sizes, audio seconds and RTFx; the load benchmark
(`bench/load_server.py`) reads the batch-size histogram and the peak RSS from here. Everything is kept in
one small lock-guarded registry because writers are the engine thread, the pool threads and the event loop.

RTFx is engine-side: seconds of audio windows decoded per second the engine was busy (the real-time
factor the hardware achieves under the current batching), not per request wall time.
"""

from __future__ import annotations

import threading
from collections import defaultdict

PREFIX = "granite_asr_"

# name → (type, help). Histograms list their bucket bounds in `BUCKETS`.
METRICS: dict[str, tuple[str, str]] = {
    "queue_depth": ("gauge", "Requests in flight (queued or running); 429 above --max-queue."),
    "queued_windows": ("gauge", "Audio windows waiting for the engine."),
    "batch_size": ("histogram", "Rows per engine forward batch."),
    "dispatch_rows": ("histogram", "Rows per scheduler dispatch (one Engine.run call)."),
    "request_seconds": ("histogram", "Latency of audio requests, upload parsed to response ready."),
    "requests_total": ("counter", "HTTP requests by route and status (499: client went away)."),
    "audio_seconds_total": ("counter", "Seconds of audio in successfully answered requests."),
    "engine_audio_seconds_total": ("counter", "Seconds of audio windows decoded by the engine."),
    "engine_busy_seconds_total": ("counter", "Seconds the engine worker spent in Engine.run."),
    "dropped_windows_total": ("counter", "Queued windows dropped because their request went away."),
    "rtfx": ("gauge", "engine_audio_seconds_total / engine_busy_seconds_total."),
    "process_resident_memory_bytes": ("gauge", "Resident set size of the server process."),
    "process_peak_resident_memory_bytes": ("gauge", "Peak resident set size of the server process."),
}
BUCKETS = {
    "batch_size": (1, 2, 4, 8, 16, 32, 64, 128),
    "dispatch_rows": (1, 2, 4, 8, 16, 32, 64, 128),
    "request_seconds": (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
}


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = defaultdict(float)
        self._labelled: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._histograms = {name: [0] * (len(b) + 1) for name, b in BUCKETS.items()}
        self._sums: dict[str, float] = defaultdict(float)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        with self._lock:
            if labels:
                key = tuple(sorted(labels.items()))
                series = self._labelled[name]
                series[key] = series.get(key, 0.0) + amount
            else:
                self._values[name] += amount

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self._values[name] = value

    def observe(self, name: str, value: float) -> None:
        bounds = BUCKETS[name]
        with self._lock:
            counts = self._histograms[name]
            k = next((i for i, b in enumerate(bounds) if value <= b), len(bounds))
            counts[k] += 1
            self._sums[name] += value

    def render(self) -> str:
        """The whole registry as Prometheus text."""
        rss, peak = _memory()
        with self._lock:
            values = dict(self._values)
            busy = values.get("engine_busy_seconds_total", 0.0)
            values["rtfx"] = values.get("engine_audio_seconds_total", 0.0) / busy if busy > 0 else 0.0
            values["process_resident_memory_bytes"] = rss
            values["process_peak_resident_memory_bytes"] = peak
            lines: list[str] = []
            for name, (kind, help_text) in METRICS.items():
                full = PREFIX + name
                lines += [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}"]
                if kind == "histogram":
                    lines += self._histogram_lines(name)
                elif name in self._labelled:
                    for key, v in sorted(self._labelled[name].items()):
                        tags = ",".join(f'{k}="{_escape(val)}"' for k, val in key)
                        lines.append(f"{full}{{{tags}}} {_number(v)}")
                else:
                    lines.append(f"{full} {_number(values.get(name, 0.0))}")
        return "\n".join(lines) + "\n"

    def _histogram_lines(self, name: str) -> list[str]:
        full, counts, cumulative, out = PREFIX + name, self._histograms[name], 0, []
        for bound, n in zip((*BUCKETS[name], "+Inf"), counts, strict=True):
            cumulative += n
            out.append(f'{full}_bucket{{le="{bound}"}} {cumulative}')
        out += [f"{full}_sum {_number(self._sums[name])}", f"{full}_count {cumulative}"]
        return out


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.6g}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _memory() -> tuple[int, int]:
    """(current, peak) resident bytes: /proc on Linux, getrusage's peak elsewhere."""
    try:
        fields = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    fields[key] = int(value.split()[0]) * 1024
        return fields["VmRSS"], fields["VmHWM"]
    except (OSError, KeyError, ValueError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak *= 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return peak, peak


def parse(text: str) -> dict[str, float]:
    """Prometheus text → {"name{labels}": value} (tests and the load benchmark read /metrics with it)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out
