"""The teacher: a ResNet (ResNet-50 by default) with one logit, trained with BCE."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from core.config import TrainConfig
from core.methods import register_method
from core.methods.base import Method
from core.models.resnet import build_model, set_trainable


@register_method
class TeacherMethod(Method):
    name = "teacher"
    description = "ResNet teacher with a single-logit head, BCE with logits (ImageNet start or scratch)."
    rank = 0
    architectures = ("resnet50", "resnet18", "efficientnet_b0", "efficientnet_lite0", "mesonet", "cnn5", "dual_resnet18")

    def build(self, config: TrainConfig) -> nn.Module:
        model = build_model(config.arch, config.pretrained)
        set_trainable(model, config.trainable)
        return model

    def model_spec(self, config: TrainConfig, model: nn.Module) -> dict:
        return {"type": "resnet", "arch": config.arch}

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(images).reshape(-1)
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels)
        return bce, {"bce": bce.detach()}
