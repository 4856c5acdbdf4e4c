"""bf16 autocast is used only where it pays (granite_asr/train/precision.py, RESULTS session 21)."""

import pytest
import torch
from torch import nn

from granite_asr.train import precision
from granite_asr.train.loop import LoopConfig, Trainer


@pytest.fixture(autouse=True)
def _fresh_probe():
    precision.bf16_pays.cache_clear()
    yield
    precision.bf16_pays.cache_clear()


@pytest.mark.parametrize("value", ["0", "1"])
def test_environment_overrides_the_measurement(monkeypatch, value):
    monkeypatch.setenv("GRANITE_ASR_BF16", value)
    assert precision.bf16_pays("cpu") is (value == "1")


def test_slow_bf16_is_measured_as_not_paying(monkeypatch):
    monkeypatch.delenv("GRANITE_ASR_BF16", raising=False)
    cost = {torch.float32: 1.0, torch.bfloat16: 20.0}  # a fallback kernel, as on CPUs without AVX512-BF16
    monkeypatch.setattr(precision, "_seconds_per_matmul", lambda dtype: cost[dtype])
    assert precision.bf16_pays("cpu") is False
    precision.bf16_pays.cache_clear()
    cost[torch.bfloat16] = 0.4  # native bf16
    assert precision.bf16_pays("cpu") is True


def test_loop_falls_back_to_fp32_where_bf16_does_not_pay(monkeypatch, tmp_path):
    monkeypatch.setenv("GRANITE_ASR_BF16", "0")
    loop = Trainer(nn.Linear(4, 4), LoopConfig(out_dir=str(tmp_path), bf16=True), lambda m, b: {})
    assert loop.cfg.bf16 is False
    monkeypatch.setenv("GRANITE_ASR_BF16", "1")
    precision.bf16_pays.cache_clear()
    loop = Trainer(nn.Linear(4, 4), LoopConfig(out_dir=str(tmp_path), bf16=True), lambda m, b: {})
    assert loop.cfg.bf16 is True
