"""int8 weights (`granite_asr.model.quantize`, issue 6): what is replaced, how close the logits stay,
the engine on a quantised model, and the errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from granite_asr.audio.features import FeatureExtractor
from granite_asr.engine import Engine
from granite_asr.model.quantize import Int8Linear, quantize_int8
from granite_asr.options import DecodeOptions, TranscribeOptions
from granite_asr.prompts import build_prompt, encode_prompts

from .helpers_model import build_tiny
from .test_decoding import clips

pytestmark = pytest.mark.skipif(
    "fbgemm" not in torch.backends.quantized.supported_engines, reason="int8 needs fbgemm (x86)"
)


def _linears(module: nn.Module) -> int:
    """Float matmul layers left: Linears and kernel-1 Conv1ds."""
    return sum(
        type(m) is nn.Linear or (type(m) is nn.Conv1d and m.kernel_size == (1,)) for m in module.modules()
    )


def _logits(model, audios) -> torch.Tensor:
    batch = FeatureExtractor.from_config(model.config)(audios)
    prompt = build_prompt("ar", task="transcribe")
    ids, mask = encode_prompts(model.tokenizer, [prompt] * len(audios), batch.audio_token_counts.tolist())
    with torch.inference_mode():
        out = model(
            input_features=batch.input_features,
            input_ids=ids,
            attention_mask=mask,
            feature_lengths=batch.feature_lengths,
        )
    return out.logits.float()


def test_decoder_linears_become_int8_and_logits_stay_close():
    model = build_tiny()
    q = quantize_int8(copy.deepcopy(model), ("language_model",))
    assert _linears(q.language_model) == 0 and _linears(model.language_model) > 0
    assert _linears(q.encoder) == _linears(model.encoder)  # only the part asked for
    audios = clips((1.0, 0.6))
    ref, got = _logits(model, audios), _logits(q, audios)
    # 8-bit weights and 7-bit activations, per row, through a unit-scale random decoder: a few % of
    # the logits' norm (measured 3.6 %); a per-batch activation scale or a lost row scale is far above.
    err = float((got - ref).norm() / ref.norm())
    assert 0 < err < 0.08, f"int8 logits off by {err:.3f} of their norm"


def test_int8_linear_rows_are_independent_of_their_batch():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    q = Int8Linear(linear.weight, linear.bias)
    # Rows four decades apart: one shared activation scale would wipe out the small ones.
    x = torch.randn(6, 64) * torch.logspace(-2, 2, 6)[:, None]
    with torch.inference_mode():
        together = q(x)
        alone = torch.cat([q(row[None]) for row in x])
        ref = linear(x)
    assert torch.equal(together, alone)
    rel = (together - ref).norm(dim=-1) / ref.norm(dim=-1)
    assert rel.max() < 0.05, rel


def test_every_part_by_default_and_the_rest_keeps_bf16():
    model = build_tiny().to(torch.bfloat16)
    q = quantize_int8(copy.deepcopy(model))
    assert _linears(q) == 0
    assert q.language_model.model.embed_tokens.weight.dtype == torch.bfloat16
    audios = clips((1.0, 0.6))
    ref, got = _logits(model, audios), _logits(q, audios)
    err = float((got - ref).norm() / ref.norm())
    assert 0 < err < 0.1, f"int8 logits off by {err:.3f} of their norm (bf16 model)"


@pytest.mark.parametrize("name,mode", [("tiny", "ar"), ("tiny-nar", "nar"), ("tiny-plus", "ar")])
def test_engine_runs_a_quantised_model_and_batches_like_alone(name, mode):
    q = quantize_int8(build_tiny(name))
    assert _linears(q) == 0
    engine = Engine(q)
    audios = clips((1.0, 0.6, 1.4))
    options = TranscribeOptions(
        decode=DecodeOptions(mode=mode, max_new_tokens=6, batch_size=4), progress=False
    )
    together = [r.tokens for r in engine.run(audios, options)]
    alone = [engine.run([a], options)[0].tokens for a in audios]
    assert together == alone and all(len(t) > 0 for t in together)


def test_errors_name_the_problem():
    model = build_tiny()
    with pytest.raises(ValueError, match="unknown part"):
        quantize_int8(model, ("decoder",))
    q = quantize_int8(model)
    with pytest.raises(ValueError, match="already quantised"):
        quantize_int8(q)
    with pytest.raises(ValueError, match="CPU only"):
        Engine(q, device="meta")
