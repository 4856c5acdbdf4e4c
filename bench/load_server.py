"""Load benchmark for `granite-asr serve` (issue 5 "Done when"; a benchmark, not a test).

N concurrent clients each send M transcription requests back to back; the report says whether any failed
(the target is 0), how the scheduler batched them (the engine's batch-size histogram from /metrics, as a
delta over the run), client latency p50/p99, throughput, engine RTFx and the server's peak RSS.

    # against a server started here (loopback, free port), on a checkpoint directory:
    python -m bench.load_server --model CKPT [--clients 64] [--requests 20] [--max-batch 16]
    # against a running server:
    python -m bench.load_server --url http://127.0.0.1:8000 [--api-key K] [--audio speech.wav]

Without `--audio` each request carries a generated 4 s signal (tone bursts over faint noise); a server
started here then runs with `--no-vad` so the engine really decodes it. Give real speech with `--audio`
when the server gates with VAD. Results go to `bench/results/load_server_<UTC time>.json`. Run it from
the repository root (or with the package installed: `pip install -e ".[server,dev]"`).
Only loopback or your own test hosts are valid targets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from granite_asr.server.loopback import loopback_server
from granite_asr.server.metrics import parse as parse_metrics

SR = 16000
RESULTS = Path(__file__).parent / "results"


def synthetic_wav(seconds: float, seed: int = 0) -> bytes:
    """Tone bursts (0.3 s on, 0.2 s off) over -60 dBFS noise, as 16-bit WAV."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    gate = (t % 0.5) < 0.3
    x = 0.25 * np.sin(2 * np.pi * (220 + 80 * np.floor(t / 0.5)) * t) * gate + 1e-3 * rng.standard_normal(
        len(t)
    )
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@contextlib.contextmanager
def spawned_server(args: argparse.Namespace):
    """`python -m granite_asr serve` on loopback for the run; its log goes to a temp file."""
    serve = [
        "--log-level",
        "warning",
        "--max-batch",
        str(args.max_batch),
        "--max-wait-ms",
        str(args.max_wait_ms),
    ]
    serve += ["--max-queue", str(max(256, 2 * args.clients))]
    serve += ["--model", args.model] if args.model else []
    serve += [] if args.audio else ["--no-vad"]
    serve += args.server_arg
    log_path = Path(tempfile.mkdtemp(prefix="load_server_")) / "server.log"
    with open(log_path, "w+") as log, loopback_server(serve, log=log) as url:
        try:
            yield url, " ".join(["granite_asr", "serve", *serve])
        finally:
            print(f"server log: {log_path}", file=sys.stderr)


async def client_loop(http: httpx.AsyncClient, url: str, audio: bytes, n: int, out: list) -> None:
    for _ in range(n):
        start = time.perf_counter()
        try:
            r = await http.post(
                f"{url}/v1/audio/transcriptions",
                files={"file": ("bench.wav", audio, "audio/wav")},
                data={"model": "bench", "response_format": "json"},
            )
            status = r.status_code
        except httpx.HTTPError as e:
            status = type(e).__name__
        out.append((status, time.perf_counter() - start))


async def drive(url: str, args: argparse.Namespace, audio: bytes) -> tuple[list, float]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    results: list = []
    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=args.timeout, limits=limits, headers=headers) as http:
        await asyncio.gather(
            *(client_loop(http, url, audio, args.requests, results) for _ in range(args.clients))
        )
    return results, time.perf_counter() - start


def histogram(before: dict, after: dict, name: str) -> dict[str, int]:
    """Per-bucket counts (not cumulative) of a Prometheus histogram over the run."""
    prefix = f"granite_asr_{name}_bucket"
    bounds = [k for k in after if k.startswith(prefix)]
    cumulative = {k[len(prefix) + 5 : -2]: after[k] - before.get(k, 0) for k in bounds}
    out, previous = {}, 0
    for bound, total in cumulative.items():
        out[bound] = int(total - previous)
        previous = total
    return out


def summarize(results: list, wall: float, before: dict, after: dict, audio_seconds: float, args) -> dict:
    latencies = np.array([t for s, t in results if s == 200])
    failures = [s for s, _ in results if s != 200]
    batches = histogram(before, after, "batch_size")
    delta = lambda k: after.get(f"granite_asr_{k}", 0) - before.get(f"granite_asr_{k}", 0)  # noqa: E731
    n_batches = delta("batch_size_count")
    return {
        "requests": len(results),
        "failures": len(failures),
        "failure_statuses": sorted({str(s) for s in failures}),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 4) if len(latencies) else None,
        "latency_p99_s": round(float(np.percentile(latencies, 99)), 4) if len(latencies) else None,
        "latency_max_s": round(float(latencies.max()), 4) if len(latencies) else None,
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(results) / wall, 3),
        "audio_seconds_per_s": round(len(latencies) * audio_seconds / wall, 3),
        "engine_batches": int(n_batches),
        "batch_size_buckets": batches,
        "mean_batch_size": round(delta("batch_size_sum") / n_batches, 3) if n_batches else None,
        "batches_over_one": int(n_batches - batches.get("1", 0)),
        "engine_rtfx": round(
            delta("engine_audio_seconds_total") / max(delta("engine_busy_seconds_total"), 1e-9), 2
        ),
        "server_peak_rss_mib": round(
            after.get("granite_asr_process_peak_resident_memory_bytes", 0) / 2**20, 1
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running server (default: start one here)")
    p.add_argument("--model", default=None, help="checkpoint for the server started here (default: embedded)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=20, help="requests per client")
    p.add_argument("--audio", default=None, help="audio file to send (default: generated)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of the generated audio")
    p.add_argument("--max-batch", type=int, default=16, help="server started here: --max-batch")
    p.add_argument("--max-wait-ms", type=float, default=20.0, help="server started here: --max-wait-ms")
    p.add_argument("--server-arg", action="append", default=[], help="extra flag for the server started here")
    p.add_argument("--timeout", type=float, default=600.0, help="client timeout per request (s)")
    p.add_argument("--out", default=str(RESULTS), help="directory for the JSON report")
    args = p.parse_args(argv)

    audio = Path(args.audio).read_bytes() if args.audio else synthetic_wav(args.seconds)
    audio_seconds = sf.info(io.BytesIO(audio)).duration
    with contextlib.ExitStack() as stack:
        url, server_cmd = (args.url, None) if args.url else stack.enter_context(spawned_server(args))
        before = parse_metrics(httpx.get(f"{url}/metrics", timeout=10).text)
        results, wall = asyncio.run(drive(url, args, audio))
        after = parse_metrics(httpx.get(f"{url}/metrics", timeout=10).text)
    report = {
        "benchmark": "load_server",
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "clients": args.clients,
            "requests_per_client": args.requests,
            "audio_seconds": round(audio_seconds, 3),
            "audio": args.audio or f"generated {args.seconds:g} s tone bursts",
            "server": server_cmd or args.url,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "results": summarize(results, wall, before, after, audio_seconds, args),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"load_server_{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["results"], indent=2))
    print(f"wrote {path}")
    return 1 if report["results"]["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
