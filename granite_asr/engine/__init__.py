"""Batched decoding engine: length bucketing, AR greedy/beam, NAR, CTC-only and speculative modes."""

from .batching import BatchPlan, plan_batches
from .engine import Engine, EngineResult

__all__ = ["BatchPlan", "Engine", "EngineResult", "plan_batches"]
