"""Checkpoint averaging: the element-wise mean of several checkpoints of one architecture.

    python -m granite_asr.train average --inputs runs/default/grow8g/step-000300 runs/default/grow8g/latest \
        --out runs/export/avg --auto-mode ctc --ctc-head char --ctc-char-layer final

Checkpoints taken along one training path (and fine-tunes of one start) lie in one basin, so their mean
is usually better than any one of them out of domain (checkpoint averaging: Vaswani et al. 2017; stochastic
weight averaging: Izmailov et al. 2018; model soups: Wortsman et al. 2022). RESULTS sessions 16-17 measure
it on the embedded model. Means are taken in float32 whatever the stored dtype; integer tensors (BatchNorm's
`num_batches_tracked`) come from the first input, as does the config (tokenizer, chat template).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..model.checkpoint import load_pretrained


def average_state_dicts(
    states: Sequence[dict[str, torch.Tensor]], names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """The float32 mean of `states` (same keys and shapes; `names` label them in errors)."""
    if not states:
        raise ValueError("average: no checkpoints given")
    names = list(names) if names is not None else [f"input {i}" for i in range(len(states))]
    if len(names) != len(states):
        raise ValueError(f"average: {len(names)} names for {len(states)} checkpoints")
    first = states[0]
    for name, sd in zip(names[1:], states[1:], strict=True):
        if sd.keys() != first.keys():
            diff = sorted(sd.keys() ^ first.keys())
            raise ValueError(f"average: {name} has other tensors than {names[0]}: {diff[:5]}")
        for key, value in sd.items():
            if value.shape != first[key].shape:
                raise ValueError(
                    f"average: {name} has {key} of shape {tuple(value.shape)}, "
                    f"{names[0]} {tuple(first[key].shape)}"
                )
    out = {}
    for key, value in first.items():
        if not value.is_floating_point():
            out[key] = value.clone()
            continue
        total = torch.zeros(value.shape, dtype=torch.float32)
        for sd in states:
            total += sd[key].float()
        out[key] = total / len(states)
    return out


def average_checkpoints(paths: Sequence[str]) -> nn.Module:
    """The first checkpoint's model (float32) carrying the mean of all `paths`' weights."""
    if not paths:
        raise ValueError("average: give --inputs, the checkpoints to average")
    model = load_pretrained(paths[0], dtype=torch.float32)
    states = [model.state_dict()]
    for path in paths[1:]:
        states.append(load_pretrained(path, dtype=torch.float32).state_dict())
    model.load_state_dict(average_state_dicts(states, [str(p) for p in paths]))
    return model
