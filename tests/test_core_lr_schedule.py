"""The learning-rate schedule: linear warm-up from lr/(warmup+1), then cosine down to min_lr_ratio*lr."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from speechllm.errors import ConfigError
from speechllm.module import SpeechLLMModule


def lrs_per_step(warmup: int, total: int, lr: float, floor: float) -> list[float]:
    """The lr each optimizer step runs with, stepping the scheduler as Lightning does (after the step)."""
    module = SpeechLLMModule(lr=lr, warmup_steps=warmup, min_lr_ratio=floor)
    module.model = nn.Linear(2, 2)  # configure_optimizers only needs trainable parameters
    module.trainer = type("T", (), {"estimated_stepping_batches": total})()
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return seen


def test_warmup_then_cosine_to_the_floor_at_the_expected_steps():
    lr, floor = 1e-3, 0.1
    seen = lrs_per_step(warmup=4, total=13, lr=lr, floor=floor)
    # warm-up: (s + 1) / (warmup + 1), never 0 on the first step
    assert seen[:5] == pytest.approx([lr * k / 5 for k in range(1, 6)])
    assert seen[4] == pytest.approx(lr)  # peak at step `warmup`
    # cosine over the remaining total - warmup = 9 steps: half-way (step 4 + 4.5) is the mid value
    mid = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 4 / 9))
    assert seen[8] == pytest.approx(lr * mid)
    assert seen[12] == pytest.approx(lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 8 / 9))))
    assert all(a >= b for a, b in zip(seen[4:], seen[5:]))  # monotone decay after the peak
    assert min(seen[4:]) > lr * floor


def test_no_warmup_starts_at_full_lr_and_zero_floor_decays_towards_zero():
    seen = lrs_per_step(warmup=0, total=10, lr=2e-4, floor=0.0)
    assert seen[0] == pytest.approx(2e-4)
    assert seen[5] == pytest.approx(2e-4 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert seen[-1] == pytest.approx(2e-4 * 0.5 * (1 + math.cos(math.pi * 0.9)))


def test_scheduler_state_round_trips_through_a_checkpoint():
    module = SpeechLLMModule(lr=1e-3, warmup_steps=2)
    module.model = nn.Linear(2, 2)
    module.trainer = type("T", (), {"estimated_stepping_batches": 8})()
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    for _ in range(3):
        opt.step()
        sched.step()
    state = sched.state_dict()
    again = module.configure_optimizers()
    again["lr_scheduler"]["scheduler"].load_state_dict(state)
    again["lr_scheduler"]["scheduler"].step()
    sched.step()
    assert again["optimizer"].param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_lr_scale_gives_matching_parameters_their_own_scaled_schedule():
    module = SpeechLLMModule(lr=1e-3, warmup_steps=0, lr_scale={"model.0": 0.1, "model.0.bias": 0.0})
    module.model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    module.trainer = type("T", (), {"estimated_stepping_batches": 4})()
    opt = module.configure_optimizers()["optimizer"]
    top = max(g["lr"] for g in opt.param_groups)
    by_lr = {round(g["lr"] / top, 6): {id(p) for p in g["params"]} for g in opt.param_groups}
    m0, m1 = module.model[0], module.model[1]
    assert by_lr[0.1] == {id(m0.weight)}  # the longest prefix wins: the bias is frozen
    assert by_lr[0.0] == {id(m0.bias)} and by_lr[1.0] == {id(m1.weight), id(m1.bias)}
    before = m0.bias.detach().clone()
    for p in module.model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    assert torch.equal(m0.bias, before)  # factor 0: kept at its initial value, weight decay included


def test_lr_scale_naming_no_parameter_is_a_config_error():
    module = SpeechLLMModule(lr_scale={"model.adapter.nope": 0.1})
    module.model = nn.Linear(2, 2)
    module.trainer = type("T", (), {"estimated_stepping_batches": 4})()
    with pytest.raises(ConfigError, match="model.adapter.nope"):
        module.configure_optimizers()
