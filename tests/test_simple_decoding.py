"""End to end on tiny random checkpoints: save → load_model → audio → text, for every variant."""

import numpy as np
import pytest
import torch

import granite_asr
from granite_asr.decoding.simple import greedy_transcribe
from granite_asr.model.checkpoint import save_pretrained

from .helpers_tokenizer import make_tokenizer


@pytest.mark.parametrize("name", ["tiny", "tiny-plus", "tiny-nar"])
def test_round_trip_checkpoint_transcribes(tmp_path, name):
    from granite_asr.config import preset

    tok = make_tokenizer()
    cfg = preset(name)
    text = cfg.text.__class__(
        **{
            **cfg.text.__dict__,
            "vocab_size": tok.vocab_size,
            "eos_token_id": tok.eos_id,
            "bos_token_id": tok.eos_id,
            "pad_token_id": tok.pad_id,
        }
    )
    enc = cfg.encoder.__class__(
        **{
            **cfg.encoder.__dict__,
            "bpe_output_dim": 0 if name == "tiny-plus" else tok.vocab_size + (0 if name == "tiny-nar" else 1),
        }
    )
    cfg = cfg.replace(
        text=text,
        encoder=enc,
        audio_token_index=tok.audio_token_id,
        blank_token_id=tok.eos_id,
        bpe_blank_id=tok.eos_id if name == "tiny-nar" else 0,
    )
    torch.manual_seed(0)
    model = granite_asr.build_model(cfg)
    model.tokenizer = tok
    save_pretrained(model, tmp_path / name)
    loaded = granite_asr.load_model(tmp_path / name)
    assert loaded.variant == model.variant and loaded.tokenizer is not None
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 9000, 23000)]
    texts = greedy_transcribe(loaded, audios, max_new_tokens=8)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    # batching does not change any clip's result
    assert [greedy_transcribe(loaded, [a], max_new_tokens=8)[0] for a in audios] == texts
