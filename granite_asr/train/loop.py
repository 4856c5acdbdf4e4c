"""The training loop shared by every recipe stage: AdamW, warmup + cosine schedule, bf16 autocast (on the
CPU, or on a GPU with `device="cuda"`), gradient clipping, JSONL logs, and checkpoint/resume that
survives a kill at any moment. Batches are built on the CPU and moved to the device step by step;
checkpoints are always written from CPU copies, so a run resumes on either kind of device.

A checkpoint directory holds the model in the official layout (`save_pretrained`, so any stage's output
loads with `granite_asr.load_model`) plus `trainer_state.safetensors` (optimizer moments) and
`trainer_state.json` (step, schedule, RNG seeds, recipe). Everything is safetensors/JSON: no pickle.
It is written to a temporary directory and renamed into place, so a crash never leaves a torn checkpoint.

Under torchrun (issue 7 §3, `distributed.py`) the same loop runs the model wrapped in DDP (or FSDP with
`fsdp=True`), each rank on its slice of every global batch; rank 0 alone logs and writes checkpoints
(in the same single-process format, so a run resumes under any number of processes), with barriers
around the save, and ranks agree on when to stop.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..model.checkpoint import save_pretrained
from . import distributed
from .data import FeatureBatch
from .precision import bf16_pays


@dataclass(frozen=True)
class LoopConfig:
    out_dir: str
    steps: int = 1000
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    bf16: bool = True
    log_every: int = 10
    ckpt_every: int = 200
    # Also keep the weights (no optimizer state) at every N-th step as `<out>/step-NNNNNN`, the points a
    # checkpoint average (`train average`, RESULTS session 17) draws from; 0 = only `latest`.
    keep_every: int = 0
    max_minutes: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit
    stop_at: int = 0  # stop (with a checkpoint) at this step, schedule unchanged; 0 = run to `steps`
    seed: int = 0
    fsdp: bool = False  # under torchrun: shard parameters and optimizer state (FSDP2) instead of DDP
    device: str = "cpu"  # "cpu" or "cuda[:N]" (`distributed.resolve_device`)
    recipe: dict = field(default_factory=dict)  # the stage's own settings, saved with every checkpoint


def lr_at(step: int, cfg: LoopConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


class Trainer:
    """Runs `loss_fn(model, batch) -> dict[str, Tensor]` (key "loss" is optimised) over `batches`."""

    def __init__(self, model: nn.Module, cfg: LoopConfig, loss_fn: Callable[[nn.Module, Any], dict]):
        self.out = Path(cfg.out_dir)
        self.device = torch.device(cfg.device)
        if cfg.bf16 and not bf16_pays(self.device.type):
            # No native bf16 here: autocast would make every step many times slower (precision.py).
            print(
                f"[train] bf16 autocast is slow or unsupported on this {self.device.type}: training in fp32"
            )
            cfg = replace(cfg, bf16=False)
        self.model, self.cfg, self.loss_fn = model, cfg, loss_fn
        model.to(self.device)  # before the optimizer and the DDP/FSDP wrap, which bind the parameters
        self.dist = distributed.context(cfg.fsdp)
        # Under torchrun the model runs wrapped (before the optimizer exists: FSDP replaces parameters).
        self.net = distributed.wrap(model, loss_fn, self.dist) if self.dist.enabled else None
        names = {id(p): n for n, p in model.named_parameters()}
        self.params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in self.params if p.ndim >= 2]
        no_decay = [p for p in self.params if p.ndim < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.98),
        )
        self.names = [names[id(p)] for g in self.opt.param_groups for p in g["params"]]  # optimizer order
        self.step = 0
        self._stop = False

    # ------------------------------------------------------------------ checkpoints
    @property
    def latest(self) -> Path:
        return self.out / "latest"

    def save(self) -> None:
        """Write `<out>/latest` (rank 0; under FSDP every rank first joins the gather of the full state)."""
        if self.dist.fsdp:
            model = _FullModel(self.model, distributed.full_model_state(self.net))
            optim = distributed.full_optimizer_state(self.net, self.opt)  # rank 0 has it, the others {}
            optim = _by_index(optim, self.names) if self.dist.is_main else optim
        else:
            model, optim = self.model, self.opt.state_dict()
        if self.dist.is_main:
            self._write(model, optim)
        distributed.barrier(self.dist)

    def keep(self) -> Path:
        """Write the weights alone as `<out>/step-NNNNNN` (rank 0; under FSDP every rank joins the gather)."""
        model = (
            _FullModel(self.model, distributed.full_model_state(self.net)) if self.dist.fsdp else self.model
        )
        path = self.out / f"step-{self.step:06d}"
        if self.dist.is_main:
            save_pretrained(model, path)
        distributed.barrier(self.dist)
        return path

    def _write(self, model, optim: dict) -> None:
        tmp = self.out / f".tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        save_pretrained(model, tmp)
        tensors, meta = _flatten_optimizer(optim)
        save_file(tensors, str(tmp / "trainer_state.safetensors"))
        state = {"step": self.step, "optimizer": meta, "loop": asdict(self.cfg), "time": time.time()}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1, default=str))
        old = self.out / ".old"
        shutil.rmtree(old, ignore_errors=True)
        if self.latest.exists():
            self.latest.rename(old)
        tmp.rename(self.latest)
        shutil.rmtree(old, ignore_errors=True)

    def try_resume(self) -> bool:
        """Restore model weights, optimizer and step from `<out>/latest` if present."""
        state_file = self.latest / "trainer_state.json"
        if not state_file.exists():
            return False
        from ..model.checkpoint import read_state_dict

        weights = read_state_dict(self.latest)
        state = json.loads(state_file.read_text())
        tensors = load_file(str(self.latest / "trainer_state.safetensors"))
        optim = _unflatten_optimizer(tensors, state["optimizer"])
        if self.dist.fsdp:  # every rank reads the full state and keeps its shards
            distributed.load_full_state(self.net, self.opt, weights, _by_name(optim, self.names))
        else:  # DDP replicas all load the same files, so they stay identical
            self.model.load_state_dict(weights, strict=False)
            self.opt.load_state_dict(optim)
        self.step = int(state["step"])
        return True

    # ------------------------------------------------------------------ loop
    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
            flush=True,
        )

    def _handle_signal(self, *_):
        self._stop = True  # finish the current step, checkpoint, exit

    def _train_mode(self) -> None:
        """Train mode for the parts being trained; a frozen part (e.g. the encoder in the speech and NAR
        stages, as IBM freezes it) runs as at inference: BatchNorm statistics fixed, no dropout."""
        self.model.train()
        for child in self.model.children():
            if not any(p.requires_grad for p in child.parameters()):
                child.eval()

    def run(self, batches: Iterator[Any]) -> int:
        """Train until `steps`, the time budget, or a SIGTERM/SIGINT; always leaves a checkpoint."""
        cfg = self.cfg
        signal.signal(signal.SIGTERM, self._handle_signal)
        start, t_log, sums, n = time.time(), time.time(), {}, 0
        # A resumed run fast-forwards its (deterministic) batch stream, so it sees exactly the batches
        # the uninterrupted run would have seen from here on.
        for _ in range(self.step):
            next(batches)
        self._train_mode()
        while self.step < cfg.steps and not self._stop:
            batch = to_device(next(batches), self.device)
            for g in self.opt.param_groups:
                g["lr"] = lr_at(self.step, cfg)
            self.opt.zero_grad(set_to_none=True)
            if self.dist.enabled:
                losses = self._distributed_backward(batch)
            else:
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    losses = self.loss_fn(self.model, batch)
                losses["loss"].backward()
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            if torch.isfinite(gnorm):
                self.opt.step()
            self.step += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
            n += 1
            if self.step % cfg.log_every == 0:
                rec = {"step": self.step, **{k: v / n for k, v in sums.items()}}
                rec.update(lr=lr_at(self.step, cfg), gnorm=float(gnorm), s_per_step=(time.time() - t_log) / n)
                self._log(rec)
                sums, n, t_log = {}, 0, time.time()
            if self.step % cfg.ckpt_every == 0:
                self.save()
            if cfg.keep_every and self.step % cfg.keep_every == 0:
                self.keep()
            over_time = bool(cfg.max_minutes and time.time() - start > 60 * cfg.max_minutes)
            if distributed.any_rank(self.dist, over_time):
                break
            if cfg.stop_at and self.step >= cfg.stop_at:
                break
            # A signal reaches the ranks at different steps: they must agree, or one waits for the others.
            self._stop = distributed.any_rank(self.dist, self._stop)
        self.save()
        self.model.eval()
        return self.step

    def _distributed_backward(self, batch: Any) -> dict[str, float]:
        """This rank's slice, its loss scaled so DDP's mean of gradients is the global batch's gradient."""
        shard, weight = distributed.shard_batch(batch, self.dist)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            losses = self.net(shard)
        (losses["loss"] * (weight * self.dist.world)).backward()
        return distributed.global_losses(self.dist, losses, weight)


def to_device(batch: Any, device: torch.device) -> Any:
    """A recipe batch on `device`: a `FeatureBatch` (features, lengths and its text batch), a tuple of
    tensors (the lm stage's ids, valid) or a tensor; anything else as it is."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple):
        return tuple(to_device(x, device) for x in batch)
    if isinstance(batch, FeatureBatch):
        text = None if batch.text is None else to_device(batch.text, device)
        return replace(batch, features=batch.features.to(device), lengths=batch.lengths.to(device), text=text)
    return batch


class _FullModel:
    """What `save_pretrained` reads from a model (config, tokenizer, state_dict), for gathered FSDP weights."""

    def __init__(self, model: nn.Module, state: dict[str, torch.Tensor]):
        self.config, self._state = model.config, state
        self.tokenizer = getattr(model, "tokenizer", None)
        self.chat_template = getattr(model, "chat_template", None)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


def _by_index(optim: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """FSDP's optimizer state (keyed by parameter name) → torch's (keyed by index), as a single process saves."""
    index = {n: i for i, n in enumerate(names)}
    state = {index[n]: st for n, st in optim["state"].items()}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in optim["param_groups"]]
    return {"state": state, "param_groups": groups}


def _by_name(optim: dict[str, Any], names: list[str]) -> dict[str, Any]:
    state = {names[i]: st for i, st in optim["state"].items()}
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in optim["param_groups"]]
    return {"state": state, "param_groups": groups}
