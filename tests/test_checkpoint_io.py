"""Checkpoint read/write in the official layout (SPEC §9): names, out_llm, shards, errors, offline Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from granite_asr.config import preset
from granite_asr.model.build import build_model
from granite_asr.model.checkpoint import (
    CheckpointError,
    load_pretrained,
    normalize_key,
    read_state_dict,
    resolve_checkpoint_dir,
    save_pretrained,
)

from .helpers_tokenizer import make_tokenizer

VARIANTS = ["tiny", "tiny-plus", "tiny-nar"]


def _randomised(name: str, seed: int = 0) -> torch.nn.Module:
    """A tiny model whose every tensor differs from a fresh build (BatchNorm stats included)."""
    if name.endswith("nar"):
        pytest.importorskip("granite_asr.model.nar")
    model = build_model(preset(name))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1 + (1.0 if "running_var" in key else 0.0))
            else:
                t.fill_(7)
    return model


def _assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("name", VARIANTS)
def test_save_load_round_trip_identical(tmp_path, name):
    model = _randomised(name)
    model.tokenizer = make_tokenizer()
    model.chat_template = "{{ messages }}"
    save_pretrained(model, tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.config == model.config and loaded.variant == model.variant
    _assert_same_tensors(model, loaded)
    assert not loaded.training
    assert loaded.tokenizer.encode("<|audio|> hi") == model.tokenizer.encode("<|audio|> hi")
    assert loaded.chat_template == "{{ messages }}"


def test_ar_bpe_head_goes_to_out_llm(tmp_path):
    model = _randomised("tiny")
    save_pretrained(model, tmp_path)
    main = load_file(str(tmp_path / "model.safetensors"))
    head = load_file(str(tmp_path / "out_llm.safetensors"))
    assert not any(k.startswith("encoder.out_bpe") for k in main)
    assert set(head) == {"weight", "bias"}
    assert torch.equal(head["weight"], model.state_dict()["encoder.out_bpe.weight"])
    assert "language_model.lm_head.weight" in main  # 2b is untied
    state = read_state_dict(tmp_path)
    assert torch.equal(state["encoder.out_bpe.bias"], head["bias"])


def test_tied_model_has_no_lm_head_and_no_out_llm(tmp_path):
    save_pretrained(_randomised("tiny-plus"), tmp_path)
    assert "language_model.lm_head.weight" not in load_file(str(tmp_path / "model.safetensors"))
    assert not (tmp_path / "out_llm.safetensors").exists()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "granite_speech_plus"


def test_missing_out_llm_means_no_bpe_head(tmp_path):
    # The tensors decide whether there is a head (SPEC §9.1 "extra file"): 4.0-1b-style dirs have none.
    save_pretrained(_randomised("tiny"), tmp_path)
    (tmp_path / "out_llm.safetensors").unlink()
    loaded = load_pretrained(tmp_path)
    assert loaded.config.encoder.bpe_output_dim == 0
    assert not any(k.startswith("encoder.out_bpe") for k in loaded.state_dict())


def test_bf16_weights_load_as_float32_on_cpu_and_as_requested(tmp_path):
    model = _randomised("tiny")
    save_pretrained(model, tmp_path, dtype=torch.bfloat16)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    as_f32 = load_pretrained(tmp_path)
    assert as_f32.language_model.model.embed_tokens.weight.dtype == torch.float32
    as_bf16 = load_pretrained(tmp_path, dtype=torch.bfloat16)
    expected = model.state_dict()["encoder.input_linear.weight"].to(torch.bfloat16)
    assert torch.equal(as_bf16.state_dict()["encoder.input_linear.weight"], expected)
    # Non-persistent float buffers (RoPE inv_freq) keep their build precision.
    persistent = set(as_bf16.state_dict())
    for module_name, module in as_bf16.named_modules():
        for name, buf in module.named_buffers(recurse=False):
            if f"{module_name}.{name}".lstrip(".") not in persistent and buf.is_floating_point():
                assert buf.dtype == torch.float32, f"{module_name}.{name}"


def test_sharded_round_trip(tmp_path):
    model = _randomised("tiny")
    save_pretrained(model, tmp_path, max_shard_bytes=20_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
    _assert_same_tensors(model, load_pretrained(tmp_path))
    # Re-saving unsharded removes the stale index and shards.
    save_pretrained(model, tmp_path)
    assert not (tmp_path / "model.safetensors.index.json").exists()
    assert not list(tmp_path.glob("model-*-of-*.safetensors"))


def test_missing_shard_is_named(tmp_path):
    save_pretrained(_randomised("tiny"), tmp_path, max_shard_bytes=20_000)
    victim = sorted(tmp_path.glob("model-*-of-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        read_state_dict(tmp_path)


def test_corrupt_safetensors_is_named(tmp_path):
    save_pretrained(_randomised("tiny"), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="model.safetensors.*not a readable safetensors"):
        load_pretrained(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        read_state_dict(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="never loaded"):
        read_state_dict(tmp_path)
    save_pretrained(_randomised("tiny"), tmp_path / "ok")
    (tmp_path / "ok" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: file is missing"):
        load_pretrained(tmp_path / "ok")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        resolve_checkpoint_dir(tmp_path / "nowhere")


def test_strict_keys_report_missing_and_unexpected(tmp_path):
    save_pretrained(_randomised("tiny"), tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state.pop("projector.query")
    state["projector.surprise"] = torch.zeros(2)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_pretrained(tmp_path)
    assert "1 missing: projector.query" in str(err.value)
    assert "1 unexpected: projector.surprise" in str(err.value)


def test_num_batches_tracked_may_be_absent(tmp_path):
    model = _randomised("tiny")
    save_pretrained(model, tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded = load_pretrained(tmp_path)
    assert torch.equal(
        loaded.state_dict()["encoder.layers.0.conv.batch_norm.running_var"],
        model.state_dict()["encoder.layers.0.conv.batch_norm.running_var"],
    )


def test_transformers5_names_are_normalised(tmp_path):
    model = _randomised("tiny")
    save_pretrained(model, tmp_path)
    ours = load_file(str(tmp_path / "model.safetensors"))

    def theirs(key: str) -> str:  # transformers-5 save_pretrained layout (conversion_mapping.py)
        if key == "language_model.lm_head.weight":
            return "lm_head.weight"
        if key.startswith("language_model.model."):
            return "model.language_model." + key[len("language_model.model.") :]
        return "model." + key

    save_file({theirs(k): v for k, v in ours.items()}, str(tmp_path / "model.safetensors"))
    _assert_same_tensors(model, load_pretrained(tmp_path))


def test_normalize_key_table():
    assert (
        normalize_key("llm.model.layers.0.mlp.up_proj.weight")
        == "language_model.model.layers.0.mlp.up_proj.weight"
    )
    assert normalize_key("llm.lm_head.weight") == "language_model.lm_head.weight"
    assert normalize_key("model.out_bpe.weight") == "encoder.out_bpe.weight"
    assert normalize_key("model.encoder.out.bias") == "encoder.out.bias"
    assert normalize_key("encoder.out.bias") == "encoder.out.bias"
    assert normalize_key("language_model.model.norm.weight") == "language_model.model.norm.weight"


def _hub_cache(root: Path, source: Path, repo: str = "org/name", commit: str = "0" * 40) -> Path:
    """The huggingface_hub cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    storage = root / ("models--" + repo.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for f in source.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_id_resolves_offline_from_cache(tmp_path, monkeypatch):
    model = _randomised("tiny")
    model.tokenizer = make_tokenizer()
    save_pretrained(model, tmp_path / "src")
    snapshot = _hub_cache(tmp_path / "cache", tmp_path / "src")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_checkpoint_dir("org/name").resolve() == snapshot.resolve()
    loaded = load_pretrained("org/name")
    _assert_same_tensors(model, loaded)
    assert loaded.tokenizer is not None
    with pytest.raises(CheckpointError, match="org/other.*offline cache"):
        resolve_checkpoint_dir("org/other")


def test_no_tokenizer_files_means_none(tmp_path):
    save_pretrained(_randomised("tiny"), tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.tokenizer is None and loaded.chat_template is None


def test_sibling_checkpoint_reads_shared_tensors_from_its_base(tmp_path):
    """`save_pretrained(..., base=)`: a Plus sibling built from an AR model stores only what differs
    (not the shared encoder), names the base in config.json, and loads back identical; the AR's BPE head
    is never borrowed (the Plus has none)."""
    from granite_asr.train.plus import plus_from_ar

    ar = _randomised("tiny")
    save_pretrained(ar, tmp_path / "base")
    sib = plus_from_ar(ar)
    with torch.no_grad():
        sib.projector.linear.weight.add_(1.0)
    save_pretrained(sib, tmp_path / "sets" / "plus", base=tmp_path / "base")
    stored = load_file(str(tmp_path / "sets" / "plus" / "model.safetensors"))
    assert not any(k.startswith("encoder.") for k in stored) and "projector.linear.weight" in stored
    cfg = json.loads((tmp_path / "sets" / "plus" / "config.json").read_text())
    assert cfg["granite_asr"]["base_weights"] == "../../base"
    loaded = load_pretrained(tmp_path / "sets" / "plus")
    assert loaded.config == sib.config and loaded.config.encoder.bpe_output_dim == 0
    _assert_same_tensors(sib, loaded)
    (tmp_path / "base" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="base_weights"):
        load_pretrained(tmp_path / "sets" / "plus")
