"""Params and MACs: the published numbers, and exact agreement with thop itself."""

from __future__ import annotations

import pytest
import thop
import torch
from torch import nn

from core.models import build_model
from core.pruning.flops import profile_layers, profile_model


@pytest.mark.parametrize(("arch", "params_m", "macs_m"), [("resnet50", 23.51, 5390), ("resnet18", 11.18, 2381)])
def test_published_counts_at_256(arch, params_m, macs_m):
    cost = profile_model(build_model(arch), 256)
    assert round(cost["params"] / 1e6, 2) == params_m
    assert abs(cost["macs"] / 1e6 - macs_m) / macs_m < 0.01


@pytest.mark.parametrize(("arch", "size"), [("resnet50", 256), ("resnet50", 64), ("resnet18", 96), ("resnet-tiny", 32)])
def test_equals_thop(arch, size):
    model = build_model(arch)
    macs, params = thop.profile(model, inputs=(torch.zeros(1, 3, size, size),), verbose=False)
    # thop leaves total_ops/total_params buffers behind; use a fresh model for ours
    ours = profile_model(build_model(arch), size)
    assert ours["macs"] == int(macs)
    assert ours["params"] == int(params)


def test_conv_formula_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1))
    layers = {layer.kind: layer.macs for layer in profile_layers(model, 10)}
    assert layers["Conv2d"] == 8 * 10 * 10 * 3 * 3 * 3
    assert layers["BatchNorm2d"] == 2 * 2 * 8 * 10 * 10
    assert layers["ReLU"] == 0
    assert layers["AdaptiveAvgPool2d"] == 8 * 10 * 10 + 8
    assert layers["Linear"] == 8
