"""torchrun support for the training loop (issue 7 §3): DDP, or FSDP (`--fsdp`) for shapes that do not fit
one device, with each global batch sharded across ranks so N processes train exactly as one would.

    torchrun --nproc_per_node 2 -m granite_asr.train encoder --init … --corpus … --out …

Design (why):
- The recipes' batch streams are deterministic (seeded, length-bucketed), so every rank builds the same
  global batch and keeps its slice of rows (`shard_batch`): this is the distributed sampler. Unlike
  `DistributedSampler` over shuffled indices, N processes × B/N rows see the very batches 1 process × B
  sees, so loss curves match and a checkpoint resumes under any world size.
- Losses are per-row means; a rank's loss is scaled by `world × rows_r / B` before backward, so DDP's
  gradient average equals the global batch's gradient even when B is not a multiple of N. (Token-mean
  losses — lm, speech — are weighted by rows too: exact for equal shards, close otherwise.)
- The model runs inside `LossModule`, so DDP/FSDP see a real `forward` (their gradient hooks need it)
  while the recipes keep their `loss(model, batch)` functions.
- The conformer's BatchNorm normalises with batch statistics, so on slices it would train a different
  model; `GlobalBatchNorm1d` takes them over the global batch (torch's SyncBatchNorm is GPU-only), and
  slices keep the global batch's padding width so the statistics cover exactly the frames 1 process sees.
- `--device cpu` (the default) runs gloo; `--device cuda` gives each rank its GPU (LOCAL_RANK) and
  NCCL, whose collectives take tensors on that GPU (`_collective_device`). A rank whose slice is empty
  (B < N) runs a zero-weighted copy of row 0, because every rank must join every collective (its frames
  then enter the BatchNorm statistics: exact equivalence needs B ≥ N).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

SHARD_UNITS = {"ConformerBlock", "GraniteLayer", "QFormerLayer"}


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    fsdp: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    """`--device`: "cpu", "cuda" (under torchrun: this rank's GPU, LOCAL_RANK) or "cuda:N"."""
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: no CUDA device is visible to this process")
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise SystemExit(f"--device {name}: training runs on 'cpu' or 'cuda[:N]'")
    return device


def init_from_env(device: torch.device | str = "cpu") -> DistContext:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR…); a no-op without it.
    NCCL for ranks on GPUs, gloo on CPUs."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.device(device).type == "cuda" else "gloo")
    return context()


def _collective_device() -> torch.device:
    """Where a tensor made for a collective must live: NCCL takes this rank's GPU only."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def context(fsdp: bool = False) -> DistContext:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), fsdp)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


@contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a feature cache), then the others (which find it built)."""
    if ctx.enabled and not ctx.is_main:
        dist.barrier()
    yield
    if ctx.enabled and ctx.is_main:
        dist.barrier()


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True on every rank if it is true on any (stop requests must agree, or ranks deadlock)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# ----------------------------------------------------------------------------------------- batches
def batch_rows(batch: Any) -> int:
    return len(batch.items) if hasattr(batch, "items") else int(batch[0].shape[0])


def shard_batch(batch: Any, ctx: DistContext) -> tuple[Any, float]:
    """This rank's rows [r·B/N, (r+1)·B/N) of a global batch (same padded width) and their share of B.

    batch: a `FeatureBatch` (features (B, T, D), lengths (B,), items) or an lm batch (ids (B, L), valid
    (B, L)). An empty slice becomes row 0 with weight 0.
    """
    rows = batch_rows(batch)
    lo, hi = ctx.rank * rows // ctx.world, (ctx.rank + 1) * rows // ctx.world
    weight = (hi - lo) / rows
    if hi == lo:
        lo, hi = 0, 1
    if hasattr(batch, "items"):
        rows = {
            "features": batch.features[lo:hi],
            "lengths": batch.lengths[lo:hi],
            "items": batch.items[lo:hi],
        }
        return replace(batch, **rows), weight
    return (batch[0][lo:hi], batch[1][lo:hi]), weight


def global_losses(ctx: DistContext, losses: dict[str, torch.Tensor], weight: float) -> dict[str, float]:
    """The global batch's losses (Σ_r weight_r · loss_r) on every rank, for logging."""
    keys = sorted(losses)
    t = torch.stack([losses[k].detach().float() * weight for k in keys])
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist(), strict=True))


# ----------------------------------------------------------------------------------------- wrapping
class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are over every rank's slice (one all-reduce, with autograd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, C, T)
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.tensor([x.shape[0] * x.shape[2]], dtype=torch.float32, device=x.device)
        xf = x.float()
        stats = all_reduce(torch.cat([xf.sum((0, 2)), (xf * xf).sum((0, 2)), count]))  # (2C + 1,)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), self.momentum)
        y = (xf - mean[None, :, None]) * torch.rsqrt(var + self.eps)[None, :, None]
        return (y * self.weight[None, :, None] + self.bias[None, :, None]).to(x.dtype)


def global_batch_norm(module: nn.Module) -> nn.Module:
    """Every nn.BatchNorm1d below `module` → GlobalBatchNorm1d with the same parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            new = GlobalBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine)
            new.load_state_dict(child.state_dict())
            new.weight.requires_grad_(child.weight.requires_grad)
            new.bias.requires_grad_(child.bias.requires_grad)
            setattr(module, name, new)
        else:
            global_batch_norm(child)
    return module


class LossModule(nn.Module):
    """`loss_fn(model, batch)` as a module's forward, so DDP/FSDP hooks run (they wrap `forward`)."""

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], dict]):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.loss_fn(self.model, batch)


def wrap(model: nn.Module, loss_fn: Callable, ctx: DistContext) -> nn.Module:
    """DDP (every rank a replica) or FSDP2 (`fully_shard` per block, then the whole model)."""
    net = LossModule(global_batch_norm(model), loss_fn)
    if not ctx.fsdp:
        from torch.nn.parallel import DistributedDataParallel

        # find_unused_parameters: a recipe may leave a trainable head out of its loss (e.g. --bpe-weight 0).
        return DistributedDataParallel(net, find_unused_parameters=True)
    from torch.distributed.fsdp import fully_shard

    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, 0)  # random inits differ per rank; rank 0's is the one a single process has
    for module in model.modules():  # one FSDP unit per transformer/conformer block that trains
        if type(module).__name__ in SHARD_UNITS and any(p.requires_grad for p in module.parameters()):
            fully_shard(module)
    fully_shard(net)
    return net


# ----------------------------------------------------------------------------------------- FSDP state
def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights (a collective; rank 0 gets them, on CPU), keys as in the bare model."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(net.model, options=_options(cpu_offload=True))
    return state


def full_optimizer_state(net: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(net.model, opt, options=_options(cpu_offload=True))


def load_full_state(net: nn.Module, opt: torch.optim.Optimizer, weights: dict, optim: dict | None) -> None:
    """Full (unsharded) weights and optimizer state, as a single process saved them, into the shards."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(net.model, weights, options=_options(strict=False))
    if optim is not None:
        set_optimizer_state_dict(net.model, opt, optim, options=_options())
