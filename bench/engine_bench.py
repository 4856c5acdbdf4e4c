"""Engine throughput: RTFx per decoding mode and batch size, encoder GFLOP/s, int8 (issue 6 items 1–3).

RTFx as the Open ASR Leaderboard computes it: Σ audio seconds / Σ compute seconds over the timed passes,
warm-up excluded, timing everything from the 16 kHz arrays to text (featurisation included). The AR modes
run with EOS disabled and the repetition guard off, so each clip generates exactly `new_tokens` tokens
(random weights would otherwise stop at random); the NAR and CTC produce what they produce.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from granite_asr.audio.features import FeatureExtractor
from granite_asr.engine import Engine
from granite_asr.model.quantize import quantize_int8
from granite_asr.options import DecodeOptions, TranscribeOptions

from .machine import peak_rss_mb, timed
from .models import SR, clips


@dataclass(frozen=True)
class EngineCase:
    mode: str  # ar | nar | ctc | speculative
    batch: int
    clips: int  # clips per pass (a multiple of batch: several batches per pass)
    seconds: float
    new_tokens: int = 32
    warmup: int = 1
    iters: int = 2


def count_flops(fn) -> int:
    """FLOPs of one call (matmuls, convolutions, attention), counted by PyTorch's dispatcher."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def engine_case(engine: Engine, case: EngineCase, label: dict, *, flops: bool = False) -> dict:
    audios = clips(case.clips, case.seconds)
    dec = DecodeOptions(mode=case.mode, batch_size=case.batch, max_new_tokens=case.new_tokens, max_repeats=0)
    opts = TranscribeOptions(decode=dec, progress=False)
    # AR: never stop early, a fixed amount of decoding per clip. Speculative verification appends the EOS
    # to each draft, so it keeps the real one (its AR fallback may then stop early on random weights).
    engine.eos_id = -1 if case.mode == "ar" else engine.model.config.text.eos_token_id
    results: list = []

    def run():
        results[:] = engine.run(audios, opts)

    t = timed(run, warmup=case.warmup, iters=case.iters, device=engine.device)
    audio_s = sum(len(a) for a in audios) / SR
    tokens = sum(len(r.tokens) for r in results)
    rec = label | {
        "mode": case.mode,
        "batch": case.batch,
        "clips": case.clips,
        "clip_seconds": case.seconds,
        "new_tokens": case.new_tokens if case.mode in ("ar", "speculative") else None,
        "iters": case.iters,
        "seconds_per_iter": t.total / case.iters,
        "rtfx": audio_s * case.iters / t.total,
        "tokens_per_s": tokens * case.iters / t.total,
        "modes_used": sorted({r.mode_used for r in results}),
    }
    if flops:
        rec["gflop_per_iter"] = count_flops(run) / 1e9
        rec["gflops"] = rec["gflop_per_iter"] / rec["seconds_per_iter"]
    rec["peak_rss_mb"] = peak_rss_mb()
    return rec


@torch.inference_mode()
def encoder_case(model: nn.Module, batch: int, seconds: float, label: dict, *, iters: int = 3) -> dict:
    """Encoder forward alone on a full batch (no padding): achieved GFLOP/s, for the % of matmul peak."""
    feats = FeatureExtractor.from_config(model.config)(clips(batch, seconds, spread=0.0))
    dtype = next(model.parameters()).dtype
    x = feats.input_features.to(dtype)

    def run():
        model.encoder(x, feats.feature_lengths)

    gflop = count_flops(run) / 1e9
    t = timed(run, warmup=1, iters=iters)
    return label | {
        "batch": batch,
        "clip_seconds": seconds,
        "frames": int(x.shape[1]),
        "iters": iters,
        "seconds_per_iter": t.total / iters,
        "rtfx": batch * seconds * iters / t.total,
        "gflop_per_iter": gflop,
        "gflops": gflop * iters / t.total,
        "peak_rss_mb": peak_rss_mb(),
    }


def int8_model(model: nn.Module) -> nn.Module:
    """A copy with every Linear int8 (`granite_asr.model.quantize`, all parts; fp32 activations; CPU)."""
    q = quantize_int8(copy.deepcopy(model))
    q.tokenizer = model.tokenizer
    return q


@torch.inference_mode()
def int8_accuracy(model: nn.Module, qmodel: nn.Module, case: EngineCase) -> dict:
    """Accuracy cost of int8 on the same clips: greedy-token agreement with the fp32 model, and how many
    tokens a row keeps identical before the first difference (greedy decoding never recovers from one)."""
    dec = DecodeOptions(mode="ar", batch_size=case.batch, max_new_tokens=case.new_tokens, max_repeats=0)
    opts = TranscribeOptions(decode=dec, progress=False)
    audios = clips(case.clips, case.seconds, seed=1)
    outs = []
    for m in (model, qmodel):
        eng = Engine(m)
        eng.eos_id = -1
        outs.append([r.tokens for r in eng.run(audios, opts)])
    pairs = [(a, b) for ra, rb in zip(*outs, strict=True) for a, b in zip(ra, rb, strict=True)]
    first_diverge = [
        next((i for i, (a, b) in enumerate(zip(ra, rb, strict=True)) if a != b), len(ra))
        for ra, rb in zip(*outs, strict=True)
    ]
    return {
        "token_agreement": sum(a == b for a, b in pairs) / max(len(pairs), 1),
        "mean_tokens_before_divergence": sum(first_diverge) / len(first_diverge),
    }
