"""Fused vs separate decoder projections, isolated (issue 6: does `FusedLinears` pay at the 2b widths?).

The full profile's ours-vs-transformers rows time encoder + prefill + decode together; this bench times
only the Granite decoder at the 2b widths (`preset("2b").text`, fewer layers so it runs in a minute):
one prefill of `--prompt` tokens and `--steps` cached decode steps, with `FusedLinears.enabled` switched
between passes, interleaved (fused, separate, separate, fused, …) so drifting load hits both alike.
Random weights, inference mode.

    python -m bench.fused_decoder [--layers 8] [--dtype bf16] [--batch 1 8] [--repeats 4]

Results go to `bench/results/fused_decoder_<UTC time>.json`. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from granite_asr.config import preset
from granite_asr.model.granite import FusedLinears, GraniteForCausalLM
from granite_asr.model.speech_lm import positions_from_mask

from .machine import machine_info

RESULTS = Path(__file__).parent / "results"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def build(layers: int, dtype: torch.dtype) -> GraniteForCausalLM:
    cfg = dataclasses.replace(preset("2b").text, num_hidden_layers=layers)
    with torch.device("meta"):
        lm = GraniteForCausalLM(cfg)
    lm = lm.to_empty(device="cpu").to(dtype)
    with torch.no_grad():
        for p in lm.parameters():
            p.normal_(0, 0.02)
    return lm.eval()


def one_pass(lm: GraniteForCausalLM, batch: int, prompt: int, steps: int) -> tuple[float, float]:
    """(prefill seconds, seconds per decode step)."""
    e, dtype = lm.config.hidden_size, lm.model.embed_tokens.weight.dtype
    embeds = torch.randn(batch, prompt, e, dtype=dtype)
    valid = torch.ones(batch, prompt, dtype=torch.bool)
    cache = lm.new_cache(batch, prompt + steps)
    t0 = time.perf_counter()
    lm(embeds, valid, positions_from_mask(valid), cache)
    t1 = time.perf_counter()
    x, one = embeds[:, -1:], torch.ones(batch, 1, dtype=torch.bool)
    for s in range(steps):
        lm(x, one, torch.full((batch, 1), prompt + s), cache)
    return t1 - t0, (time.perf_counter() - t1) / steps


def run(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    lm = build(args.layers, DTYPES[args.dtype])
    rows = []
    with torch.inference_mode():
        for batch in args.batch:
            times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
            one_pass(lm, batch, args.prompt, 2)  # warm-up (also fuses the weights once)
            for i in range(args.repeats):
                for fused in (True, False) if i % 2 == 0 else (False, True):
                    FusedLinears.enabled = fused
                    times[fused].append(one_pass(lm, batch, args.prompt, args.steps))
            FusedLinears.enabled = True
            mean = {k: [sum(x) / len(v) for x in zip(*v, strict=True)] for k, v in times.items()}
            rows.append(
                {
                    "batch": batch,
                    "prefill_ms": {"fused": 1000 * mean[True][0], "separate": 1000 * mean[False][0]},
                    "step_ms": {"fused": 1000 * mean[True][1], "separate": 1000 * mean[False][1]},
                    "step_speedup_fused": mean[False][1] / mean[True][1],
                    "prefill_speedup_fused": mean[False][0] / mean[True][0],
                }
            )
    return {"machine": machine_info("cpu"), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.fused_decoder", description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=8, help="decoder layers at the 2b widths (2b has 40)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--prompt", type=int, default=200, help="prefill length (audio + prompt tokens)")
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = p.parse_args(argv)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = args.out / f"fused_decoder_{stamp}.json"
    out.write_text(json.dumps(result, indent=1))
    for r in result["rows"]:
        print(
            f"B={r['batch']}: step {r['step_ms']['fused']:.1f} ms fused / {r['step_ms']['separate']:.1f} ms "
            f"separate ({r['step_speedup_fused']:.2f}x), prefill {r['prefill_speedup_fused']:.2f}x"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
