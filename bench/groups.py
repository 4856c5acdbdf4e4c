"""The bench plan: groups of measurements, each run in its own worker process (issue 6 items 2–4).

A group builds its model(s) once, measures, and returns records. One process per group keeps peak RSS
per group honest and frees a 2b's memory before the next group builds another. Profiles:

- quick (default): tiny and default shapes, a few minutes on two CPU cores;
- full (`--full`): adds the real 2b shapes, fp32, bf16 and int8 weights;
- cuda (`--device cuda`): 2b-nar at batch 128 and the 2b AR comparison, on one GPU.
"""

from __future__ import annotations

import gc

import torch

from granite_asr.model.checkpoint import cast_floating_state
from granite_asr.model.granite import fuse_projections
from granite_asr.model.quantize import PARTS, quantize_int8

from .ar_compare import ARCase, compare
from .engine_bench import EngineCase, encoder_case, engine_case, int8_accuracy, int8_model
from .models import build

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BATCHES = (1, 2, 4, 8, 16)


def _build(preset: str, dtype: str, device: str):
    return build(preset, DTYPES[dtype], device=device)


def _int8_variant(spec: dict, entry: dict) -> tuple[str, torch.nn.Module]:
    """One int8 copy of the group's model: the same weights (rebuilt from the same seed), the Linears of
    `entry["parts"]` int8, the rest in the bench dtype or in `entry["rest"]` (e.g. "fp32").

    Names: "ours-int8-all" (every part, `load_model(quantize="int8")`), "ours-int8" (decoder only),
    else the parts spelled out; "-fp32" etc. when the rest is cast."""
    parts = tuple(entry["parts"])
    model = quantize_int8(_build(spec["preset"], spec["dtype"], spec["device"]), parts)
    if parts == ("language_model",):
        name = "ours-int8"
    else:
        name = "ours-int8-all" if set(parts) == set(PARTS) else "ours-int8-" + "+".join(parts)
    rest = entry.get("rest")
    if rest and rest != spec["dtype"]:
        cast_floating_state(model, DTYPES[rest])
        name += f"-{rest}"
    return name, model


def ar_vs_transformers(spec: dict) -> list[dict]:
    from .reference import reference_model

    model = _build(spec["preset"], spec["dtype"], spec["device"])
    fuse_projections(model)  # before sharing: the reference then holds views of the fused weights
    ref = reference_model(model)
    label = {"group": "ar_vs_transformers", "preset": spec["preset"], "dtype": spec["dtype"]}
    variants = dict(_int8_variant(spec, entry) for entry in spec.get("int8", ()))
    out = []
    for c in spec["cases"]:
        out += compare(model, ref, ARCase(**c), label, variants)
    return out


def modes(spec: dict) -> list[dict]:
    """AR, speculative and CTC-only on the AR model, then NAR on the editor of the same widths."""
    from granite_asr.engine import Engine

    label = {"group": "modes", "dtype": spec["dtype"]}
    out = []
    for preset, mode_list in ((spec["preset"], ("ar", "ctc", "speculative")), (spec["nar"], ("nar",))):
        model = _build(preset, spec["dtype"], spec["device"])
        engine = Engine(model)
        for mode in mode_list:
            case = EngineCase(mode=mode, **spec["case"])
            out.append(engine_case(engine, case, label | {"preset": preset}, flops=spec.get("flops", True)))
        if spec.get("encoder"):
            enc = spec["encoder"]
            out.append(
                encoder_case(
                    model, enc["batch"], enc["seconds"], label | {"group": "encoder", "preset": preset}
                )
            )
        del engine, model
        gc.collect()
    return out


def scaling(spec: dict) -> list[dict]:
    """RTFx against batch size, per mode (the PNG)."""
    from granite_asr.engine import Engine

    out = []
    for preset, mode in spec["runs"]:
        engine = Engine(_build(preset, spec["dtype"], spec["device"]))
        for b in spec["batches"]:
            case = EngineCase(mode=mode, batch=b, clips=spec["clips"], seconds=spec["seconds"], iters=1)
            label = {"group": "scaling", "preset": preset, "dtype": spec["dtype"]}
            out.append(engine_case(engine, case, label))
        del engine
        gc.collect()
    return out


def int8(spec: dict) -> list[dict]:
    """fp32 vs int8 dynamic quantisation on the engine's AR path, with the accuracy cost."""
    from granite_asr.engine import Engine

    model = _build(spec["preset"], "fp32", "cpu")
    qmodel = int8_model(model)
    case = EngineCase(mode="ar", **spec["case"])
    out = []
    for name, m in (("fp32", model), ("int8", qmodel)):
        out.append(engine_case(Engine(m), case, {"group": "int8", "preset": spec["preset"], "dtype": name}))
    out[-1] |= int8_accuracy(model, qmodel, case)
    return out


GROUPS = {"ar_vs_transformers": ar_vs_transformers, "modes": modes, "scaling": scaling, "int8": int8}


def _ar_cases(seconds: float, tokens: int, iters: int) -> list[dict]:
    return [dict(batch=b, seconds=seconds, new_tokens=tokens, warmup=1, iters=iters) for b in (1, 8)]


def plan(profile: str, device: str) -> list[dict]:
    """Group specs for a profile; `device` is "cpu" or "cuda"."""
    cpu = device == "cpu"
    if not cpu:
        return [
            dict(group="modes", preset="2b", nar="2b-nar", dtype="bf16", device=device, flops=False,
                 case=dict(batch=128, clips=256, seconds=10.0, new_tokens=64, iters=2)),
            dict(group="ar_vs_transformers", preset="2b", dtype="bf16", device=device,
                 cases=_ar_cases(10.0, 64, 3)),
        ]  # fmt: skip
    groups = [
        dict(group="ar_vs_transformers", preset="tiny", dtype="fp32", device=device,
             cases=_ar_cases(4.0, 32, 3)),
        dict(group="ar_vs_transformers", preset="default", dtype="fp32", device=device,
             cases=_ar_cases(8.0, 24, 2)),
        dict(group="ar_vs_transformers", preset="default", dtype="bf16", device=device,
             cases=_ar_cases(8.0, 24, 2)),
        dict(group="modes", preset="default", nar="default-nar", dtype="bf16", device=device,
             case=dict(batch=8, clips=8, seconds=8.0, new_tokens=24, iters=2),
             encoder=dict(batch=8, seconds=8.0)),
        dict(group="scaling", dtype="bf16", device=device, batches=BATCHES, clips=16, seconds=8.0,
             runs=[("default", "ar"), ("default-nar", "nar"), ("default", "ctc")]),
        dict(group="int8", preset="default", case=dict(batch=8, clips=8, seconds=8.0, new_tokens=24, iters=1)),
    ]  # fmt: skip
    if profile == "full":
        # bf16: 16 new tokens (4 left the decode steps inside the noise, session 4) and the int8 option
        # on the same weights; fp32 stays short (a 9 GB model on two cores).
        groups += [
            dict(group="ar_vs_transformers", preset="2b", dtype="bf16", device=device,
                 cases=_ar_cases(4.0, 16, 2), int8=[{"parts": list(PARTS)}]),
            dict(group="ar_vs_transformers", preset="2b", dtype="fp32", device=device,
                 cases=_ar_cases(4.0, 4, 1)),
        ]  # fmt: skip
        groups.append(
            dict(group="modes", preset="2b", nar="2b-nar", dtype="bf16", device=device, flops=False,
                 case=dict(batch=4, clips=4, seconds=4.0, new_tokens=4, iters=1),
                 encoder=dict(batch=4, seconds=4.0))
        )  # fmt: skip
    return groups


def run_group(spec: dict) -> list[dict]:
    torch.manual_seed(0)
    return GROUPS[spec["group"]](spec)
