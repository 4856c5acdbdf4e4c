"""Load and save checkpoints in the official Hugging Face layout (SPEC §9). Safetensors only.

Our state-dict names ARE the official ones: `encoder.*`, `projector.*`, `language_model.model.*`,
`language_model.lm_head.weight` (untied models only) and `encoder.out_bpe.{weight,bias}`. Other spellings
are renamed on read (`normalize_key`):

- transformers-5 `save_pretrained`: `model.encoder.*`, `model.projector.*`, `model.language_model.*`
  (the bare decoder body), `lm_head.weight`, and the newest NAR port's `model.out_bpe.*` (SPEC §6.5);
- the NAR rev 7d20732d remote code: `llm.model.*`, `llm.lm_head.*` (SPEC §9.3);
- 2b's separate `out_llm.safetensors` (`weight`, `bias`) → `encoder.out_bpe.*` (SPEC §3.6).

Pickled weights (`*.bin`, `*.pt`) are never requested from the Hub and never loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import SpeechConfig
from ..tokenizer import Tokenizer
from .hf_config import OURS_KEY, config_from_hf, config_to_hf, preprocessor_to_hf

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
BPE_FILE = "out_llm.safetensors"
BASE_WEIGHTS = "base_weights"  # key in config.json's `granite_asr` sub-dict (see `base_dir`)
BPE_PREFIX = "encoder.out_bpe."
LM_HEAD = "language_model.lm_head.weight"
MAX_SHARD_BYTES = 4 * 1024**3
HUB_ALLOW = ["*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer*"]
HUB_IGNORE = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", "*.msgpack", "*.h5", "*.onnx*", "*.gguf"]

# Longest prefix first; each maps a foreign prefix to ours.
_RENAMES = (
    ("model.language_model.", "language_model.model."),
    ("model.out_bpe.", BPE_PREFIX),
    ("model.encoder.", "encoder."),
    ("model.projector.", "projector."),
    ("llm.model.", "language_model.model."),
    ("llm.lm_head.", "language_model.lm_head."),
    ("lm_head.", "language_model.lm_head."),
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit the model; the message names file and problem."""


def normalize_key(key: str) -> str:
    for old, new in _RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


# ------------------------------------------------------------------------------------------ locating


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_checkpoint_dir(
    path_or_hub_id: str | os.PathLike, *, revision: str | None = None, local_files_only: bool | None = None
) -> Path:
    """A local directory as is; otherwise a Hub id fetched (or found in the cache) with `snapshot_download`.

    The environment is read at call time (HF_HUB_OFFLINE, HF_HUB_CACHE), not at import time as
    `huggingface_hub.constants` does, so a caller can switch to the offline cache at any point.
    """
    path = Path(path_or_hub_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_hub_id)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise CheckpointError(f"{text}: not a checkpoint directory (and not a Hub id of the form org/name)")
    from huggingface_hub import snapshot_download

    offline = _env_flag("HF_HUB_OFFLINE") if local_files_only is None else local_files_only
    try:
        folder = snapshot_download(
            text,
            revision=revision,
            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
            local_files_only=offline,
            allow_patterns=HUB_ALLOW,
            ignore_patterns=HUB_IGNORE,
        )
    except Exception as e:  # the hub raises many types: not found, offline, gated, network
        where = "in the offline cache" if offline else "on the Hub"
        raise CheckpointError(f"{text}: cannot resolve {where}: {type(e).__name__}: {e}") from e
    return Path(folder)


# ------------------------------------------------------------------------------------------ reading


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise CheckpointError(f"{file}: file is missing")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from e


def _read_json(file: Path) -> dict[str, Any]:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{file}: cannot read JSON ({e})") from e


def _read_sharded(directory: Path) -> dict[str, torch.Tensor]:
    index = _read_json(directory / INDEX_FILE)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{directory / INDEX_FILE}: no weight_map")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        if not (directory / shard).is_file():
            raise CheckpointError(f"{directory / shard}: shard listed in {INDEX_FILE} is missing")
        state.update(_load_safetensors(directory / shard))
    absent = sorted(k for k in weight_map if k not in state)
    if absent:
        raise CheckpointError(
            f"{directory / INDEX_FILE}: {len(absent)} indexed tensors not in shards: {absent[:5]}"
        )
    return state


def base_dir(directory: Path) -> Path | None:
    """`granite_asr.base_weights` of config.json: a checkpoint (path relative to this one) that lends
    every tensor this one's model uses but does not store. Our siblings (NAR, Plus) share the embedded
    model's frozen encoder this way instead of shipping a second copy; official checkpoints never set it."""
    file = directory / "config.json"
    rel = (_read_json(file).get(OURS_KEY) or {}).get(BASE_WEIGHTS) if file.is_file() else None
    return (directory / rel).resolve() if rel else None


def lends(key: str) -> bool:
    """Whether a base lends this tensor: all but the BPE CTC head, whose presence sets the config's head
    width, so a checkpoint always stores its own (or has none)."""
    return not key.startswith(BPE_PREFIX)


def base_state(directory: Path, _depth: int = 0) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint's base lends it: the base's own and what its base lends (none for
    official checkpoints)."""
    base = base_dir(directory)
    if base is None:
        return {}
    if _depth >= 4 or not (base / "config.json").is_file():
        raise CheckpointError(f"{directory / 'config.json'}: base_weights {base} is not a checkpoint")
    lent = {**base_state(base, _depth + 1), **read_state_dict(base)}
    return {k: v for k, v in lent.items() if lends(k)}


def read_state_dict(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors stored in a checkpoint directory under our (official) names, as stored (dtype kept);
    what a base lends comes from `base_state`."""
    directory = Path(directory)
    if (directory / INDEX_FILE).is_file():
        raw = _read_sharded(directory)
    elif (directory / SINGLE_FILE).is_file():
        raw = _load_safetensors(directory / SINGLE_FILE)
    else:
        pickles = sorted(p.name for p in directory.glob("*.bin")) + sorted(
            p.name for p in directory.glob("*.pt")
        )
        hint = f" (pickle files {pickles} are never loaded)" if pickles else ""
        raise CheckpointError(f"{directory}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")
    state: dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        new = normalize_key(key)
        if new in state:
            raise CheckpointError(f"{directory}: tensors {key!r} and another both map to {new!r}")
        state[new] = tensor
    if (directory / BPE_FILE).is_file():
        head = _load_safetensors(directory / BPE_FILE)
        if any(k.startswith(BPE_PREFIX) for k in state):
            raise CheckpointError(f"{directory / BPE_FILE}: the model file already holds {BPE_PREFIX}*")
        unknown = sorted(set(head) - {"weight", "bias"})
        if unknown or "weight" not in head:
            raise CheckpointError(f"{directory / BPE_FILE}: expected keys weight, bias; got {sorted(head)}")
        state.update({BPE_PREFIX + k: v for k, v in head.items()})
    return state


def read_config(directory: str | os.PathLike, state_shapes: dict[str, tuple] | None = None) -> SpeechConfig:
    """`config.json` (+ `preprocessor_config.json` when present) → SpeechConfig."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory / 'config.json'}: file is missing")
    d = _read_json(directory / "config.json")
    pre_file = directory / "preprocessor_config.json"
    pre = _read_json(pre_file) if pre_file.is_file() else None
    try:
        return config_from_hf(d, state_shapes=state_shapes, preprocessor=pre)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{directory / 'config.json'}: {e}") from e


def _chat_template(directory: Path, tokenizer: Tokenizer | None) -> str | None:
    if (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    template = tokenizer.config.get("chat_template") if tokenizer is not None else None
    return template if isinstance(template, str) else None


def _check_keys(directory: Path, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in expected)
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = [f"{directory}: checkpoint does not fit the {getattr(model, 'variant', '?')} model"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                more = f" … (+{len(items) - 10})" if len(items) > 10 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:10])}{more}")
        raise CheckpointError("; ".join(parts))


def _target_dtype(state: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype | None):
    if dtype is not None:
        return dtype
    if device.type == "cpu":
        return torch.float32
    floating = [t.dtype for t in state.values() if t.is_floating_point()]
    return max(set(floating), key=floating.count) if floating else torch.float32


def cast_floating_state(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast floating parameters and persistent buffers only: non-persistent buffers such as RoPE's
    `inv_freq` keep the precision they were built with, as in the reference implementation."""
    for p in model.parameters():
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    for module in model.modules():
        for name, buf in module._buffers.items():
            if buf is not None and buf.is_floating_point() and name not in module._non_persistent_buffers_set:
                module._buffers[name] = buf.to(dtype)


def _build_empty(build_fn, config: SpeechConfig) -> nn.Module:
    """The model without allocated weights when the builder supports the meta device."""
    try:
        return build_fn(config, device="meta")
    except TypeError:  # a custom builder without a device argument
        return build_fn(config)


def _materialize_rest(model: nn.Module) -> None:
    """After an `assign` load: recompute non-persistent buffers (`reset_buffers`) and zero any
    BatchNorm counter the checkpoint did not carry, so nothing is left on the meta device."""
    for module in model.modules():
        if hasattr(module, "reset_buffers"):
            module.reset_buffers()
        for name, buf in module._buffers.items():
            if buf is not None and buf.is_meta:
                module._buffers[name] = torch.zeros(buf.shape, dtype=buf.dtype)
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise CheckpointError(f"parameters not loaded: {', '.join(left[:10])}")


def load_pretrained(
    path_or_hub_id: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    build_fn: Callable[[SpeechConfig], nn.Module] | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
) -> nn.Module:
    """Build the model from `config.json` and load its weights with strict key and shape checks.

    Floating tensors are cast to `dtype` (default: float32 on CPU, the checkpoint's dtype elsewhere).
    Attaches `.tokenizer` (None without `tokenizer.json`) and `.chat_template` (None if absent); eval mode.
    """
    if build_fn is None:
        from .build import build_model as build_fn
    directory = resolve_checkpoint_dir(path_or_hub_id, revision=revision, local_files_only=local_files_only)
    state = read_state_dict(directory)
    config = read_config(directory, {k: tuple(v.shape) for k, v in state.items()})
    model = _build_empty(build_fn, config)
    wanted = model.state_dict().keys()
    for key, tensor in base_state(directory).items():  # a sibling takes what it lacks and uses
        if key in wanted:
            state.setdefault(key, tensor)
    if config.text.tie_word_embeddings and LM_HEAD not in model.state_dict():
        state.pop(LM_HEAD, None)  # a tied checkpoint may still carry the copy (transformers writes it)
    _check_keys(directory, model, state)
    device = torch.device(device)
    target = _target_dtype(state, device, dtype)
    for key, t in state.items():  # cast one tensor at a time: the peak stays ~one copy of the weights
        if t.is_floating_point() and t.dtype != target:
            state[key] = t.to(target)
    # assign=True adopts the loaded tensors instead of copying into freshly allocated ones, so a model
    # built on the meta device never holds random weights next to the real ones (2b: ~10 GB saved).
    model.load_state_dict(state, strict=False, assign=True)
    del state
    _materialize_rest(model)
    model.to(device)
    model.tokenizer = Tokenizer.from_dir(directory)
    model.chat_template = _chat_template(directory, model.tokenizer)
    return model.eval()


# ------------------------------------------------------------------------------------------ writing


def _tensors_for_saving(model: nn.Module, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, tensor in model.state_dict().items():
        t = tensor.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        t = t.to("cpu").contiguous()
        if t.untyped_storage().data_ptr() in seen:  # safetensors refuses shared storage
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        state[key] = t
    if model.config.text.tie_word_embeddings:
        state.pop(LM_HEAD, None)
    return state


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += nbytes
    return shards


def _write_weights(directory: Path, state: dict[str, torch.Tensor], max_shard_bytes: int) -> None:
    for stale in [
        directory / SINGLE_FILE,
        directory / INDEX_FILE,
        *directory.glob("model-*-of-*.safetensors"),
    ]:
        stale.unlink(missing_ok=True)
    shards = _shards(state, max_shard_bytes)
    meta = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(directory / SINGLE_FILE), metadata=meta)
        return
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(directory / name), metadata=meta)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _write_json(file: Path, d: dict[str, Any]) -> None:
    file.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    base: str | os.PathLike | None = None,
) -> Path:
    """Write config.json, preprocessor_config.json, weights (sharded above `max_shard_bytes`), the 2b BPE
    head as `out_llm.safetensors`, and the tokenizer / chat template when the model carries them.

    `base`: a checkpoint directory whose identical tensors are left out and read from there at load time
    (`granite_asr.base_weights`, a path relative to `directory`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config: SpeechConfig = model.config
    state = _tensors_for_saving(model, dtype)
    if base is not None:  # what `base` can lend: its own tensors and what its base lends it
        shared = {**base_state(Path(base)), **read_state_dict(base)}
        for key in [k for k, t in state.items() if lends(k) and k in shared and _same(t, shared[k])]:
            del state[key]
    (directory / BPE_FILE).unlink(missing_ok=True)
    if config.variant == "ar" and any(k.startswith(BPE_PREFIX) for k in state):
        # SPEC §3.6 / §9.1: the official 2b keeps the BPE head out of model.safetensors.
        head = {k[len(BPE_PREFIX) :]: state.pop(k) for k in [k for k in state if k.startswith(BPE_PREFIX)]}
        save_file(head, str(directory / BPE_FILE), metadata={"format": "pt"})
    _write_weights(directory, state, max_shard_bytes)
    hf = config_to_hf(config)
    if base is not None:
        rel = os.path.relpath(Path(base).resolve(), directory.resolve())
        hf.setdefault(OURS_KEY, {})[BASE_WEIGHTS] = Path(rel).as_posix()
    floating = [t.dtype for t in state.values() if t.is_floating_point()]
    if floating:
        hf["dtype"] = str(max(set(floating), key=floating.count)).removeprefix("torch.")
    _write_json(directory / "config.json", hf)
    _write_json(directory / "preprocessor_config.json", preprocessor_to_hf(config))
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save(directory)
    template = getattr(model, "chat_template", None)
    if template:
        (directory / "chat_template.jinja").write_text(template, encoding="utf-8")
    return directory
