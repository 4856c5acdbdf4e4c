"""The training loop shared by every recipe stage: AdamW, warmup + cosine schedule, bf16 autocast on
CPU, gradient clipping, JSONL logs, and checkpoint/resume that survives a kill at any moment.

A checkpoint directory holds the model in the official layout (`save_pretrained`, so any stage's output
loads with `granite_asr.load_model`) plus `trainer_state.safetensors` (optimizer moments) and
`trainer_state.json` (step, schedule, RNG seeds, recipe). Everything is safetensors/JSON: no pickle.
It is written to a temporary directory and renamed into place, so a crash never leaves a torn checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..model.checkpoint import save_pretrained


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
    max_minutes: float = 0.0  # stop (with a checkpoint) after this wall time; 0 = no limit
    stop_at: int = 0  # stop (with a checkpoint) at this step, schedule unchanged; 0 = run to `steps`
    seed: int = 0
    recipe: dict = field(default_factory=dict)  # the stage's own settings, saved with every checkpoint


def lr_at(step: int, cfg: LoopConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.contiguous()
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
        self.model, self.cfg, self.loss_fn = model, cfg, loss_fn
        self.out = Path(cfg.out_dir)
        self.params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in self.params if p.ndim >= 2]
        no_decay = [p for p in self.params if p.ndim < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(0.9, 0.98),
        )
        self.step = 0
        self._stop = False

    # ------------------------------------------------------------------ checkpoints
    @property
    def latest(self) -> Path:
        return self.out / "latest"

    def save(self) -> None:
        tmp = self.out / f".tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        save_pretrained(self.model, tmp)
        tensors, meta = _flatten_optimizer(self.opt)
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
        self.model.load_state_dict(weights, strict=False)
        state = json.loads(state_file.read_text())
        tensors = load_file(str(self.latest / "trainer_state.safetensors"))
        self.opt.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
        self.step = int(state["step"])
        return True

    # ------------------------------------------------------------------ loop
    def _log(self, record: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(
            " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
            flush=True,
        )

    def _handle_signal(self, *_):
        self._stop = True  # finish the current step, checkpoint, exit

    def run(self, batches: Iterator[Any]) -> int:
        """Train until `steps`, the time budget, or a SIGTERM/SIGINT; always leaves a checkpoint."""
        cfg = self.cfg
        signal.signal(signal.SIGTERM, self._handle_signal)
        start, t_log, sums, n = time.time(), time.time(), {}, 0
        # A resumed run fast-forwards its (deterministic) batch stream, so it sees exactly the batches
        # the uninterrupted run would have seen from here on.
        for _ in range(self.step):
            next(batches)
        self.model.train()
        while self.step < cfg.steps and not self._stop:
            batch = next(batches)
            for g in self.opt.param_groups:
                g["lr"] = lr_at(self.step, cfg)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                losses = self.loss_fn(self.model, batch)
            self.opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            if torch.isfinite(gnorm):
                self.opt.step()
            self.step += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n += 1
            if self.step % cfg.log_every == 0:
                rec = {"step": self.step, **{k: v / n for k, v in sums.items()}}
                rec.update(lr=lr_at(self.step, cfg), gnorm=float(gnorm), s_per_step=(time.time() - t_log) / n)
                self._log(rec)
                sums, n, t_log = {}, 0, time.time()
            if self.step % cfg.ckpt_every == 0:
                self.save()
            if cfg.max_minutes and time.time() - start > 60 * cfg.max_minutes:
                break
            if cfg.stop_at and self.step >= cfg.stop_at:
                break
        self.save()
        self.model.eval()
        return self.step
