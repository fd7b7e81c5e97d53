"""train.precision: fp32 untouched, bf16/fp16 forward passes under autocast, fp16 loss scaling."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from train_helpers import TINY, write_tiny_pair

from meshsr.learn.model import ModelConfig, build_model
from meshsr.learn.pair_data import load_pair_data
from meshsr.learn.precision import Precision
from meshsr.learn.settings import RunSettings
from meshsr.learn.training import train_pair

CPU = torch.device("cpu")
RUN = RunSettings(device="cpu", threads=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tiny = write_tiny_pair(tmp_path_factory.mktemp("tiny"))
    return load_pair_data("coarse", "fine", tiny.src, tiny.dst, tiny.cache)


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(kind="mlp", n_inputs=4, n_outputs=2, hidden=8, layers=2))


@pytest.mark.parametrize(("name", "dtype"), [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_the_forward_pass_runs_in_the_chosen_precision_and_the_weights_stay_fp32(name, dtype):
    net, precision = small_net(), Precision(name, CPU)
    with precision.autocast():
        out = net(torch.randn(5, 4))
    assert out.dtype == dtype
    optimiser = torch.optim.AdamW(net.parameters())
    precision.step((out.float() ** 2).mean(), optimiser)
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_fp16_scales_the_loss_and_skips_a_step_whose_gradients_overflow():
    net, precision = small_net(), Precision("fp16", CPU)
    assert precision.scaler is not None and Precision("bf16", CPU).scaler is None
    before = [p.detach().clone() for p in net.parameters()]
    optimiser = torch.optim.SGD(net.parameters(), lr=0.1)
    with precision.autocast():
        out = net(torch.randn(5, 4))
    scale = precision.scaler.get_scale()
    precision.step(out.float().sum() * torch.tensor(float("inf")), optimiser)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))  # skipped
    assert precision.scaler.get_scale() < scale  # and the scale backed off


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Precision("fp8", CPU)


def test_bf16_training_changes_the_numbers_and_keeps_the_quality(data):
    fp32 = train_pair(data, TINY.fit, RUN, progress=False)
    bf16 = train_pair(data, replace(TINY.fit, precision="bf16"), RUN, progress=False)
    assert bf16.settings["precision"] == "bf16"  # recorded: a fit setting, provenance
    weights = [(a, b) for a, b in zip(fp32.network.parameters(), bf16.network.parameters(), strict=True)]
    assert not all(torch.equal(a, b) for a, b in weights)  # autocast was in effect
    best = [min(m.history["validation_loss"]) for m in (fp32, bf16)]
    assert np.isfinite(best).all()
    assert best[1] == pytest.approx(best[0], rel=0.25)  # tiny data, 240 steps: loose
