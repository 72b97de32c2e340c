"""core.load_model(serve=True) gives the network as it should run: BatchNorm folded, channels_last, same logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import core
from core.models.masked import MaskedResNet

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints"


@pytest.mark.parametrize("name", ["teacher-resnet50-synthetic-faceswap", "student-pearson-resnet50-synthetic-faceswap"])
def test_the_served_network_gives_the_trained_networks_logits(name):
    path = SHIPPED / f"{name}.safetensors"
    trained, served = core.load_model(path), core.load_model(path, serve=True)
    assert served.served and not getattr(trained, "served", False)
    assert served.header == trained.header and served.preprocess is not None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in served.modules()), "every BatchNorm folded into its conv"
    assert any(isinstance(m, nn.BatchNorm2d) for m in trained.modules())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in served.parameters() if p.dim() == 4)
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (served(images) - trained(images)).abs().max() <= 1e-4


def test_the_trained_form_still_takes_gradients_for_grad_cam():
    trained = core.load_model(SHIPPED / "student-pearson-resnet50-synthetic-faceswap.safetensors")
    images = torch.randn(1, 3, 64, 64, requires_grad=True)
    trained(images).sum().backward()
    assert images.grad is not None and any(p.grad is not None for p in trained.parameters())


def test_a_masked_student_is_served_as_it_is(tmp_path):
    from core.checkpoint import save_checkpoint

    masked = MaskedResNet("resnet-tiny")
    header = {"method": "pearson", "model": {"type": "masked-resnet", "arch": "resnet-tiny"}, "image_size": 32,
              "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    save_checkpoint(tmp_path / "masked.safetensors", masked, header)
    loaded = core.load_model(tmp_path / "masked.safetensors", serve=True)
    assert isinstance(loaded, MaskedResNet) and not getattr(loaded, "served", False)
