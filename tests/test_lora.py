import torch

from granite_asr.model.build import build_model
from granite_asr.model.lora import (
    LoRALinear,
    apply_lora,
    lora_state_dict,
    merge_lora,
    set_lora_enabled,
)

from .reference import prompt_batch


def _randomise_adapters(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)


def test_lora_starts_as_identity_then_merge_equals_unmerged():
    torch.manual_seed(0)
    m = build_model("tiny")
    feats = torch.randn(1, 30, 160)
    ids, mask = prompt_batch([m.geometry.audio_tokens(30)], [2])
    base = m(ids, feats, mask).logits
    wrapped = apply_lora(m.language_model, r=4, alpha=8)
    assert wrapped and all("lora" not in w for w in wrapped)
    assert torch.allclose(m(ids, feats, mask).logits, base)  # B = 0 at init
    _randomise_adapters(m)
    adapted = m(ids, feats, mask).logits
    assert (adapted - base).abs().max() > 1e-3
    set_lora_enabled(m, False)
    assert torch.allclose(m(ids, feats, mask).logits, base)
    set_lora_enabled(m, True)
    layer = next(x for x in m.modules() if isinstance(x, LoRALinear))
    layer.merge()
    layer.unmerge()
    assert torch.allclose(m(ids, feats, mask).logits, adapted, atol=1e-5)
    assert len(lora_state_dict(m)) == 2 * len(wrapped)
    merge_lora(m)
    assert not any(isinstance(x, LoRALinear) for x in m.modules())
    assert torch.allclose(m(ids, feats, mask).logits, adapted, atol=1e-5)
    # merged model has exactly the official tensor names again
    assert set(m.state_dict()) == set(build_model("tiny").state_dict())


def test_only_adapters_train():
    m = build_model("tiny-nar")
    apply_lora(m.language_model, r=4)
    trainable = [n for n, p in m.language_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
