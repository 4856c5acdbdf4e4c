"""Our AR decoding vs transformers' `generate()` on identical weights and inputs (issue 6 item 2).

Both start from the same log-mel features (featurisation is common to both and excluded), equal-length
clips (the reference has no encoder padding mask, SPEC §2.3), the same prompt, and generate exactly
`new_tokens` tokens per row: ours with EOS and the repetition guard disabled, the reference with
`min_new_tokens = max_new_tokens`. Ours is the engine's path: encoder → merge → prefill → greedy_search.
Iterations alternate ours / reference so drifting CPU contention hits both alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from granite_asr.audio.features import AudioBatch, FeatureExtractor
from granite_asr.decoding.greedy import greedy_search, prefill
from granite_asr.lengths import lengths_to_mask
from granite_asr.model.granite import FusedLinears
from granite_asr.options import DecodeOptions
from granite_asr.prompts import build_prompt, encode_prompts

from .machine import peak_rss_mb, sync
from .models import SR, clips


@dataclass(frozen=True)
class ARCase:
    batch: int
    seconds: float  # per clip
    new_tokens: int
    warmup: int = 1
    iters: int = 3


def ar_inputs(model, case: ARCase, device) -> tuple[AudioBatch, torch.Tensor, torch.Tensor]:
    audio = clips(case.batch, case.seconds, spread=0.0)
    batch = FeatureExtractor.from_config(model.config)(audio, device=device)
    prompt = build_prompt("ar", task="transcribe")
    ids, mask = encode_prompts(model.tokenizer, [prompt] * case.batch, batch.audio_token_counts.tolist())
    return batch, ids.to(device), mask.bool().to(device)


@torch.inference_mode()
def ours_generate(model, batch: AudioBatch, ids, mask, new_tokens: int) -> torch.Tensor:
    audio, counts, _ = model.encode_audio(batch.input_features, batch.feature_lengths)
    embeds = model.merge_audio(ids, audio, lengths_to_mask(counts, audio.shape[1]))
    state = prefill(model, embeds, mask, new_tokens)
    opts = DecodeOptions(max_new_tokens=new_tokens, max_repeats=0)
    hyps = greedy_search(model, state, eos_id=-1, options=opts)
    return torch.tensor([h.tokens for h in hyps], device=ids.device)


@torch.inference_mode()
def ours_phases(model, batch: AudioBatch, ids, mask, new_tokens: int) -> dict[str, float]:
    """One `ours_generate` pass timed by phase (where a goal is missed, where the time goes)."""
    device = ids.device
    marks = [time.perf_counter()]

    def mark():
        sync(device)
        marks.append(time.perf_counter())

    audio, counts, _ = model.encode_audio(batch.input_features, batch.feature_lengths)
    mark()
    embeds = model.merge_audio(ids, audio, lengths_to_mask(counts, audio.shape[1]))
    state = prefill(model, embeds, mask, new_tokens)
    mark()
    greedy_search(model, state, eos_id=-1, options=DecodeOptions(max_new_tokens=new_tokens, max_repeats=0))
    mark()
    return {
        f"{k}_s": b - a
        for k, a, b in zip(("encoder", "prefill", "decode"), marks[:-1], marks[1:], strict=True)
    }


@torch.inference_mode()
def reference_generate(ref, batch: AudioBatch, ids, mask, new_tokens: int, pad_id: int) -> torch.Tensor:
    dtype = ref.config.dtype
    out = ref.generate(
        input_ids=ids,
        input_features=batch.input_features.to(dtype),
        attention_mask=mask.long(),
        input_features_mask=batch.input_features_mask,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=pad_id,
    )
    return out[:, ids.shape[1] :]


def compare(model, ref, case: ARCase, label: dict, variants: dict | None = None) -> list[dict]:
    """Time both on the same inputs → one record per impl ("ours", "transformers", "ours-unfused", and
    each of `variants`: name → a transformed copy of `model`, e.g. int8) with token agreement."""
    device = next(model.parameters()).device
    batch, ids, mask = ar_inputs(model, case, device)
    pad = model.tokenizer.pad_id

    def unfused():
        FusedLinears.enabled = False
        try:
            return ours_generate(model, batch, ids, mask, case.new_tokens)
        finally:
            FusedLinears.enabled = True

    runs = {
        "ours": lambda: ours_generate(model, batch, ids, mask, case.new_tokens),
        "transformers": lambda: reference_generate(ref, batch, ids, mask, case.new_tokens, pad),
        "ours-unfused": unfused,  # the same decoder before issue 6's fused projections
    }
    for name, vmodel in (variants or {}).items():
        runs[name] = lambda m=vmodel: ours_generate(m, batch, ids, mask, case.new_tokens)
    outs = {k: f() for k, f in runs.items() for _ in range(case.warmup)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(case.iters):
        for k in runs if i % 2 == 0 else reversed(list(runs)):
            sync(device)
            t0 = time.perf_counter()
            runs[k]()
            sync(device)
            times[k].append(time.perf_counter() - t0)
    agree = float((outs["ours"] == outs["transformers"]).float().mean()) if outs else None
    # A variant's tokens against ours (the same weights before the transform): random weights give
    # near-flat logits, so this bounds nothing about accuracy on speech; it shows the variant runs.
    vs_ours = {k: float((outs[k] == outs["ours"]).float().mean()) for k in variants or {} if outs}
    audio_s = case.batch * float(batch.num_samples[0]) / SR
    phases = {"ours": model} | dict(variants or {})
    phases = {k: ours_phases(m, batch, ids, mask, case.new_tokens) for k, m in phases.items()}
    records = []
    for k, ts in times.items():
        total = sum(ts)
        records.append(
            label
            | {
                "impl": k,
                "batch": case.batch,
                "new_tokens": case.new_tokens,
                "clip_seconds": case.seconds,
                "iters": case.iters,
                "seconds_per_iter": total / len(ts),
                "rtfx": audio_s * len(ts) / total,
                "tokens_per_s": case.batch * case.new_tokens * len(ts) / total,
                "token_agreement": vs_ours.get(k, agree),
                "peak_rss_mb": peak_rss_mb(),
            }
            | phases.get(k, {})
        )
    return records
