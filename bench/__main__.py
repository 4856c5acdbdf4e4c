"""`python -m bench`: the speed suite of issue 6 (JSON + table + PNG in bench/results/).

    python -m bench                 # quick: tiny and default shapes (a few minutes on 2 CPU cores)
    python -m bench --full          # + the real 2b shapes, fp32, bf16 and int8
    python -m bench --device cuda   # GPU: 2b-nar at batch 128 and the 2b AR comparison
    python -m bench --smoke         # tiny shapes, one pass each (the schema test)
    python -m bench load-server ... # the server load bench (issue 5), see bench/load_server.py

Each group runs in a worker process (`bench.worker`), so peak RSS is per group and a 2b is freed before
the next one is built. The matmul peak is measured in this run, before and after the groups.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from .groups import plan, run_group
from .machine import machine_info, matmul_peak
from .report import plot, summarize, table
from .worker import MARK

RESULTS = Path(__file__).parent / "results"


def smoke_plan() -> list[dict]:
    """Tiny shapes, one timed pass each: exercises every group and the report in seconds."""
    ar = [dict(batch=2, seconds=2.0, new_tokens=4, warmup=0, iters=1)]
    case = dict(batch=2, clips=2, seconds=2.0, new_tokens=4, warmup=0, iters=1)
    return [
        dict(group="ar_vs_transformers", preset="tiny", dtype="fp32", device="cpu", cases=ar),
        dict(group="modes", preset="tiny", nar="tiny-nar", dtype="fp32", device="cpu", case=case,
             encoder=dict(batch=2, seconds=2.0)),
        dict(group="scaling", dtype="fp32", device="cpu", batches=(1, 2), clips=2, seconds=2.0,
             runs=[("tiny", "ar")]),
    ]  # fmt: skip


def run_worker(spec: dict) -> list[dict]:
    t0 = time.perf_counter()
    name = f"{spec['group']} {spec.get('preset', '')} {spec.get('dtype', '')}".strip()
    print(f"[bench] {name} …", file=sys.stderr, flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.worker"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"bench group {name!r} failed (exit {proc.returncode})")
    print(f"[bench] {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return json.loads(lines[-1][len(MARK) :])


def peaks(device: str, n: int = 2048) -> dict[str, float]:
    """Matmul GFLOP/s in fp32 and bf16. The smoke profile measures a small n: on a CPU without native
    bf16 (no avx512_bf16) one 2048² bf16 matmul took 56 s (fp32: 0.13 s), and the 14 timed here made
    the schema test take ~13 min (recipes/RESULTS.md, session 25)."""
    return {
        "fp32": matmul_peak(torch.float32, n=n, device=device),
        "bf16": matmul_peak(torch.bfloat16, n=n, device=device),
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["load-server"]:
        from .load_server import main as load_main

        sys.argv = ["bench.load_server", *argv[1:]]
        return load_main() or 0
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="add the real 2b shapes (fp32 and bf16)")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, one pass each")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--only", action="append", help="run only these groups (repeatable)")
    p.add_argument("--spec", type=Path, help="a JSON list of group specs to run instead of a profile")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    p.add_argument("--tag", default="speed", help="file name prefix")
    args = p.parse_args(argv)
    profile = "smoke" if args.smoke else ("full" if args.full else "quick")
    specs = smoke_plan() if args.smoke else plan(profile, args.device)
    if args.spec:
        specs, profile = json.loads(args.spec.read_text(encoding="utf-8")), f"spec {args.spec}"
    if args.only:
        specs = [s for s in specs if s["group"] in args.only]
    info = machine_info(args.device) | {"command": "python -m bench " + " ".join(argv), "profile": profile}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"{args.tag}_{stamp}"
    size = 256 if args.smoke else 2048
    before = peaks(args.device, size)
    records: list[dict] = []
    for spec in specs:
        # The smoke profile runs in-process: tiny models, and one interpreter start instead of four.
        records += run_group(spec) if args.smoke else run_worker(spec)
        # Partial results survive an interrupted run.
        partial = {"machine": info, "matmul_peak_gflops": {"before": before}, "records": records}
        base.with_suffix(".partial.json").write_text(json.dumps(partial, indent=2) + "\n", encoding="utf-8")
    after = peaks(args.device, size)
    best = {k: max(before[k], after[k]) for k in before}
    summary = summarize(records, best, args.device)
    text = table(records, best, summary)
    png = plot(records, base.with_suffix(".png"))
    base.with_suffix(".partial.json").unlink(missing_ok=True)
    doc = {
        "machine": info,
        "matmul_peak_gflops": {"before": before, "after": after, "used": best},
        "records": records,
        "summary": summary,
        "plot": png.name if png else None,
    }
    base.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    base.with_suffix(".md").write_text(text + "\n", encoding="utf-8")
    peak_line = ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in best.items())
    print(
        f"matmul peak: {peak_line}\n\n{text}\n\nwrote {base}.json / .md" + (f" / {png.name}" if png else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
