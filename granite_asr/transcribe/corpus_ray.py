"""The corpus job on Ray Data (issue 7 §1): the same length-aware groups as local mode, each one row of a
dataset, mapped by a pool of model actors (`map_batches` with a callable class, one actor per GPU or per
CPU slot), streamed back to the driver, which commits each outcome through the same `CorpusStore`.

Why this shape:
- Ray Data's streaming executor gives the pool, scheduling, retries of lost actors and backpressure (it
  stops feeding rows when the object store or the driver's consumption falls behind), so no home-made
  workers or queues live here.
- Groups are made by the driver (`make_groups`), one group per row and per `map_batches` call, so an actor
  transcribes exactly the batches local mode would: results are identical, not merely close.
- Actors return rendered text, not files: the driver is the only writer of OUTPUT, so its atomic-commit
  and rerun rules (`corpus_store.py`) hold unchanged, and on a cluster only the driver needs OUTPUT.
  Inputs must be readable at the same paths on every node (a shared filesystem or object-store mount).
- A kill -9 of the driver ends the job (its actors go with it); the rerun skips every committed input.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Sequence

import numpy as np
from torch import nn

from ..options import TranscribeOptions
from .corpus import CorpusOptions, load_for_corpus, run_group
from .corpus_store import CorpusItem, Outcome
from .pipeline import engine_for


class GroupTranscriber:
    """A Ray Data model actor: loads the model once, then transcribes one group (one row) per call."""

    def __init__(self, model: str | None, options: TranscribeOptions, formats: tuple[str, ...], corpus):
        self.model = load_for_corpus(model, corpus)
        self.options, self.formats = options, formats
        engine_for(self.model).check(options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outcomes = []
        for group_json in batch["group"]:
            group = [CorpusItem(**d) for d in json.loads(group_json)]
            for out in run_group(self.model, group, self.options, self.formats):
                outcomes.append(json.dumps(dataclasses.asdict(out), ensure_ascii=False))
        return {"outcome": np.array(outcomes, dtype=object)}


def connect(address: str) -> None:
    """Join the Ray instance already initialised in this process, start a local one ("local"), or
    connect to a cluster ("auto", "host:6379", "ray://host:10001")."""
    import ray

    if ray.is_initialized():
        return
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address == "local":
        ray.init(include_dashboard=False, **kwargs)
    else:
        ray.init(address=address, **kwargs)


def pool_size(options: CorpusOptions, gpus_per_actor: float) -> int:
    """One actor per GPU (or per `gpus_per_actor` share), else one per `cpus_per_actor` CPUs."""
    import ray

    if options.actors:
        return options.actors
    resources = ray.cluster_resources()
    if gpus_per_actor > 0:
        return max(1, int(resources.get("GPU", 0) // gpus_per_actor))
    return max(1, int(resources.get("CPU", 1) // options.cpus_per_actor))


def run_ray(
    model, groups: Sequence[Sequence[CorpusItem]], options: TranscribeOptions, formats, corpus: CorpusOptions
) -> Iterator[Outcome]:
    """Outcomes of every group, in completion order, computed by a pool of model actors on Ray Data."""
    if isinstance(model, nn.Module):
        raise ValueError("Ray mode loads the model in each actor: pass a checkpoint directory or hub id")
    if not groups:
        return
    import ray

    connect(corpus.ray_address or "local")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the job's own bar counts files and audio hours
    gpus = corpus.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    rows = [{"group": json.dumps([dataclasses.asdict(it) for it in g])} for g in groups]
    model_arg = os.fspath(model) if model is not None else None
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        GroupTranscriber,
        fn_constructor_kwargs={"model": model_arg, "options": options, "formats": tuple(formats),
                               "corpus": corpus},
        batch_size=1,  # one group per call: the group is the batch, made length-aware by the driver
        concurrency=pool_size(corpus, gpus),
        num_cpus=corpus.cpus_per_actor,
        num_gpus=gpus or None,
    )  # fmt: skip
    for row in dataset.iter_rows():
        yield Outcome(**json.loads(row["outcome"]))
