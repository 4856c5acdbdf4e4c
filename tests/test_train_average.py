"""Checkpoint averaging (`train average`) and the `--keep-every` snapshots it draws from, on tiny shapes."""

from __future__ import annotations

import itertools

import pytest
import torch

import granite_asr
from granite_asr.model.checkpoint import read_state_dict
from granite_asr.train import recipe
from granite_asr.train.average import average_state_dicts
from granite_asr.train.loop import LoopConfig, Trainer


def _pull_to_zero(model, batch):
    """A loss whose gradient moves every float parameter, so each step changes the weights."""
    return {"loss": sum((p.float() ** 2).mean() for p in model.parameters() if p.requires_grad)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    cfg = LoopConfig(out_dir=str(out), steps=4, lr=1e-2, warmup=1, keep_every=2, ckpt_every=100, bf16=False)
    Trainer(granite_asr.build_model("tiny"), cfg, _pull_to_zero).run(itertools.repeat(None))
    return out


def test_keep_every_leaves_weight_snapshots_along_the_run(run):
    assert sorted(p.name for p in run.glob("step-*")) == ["step-000002", "step-000004"]
    assert not (run / "step-000002" / "trainer_state.json").exists()  # weights only
    two, four, latest = (read_state_dict(run / n) for n in ("step-000002", "step-000004", "latest"))
    for key, value in latest.items():
        torch.testing.assert_close(four[key], value, rtol=0, atol=0, msg=key)
    assert any(not torch.equal(two[k], four[k]) for k in two if two[k].is_floating_point())
    assert granite_asr.load_model(run / "step-000002").variant == "ar"


def test_average_stage_writes_the_mean_of_its_inputs(run, tmp_path):
    inputs = [str(run / "step-000002"), str(run / "step-000004")]
    recipe.main(["average", "--inputs", *inputs, "--out", str(tmp_path / "avg"), "--fp32"])
    got = granite_asr.load_model(tmp_path / "avg", dtype=torch.float32).state_dict()
    a, b = (granite_asr.load_model(p, dtype=torch.float32).state_dict() for p in inputs)
    moved = 0
    for key, value in got.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (a[key] + b[key]) / 2, rtol=0, atol=1e-6, msg=key)
            moved += int(not torch.equal(a[key], b[key]))
        else:
            assert torch.equal(value, a[key]), key
    assert moved > 0  # the two inputs differ, so the mean is a third point


def test_average_stage_exports_like_export(run, tmp_path):
    """One input: `average` is `export` (bf16 by default, the export flags recorded in the config)."""
    src = str(run / "latest")
    flags = ["--auto-mode", "ctc", "--ctc-head", "char"]
    recipe.main(["average", "--inputs", src, "--out", str(tmp_path / "avg"), *flags])
    recipe.main(["export", "--init", src, "--out", str(tmp_path / "exp"), *flags])
    avg, exp = read_state_dict(tmp_path / "avg"), read_state_dict(tmp_path / "exp")
    assert avg.keys() == exp.keys()
    for key, value in exp.items():
        assert avg[key].dtype == value.dtype and torch.equal(avg[key], value), key
    assert (tmp_path / "avg" / "config.json").read_text() == (tmp_path / "exp" / "config.json").read_text()


def test_average_refuses_checkpoints_of_other_shapes():
    a = {"w": torch.ones(2, 3), "n": torch.tensor(4)}
    with pytest.raises(ValueError, match=r"second has w of shape \(3, 2\), first \(2, 3\)"):
        average_state_dicts([a, {"w": torch.ones(3, 2), "n": torch.tensor(4)}], ["first", "second"])
    with pytest.raises(ValueError, match="second has other tensors than first: \\['x'\\]"):
        average_state_dicts([a, {**a, "x": torch.ones(1)}], ["first", "second"])
    with pytest.raises(ValueError, match="no checkpoints"):
        average_state_dicts([])
    mean = average_state_dicts([a, {"w": 3 * torch.ones(2, 3), "n": torch.tensor(9)}])
    assert torch.equal(mean["w"], 2 * torch.ones(2, 3)) and int(mean["n"]) == 4
