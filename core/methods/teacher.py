"""The teacher: a ResNet (ResNet-50 by default) with one logit, trained with BCE.

It starts from ImageNet (``pretrained``), from scratch, or, to fine-tune a trained one, from every weight of a
teacher-method checkpoint of the same architecture, its head included (``init_checkpoint``: the NTU report's B0
teacher, fine-tuned after its dense training).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from core.checkpoint import load_checkpoint, load_state_into, read_header
from core.config import TrainConfig
from core.methods import register_method
from core.methods.base import Method
from core.models.registry import build_model
from core.models.resnet import set_trainable

log = logging.getLogger(__name__)


@register_method
class TeacherMethod(Method):
    name = "teacher"
    description = "ResNet teacher with a single-logit head, BCE with logits (ImageNet start or scratch)."
    rank = 0
    architectures = ("resnet50", "resnet18", "efficientnet_b0", "efficientnet_lite0", "mesonet", "cnn5", "dual_resnet18")
    starts_from = "a fine-tune: a teacher-method run of the same architecture, every weight of it (head included)"

    def check(self, config: TrainConfig) -> None:
        if not config.init_checkpoint:
            return

        spec = read_header(config.init_checkpoint)["model"]
        if spec.get("type") != "resnet" or spec.get("arch") != config.arch:
            raise ValueError(f"{config.init_checkpoint} holds a {spec.get('type')} {spec.get('arch')}; a teacher fine-tune "
                             f"starts from a teacher-method {config.arch} run (or pass --arch {spec.get('arch')})")
        if config.pretrained:
            log.info("teacher: starting from %s, not the %s weights", config.init_checkpoint, config.pretrained)
            config.pretrained = None

    def build(self, config: TrainConfig) -> nn.Module:
        model = build_model(config.arch, config.pretrained)
        if config.init_checkpoint:

            load_state_into(model, load_checkpoint(config.init_checkpoint)[0], str(config.init_checkpoint))
        set_trainable(model, config.trainable)
        return model

    def model_spec(self, config: TrainConfig, model: nn.Module) -> dict:
        return {"type": "resnet", "arch": config.arch}

    def loss(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(images).reshape(-1)
        bce = F.binary_cross_entropy_with_logits(logits.float(), labels)
        return bce, {"bce": bce.detach()}
